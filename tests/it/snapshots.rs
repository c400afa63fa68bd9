//! What a user reads, pinned: `--help` of every command, `quern stages`, a build's funnel
//! table and the messages of common mistakes. A change to any of them fails here until the
//! snapshot under `tests/it/snapshots/` is reviewed and updated (`cargo insta review`, or
//! `INSTA_UPDATE=always` then `git diff`), as DataFusion and ruff do with their outputs.

use std::path::Path;

use crate::common::*;

fn stdout(cmd: &mut std::process::Command) -> String {
    String::from_utf8_lossy(&run_ok(cmd).stdout).into_owned()
}

/// Settings that turn a temporary directory into `[TMP]` in snapshots.
fn with_tmp<R>(tmp: &Path, f: impl FnOnce() -> R) -> R {
    let mut s = insta::Settings::clone_current();
    s.add_filter(&regex::escape(&tmp.display().to_string()), "[TMP]");
    s.bind(f)
}

#[test]
fn help_of_every_command() {
    let mut all = stdout(quern().env("COLUMNS", "100").arg("--help"));
    let commands: Vec<String> = all
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        // `  name  description`; wrapped descriptions continue further indented.
        .filter(|l| l.starts_with("  ") && !l[2..].starts_with(' '))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .filter(|c| c != "help")
        .collect();
    assert!(commands.len() >= 14, "{commands:?}");
    for c in &commands {
        all.push_str(&format!("\n$ quern {c} --help\n"));
        all.push_str(&stdout(
            quern().env("COLUMNS", "100").args([c.as_str(), "--help"]),
        ));
    }
    insta::assert_snapshot!("help", all);
}

#[test]
fn stage_list() {
    insta::assert_snapshot!("stages", stdout(quern().arg("stages")));
}

/// The demo's cleaning and dedup stages over the mixed-source fixture: the funnel table a
/// build prints (its time goes to stderr and report.json, never into the table).
#[test]
fn funnel_table_of_a_build() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("in")).unwrap();
    std::fs::copy(
        fixture("corpus/mixed.jsonl"),
        dir.path().join("in/mixed.jsonl"),
    )
    .unwrap();
    let pipeline = dir.path().join("p.toml");
    std::fs::write(
        &pipeline,
        r#"[input]
paths = ["in"]

[output]
dir = "out"

[[stages]]
type = "normalize"

[[stages]]
type = "gopher_quality"
min_doc_words = 20

[[stages]]
type = "c4"
rewrite = false
min_num_sentences = 1

[[stages]]
type = "exact_dedup"

[[stages]]
type = "minhash_dedup"
"#,
    )
    .unwrap();
    let table = stdout(quern().arg("build").arg(&pipeline));
    insta::assert_snapshot!("funnel", table);
}

/// Common mistakes, each with the message a user gets (the file, line or key named).
#[test]
fn error_messages() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let write = |name: &str, text: &str| {
        let p = d.join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let mut out = String::new();
    let mut case = |what: &str, cmd: &mut std::process::Command| {
        out.push_str(&format!("## {what}\n{}\n", run_err(cmd).trim_end()));
    };
    let typo = write(
        "typo.toml",
        "[input]\npaths = [\"in\"]\n\n[output]\ndir = \"out\"\n\n[[stages]]\ntype = \"c4\"\nmin_num_sentence = 2\n",
    );
    case("a misspelt stage key", quern().arg("build").arg(&typo));
    let unknown = write(
        "unknown.toml",
        "[input]\npaths = [\"in\"]\n\n[output]\ndir = \"out\"\n\n[[stages]]\ntype = \"gopher\"\n",
    );
    case("an unknown stage type", quern().arg("build").arg(&unknown));
    case(
        "a pipeline that does not exist",
        quern().arg("build").arg(d.join("missing.toml")),
    );
    let run = write(
        "run.toml",
        "[data]\ntrain = \"tokens/train\"\n\n[optim]\nlr = -1.0\n",
    );
    case("a negative learning rate", quern().arg("train").arg(&run));
    case(
        "SQL over a directory that holds no build",
        quern().args(["sql", "--corpus"]).arg(d).arg("SELECT 1"),
    );
    with_tmp(d, || insta::assert_snapshot!("errors", out));
}
