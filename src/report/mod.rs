//! Self-contained HTML reports of a build and of a training run (issue 19).
//!
//! `quern build` and `quern train` leave JSON behind (`report.json`, `manifest.json`,
//! `metrics.jsonl`); people want to look at a page. This module renders one HTML file from
//! those files alone, so that `quern report DIR` can regenerate it at any time and so that
//! the `quern` library needs no model crate: charts are inline SVG drawn by [`svg`], the
//! style sheet is inline, there is no script and nothing is fetched, so the page opens
//! offline. A page holds no path and no time of its own making: rendering the same files
//! twice gives the same bytes.
//!
//! - [`build_html`]: a build output directory (`manifest.json` + `report.json`): the funnel,
//!   rejection reasons, rows, bytes and seconds per stage, quarantine and per-file counts,
//!   documents, bytes and words per split and per label, duplicate clusters by size per
//!   dedup stage, and histograms of the documents' `Float64` signal columns with the
//!   stages' thresholds marked (the stages rebuilt from the recorded config, see
//!   [`quern_core::stage::Stage::thresholds`]).
//! - [`tokens_html`]: a `quern tokenize` output directory (split directories with
//!   `meta.json`): rows, tokens, documents, sequence length and padding share per split.
//! - [`run_html`]: a training run directory (`metrics.jsonl` and/or `report.json`): train
//!   and validation loss, learning rate, gradient norm, tokens/s and MFU against steps,
//!   skipped steps and the evaluation table.

mod build;
mod run;
pub mod svg;
mod tokens;

use std::path::{Path, PathBuf};

use quern_core::error::{Error, IoContext, Place, Result};

pub use build::build_html;
pub use run::run_html;
pub use tokens::tokens_html;

/// File name of the page, next to `report.json`.
pub const REPORT_HTML: &str = "report.html";

/// What kind of directory a report is made from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A `quern build` output directory.
    Build,
    /// A `quern train` run directory.
    Run,
    /// A `quern tokenize` output directory (or one of its split directories).
    Tokens,
}

/// Tells a build output directory (`manifest.json` and a `report.json` with `accounting`)
/// from a training run directory (`metrics.jsonl`, or a `report.json` with `losses`) and
/// from a tokenized output (a `manifest.json` of kind `tokenize`, or split directories with
/// `meta.json`).
pub fn detect(dir: &Path) -> Result<Kind> {
    if !dir.is_dir() {
        return Err(Error::usage(format!(
            "{}: not a directory; give a build output directory or a training run directory",
            dir.display()
        )));
    }
    let report = dir.join("report.json");
    if report.is_file() {
        let v = read_json(&report)?;
        if v.get("accounting").is_some() && dir.join(quern_core::manifest::MANIFEST).is_file() {
            return Ok(Kind::Build);
        }
        if v.get("losses").is_some() {
            return Ok(Kind::Run);
        }
    }
    if dir.join("metrics.jsonl").is_file() {
        return Ok(Kind::Run);
    }
    let manifest = dir.join(quern_core::manifest::MANIFEST);
    if manifest.is_file() && read_json(&manifest)?.get("kind") == Some(&"tokenize".into()) {
        return Ok(Kind::Tokens);
    }
    if !tokens::split_dirs(dir)?.is_empty() {
        return Ok(Kind::Tokens);
    }
    Err(Error::usage(format!(
        "{}: neither a build output directory (manifest.json and report.json, written by \
         `quern build`), a training run directory (metrics.jsonl and report.json, written \
         by `quern train`) nor a tokenized output (split directories with meta.json, written \
         by `quern tokenize`)",
        dir.display()
    )))
}

/// Renders the report of `dir`, whichever kind it is.
pub fn render(dir: &Path) -> Result<String> {
    match detect(dir)? {
        Kind::Build => build_html(dir),
        Kind::Run => run_html(dir),
        Kind::Tokens => tokens_html(dir),
    }
}

/// Renders the report of `dir` and writes it atomically to `out` (default
/// `dir/report.html`); returns the path written.
pub fn write(dir: &Path, out: Option<&Path>) -> Result<PathBuf> {
    let html = render(dir)?;
    let path = out.map_or_else(|| dir.join(REPORT_HTML), Path::to_path_buf);
    quern_core::shard::write_atomic(&path, html.as_bytes())?;
    Ok(path)
}

/// Reads a JSON file; a file that is not JSON is bad input naming it.
fn read_json(path: &Path) -> Result<serde_json::Value> {
    let bytes = std::fs::read(path).at(path)?;
    serde_json::from_slice(&bytes).map_err(|e| {
        Error::bad_input(
            Place::file(path).with_line(e.line() as u64),
            format!("not valid JSON ({e}); rerun the command that wrote it"),
        )
    })
}

/// Escapes text for HTML and SVG content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const CSS: &str = "\
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;color:#1d2330;background:#fff;max-width:1100px;margin:2em auto;padding:0 1.5em}\
h1{font-size:1.6em;margin-bottom:.2em}h2{font-size:1.25em;margin-top:2em;border-bottom:1px solid #dde;padding-bottom:.2em}h3{font-size:1.05em}\
.sub{color:#667}\
.cards{display:flex;flex-wrap:wrap;gap:.8em;margin:1em 0}.card{border:1px solid #dde;border-radius:6px;padding:.5em .9em;min-width:8em}\
.card b{display:block;font-size:1.3em}.card span{color:#667;font-size:.9em}\
table{border-collapse:collapse;margin:.8em 0}th,td{padding:.25em .7em;border-bottom:1px solid #eef;text-align:right}\
th{background:#f5f6fa}td:first-child,th:first-child{text-align:left}\
svg.chart{width:100%;max-width:900px;height:auto;display:block;margin:.8em 0}\
svg .title{font-size:15px;font-weight:600;fill:#1d2330}svg .tick{font-size:11px;fill:#445}svg .label{font-size:12px;fill:#445}\
svg .grid{stroke:#e6e8f0;stroke-width:1}svg .axis{stroke:#667;stroke-width:1}svg .line{stroke-width:2}\
";

/// A whole page: the head with the inline style sheet, then `body`.
fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{t}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<h1>{t}</h1>\n{body}</body>\n</html>\n",
        t = escape(title)
    )
}

/// Summary cards: value and caption.
fn cards(items: &[(String, &str)]) -> String {
    let mut s = String::from("<div class=\"cards\">");
    for (v, caption) in items {
        s.push_str(&format!(
            "<div class=\"card\"><b>{}</b><span>{}</span></div>",
            escape(v),
            escape(caption)
        ));
    }
    s.push_str("</div>\n");
    s
}

/// A table with a header row; cells are escaped.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut s = String::from("<table><thead><tr>");
    for h in header {
        s.push_str(&format!("<th>{}</th>", escape(h)));
    }
    s.push_str("</tr></thead><tbody>");
    for r in rows {
        s.push_str("<tr>");
        for c in r {
            s.push_str(&format!("<td>{}</td>", escape(c)));
        }
        s.push_str("</tr>");
    }
    s.push_str("</tbody></table>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        for (s, want) in [
            ("plain", "plain"),
            ("<script>", "&lt;script&gt;"),
            ("a & \"b\" 'c'", "a &amp; &quot;b&quot; &#39;c&#39;"),
        ] {
            assert_eq!(escape(s), want);
        }
    }

    #[test]
    fn a_directory_of_neither_kind_is_an_error_naming_it() {
        let d = tempfile::tempdir().unwrap();
        let e = detect(d.path()).unwrap_err().to_string();
        assert!(e.contains("neither a build") && e.contains(&d.path().display().to_string()));
        // A directory with a split directory holding meta.json is a tokenized output.
        std::fs::create_dir(d.path().join("train")).unwrap();
        std::fs::write(d.path().join("train/meta.json"), "{}").unwrap();
        assert_eq!(detect(d.path()).unwrap(), Kind::Tokens);
        let e = render(d.path()).unwrap_err().to_string();
        assert!(e.contains("meta.json"), "{e}");
        std::fs::remove_dir_all(d.path().join("train")).unwrap();
        std::fs::write(d.path().join("report.json"), "{not json").unwrap();
        let e = detect(d.path()).unwrap_err().to_string();
        assert!(
            e.contains("report.json") && e.contains("not valid JSON"),
            "{e}"
        );
    }
}
