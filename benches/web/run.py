"""Side by side, in one run: main-text extraction quality and speed of quern, trafilatura and
resiliparse on newspaper4k 0.9.6's real pages, and WARC reading speed of quern, warcio and
fastwarc. Called by benches/web/run.sh (which installs the peers); prints a Markdown report.

usage: run.py QUERN NEWSPAPER_DATA WORK_DIR [--repeat N]

Quality: token precision/recall/F1 (tests/peers/web_f1.py) on the 23 gold pages, split into
the 16 pages the extraction was tuned on and the 7 held out (benches/web/holdout.txt).
quern's texts come from `quern ingest` of the warcio-written pages.warc.gz (the WARC path);
trafilatura.extract(html) and resiliparse's extract_plain_text(html, main_content=True), both
with their defaults, get the page decoded as UTF-8 (every gold page is UTF-8).

Speed: every tool on one core (`taskset -c 0`, the process and all its threads), over all 30
pages, as pages per CPU second (user + system time, so that other load on a shared machine
counts less than in wall time, which is printed too). quern: `quern ingest` of N copies of pages.warc.gz (gzip, WARC and HTTP parsing,
charset, extraction, Parquet writing, process start: everything); trafilatura and
resiliparse: extraction alone on the decoded pages, in a loop (N passes for resiliparse,
fewer for trafilatura, which is slower; pages/s is per page either way). WARC reading:
records/s over N copies of pages.warc.gz; warcio and fastwarc iterate every record and read
its content to the end; quern runs `quern ingest --max-page-bytes 1`, which inflates and
parses every record and skips (without extracting) every payload, writing each record's row.
"""

import glob
import json
import os
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tests", "peers"))
import web_f1  # noqa: E402


def one_core(cmd):
    return ["taskset", "-c", "0", *cmd]


def timed(cmd, **kw):
    """CPU seconds (user + system) of the command and its threads, and wall seconds."""
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, **kw)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), wall


def quern_texts(quern, warc, out):
    import pyarrow.parquet as pq

    shutil.rmtree(out, ignore_errors=True)
    subprocess.run([quern, "ingest", warc, "--out", out], check=True, stdout=subprocess.DEVNULL)
    texts = {}
    for f in sorted(glob.glob(os.path.join(out, "docs", "*.parquet"))):
        for r in pq.read_table(f).to_pylist():
            url = json.loads(r["meta"])["url"]
            name = url.rsplit("/", 1)[1]
            if name.endswith(".html") and ".cp1252" not in name:
                texts[name[:-5]] = r["text"]
    return texts


PEER_SCRIPT = r"""
import json, sys, time, os
tool, pages_dir, names, passes, out = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
pages = {n: open(os.path.join(pages_dir, n + ".html"), "rb").read().decode("utf-8", "replace") for n in names}
if tool == "trafilatura":
    import trafilatura
    f = lambda h: trafilatura.extract(h) or ""
else:
    from resiliparse.extract.html2text import extract_plain_text
    f = lambda h: extract_plain_text(h, main_content=True)
texts = {n: f(h) for n, h in pages.items()}  # warm-up pass, also the texts scored
t, w = time.process_time(), time.perf_counter()
for _ in range(passes):
    for h in pages.values():
        f(h)
dt, wall = time.process_time() - t, time.perf_counter() - w
json.dump({"texts": texts, "seconds": dt, "wall": wall, "pages": passes * len(pages)}, open(out, "w"))
"""

READ_SCRIPT = r"""
import sys, time, glob
tool, files = sys.argv[1], sys.argv[2:]
n = 0
t, w = time.process_time(), time.perf_counter()
if tool == "warcio":
    from warcio.archiveiterator import ArchiveIterator
    for f in files:
        with open(f, "rb") as fh:
            for r in ArchiveIterator(fh):
                r.content_stream().read()
                n += 1
else:
    from fastwarc.warc import ArchiveIterator, WarcRecordType
    for f in files:
        with open(f, "rb") as fh:
            for r in ArchiveIterator(fh, record_types=WarcRecordType.any_type, parse_http=True):
                r.reader.read()
                n += 1
print(n, time.process_time() - t, time.perf_counter() - w)
"""


def main():
    quern, data, work = sys.argv[1], sys.argv[2], sys.argv[3]
    repeat = int(sys.argv[sys.argv.index("--repeat") + 1]) if "--repeat" in sys.argv else 10
    py = sys.executable
    fx = os.path.join(work, "fixtures")
    subprocess.run([py, os.path.join(REPO, "tests/peers/warc_fixtures.py"), data, fx], check=True,
                   stderr=subprocess.DEVNULL)
    held = web_f1.holdout(os.path.join(HERE, "holdout.txt"))
    gold_dir = os.path.join(data, "txt")
    gold = web_f1.gold_pages(gold_dir, os.path.join(data, "html"))
    all_pages = sorted(n[:-5] for n in os.listdir(os.path.join(data, "html")))

    # Quality.
    results = {}
    results["quern"] = {"texts": quern_texts(quern, os.path.join(fx, "pages.warc.gz"), os.path.join(work, "q"))}
    for tool, passes in [("trafilatura", max(1, repeat // 5)), ("resiliparse", repeat)]:
        out = os.path.join(work, tool + ".json")
        subprocess.run(one_core([py, "-c", PEER_SCRIPT, tool, os.path.join(data, "html"),
                                 json.dumps(all_pages), str(passes), out]), check=True)
        results[tool] = json.load(open(out))
    scores = {t: web_f1.evaluate(gold_dir, r["texts"], held, gold) for t, r in results.items()}

    # Extraction speed of quern: the whole WARC path on one core.
    copies = os.path.join(work, "copies")
    os.makedirs(copies, exist_ok=True)
    for i in range(repeat):
        shutil.copy(os.path.join(fx, "pages.warc.gz"), os.path.join(copies, f"c{i:03}.warc.gz"))
    files = sorted(glob.glob(os.path.join(copies, "*.warc.gz")))
    out = os.path.join(work, "qspeed")
    shutil.rmtree(out, ignore_errors=True)
    dt, wall = timed(one_core([quern, "ingest", copies, "--out", out]))
    results["quern"].update(seconds=dt, wall=wall, pages=len(all_pages) * repeat)

    # WARC reading.
    records = {}
    for tool in ["warcio", "fastwarc"]:
        p = subprocess.run(one_core([py, "-c", READ_SCRIPT, tool, *files]), check=True,
                           capture_output=True, text=True)
        n, s, w = p.stdout.split()
        records[tool] = (int(n), float(s), float(w))
    shutil.rmtree(out, ignore_errors=True)
    dt, wall = timed(one_core([quern, "ingest", copies, "--out", out, "--max-page-bytes", "1"]))
    man = json.load(open(os.path.join(out, "manifest.json")))
    records["quern"] = (man["accounting"]["input"], dt, wall)

    load = open("/proc/loadavg").read().split()[:3]
    print(f"Load average before/after: {' '.join(load)} (2-core machine, shared)\n")
    print("| tool | F1 tuned (16) | F1 held out (7) | P / R / F1 all (23) | pages per CPU second | (per wall second) |")
    print("|---|---|---|---|---|---|")
    speed = {}
    for t in ["quern", "trafilatura", "resiliparse"]:
        s = scores[t]
        r = results[t]
        speed[t] = r["pages"] / r["seconds"]
        a = s["all"]
        print(f"| {t} | {s['tuned']['f1']:.3f} | {s['held_out']['f1']:.3f} | "
              f"{a['p']:.3f} / {a['r']:.3f} / {a['f1']:.3f} | {speed[t]:.1f} | {r['pages'] / r['wall']:.1f} |")
    print(f"\nquern pages/s: {speed['quern'] / speed['trafilatura']:.1f}x trafilatura's, "
          f"{speed['quern'] / speed['resiliparse']:.2f}x resiliparse's.\n")
    print("| reader | records | CPU seconds | records per CPU second | (per wall second) |")
    print("|---|---|---|---|---|")
    for t in ["quern", "warcio", "fastwarc"]:
        n, s, w = records[t]
        print(f"| {t} | {n} | {s:.2f} | {n / s:.0f} | {n / w:.0f} |")
    q = records["quern"][0] / records["quern"][1]
    print(f"\nquern records/s: {q / (records['warcio'][0] / records['warcio'][1]):.2f}x warcio's, "
          f"{q / (records['fastwarc'][0] / records['fastwarc'][1]):.2f}x fastwarc's.")
    json.dump({"scores": {t: {k: v for k, v in s.items() if k != 'pages'} for t, s in scores.items()},
               "pages": {t: s["pages"] for t, s in scores.items()}, "speed": speed,
               "records": records}, open(os.path.join(work, "results.json"), "w"), indent=1)


if __name__ == "__main__":
    main()
