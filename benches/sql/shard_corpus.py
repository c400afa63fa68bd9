#!/usr/bin/env python3
"""Fallback for benches/sql/run.sh while `quern ingest` is not in the binary: writes a JSONL
corpus as a quern output directory (docs shards + manifest.json) with pyarrow, in the layout
core's ShardWriter uses: document schema (id, text, source, meta), zstd level 3, row groups
of 4,096 rows, shards of at most 100,000 rows. Once `quern ingest` exists, run.sh uses it.

Usage: shard_corpus.py CORPUS.jsonl OUT_DIR
"""

import json
import os
import sys

import pyarrow as pa
import pyarrow.parquet as pq

ROWS_PER_SHARD = 100_000
ROW_GROUP = 4096


def main():
    src, out = sys.argv[1], sys.argv[2]
    os.makedirs(os.path.join(out, "docs"), exist_ok=True)
    schema = pa.schema([("id", pa.string(), False), ("text", pa.string(), False),
                        ("source", pa.string(), False), ("meta", pa.string(), True)])
    cols = {"id": [], "text": [], "source": [], "meta": []}
    shards = []

    def flush():
        if not cols["id"]:
            return
        name = f"docs/part-corpus-{len(shards):05d}.parquet"
        table = pa.table(cols, schema=schema)
        pq.write_table(table, os.path.join(out, name), compression="zstd", compression_level=3,
                       row_group_size=ROW_GROUP)
        shards.append({"file": name, "rows": table.num_rows,
                       "bytes": os.path.getsize(os.path.join(out, name)), "xxh3": "0" * 16})
        for v in cols.values():
            v.clear()

    with open(src, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            rec = json.loads(line)
            cols["id"].append(str(rec.pop("id", f"{os.path.basename(src)}:{n}")))
            cols["text"].append(rec.pop("text"))
            cols["source"].append(rec.pop("source", "corpus"))
            cols["meta"].append(json.dumps(rec, ensure_ascii=False) if rec else None)
            if len(cols["id"]) >= ROWS_PER_SHARD:
                flush()
    flush()
    rows = sum(s["rows"] for s in shards)
    manifest = {
        "format": 1, "quern_version": "0.1.0", "kind": "ingest", "config_hash": "0" * 16,
        "config": {"inputs": [src], "writer": "benches/sql/shard_corpus.py"},
        "units": {"00000": {"tables": {"docs": shards},
                            "files": [{"file": src, "records": rows, "ingested": rows, "quarantined": 0,
                                       "bytes": os.path.getsize(src)}],
                            "stages": []}},
        "complete": True, "accounting": None,
    }
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=2)
    print(f"{rows} documents in {len(shards)} shards under {out}")


if __name__ == "__main__":
    main()
