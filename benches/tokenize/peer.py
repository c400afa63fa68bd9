"""Python peers for benches/tokenize/run.sh.

  peer.py to_parquet CORPUS.jsonl OUT_DIR SHARDS   corpus -> docs shards (id, text, source)
  peer.py encode DOCS_DIR TOKENIZER.json BATCH     Python tokenizers encode_batch, timed

Prints one JSON line per measurement. Reading the Parquet texts is not timed, so the
Python number is the encode_batch throughput alone.
"""
import glob, json, os, sys, time

import pyarrow as pa
import pyarrow.parquet as pq


def to_parquet(corpus, out, shards):
    os.makedirs(out, exist_ok=True)
    rows = [json.loads(l) for l in open(corpus, encoding="utf-8") if l.strip()]
    n = len(rows)
    per = (n + shards - 1) // shards
    for k in range(shards):
        part = rows[k * per:(k + 1) * per]
        t = pa.table({
            "id": [r["id"] for r in part],
            "text": [r["text"] for r in part],
            "source": [r.get("source", "") for r in part],
        })
        pq.write_table(t, os.path.join(out, f"part-{k:05d}.parquet"), compression="zstd")
    print(json.dumps({"what": "to_parquet", "docs": n, "shards": shards}))


def encode(docs, tokenizer, batch):
    from tokenizers import Tokenizer
    texts = []
    for f in sorted(glob.glob(os.path.join(docs, "*.parquet"))):
        texts.extend(pq.read_table(f, columns=["text"]).column("text").to_pylist())
    tok = Tokenizer.from_file(tokenizer)
    nbytes = sum(len(t.encode("utf-8")) for t in texts)
    t0 = time.perf_counter()
    ids = 0
    for i in range(0, len(texts), batch):
        for e in tok.encode_batch(texts[i:i + batch], add_special_tokens=False):
            ids += len(e.ids)
    dt = time.perf_counter() - t0
    print(json.dumps({"what": "python_encode_batch", "bytes": nbytes, "tokens": ids, "seconds": round(dt, 3)}))


if __name__ == "__main__":
    if sys.argv[1] == "to_parquet":
        to_parquet(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        encode(sys.argv[2], sys.argv[3], int(sys.argv[4]))
