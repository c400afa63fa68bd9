"""Builds test WARC/WET files around newspaper4k's real news pages with warcio, an
independent writer (tests/it/web.rs, benches/web/).

usage: warc_fixtures.py NEWSPAPER4K_TESTS_DATA OUT_DIR [--big]

Writes into OUT_DIR:
  pages.warc.gz        warcinfo, then per page (sorted by name) a request and a response
                       record (HTTP 200, text/html), one gzip member per record as Common
                       Crawl writes them; then a metadata record, a redirect (301), an error
                       (404), a PDF response, a revisit record, and one page re-encoded in
                       windows-1252 with its charset declaration removed (an undeclared
                       legacy charset), served as plain `text/html`.
  pages.warc           the same records, uncompressed.
  pages.warc.wholegz.warc.gz  pages.warc gzip-compressed as one member (several records per
                       member).
  pages.wet.gz         WET: a warcinfo and one conversion record (the gold text) per gold page.
  broken_member.warc.gz  pages.warc.gz with bytes in the middle of one response's member
                       overwritten (that member no longer decodes).
  truncated.warc.gz    pages.warc.gz cut in the middle of its last member.
  overrun.warc         pages.warc whose last record declares 10,000 more content bytes
                       than the file holds.
  big.warc.gz          (--big) one 50 MB HTML page between two small ones.
  expected.json        per file: the records warcio itself reads back (type, url, offset), and
                       per URL what the writer put there (page name, kind).
"""

import gzip
import io
import json
import os
import re
import sys

from warcio.archiveiterator import ArchiveIterator
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

BASE = "http://newspaper4k.test/"


def http(status, ctype, extra=()):
    return StatusAndHeaders(status, [("Content-Type", ctype), *extra], protocol="HTTP/1.1")


def write(path, gz, records):
    with open(path, "wb") as f:
        w = WARCWriter(f, gzip=gz)
        w.write_record(w.create_warcinfo_record(os.path.basename(path), {"software": "warcio"}))
        for r in records:
            w.write_record(r(w))


def page_records(data_dir):
    html_dir = os.path.join(data_dir, "html")
    names = sorted(n[:-5] for n in os.listdir(html_dir) if n.endswith(".html"))
    kinds = {}
    recs = []
    for n in names:
        body = open(os.path.join(html_dir, n + ".html"), "rb").read()
        url = BASE + n + ".html"
        kinds[url] = {"name": n, "kind": "page"}
        req = StatusAndHeaders("GET /" + n + ".html HTTP/1.1", [("Host", "newspaper4k.test")], is_http_request=True)
        recs.append(lambda w, url=url, req=req: w.create_warc_record(url, "request", http_headers=req))
        recs.append(
            lambda w, url=url, body=body: w.create_warc_record(
                url, "response", payload=io.BytesIO(body), http_headers=http("200 OK", "text/html")
            )
        )
    meta_url = BASE + "metadata"
    recs.append(
        lambda w: w.create_warc_record(
            meta_url, "metadata", payload=io.BytesIO(b"fetchTimeMs: 12\r\n"),
            warc_content_type="application/warc-fields",
        )
    )
    kinds[meta_url] = {"name": None, "kind": "metadata"}
    red = BASE + "moved"
    recs.append(
        lambda w: w.create_warc_record(
            red, "response", payload=io.BytesIO(b"<html><body>Moved</body></html>"),
            http_headers=http("301 Moved Permanently", "text/html", [("Location", BASE + "new")]),
        )
    )
    kinds[red] = {"name": None, "kind": "redirect"}
    nf = BASE + "missing"
    recs.append(
        lambda w: w.create_warc_record(
            nf, "response", payload=io.BytesIO(b"<html><body><p>Not found</p></body></html>"),
            http_headers=http("404 Not Found", "text/html"),
        )
    )
    kinds[nf] = {"name": None, "kind": "error"}
    pdf = BASE + "paper.pdf"
    recs.append(
        lambda w: w.create_warc_record(
            pdf, "response", payload=io.BytesIO(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n"),
            http_headers=http("200 OK", "application/pdf"),
        )
    )
    kinds[pdf] = {"name": None, "kind": "pdf"}
    rev = BASE + "spanish_article.html?again"
    recs.append(
        lambda w: w.create_revisit_record(
            rev, "sha1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", BASE + "spanish_article.html",
            "2024-01-01T00:00:00Z", http_headers=http("200 OK", "text/html"),
        )
    )
    kinds[rev] = {"name": None, "kind": "revisit"}
    # An undeclared legacy charset: the Spanish page in windows-1252, its declarations removed.
    src = open(os.path.join(html_dir, "spanish_article.html"), "rb").read().decode("utf-8")
    src = re.sub(r"<meta[^>]*charset[^>]*>", "", src, flags=re.I)
    legacy = src.encode("cp1252", errors="xmlcharrefreplace")
    assert legacy != src.encode("utf-8"), "the page must hold non-ASCII text"
    cp = BASE + "spanish_article.cp1252.html"
    recs.append(
        lambda w: w.create_warc_record(
            cp, "response", payload=io.BytesIO(legacy), http_headers=http("200 OK", "text/html")
        )
    )
    kinds[cp] = {"name": "spanish_article", "kind": "legacy_charset"}
    return recs, kinds


def read_back(path):
    """What warcio reads from a file: (type, url, offset) per record, stopping at an error."""
    out = []
    try:
        with open(path, "rb") as f:
            it = ArchiveIterator(f)
            for r in it:
                r.content_stream().read()
                out.append(
                    {
                        "type": r.rec_type,
                        "url": r.rec_headers.get_header("WARC-Target-URI"),
                        "offset": it.get_record_offset(),
                    }
                )
    except Exception as e:  # noqa: BLE001 - a broken file stops warcio here
        out.append({"error": str(e)})
    return out


def main():
    data_dir, out = sys.argv[1], sys.argv[2]
    big = "--big" in sys.argv[3:]
    os.makedirs(out, exist_ok=True)
    recs, kinds = page_records(data_dir)
    gz = os.path.join(out, "pages.warc.gz")
    write(gz, True, recs)
    plain = os.path.join(out, "pages.warc")
    write(plain, False, recs)
    raw = open(plain, "rb").read()
    with open(os.path.join(out, "pages.warc.wholegz.warc.gz"), "wb") as f:
        f.write(gzip.compress(raw, mtime=0))

    # WET: the gold texts as conversion records.
    txt_dir = os.path.join(data_dir, "txt")
    wet = []
    for n in sorted(os.listdir(txt_dir)):
        if not n.endswith(".txt") or not os.path.exists(os.path.join(data_dir, "html", n[:-4] + ".html")):
            continue
        text = open(os.path.join(txt_dir, n), "rb").read()
        url = BASE + n[:-4] + ".html"
        wet.append(
            lambda w, url=url, text=text: w.create_warc_record(
                url, "conversion", payload=io.BytesIO(text), warc_content_type="text/plain"
            )
        )
    write(os.path.join(out, "pages.wet.gz"), True, wet)

    # Bad files.
    data = open(gz, "rb").read()
    offsets = [r["offset"] for r in read_back(gz)]
    # The 8th record's member (a response: warcinfo, then request/response pairs).
    start, end = offsets[8], offsets[9]
    mid = (start + end) // 2
    broken = bytearray(data)
    broken[mid : mid + 64] = b"\x00" * 64
    open(os.path.join(out, "broken_member.warc.gz"), "wb").write(bytes(broken))
    last = offsets[-1]
    open(os.path.join(out, "truncated.warc.gz"), "wb").write(data[: last + (len(data) - last) // 2])
    # The last record of the plain file declares more content than the file holds.
    pos = raw.rfind(b"WARC/1.")
    m = re.search(rb"Content-Length: (\d+)", raw[pos:])
    n = int(m.group(1))
    over = raw[: pos + m.start(1)] + str(n + 10000).encode() + raw[pos + m.end(1) :]
    open(os.path.join(out, "overrun.warc"), "wb").write(over)

    files = ["pages.warc.gz", "pages.warc", "pages.warc.wholegz.warc.gz", "pages.wet.gz",
             "broken_member.warc.gz", "truncated.warc.gz", "overrun.warc"]
    if big:
        para = ("<p>" + "A long page of real words, repeated until it weighs fifty megabytes. " * 20 + "</p>\n")
        body = ("<html><body><article>" + para * (50_000_000 // len(para) + 1) + "</article></body></html>").encode()
        small = b"<html><body><article><p>" + b"A small page with a sentence or two of text in it, enough to keep. " * 3 + b"</p></article></body></html>"
        bigrecs = [
            lambda w: w.create_warc_record(BASE + "before", "response", payload=io.BytesIO(small), http_headers=http("200 OK", "text/html")),
            lambda w: w.create_warc_record(BASE + "big", "response", payload=io.BytesIO(body), http_headers=http("200 OK", "text/html")),
            lambda w: w.create_warc_record(BASE + "after", "response", payload=io.BytesIO(small), http_headers=http("200 OK", "text/html")),
        ]
        write(os.path.join(out, "big.warc.gz"), True, bigrecs)
        files.append("big.warc.gz")
    expected = {"kinds": kinds, "files": {f: read_back(os.path.join(out, f)) for f in files}}
    json.dump(expected, open(os.path.join(out, "expected.json"), "w"), indent=1)


if __name__ == "__main__":
    main()
