"""Cuts tests/data/sft/chatterbot_en.jsonl from PyPI chatterbot-corpus==1.3.3 (BSD licence, author Gunther Cox).

Usage: python make_chatterbot.py PACKAGE_DIR OUT.jsonl
  (PACKAGE_DIR: the unpacked wheel, `pip download chatterbot-corpus==1.3.3 --no-deps` + unzip)

Every conversation of the English files listed below, in file order: turns alternate user,
assistant (the corpus's own order); conversations of one turn are left out (nothing to
answer). Every 10th conversation is `split = "val"`.
"""
import json
import sys
from pathlib import Path

import yaml

FILES = ["conversations", "greetings", "emotion", "food", "humor", "computers", "botprofile"]


def main(pkg, out):
    rows = []
    for name in FILES:
        path = Path(pkg) / "chatterbot_corpus" / "data" / "english" / f"{name}.yml"
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        for k, conv in enumerate(doc["conversations"]):
            turns = [str(t).strip() for t in conv if t is not None and str(t).strip()]
            if len(turns) < 2:
                continue
            msgs = [
                {"role": "user" if i % 2 == 0 else "assistant", "content": t}
                for i, t in enumerate(turns)
            ]
            rows.append({"id": f"{name}-{k}", "source": f"chatterbot/{name}", "messages": msgs})
    with open(out, "w", encoding="utf-8") as f:
        for i, r in enumerate(rows):
            r["split"] = "val" if i % 10 == 9 else "train"
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
