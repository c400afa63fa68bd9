"""Movie-review sentiment snippets (vaderSentiment 3.3.2 sdist) as a cls corpus.

Usage: prepare.py SDIST_DIR OUT.jsonl

Reads additional_resources/hutto_ICWSM_2014.tar.gz → movieReviewSnippets_GroundTruth.txt
(TSV: id, mean human score -4..4, text; CRLF), labels each snippet `pos` when the score is
> 0 and `neg` otherwise, and assigns a fixed split from a seeded shuffle: 1,000 `test`,
500 `val`, the rest `train`. Writes one JSON object per line: id, text, label, split.
"""
import glob
import io
import json
import os
import random
import sys
import tarfile


def main():
    sdist, out = sys.argv[1], sys.argv[2]
    tgz = glob.glob(os.path.join(sdist, "**", "hutto_ICWSM_2014.tar.gz"), recursive=True)
    if not tgz:
        sys.exit(f"no hutto_ICWSM_2014.tar.gz under {sdist}")
    with tarfile.open(tgz[0]) as t:
        member = next(m for m in t.getmembers() if m.name.endswith("movieReviewSnippets_GroundTruth.txt"))
        raw = t.extractfile(member).read().decode("utf-8", errors="replace")
    rows = []
    for line in io.StringIO(raw.replace("\r\n", "\n")):
        parts = line.rstrip("\n").split("\t")
        if len(parts) < 3 or not parts[2].strip():
            continue
        rows.append((parts[0], float(parts[1]), parts[2].strip()))
    order = list(range(len(rows)))
    random.Random(0).shuffle(order)
    split = {}
    for k, i in enumerate(order):
        split[i] = "test" if k < 1000 else "val" if k < 1500 else "train"
    with open(out, "w") as f:
        for i, (rid, score, text) in enumerate(rows):
            f.write(json.dumps({"id": f"movie-{rid}", "text": text,
                                "label": "pos" if score > 0 else "neg", "split": split[i]}) + "\n")
    counts = {}
    for i, r in enumerate(rows):
        key = (split[i], "pos" if r[1] > 0 else "neg")
        counts[key] = counts.get(key, 0) + 1
    print(f"{len(rows)} snippets: " + ", ".join(f"{s}/{l} {n}" for (s, l), n in sorted(counts.items())))


if __name__ == "__main__":
    main()
