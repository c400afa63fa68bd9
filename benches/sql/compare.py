#!/usr/bin/env python3
"""Times the same four queries in `quern sql` and DuckDB over the same Parquet shards.

Why: `quern sql` must answer the first questions about a corpus about as fast as the tool
people reach for (goal: within 1.5x of DuckDB). Both engines read exactly the shards the
corpus manifest lists, with all cores, warm page cache; each query runs RUNS times in one
process and the best time counts (quern's own timing line, DuckDB's in-process wall time),
so neither side pays process start-up or first-touch I/O. The answers of both engines are
compared, so a fast wrong answer cannot win.

Usage: compare.py QUERN_BIN CORPUS_DIR [RUNS]    (prints a Markdown table)
"""

import json
import os
import re
import subprocess
import sys
import time

import duckdb

REGEX = "https?://"
QUERIES = [
    ("count by source",
     "SELECT source, count(*) AS n FROM docs GROUP BY source ORDER BY n DESC, source",
     "SELECT source, count(*) AS n FROM docs GROUP BY source ORDER BY n DESC, source"),
    ("average length by source",
     "SELECT source, avg(length(text)) AS avg_chars FROM docs GROUP BY source ORDER BY source",
     "SELECT source, avg(length(text)) AS avg_chars FROM docs GROUP BY source ORDER BY source"),
    ("regex count",
     f"SELECT count(*) AS n FROM docs WHERE regexp_like(text, '{REGEX}')",
     f"SELECT count(*) AS n FROM docs WHERE regexp_matches(text, '{REGEX}')"),
    ("top first words",
     "SELECT split_part(text, ' ', 1) AS w, count(*) AS n FROM docs GROUP BY w ORDER BY n DESC, w LIMIT 20",
     "SELECT split_part(text, ' ', 1) AS w, count(*) AS n FROM docs GROUP BY w ORDER BY n DESC, w LIMIT 20"),
]


def same(a, b):
    """Rows equal, floats to 1e-9 relative."""
    if len(a) != len(b):
        return False
    for ra, rb in zip(a, b):
        for x, y in zip(ra, rb):
            if isinstance(x, float) or isinstance(y, float):
                if abs(float(x) - float(y)) > 1e-9 * max(1.0, abs(float(y))):
                    return False
            elif x != y:
                return False
    return True


def run_quern(binary, corpus, sql, runs):
    script = (sql + ";\n") * runs
    p = subprocess.run([binary, "sql", "--corpus", corpus, "--format", "json"], input=script,
                       capture_output=True, text=True, env=dict(os.environ, HOME=corpus))
    if p.returncode != 0 or "error" in p.stderr:
        sys.exit(f"quern sql failed on {sql}:\n{p.stderr}")
    times = [float(t) for t in re.findall(r"rows in ([0-9.]+)s", p.stderr)]
    assert len(times) == runs, p.stderr
    lines = p.stdout.splitlines()
    rows = [tuple(json.loads(l).values()) for l in lines[: len(lines) // runs]]
    return min(times), rows


def run_duckdb(con, sql, runs):
    best, rows = None, None
    for _ in range(runs):
        t = time.perf_counter()
        rows = con.execute(sql).fetchall()
        dt = time.perf_counter() - t
        best = dt if best is None else min(best, dt)
    return best, [tuple(r) for r in rows]


def main():
    binary, corpus = sys.argv[1], sys.argv[2]
    runs = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    manifest = json.load(open(os.path.join(corpus, "manifest.json")))
    shards = [os.path.join(corpus, s["file"]) for u in manifest["units"].values() for s in u["tables"].get("docs", [])]
    docs = sum(s["rows"] for u in manifest["units"].values() for s in u["tables"].get("docs", []))
    size = sum(os.path.getsize(s) for s in shards)
    con = duckdb.connect()
    con.execute(f"SET threads = {os.cpu_count()}")
    # A view cannot take a prepared parameter: the shard list goes in as a SQL list literal.
    files = ", ".join("'" + s.replace("'", "''") + "'" for s in shards)
    con.execute(f"CREATE VIEW docs AS SELECT * FROM read_parquet([{files}])")
    print(f"{docs} documents in {len(shards)} shards ({size / 1e6:.0f} MB of Parquet), {os.cpu_count()} cores, "
          f"duckdb {duckdb.__version__}, best of {runs}\n")
    print("| query | quern sql (s) | DuckDB (s) | quern / DuckDB | same answer |")
    print("|---|---:|---:|---:|---|")
    worst = 0.0
    for name, q_sql, d_sql in QUERIES:
        qt, qrows = run_quern(binary, corpus, q_sql, runs)
        dt, drows = run_duckdb(con, d_sql, runs)
        ok = same(qrows, drows)
        worst = max(worst, qt / dt)
        print(f"| {name} | {qt:.3f} | {dt:.3f} | {qt / dt:.2f}x | {'yes' if ok else 'NO'} |", flush=True)
        if not ok:
            print(f"\nquern:  {qrows[:5]}\nduckdb: {drows[:5]}", file=sys.stderr)
    print(f"\nworst ratio {worst:.2f}x (goal: at most 1.5x)")


if __name__ == "__main__":
    main()
