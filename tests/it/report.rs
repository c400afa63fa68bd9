//! The HTML reports (issue 19): `quern build` writes `report.html` next to `report.json`,
//! `quern report DIR` regenerates it, byte for byte, and renders a training run's page and a
//! tokenized output's; the page is self-contained (nothing fetched, no script), well-formed,
//! holds a chart per section and the numbers of report.json, marks the stages' thresholds on
//! the signal histograms at their values, counts duplicate clusters and documents per split
//! as pyarrow does from the shards, and headless Chromium renders its charts.

use std::path::{Path, PathBuf};

use crate::common::*;

/// The demo's cleaning and dedup stages, a split and a keyword label (`topic_label`) over the
/// mixed-source fixture, with exact copies of a dozen of its documents (one to three each)
/// for the dedup stages to cluster; returns the output directory.
fn build(root: &Path) -> PathBuf {
    std::fs::create_dir(root.join("in")).unwrap();
    std::fs::copy(fixture("corpus/mixed.jsonl"), root.join("in/mixed.jsonl")).unwrap();
    let docs = read_jsonl(&fixture("corpus/mixed.jsonl"));
    let mut dups = String::new();
    for (i, d) in docs.iter().step_by(7).take(12).enumerate() {
        for k in 0..1 + i % 3 {
            let mut d = d.clone();
            d["id"] = format!("copy-{i}-{k}").into();
            dups.push_str(&format!("{d}\n"));
        }
    }
    std::fs::write(root.join("in/copies.jsonl"), dups).unwrap();
    let pipeline = root.join("p.toml");
    std::fs::write(
        &pipeline,
        "[input]\npaths = [\"in\"]\n\n[output]\ndir = \"out\"\n\n\
         [[stages]]\ntype = \"normalize\"\n\n\
         [[stages]]\ntype = \"gopher_quality\"\nmin_doc_words = 20\n\n\
         [[stages]]\ntype = \"c4\"\nrewrite = false\nmin_num_sentences = 1\n\n\
         [[stages]]\ntype = \"exact_dedup\"\n\n\
         [[stages]]\ntype = \"minhash_dedup\"\n\n\
         [[stages]]\ntype = \"split\"\ntrain = 0.6\nval = 0.2\ntest = 0.2\n\n\
         [[stages]]\ntype = \"rules\"\nname = \"topic_label\"\n\
         labels = [{name = \"legal\", keywords = [\"license\", \"copyright\"]}, \
         {name = \"mail\", keywords = [\"wrote\", \"subject\"]}]\n",
    )
    .unwrap();
    run_ok(quern().args(["build", "--quiet"]).arg(&pipeline));
    root.join("out")
}

/// Checks that every tag opened is closed in order (void elements and `<x/>` aside), the
/// way an XML parser would read the page: text and attributes are escaped, so every `<`
/// starts a tag.
fn assert_well_formed(html: &str) {
    const VOID: [&str; 6] = ["meta", "br", "hr", "img", "input", "link"];
    let mut open: Vec<&str> = Vec::new();
    let mut rest = html;
    while let Some(i) = rest.find('<') {
        let end = rest[i..]
            .find('>')
            .unwrap_or_else(|| panic!("unclosed tag at {}", &rest[i..]));
        let tag = &rest[i + 1..i + end];
        rest = &rest[i + end + 1..];
        if tag.starts_with('!') {
            continue;
        }
        if let Some(name) = tag.strip_prefix('/') {
            let top = open.pop();
            assert_eq!(top, Some(name.trim()), "</{name}> closes {top:?}");
            continue;
        }
        let name = tag.split([' ', '/']).next().unwrap();
        assert!(
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric()),
            "odd tag <{tag}>"
        );
        if !tag.ends_with('/') && !VOID.contains(&name) {
            open.push(name);
        }
    }
    assert!(open.is_empty(), "never closed: {open:?}");
}

/// Nothing the page would fetch or run.
fn assert_self_contained(html: &str) {
    for bad in [
        "http://", "https://", "<script", "<link", "<img", "@import", "url(",
    ] {
        assert!(!html.contains(bad), "the page holds {bad:?}");
    }
}

#[test]
fn build_report_html() {
    let dir = tempfile::tempdir().unwrap();
    let out = build(dir.path());
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert_well_formed(&html);
    assert_self_contained(&html);

    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    let a = &report["accounting"];
    assert_eq!(html.matches("<svg").count(), html.matches("</svg>").count());
    let stages = a["stages"].as_array().unwrap();
    assert_eq!(stages.len(), 7);
    let with_reasons = stages
        .iter()
        .filter(|s| !s["reasons"].as_object().unwrap().is_empty())
        .count();
    assert!(with_reasons >= 2, "{stages:?}");
    // Documents, seconds and bytes per stage, a reason chart per rejecting stage, and a
    // histogram per signal column (gopher's and c4's).
    let charts = html.matches("<svg").count();
    assert!(charts > 3 + with_reasons, "{charts} charts");
    assert!(html.contains("Signals of the kept documents"));
    // Kept documents by source: the bars' values add up to the kept count.
    let (_, by_source) = html
        .split_once("<title>Kept documents by source</title>")
        .expect("a chart of kept documents by source");
    let by_source = &by_source[..by_source.find("</svg>").unwrap()];
    let total: u64 = by_source
        .split("</title></rect>")
        .filter_map(|s| s.rsplit_once(": ")?.1.parse::<u64>().ok())
        .sum();
    assert_eq!(total, a["kept"].as_u64().unwrap(), "{by_source}");
    assert!(
        html.contains("<title>gopher_"),
        "a histogram of a gopher signal"
    );
    for key in ["input", "kept", "rejected", "quarantined"] {
        assert!(
            html.contains(&format!("<b>{}</b>", a[key])),
            "the {key} count {}",
            a[key]
        );
    }
    for s in stages {
        let name = s["stage"].as_str().unwrap();
        let row = format!(
            "<tr><td>{name}</td><td>{}</td><td>{}</td><td>{}</td>",
            s["input"], s["kept"], s["rejected"]
        );
        assert!(html.contains(&row), "{row}");
        for (reason, n) in s["reasons"].as_object().unwrap() {
            assert!(
                html.contains(&format!("<tr><td>{reason}</td><td>{n}</td>")),
                "{name}: {reason} {n}"
            );
        }
        let secs = report["timing"]["stage_seconds"][name].as_f64().unwrap();
        assert!(
            html.contains(&format!("<td>{secs:.3}</td>")),
            "{name} {secs}"
        );
    }
    for f in a["files"].as_array().unwrap() {
        assert!(html.contains(&format!(
            "<td>{}</td><td>{}</td><td>{}</td>",
            f["records"], f["ingested"], f["quarantined"]
        )));
    }

    assert_thresholds_marked(&html);
    assert_clusters_and_splits(&out, &html);

    // `quern report` makes the same page from the files alone.
    let again = dir.path().join("again.html");
    let printed = run_ok(quern().arg("report").arg(&out).arg("--out").arg(&again));
    assert!(String::from_utf8_lossy(&printed.stdout).contains("again.html"));
    assert!(std::fs::read_to_string(&again).unwrap() == html);
    std::fs::remove_file(out.join("report.html")).unwrap();
    run_ok(quern().arg("report").arg(&out));
    assert!(std::fs::read_to_string(out.join("report.html")).unwrap() == html);
}

/// The chart whose `<title>` is `title`, up to its `</svg>`.
fn chart<'a>(html: &'a str, title: &str) -> &'a str {
    let (_, rest) = html
        .split_once(&format!("<title>{title}</title>"))
        .unwrap_or_else(|| panic!("no chart titled {title}"));
    &rest[..rest.find("</svg>").unwrap()]
}

/// A number as an axis tick prints it (`fmt_num`: `12.5k`, `3M`).
fn tick_value(s: &str) -> Option<f64> {
    for (suffix, mul) in [("k", 1e3), ("M", 1e6), ("G", 1e9)] {
        if let Some(n) = s.strip_suffix(suffix) {
            return Some(n.parse::<f64>().ok()? * mul);
        }
    }
    s.parse().ok()
}

/// The pipeline's `gopher_quality.min_doc_words = 20` and `c4.min_num_sentences = 1` are red
/// lines on their columns' histograms at 20 and 1 on the charts' own x axes (read back from
/// the tick labels' positions), labelled with the parameter, with the rejected side shaded
/// and listed in the thresholds table; gopher's default `max_doc_words = 100000`, far above
/// every kept document, sits at the right edge and says so.
fn assert_thresholds_marked(html: &str) {
    assert!(html.contains(
        "<tr><td>gopher_quality</td><td>min_doc_words</td><td>gopher_word_count</td>\
         <td>&gt;= 20</td><td>gopher_short_doc</td></tr>"
    ));
    for (column, label, value) in [
        ("gopher_word_count", "min_doc_words = 20", 20.0),
        ("c4_sentences", "min_num_sentences = 1", 1.0),
    ] {
        let svg = chart(html, column);
        // The x-axis ticks: `<text class="tick" x=".." y="270" text-anchor="middle">v</text>`.
        let ticks: Vec<(f64, f64)> = svg
            .split("<text class=\"tick\" x=\"")
            .skip(1)
            .filter(|t| t.contains("text-anchor=\"middle\""))
            .filter_map(|t| {
                let x: f64 = t[..t.find('"')?].parse().ok()?;
                let label = &t[t.find('>')? + 1..t.find('<')?];
                Some((tick_value(label)?, x))
            })
            .collect();
        assert!(ticks.len() >= 2, "{column}: ticks {ticks:?}");
        let ((v0, x0), (v1, x1)) = (ticks[0], ticks[ticks.len() - 1]);
        let want = x0 + (value - v0) / (v1 - v0) * (x1 - x0);
        let line = svg
            .split("<line class=\"threshold\" x1=\"")
            .skip(1)
            .find(|l| l.contains(&format!(">{label}</text>")))
            .unwrap_or_else(|| panic!("{column}: no line labelled {label}"));
        let x: f64 = line[..line.find('"').unwrap()].parse().unwrap();
        assert!(
            (x - want).abs() < 0.15,
            "{column}: the {label} line at x {x}, the axis puts {value} at {want}"
        );
        assert!(!line[..line.find("</line>").unwrap()].contains("dasharray"));
        assert!(svg.contains("<rect class=\"rejected\""), "{column}");
    }
    let words = chart(html, "gopher_word_count");
    assert!(
        words.contains("max_doc_words = 100000 \u{2192}</text>"),
        "the far maximum at the edge"
    );
}

/// The duplicate clusters and the per-split and per-label tables, against pyarrow reading the
/// shards the manifest lists: `dup_of` in the rejected rows' `details`, grouped by stage and
/// kept document; documents, UTF-8 bytes and whitespace words of the kept texts per split and
/// per `topic_label` (null as `(none)`).
fn assert_clusters_and_splits(out: &Path, html: &str) {
    let py = run_ok(
        std::process::Command::new(python())
            .arg("-c")
            .arg(
                "import json, sys, collections\n\
                 import pyarrow.parquet as pq\n\
                 out = sys.argv[1]\n\
                 m = json.load(open(out + '/manifest.json'))\n\
                 files = lambda t: sorted(s['file'] for u in m['units'].values() for s in u['tables'].get(t, []))\n\
                 reps = collections.defaultdict(collections.Counter)\n\
                 for f in files('rejected'):\n\
                 \x20   for r in pq.read_table(out + '/' + f).to_pylist():\n\
                 \x20       d = json.loads(r['details']) if r['details'] else {}\n\
                 \x20       if d.get('dup_of'):\n\
                 \x20           reps[r['rejected_by']][d['dup_of']] += 1\n\
                 clusters = {s: {'clusters': len(c), 'removed': sum(c.values()),\n\
                 \x20   'sizes': collections.Counter(n + 1 for n in c.values())} for s, c in reps.items()}\n\
                 splits = collections.defaultdict(lambda: [0, 0, 0])\n\
                 labels = collections.defaultdict(lambda: [0, 0, 0])\n\
                 for f in files('docs'):\n\
                 \x20   for r in pq.read_table(out + '/' + f, columns=['text', 'split', 'topic_label']).to_pylist():\n\
                 \x20       for t in (splits[r['split']], labels[r['topic_label'] or '(none)']):\n\
                 \x20           t[0] += 1; t[1] += len(r['text'].encode()); t[2] += len(r['text'].split())\n\
                 print(json.dumps({'clusters': clusters, 'splits': splits, 'labels': labels}))",
            )
            .arg(out),
    );
    let v: serde_json::Value = serde_json::from_slice(&py.stdout).unwrap();
    let clusters = v["clusters"].as_object().unwrap();
    assert!(
        clusters
            .get("exact_dedup")
            .is_some_and(|c| c["clusters"].as_u64() > Some(0)),
        "the copies make exact_dedup clusters: {v}"
    );
    for stage in ["exact_dedup", "minhash_dedup"] {
        let c = &v["clusters"][stage];
        let (n, removed) = (
            c["clusters"].as_u64().unwrap_or(0),
            c["removed"].as_u64().unwrap_or(0),
        );
        let sizes = c["sizes"].as_object().cloned().unwrap_or_default();
        let largest = sizes
            .keys()
            .map(|k| k.parse::<u64>().unwrap())
            .max()
            .unwrap_or(0);
        let row = format!(
            "<tr><td>{stage}</td><td>{n}</td><td>{removed}</td><td>{}</td><td>{largest}</td></tr>",
            n + removed
        );
        assert!(html.contains(&row), "{row}");
        if n > 0 {
            let svg = chart(html, &format!("{stage}: clusters by size"));
            for (size, k) in &sizes {
                assert!(
                    svg.contains(&format!("<title>{size} documents: {k}</title>")),
                    "{stage}: {k} clusters of {size}"
                );
            }
        }
    }
    let splits = v["splits"].as_object().unwrap();
    assert!(splits.len() >= 2, "{splits:?}");
    let labels = v["labels"].as_object().unwrap();
    assert!(labels.len() >= 2, "{labels:?}");
    let (_, by_label) = html
        .split_once("<h3>By topic_label</h3>")
        .expect("a table by topic_label");
    let by_label = &by_label[..by_label.find("</table>").unwrap()];
    for (rows, html) in [(splits, html), (labels, by_label)] {
        for (value, t) in rows {
            let row = format!(
                "<tr><td>{value}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                t[0], t[1], t[2]
            );
            assert!(html.contains(&row), "{row}");
        }
    }
}

#[test]
fn report_of_neither_kind_or_corrupt_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let e = run_err(quern().arg("report").arg(d));
    assert!(e.contains("neither a build output directory"), "{e}");
    std::fs::write(d.join("report.json"), "{\"accounting\": ").unwrap();
    let e = run_err(quern().arg("report").arg(d));
    assert!(
        e.contains("report.json") && e.contains("not valid JSON"),
        "{e}"
    );
    std::fs::write(d.join("report.json"), "{}").unwrap();
    std::fs::write(
        d.join("metrics.jsonl"),
        "{\"step\": 1, \"loss\": 2.0}\nnot json\n",
    )
    .unwrap();
    let e = run_err(quern().arg("report").arg(d));
    assert!(e.contains("metrics.jsonl:2"), "{e}");
    std::fs::write(d.join("manifest.json"), "{}").unwrap();
    std::fs::write(
        d.join("report.json"),
        "{\"accounting\": {\"input\": \"x\"}}",
    )
    .unwrap();
    let e = run_err(quern().arg("report").arg(d));
    assert!(e.contains("report.json") && e.contains("accounting"), "{e}");
    assert!(!d.join("report.html").exists());
}

/// A run directory as `quern train` leaves it: metrics.jsonl (logged steps and
/// evaluations) and report.json (the summary with every step).
fn synthetic_run(dir: &Path) {
    let mut metrics = String::new();
    let mut losses = Vec::new();
    for step in 1..=40u64 {
        let skipped = step == 17;
        let row = serde_json::json!({
            "step": step,
            "loss": if skipped { serde_json::Value::Null } else { (4.0 - 0.05 * step as f64).into() },
            "lr": 1e-3 * (step.min(5) as f64) / 5.0,
            "grad_norm": if skipped { serde_json::Value::Null } else { (1.0 / step as f64).into() },
            "tokens": 256,
            "tokens_per_s": 1000.0 + step as f64,
            "mfu": 0.01,
            "skipped": skipped,
            "loss_scale": 1.0,
        });
        let mut line = row.clone();
        line["kind"] = "step".into();
        metrics.push_str(&format!("{line}\n"));
        losses.push(row);
        if step % 20 == 0 {
            metrics.push_str(&format!(
                "{}\n",
                serde_json::json!({"step": step, "val_loss": 3.25 - step as f64 / 100.0,
                                   "val_ppl": 25.0, "kind": "eval"})
            ));
        }
    }
    std::fs::write(dir.join("metrics.jsonl"), metrics).unwrap();
    let report = serde_json::json!({
        "device": "Cpu", "objective": "clm", "parameters": 12345, "trainable_parameters": 12345,
        "model": {}, "start_step": 0, "steps": 40, "tokens_seen": 10240,
        "losses": losses,
        "evals": [{"step": 20, "val_loss": 3.05, "val_ppl": 25.0},
                  {"step": 40, "val_loss": 2.85, "val_ppl": 25.0}],
        "skipped_steps": 1, "elapsed_s": 2.5, "tokens_per_s": 1020.0, "mfu": 0.01,
        "checkpoint": null,
    });
    std::fs::write(dir.join("report.json"), report.to_string()).unwrap();
}

#[test]
fn run_report_html() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    std::fs::create_dir(&run).unwrap();
    synthetic_run(&run);
    run_ok(quern().arg("report").arg(&run));
    let html = std::fs::read_to_string(run.join("report.html")).unwrap();
    assert_well_formed(&html);
    assert_self_contained(&html);
    for title in [
        "Train and validation loss",
        "Learning rate",
        "Gradient norm",
        "Throughput",
        "Model FLOPs utilisation",
    ] {
        assert!(html.contains(&format!("<title>{title}")), "{title}");
    }
    // Loss, learning rate, gradient norm, tokens/s, MFU.
    assert_eq!(html.matches("<svg").count(), 5);
    assert!(html.contains("<polyline class=\"line\""));
    assert!(html.contains("<title>step 17 skipped"));
    assert!(html.contains("1 step had a non-finite loss or gradient and made no update (dashed red lines on the loss chart): 17."));
    assert!(html.contains("<tr><td>20</td><td>3.0500</td><td>25.0000</td></tr>"));
    assert!(html.contains("<b>12345</b>") && html.contains("<b>clm</b>"));
}

/// `quern report` on a `quern tokenize` output of the build: a row per split with the rows,
/// tokens, documents, seq_len and padding share of its meta.json (padding recomputed here
/// from rows, tokens and seq_len), and a chart of tokens per split.
#[test]
fn tokenized_report_html() {
    let dir = tempfile::tempdir().unwrap();
    let out = build(dir.path());
    let tok = dir.path().join("tokenizer.json");
    run_ok(
        quern()
            .args(["tokenizer", "train", "--vocab-size", "600", "--out"])
            .arg(&tok)
            .arg("--input")
            .arg(fixture("corpus/mixed.jsonl")),
    );
    let tokens = dir.path().join("tok");
    run_ok(
        quern()
            .args(["tokenize", "--seq-len", "48", "--corpus"])
            .arg(&out)
            .arg("--tokenizer")
            .arg(&tok)
            .arg("--out")
            .arg(&tokens),
    );
    run_ok(quern().arg("report").arg(&tokens));
    let html = std::fs::read_to_string(tokens.join("report.html")).unwrap();
    assert_well_formed(&html);
    assert_self_contained(&html);
    assert!(html.contains("<title>Tokens per split</title>"));
    let mut documents = 0;
    let mut splits = 0;
    for split in ["train", "val", "test"] {
        let p = tokens.join(split).join("meta.json");
        let m: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
        let (rows, toks, seq) = (
            m["rows"].as_u64().unwrap(),
            m["tokens"].as_u64().unwrap(),
            m["seq_len"].as_u64().unwrap(),
        );
        assert_eq!(seq, 48);
        let padding = 100.0 * (1.0 - toks as f64 / (rows * (seq + 1)) as f64);
        let row = format!(
            "<tr><td>{split}</td><td>clm</td><td>{rows}</td><td>{toks}</td><td>{}</td><td>48</td><td>{padding:.1}%</td>",
            m["documents"]
        );
        assert!(html.contains(&row), "{row}");
        documents += m["documents"].as_u64().unwrap();
        splits += 1;
    }
    assert_eq!(splits, 3);
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(documents, report["accounting"]["kept"].as_u64().unwrap());
    // A split directory alone is a report too.
    run_ok(
        quern()
            .arg("report")
            .arg(tokens.join("val"))
            .arg("--out")
            .arg(dir.path().join("val.html")),
    );
    let val = std::fs::read_to_string(dir.path().join("val.html")).unwrap();
    assert!(val.contains("<tr><td>.</td><td>clm</td>"));
}

/// The chromium binary: `QUERN_CHROMIUM`, else `chromium` on PATH. Missing, the test is
/// skipped with a note, except under CI, where it fails.
fn chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("QUERN_CHROMIUM") {
        return Some(p.into());
    }
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("chromium"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "chromium is missing: `scripts/setup.sh --test` installs it (Debian's chromium)"
        );
        eprintln!("skipped: no chromium (scripts/setup.sh --test installs it)");
    }
    found
}

fn headless(chromium: &Path, profile: &Path) -> std::process::Command {
    let mut c = std::process::Command::new(chromium);
    c.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        "--window-size=1200,2000",
    ])
    .arg(format!("--user-data-dir={}", profile.display()));
    c
}

/// The build's page as a person would see it: Chromium renders it to a non-blank
/// screenshot, and its DOM holds every chart with its bars and lines.
#[test]
fn build_report_renders_in_chromium() {
    let Some(chromium) = chromium() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = build(dir.path());
    let page = out.join("report.html");
    let html = std::fs::read_to_string(&page).unwrap();
    let url = format!("file://{}", page.display());

    let dom = run_ok(
        headless(&chromium, &dir.path().join("profile1"))
            .arg("--dump-dom")
            .arg(&url),
    );
    let dom = String::from_utf8_lossy(&dom.stdout);
    assert!(dom.contains("quern build report"), "{dom}");
    assert_eq!(dom.matches("<svg").count(), html.matches("<svg").count());
    assert_eq!(dom.matches("<rect").count(), html.matches("<rect").count());
    let marks = html.matches("<line class=\"threshold\"").count();
    assert!(marks >= 2, "{marks} threshold lines");
    assert_eq!(dom.matches("<line class=\"threshold\"").count(), marks);

    let png = dir.path().join("shot.png");
    let shot = run_ok(
        headless(&chromium, &dir.path().join("profile2"))
            .arg(format!("--screenshot={}", png.display()))
            .arg(&url),
    );
    let log = String::from_utf8_lossy(&shot.stderr);
    assert!(!log.contains("Uncaught"), "{log}");
    let bytes = std::fs::read(&png).unwrap();
    assert_eq!(&bytes[1..4], b"PNG");
    // A blank 1200x2000 page compresses to a few KB; text and charts take far more.
    assert!(bytes.len() > 40_000, "screenshot of {} bytes", bytes.len());
}
