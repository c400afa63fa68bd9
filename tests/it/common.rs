//! Helpers shared by the integration tests: the binary, fixtures, Python peers, file trees.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A command running the `quern` binary under test.
pub fn quern() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_quern"));
    c.env_remove("QUERN_TEST_FAULT")
        .env_remove("QUERN_TEST_UNIT_DELAY_MS");
    c
}

/// A pipeline file `dir/name` reading `dir/input` into `out-{name}` in shards of
/// `shard_rows` rows (row groups of 16), with `stages` (TOML `[[stages]]` tables).
pub fn pipeline_file(dir: &Path, name: &str, shard_rows: usize, stages: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(
        &p,
        format!(
            "[input]\npaths = [\"input\"]\n\n[output]\ndir = \"out-{name}\"\nshard_rows = {shard_rows}\nrow_group_rows = 16\n\n{stages}"
        ),
    )
    .unwrap();
    p
}

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A fixture under `tests/data/`.
pub fn fixture(rel: &str) -> PathBuf {
    let p = repo().join("tests/data").join(rel);
    assert!(p.exists(), "missing fixture {}", p.display());
    p
}

/// The Python with the test peers (pyarrow, duckdb, transformers, ...), set up by
/// `scripts/setup.sh --test`.
pub fn python() -> PathBuf {
    std::env::var_os("QUERN_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".venv/bin/python"))
}

/// Runs the Python peer `tests/peers/<script>` on `task` (written as `task.json`, passed
/// with the path of `out_name` in `dir`, offline) and returns the path it wrote.
pub fn run_peer(dir: &Path, script: &str, task: &serde_json::Value, out_name: &str) -> PathBuf {
    let task_path = dir.join("task.json");
    std::fs::write(&task_path, serde_json::to_vec(task).unwrap()).unwrap();
    let out = dir.join(out_name);
    run_ok(
        Command::new(python())
            .arg(repo().join("tests/peers").join(script))
            .arg(&task_path)
            .arg(&out)
            .env("HF_HUB_OFFLINE", "1"),
    );
    out
}

/// Runs a command, and panics with its output unless it succeeded.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("could not run {cmd:?}: {e}"));
    assert_success(&format!("{cmd:?}"), &out);
    out
}

/// Panics with the output of `what` (a command, a rank) unless it succeeded.
pub fn assert_success(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed with {}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs a command that must fail, and returns its stderr.
pub fn run_err(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("could not run {cmd:?}: {e}"));
    assert!(
        !out.status.success(),
        "{cmd:?} succeeded but should have failed\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Every file under `dir` (relative path → bytes).
pub fn tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, d: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// Asserts two directories hold the same files with the same bytes, except the time figures
/// of a build's `report.json` (its `timing` object), the one thing two runs of the same
/// build may differ in, and `report.html`, which is made from report.json and shows those
/// times (`report::build_report_html` checks the page is regenerated from the files alone).
pub fn assert_same_tree(a: &Path, b: &Path) {
    let untimed = |mut t: BTreeMap<String, Vec<u8>>| {
        if t.contains_key("report.json") {
            let html = t.remove("report.html");
            assert!(html.is_some(), "report.html next to report.json");
        }
        if let Some(r) = t.get_mut("report.json") {
            let mut v: serde_json::Value = serde_json::from_slice(r).unwrap();
            let timing = v.as_object_mut().and_then(|o| o.remove("timing"));
            assert!(timing.is_some(), "report.json has its timing");
            *r = serde_json::to_vec(&v).unwrap();
        }
        t
    };
    let ta = untimed(tree(a));
    let tb = untimed(tree(b));
    assert_eq!(
        ta.keys().collect::<Vec<_>>(),
        tb.keys().collect::<Vec<_>>(),
        "file lists differ"
    );
    for (k, v) in &ta {
        assert!(
            v == &tb[k],
            "{k} differs between {} and {}",
            a.display(),
            b.display()
        );
    }
}

/// Reads the JSON lines of a file.
pub fn read_jsonl(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}
