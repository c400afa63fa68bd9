//! Extracts the main text of every `.html` file in a folder, for measuring the extraction
//! outside `quern ingest` (benches/web, BENCHMARKS.md `## web`).
//!
//! usage: extract_pages HTML_DIR [OUT.json] [--repeat N]
//!
//! Writes `{"page name": "text", ...}` to OUT.json (the input of `tests/peers/web_f1.py`),
//! then extracts every page N more times (default 0) and prints pages per CPU second of
//! this thread (`/proc/thread-self/schedstat`, so other load on a shared machine counts less
//! than in wall time, which is printed too). Pages are read before timing; each goes
//! through `quern_ingest::html::extract` as `quern ingest` calls it for a WARC response
//! (bytes, `Content-Type: text/html`, its URL).

use std::time::Instant;

fn cpu_ns() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    s.split_whitespace().next()?.parse().ok()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let repeat = args
        .iter()
        .position(|a| a == "--repeat")
        .map(|i| args[i + 1].parse::<usize>().expect("--repeat N"))
        .unwrap_or(0);
    let pos: Vec<&String> = args
        .iter()
        .enumerate()
        .filter(|(i, a)| !a.starts_with("--") && (*i == 0 || args[i - 1] != "--repeat"))
        .map(|(_, a)| a)
        .collect();
    let dir = pos
        .first()
        .expect("usage: extract_pages HTML_DIR [OUT.json] [--repeat N]");
    let mut pages: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .expect("HTML_DIR")
        .filter_map(|e| {
            let p = e.ok()?.path();
            let name = p.file_name()?.to_str()?.strip_suffix(".html")?.to_string();
            Some((name, std::fs::read(&p).ok()?))
        })
        .collect();
    pages.sort();
    let extract = |name: &str, bytes: &[u8]| {
        let url = format!("http://example.com/{name}.html");
        quern_ingest::html::extract(bytes, Some("text/html"), Some(&url))
    };
    if let Some(out) = pos.get(1) {
        let texts: serde_json::Map<String, serde_json::Value> = pages
            .iter()
            .map(|(n, b)| (n.clone(), extract(n, b).text.into()))
            .collect();
        std::fs::write(out, serde_json::to_string_pretty(&texts).unwrap()).expect("OUT.json");
    }
    if repeat > 0 {
        let (c0, t0) = (cpu_ns(), Instant::now());
        let mut chars = 0usize;
        for _ in 0..repeat {
            for (n, b) in &pages {
                chars += std::hint::black_box(extract(n, b)).text.len();
            }
        }
        let wall = t0.elapsed().as_secs_f64();
        let n = (repeat * pages.len()) as f64;
        let cpu = match (c0, cpu_ns()) {
            (Some(a), Some(b)) => format!("{:.0}", n / ((b - a) as f64 / 1e9)),
            _ => "n/a".into(),
        };
        println!(
            "{} pages x {repeat}: {cpu} pages per CPU s ({:.0} per wall s; {chars} text bytes)",
            pages.len(),
            n / wall
        );
    }
}
