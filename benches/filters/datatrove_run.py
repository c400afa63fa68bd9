"""Runs datatrove's Gopher quality, Gopher repetition, C4 quality and FineWeb quality
filters over a JSONL corpus, one document at a time (the filters' own `filter` method),
and writes `id<TAB>filter<TAB>reason` (`keep` when kept). Prints docs/s per filter
(one process, one core).

Usage: datatrove_run.py CORPUS.jsonl LIMIT DECISIONS.tsv
"""
import json
import sys
import time

from datatrove.data import Document
from datatrove.pipeline.filters import (
    C4QualityFilter,
    FineWebQualityFilter,
    GopherQualityFilter,
    GopherRepetitionFilter,
)

corpus, limit, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
docs = []
with open(corpus, encoding="utf-8") as f:
    for i, line in enumerate(f):
        if i >= limit:
            break
        d = json.loads(line)
        docs.append((d["id"], d["text"]))
nbytes = sum(len(t.encode("utf-8")) for _, t in docs)

filters = [
    ("gopher_quality", GopherQualityFilter()),
    ("gopher_repetition", GopherRepetitionFilter()),
    ("c4", C4QualityFilter()),
    ("fineweb", FineWebQualityFilter()),
]
with open(out, "w", encoding="utf-8") as w:
    for name, flt in filters:
        flt.filter(Document(text="Warm up the tokenizer. It loads spaCy once.", id="warmup"))
        rows = []
        t0 = time.perf_counter()
        for doc_id, text in docs:
            try:
                r = flt.filter(Document(text=text, id=doc_id))
            except Exception as e:  # datatrove raises on some inputs (e.g. division by zero)
                r = (False, "error_" + type(e).__name__)
            if r is True:
                rows.append((doc_id, "keep"))
            elif isinstance(r, tuple):
                rows.append((doc_id, r[1]))
            else:
                rows.append((doc_id, "drop"))
        secs = time.perf_counter() - t0
        print(f"datatrove {name}: {len(docs)} docs in {secs:.2f}s = {len(docs) / secs:.0f} docs/s/core, "
              f"{nbytes / 1e6 / secs:.2f} MB/s/core", flush=True)
        for doc_id, reason in rows:
            w.write(f"{doc_id}\t{name}\t{reason}\n")
