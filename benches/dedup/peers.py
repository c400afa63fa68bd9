"""Runs one peer near-dedup tool over a JSONL corpus with quern's defaults (datatrove's:
simplify_text, 5-word shingles, 112 permutations in 14 bands of 8) and writes its clusters.

usage: peers.py {datasketch,rensa,datatrove} CORPUS.jsonl OUT.tsv WORKDIR
Prints one JSON line: tool, documents, seconds (everything from reading the corpus to the
clusters), docs_per_s. OUT.tsv has `id<TAB>cluster` for every document.
"""
import json, os, shutil, sys, time

tool, corpus, out, work = sys.argv[1:5]
BANDS, ROWS, NGRAM = 14, 8, 5
NUM_PERM = BANDS * ROWS


def shingles(text, simplify):
    w = simplify(text).split()
    return [" ".join(w[i:i + NGRAM]) for i in range(len(w) - NGRAM + 1)]


class UF:
    def __init__(self, n):
        self.p = list(range(n))

    def find(self, x):
        while self.p[x] != x:
            self.p[x] = self.p[self.p[x]]
            x = self.p[x]
        return x

    def union(self, a, b):
        a, b = self.find(a), self.find(b)
        if a != b:
            self.p[max(a, b)] = min(a, b)


def write(ids, labels):
    with open(out, "w") as f:
        for i, l in zip(ids, labels):
            f.write(f"{i}\t{l}\n")


t0 = time.time()
if tool in ("datasketch", "rensa"):
    from datatrove.utils.text import simplify_text
    ids, sh = [], []
    with open(corpus) as f:
        for line in f:
            d = json.loads(line)
            ids.append(d["id"])
            sh.append(shingles(d["text"], simplify_text))
    uf = UF(len(ids))
    if tool == "datasketch":
        from datasketch import MinHash, MinHashLSH
        lsh = MinHashLSH(num_perm=NUM_PERM, params=(BANDS, ROWS))
        sigs = []
        for i, s in enumerate(sh):
            m = MinHash(num_perm=NUM_PERM, seed=1)
            m.update_batch([x.encode() for x in s])
            sigs.append(m)
            if s:
                lsh.insert(i, m)
        for i, m in enumerate(sigs):
            if sh[i]:
                for j in lsh.query(m):
                    uf.union(i, j)
    else:
        from rensa import RMinHash, RMinHashLSH
        lsh = RMinHashLSH(threshold=(1 / BANDS) ** (1 / ROWS), num_perm=NUM_PERM, num_bands=BANDS)
        sigs = []
        for i, s in enumerate(sh):
            m = RMinHash(num_perm=NUM_PERM, seed=1)
            m.update(s)
            sigs.append(m)
            if s:
                lsh.insert(i, m)
        for i, m in enumerate(sigs):
            if sh[i]:
                for j in lsh.query(m):
                    uf.union(i, j)
    labels = [ids[uf.find(i)] for i in range(len(ids))]
    write(ids, labels)
elif tool == "datatrove":
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup.minhash import (MinhashConfig, MinhashDedupBuckets, MinhashDedupCluster,
                                                  MinhashDedupFilter, MinhashDedupSignature)
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter
    shutil.rmtree(work, ignore_errors=True)
    cfg = MinhashConfig(n_grams=NGRAM, num_buckets=BANDS, hashes_per_bucket=ROWS)
    d, name = os.path.split(os.path.abspath(corpus))
    reader = lambda: JsonlReader(d, glob_pattern=name, compression=None)
    LocalPipelineExecutor([reader(), MinhashDedupSignature(f"{work}/sigs", config=cfg)], tasks=1,
                          logging_dir=f"{work}/logs1").run()
    LocalPipelineExecutor([MinhashDedupBuckets(f"{work}/sigs", f"{work}/buckets", config=cfg)], tasks=BANDS,
                          workers=1, logging_dir=f"{work}/logs2").run()
    LocalPipelineExecutor([MinhashDedupCluster(f"{work}/buckets", f"{work}/remove", config=cfg, save_cluster_id=True)],
                          tasks=1, logging_dir=f"{work}/logs3").run()
    LocalPipelineExecutor([reader(), MinhashDedupFilter(f"{work}/remove", load_cluster_ids=True,
                                                        exclusion_writer=JsonlWriter(f"{work}/removed", compression=None)),
                           JsonlWriter(f"{work}/kept", compression=None)], tasks=1, logging_dir=f"{work}/logs4").run()
    ids, labels = [], []
    for sub in ("kept", "removed"):
        for fn in sorted(os.listdir(f"{work}/{sub}")):
            with open(f"{work}/{sub}/{fn}") as f:
                for line in f:
                    r = json.loads(line)
                    ids.append(r["id"])
                    c = r.get("metadata", {}).get("minhash_cluster_id")
                    labels.append(f"c{c}" if c is not None and c != -1 else r["id"])
    write(ids, labels)
else:
    sys.exit(f"unknown tool {tool}")
secs = time.time() - t0
print(json.dumps({"tool": tool, "documents": len(ids), "seconds": secs, "docs_per_s": len(ids) / secs}))
