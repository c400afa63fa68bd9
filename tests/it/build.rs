//! `quern build`: config validation, determinism, crash-and-resume, accounting.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use crate::common::*;

/// Splits the real mixed corpus into `files` JSONL inputs, planting a few malformed records
/// (bad JSON, a non-string text, a missing text) so quarantine has work. Returns the input
/// folder and the number of records written (good and bad).
fn make_inputs(dir: &Path, files: usize) -> (PathBuf, usize) {
    let docs = read_jsonl(&fixture("corpus/mixed.jsonl"));
    let input = dir.join("input");
    std::fs::create_dir_all(&input).unwrap();
    let per = docs.len().div_ceil(files);
    let mut records = 0;
    for (i, chunk) in docs.chunks(per).enumerate() {
        let mut f = std::fs::File::create(input.join(format!("part-{i:03}.jsonl"))).unwrap();
        for (j, d) in chunk.iter().enumerate() {
            writeln!(f, "{d}").unwrap();
            records += 1;
            if j == 3 && i % 3 == 0 {
                writeln!(f, "{{\"text\": \"unterminated").unwrap();
                writeln!(f, "{{\"text\": 42, \"source\": \"x\"}}").unwrap();
                writeln!(f, "{{\"body\": \"no text field\"}}").unwrap();
                records += 3;
            }
        }
    }
    (input, records)
}

const STAGES: &str = r#"
[[stages]]
type = "pass"
"#;

fn manifest(out: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap()
}

#[test]
fn build_accounts_for_every_record_and_is_deterministic() {
    let dir = tempfile::tempdir().unwrap();
    let (_, records) = make_inputs(dir.path(), 6);
    let a = pipeline_file(dir.path(), "a.toml", 50, STAGES);
    let b = pipeline_file(dir.path(), "b.toml", 50, STAGES);
    let out = run_ok(quern().arg("build").arg(&a));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("total"), "funnel table printed: {stdout}");
    run_ok(quern().arg("build").arg(&b));
    let (oa, ob) = (dir.path().join("out-a.toml"), dir.path().join("out-b.toml"));
    assert_same_tree(&oa, &ob);

    let m = manifest(&oa);
    assert_eq!(m["complete"], true);
    let acc = &m["accounting"];
    let n = |k: &str| acc[k].as_u64().unwrap();
    assert_eq!(n("input") as usize, records);
    assert_eq!(n("input"), n("kept") + n("rejected") + n("quarantined"));
    assert!(
        n("quarantined") >= 6,
        "planted bad records quarantined: {acc}"
    );
    // report.json carries the same accounting.
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(oa.join("report.json")).unwrap()).unwrap();
    assert_eq!(&report["accounting"], acc);
    // ... and the time of every stage (the build ran from scratch: nothing resumed).
    let timing = &report["timing"];
    assert_eq!(timing["resumed"], false);
    let wall = timing["wall_seconds"].as_f64().unwrap();
    assert!(wall > 0.0, "{timing}");
    let stage_names: Vec<&str> = acc["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["stage"].as_str().unwrap())
        .collect();
    let secs = timing["stage_seconds"].as_object().unwrap();
    assert_eq!(
        secs.keys().map(String::as_str).collect::<Vec<_>>(),
        stage_names,
        "one time per stage, in pipeline order"
    );
    assert!(
        secs.values().all(|v| v.as_f64().is_some_and(|x| x > 0.0)),
        "{timing}"
    );
    // No work tables or temporary files are left behind.
    assert!(!oa.join("_work").exists());
    assert!(tree(&oa).keys().all(|k| !k.contains(".tmp-")));

    // A second run of the same build is a no-op that changes nothing.
    let before = tree(&oa);
    let again = run_ok(quern().arg("build").arg(&a));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already holds this complete build"));
    assert_eq!(before, tree(&oa));
}

#[test]
fn a_different_config_is_refused_unless_forced() {
    let dir = tempfile::tempdir().unwrap();
    make_inputs(dir.path(), 2);
    let p = pipeline_file(dir.path(), "p.toml", 50, STAGES);
    run_ok(quern().arg("build").arg(&p));
    // Same output dir, another stage list.
    let text = std::fs::read_to_string(&p)
        .unwrap()
        .replace("type = \"pass\"", "type = \"pass\"\nname = \"renamed\"");
    std::fs::write(&p, text).unwrap();
    let err = run_err(quern().arg("build").arg(&p));
    assert!(
        err.contains("different build run") && err.contains("--force"),
        "{err}"
    );
    run_ok(quern().arg("build").arg(&p).arg("--force"));
    assert_eq!(
        manifest(&dir.path().join("out-p.toml"))["accounting"]["stages"][0]["stage"],
        "renamed"
    );
}

/// Crashes a build at several points (an abort between writing a unit's shards and
/// recording them, an abort right after a commit, and a real SIGKILL at an arbitrary
/// moment), resumes it, and checks the result is byte-identical to an uninterrupted build.
#[test]
fn killed_builds_resume_to_identical_output() {
    kill_and_resume(
        STAGES,
        &[
            "before_commit:1",
            "before_commit:4",
            "after_commit:2",
            "after_commit:11",
        ],
        &[150, 450, 900],
    );
}

/// The same with exact and near dedup, whose global phases gather over every unit: a build
/// killed in any phase resumes to the same clusters and representatives (12 input units,
/// so commits 13-24 are the exact-dedup phase and 25-36 the MinHash phase).
#[test]
fn killed_dedup_builds_resume_to_identical_clusters() {
    let stages = "[[stages]]\ntype = \"exact_dedup\"\n\n[[stages]]\ntype = \"minhash_dedup\"\n";
    kill_and_resume(
        stages,
        &["after_commit:5", "before_commit:17", "after_commit:30"],
        &[700],
    );
}

fn kill_and_resume(stages: &str, faults: &[&str], delays_ms: &[u64]) {
    let dir = tempfile::tempdir().unwrap();
    make_inputs(dir.path(), 12);
    let reference = pipeline_file(dir.path(), "ref.toml", 50, stages);
    run_ok(quern().arg("build").arg(&reference));
    let ref_out = dir.path().join("out-ref.toml");

    for (i, fault) in faults.iter().enumerate() {
        let p = pipeline_file(dir.path(), &format!("f{i}.toml"), 50, stages);
        let out = quern()
            .arg("build")
            .arg(&p)
            .env("QUERN_TEST_FAULT", fault)
            .output()
            .unwrap();
        assert!(
            !out.status.success(),
            "fault {fault} should crash the build"
        );
        let crashed = dir.path().join(format!("out-f{i}.toml"));
        // The manifest is written before the first shard, so even the earliest crash leaves
        // a directory the rerun recognises as this build, incomplete.
        assert_eq!(
            manifest(&crashed)["complete"],
            false,
            "crash at {fault} left an incomplete build"
        );
        run_ok(quern().arg("build").arg(&p));
        assert_same_tree(&ref_out, &crashed);
        let report: serde_json::Value =
            serde_json::from_slice(&std::fs::read(crashed.join("report.json")).unwrap()).unwrap();
        let resumed = report["timing"]["resumed"].as_bool().unwrap();
        // A crash before the first commit leaves nothing to resume from.
        assert_eq!(resumed, fault != &"before_commit:1", "{fault}: {report}");
    }

    for (i, delay_ms) in delays_ms.iter().enumerate() {
        let p = pipeline_file(dir.path(), &format!("k{i}.toml"), 50, stages);
        let out = dir.path().join(format!("out-k{i}.toml"));
        let units = kill_mid_build(&p, &out, *delay_ms);
        eprintln!("{}: killed after {units} committed units", p.display());
        run_ok(quern().arg("build").arg(&p));
        assert_same_tree(&ref_out, &out);
    }
}

/// SIGKILLs a build of `pipeline` (writing `out`) about `delay_ms` after it starts, and
/// checks that the kill landed mid-build: the process had not exited and `out` held a claimed
/// but incomplete build. A build that had already finished (so the resume would test
/// nothing) is thrown away and killed again earlier; one killed before it claimed `out`,
/// again later. Returns how many units the killed build had committed.
pub(crate) fn kill_mid_build(pipeline: &Path, out: &Path, delay_ms: u64) -> usize {
    let (mut early, mut late) = (0u64, None::<u64>);
    let mut delay = delay_ms;
    for _attempt in 0..12 {
        let mut child = quern()
            .arg("build")
            .arg(pipeline)
            .env("QUERN_TEST_UNIT_DELAY_MS", "60")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay));
        let exited = child.try_wait().unwrap();
        if exited.is_none() {
            child.kill().unwrap(); // SIGKILL
        }
        let status = child.wait().unwrap();
        if let Some(s) = exited {
            assert!(s.success(), "{} failed by itself: {s}", pipeline.display());
        }
        let m = out.join("manifest.json").exists().then(|| manifest(out));
        let complete = m.as_ref().is_some_and(|m| m["complete"] == true);
        if exited.is_some() || status.success() || complete {
            // Finished before the kill: start over, killing earlier.
            eprintln!("{}: finished within {delay} ms", pipeline.display());
            std::fs::remove_dir_all(out).unwrap();
            late = Some(delay);
            delay = (early + delay) / 2;
        } else if let Some(m) = m {
            // Killed mid-build: the directory is claimed and incomplete.
            assert_eq!(m["complete"], false);
            return m["units"].as_object().map_or(0, |u| u.len());
        } else {
            // Killed before the build claimed its directory: kill later.
            eprintln!("{}: not started within {delay} ms", pipeline.display());
            early = delay;
            delay = late.map_or(delay * 2, |l| (delay + l) / 2);
        }
        assert!(
            late.is_none_or(|l| l > early + 1),
            "no moment to kill {} mid-build found",
            pipeline.display()
        );
    }
    panic!(
        "could not kill {} mid-build (last tried {delay} ms)",
        pipeline.display()
    );
}

#[test]
fn bad_configs_name_the_offending_key() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("input")).unwrap();
    let ok_input = "[input]\npaths = [\"input\"]\n";
    let ok_output = "[output]\ndir = \"out\"\n";
    let cases: Vec<(String, &str)> = vec![
        (format!("[inputs]\npaths = [\"x\"]\n{ok_output}"), "inputs"),
        (format!("[input]\n{ok_output}"), "paths"),
        (format!("[input]\npaths = []\n{ok_output}"), "input.paths"),
        (
            format!("[input]\npaths = [\"input\"]\nbatch_rows = 0\n{ok_output}"),
            "input.batch_rows",
        ),
        (
            format!("[input]\npaths = [\"input\"]\ntext_fild = \"t\"\n{ok_output}"),
            "text_fild",
        ),
        (
            format!("[input]\npaths = [\"input\"]\ntext_field = 3\n{ok_output}"),
            "input.text_field",
        ),
        (format!("{ok_input}[output]\nshard_rows = 5\n"), "dir"),
        (
            format!("{ok_input}[output]\ndir = \"out\"\nzstd_level = 30\n"),
            "output.zstd_level",
        ),
        (
            format!("{ok_input}[output]\ndir = \"out\"\nshard_rows = 0\n"),
            "output.shard_rows",
        ),
        (
            format!("{ok_input}{ok_output}[[stages]]\nname = \"x\"\n"),
            "stages[0].type",
        ),
        (
            format!("{ok_input}{ok_output}[[stages]]\ntype = \"no_such_stage\"\n"),
            "stages[0].type",
        ),
        (
            format!("{ok_input}{ok_output}[[stages]]\ntype = 7\n"),
            "stages[0].type",
        ),
        (
            format!("{ok_input}{ok_output}[[stages]]\ntype = \"pass\"\nthreshold = 1\n"),
            "stages[0]",
        ),
        (
            format!(
                "{ok_input}{ok_output}[[stages]]\ntype = \"pass\"\n[[stages]]\ntype = \"pass\"\n"
            ),
            "stages[1].name",
        ),
        (
            format!("{ok_input}{ok_output}[tokenizer]\nvocab = 1\n"),
            "tokenizer",
        ),
        ("[input\npaths = 1".to_string(), "not valid TOML"),
    ];
    assert!(cases.len() >= 10);
    for (i, (text, key)) in cases.iter().enumerate() {
        let p = dir.path().join(format!("bad{i}.toml"));
        std::fs::write(&p, text).unwrap();
        let err = run_err(quern().arg("build").arg(&p));
        assert!(
            err.contains(key),
            "case {i}: error should name `{key}`:\n{text}\n---\n{err}"
        );
        // Refused before any output was made.
        assert!(!dir.path().join("out").exists(), "case {i} created output");
    }
}

#[test]
fn an_output_dir_with_foreign_files_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    make_inputs(dir.path(), 1);
    let p = pipeline_file(dir.path(), "p.toml", 50, STAGES);
    let out = dir.path().join("out-p.toml");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("thesis.tex"), "precious").unwrap();
    let err = run_err(quern().arg("build").arg(&p));
    assert!(err.contains("holds no quern manifest"), "{err}");
    assert_eq!(
        std::fs::read_to_string(out.join("thesis.tex")).unwrap(),
        "precious"
    );
}

/// `quern sql` over a build directory: `docs`, `rejected` grouped by stage and reason, and
/// `quarantine` with each bad record's place, agreeing with the manifest's accounting.
#[test]
fn sql_queries_docs_rejected_and_quarantine_of_a_build() {
    let dir = tempfile::tempdir().unwrap();
    make_inputs(dir.path(), 3);
    // Every input twice, so exact dedup has real work next to the quality filter.
    let input = dir.path().join("input");
    for e in std::fs::read_dir(&input).unwrap() {
        let p = e.unwrap().path();
        let copy = p.with_file_name(format!("copy-{}", p.file_name().unwrap().to_string_lossy()));
        std::fs::copy(&p, copy).unwrap();
    }
    let stages = "[[stages]]\ntype = \"exact_dedup\"\n\n[[stages]]\ntype = \"gopher_quality\"\n";
    let cfg = pipeline_file(dir.path(), "q.toml", 50, stages);
    run_ok(quern().arg("build").arg(&cfg));
    let out = dir.path().join("out-q.toml");
    let acc = manifest(&out)["accounting"].clone();
    let n = |k: &str| acc[k].as_u64().unwrap();
    let sql = |q: &str| -> Vec<serde_json::Value> {
        let o = run_ok(
            quern()
                .args(["sql", "--format", "json", "--corpus"])
                .arg(&out)
                .arg(q),
        );
        String::from_utf8(o.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let docs = sql("SELECT count(*) AS n FROM docs");
    assert_eq!(docs[0]["n"].as_u64().unwrap(), n("kept"));
    let groups =
        sql("SELECT rejected_by, reason, count(*) AS n FROM rejected GROUP BY 1, 2 ORDER BY 1, 2");
    let total: u64 = groups.iter().map(|g| g["n"].as_u64().unwrap()).sum();
    assert_eq!(total, n("rejected"));
    let by = |stage: &str| -> u64 {
        groups
            .iter()
            .filter(|g| g["rejected_by"] == stage)
            .map(|g| g["n"].as_u64().unwrap())
            .sum()
    };
    // Each copy of a document is an exact duplicate of its original.
    assert!(
        by("exact_dedup") >= n("input") / 2 - n("quarantined"),
        "{groups:?}"
    );
    assert!(by("gopher_quality") > 0, "{groups:?}");
    assert!(groups
        .iter()
        .filter(|g| g["rejected_by"] == "exact_dedup")
        .all(|g| g["reason"] == "exact_duplicate"));
    let q = sql("SELECT file, line, error FROM quarantine ORDER BY file, line");
    assert_eq!(q.len() as u64, n("quarantined"));
    assert!(q.iter().all(|r| r["line"].as_u64().unwrap() > 0
        && r["file"].as_str().unwrap().ends_with(".jsonl")
        && !r["error"].as_str().unwrap().is_empty()));
}

/// Every path in a pipeline file resolves against the file's directory, whatever the working
/// directory: the inputs, the output, and every stage file (word and URL lists, a lexicon, a
/// classifier model, an evaluation set, a spill directory). Stage files used to resolve
/// against the working directory, so this build failed when run from elsewhere.
#[test]
fn every_path_in_a_pipeline_resolves_against_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path().join("project");
    let elsewhere = dir.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    make_inputs(&project, 2);
    let docs = read_jsonl(&fixture("corpus/mixed.jsonl"));
    // An evaluation set holding one whole document, which decontamination then drops.
    let planted = docs
        .iter()
        .map(|d| d["text"].as_str().unwrap())
        .find(|t| t.split_whitespace().count() > 100 && !t.contains("PostgreSQL"))
        .unwrap();
    let write = |rel: &str, text: &str| {
        let p = project.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    };
    write(
        "evals/heldout.jsonl",
        &format!("{}\n", serde_json::json!({ "text": planted })),
    );
    write("lists/words.txt", "# blocked\nPostgreSQL\n");
    write("lists/domains.txt", "example.invalid\n");
    write("lists/urls.txt", "/blocked/\n");
    write("lists/profanity.txt", "damn\nhell\n");
    run_ok(
        quern()
            .args(["label", "train", "--label-field", "label", "--threads", "1"])
            .args(["--epochs", "2", "--dim", "8", "--data"])
            .arg(fixture("labeling/spam_ham.jsonl"))
            .arg("--out")
            .arg(project.join("models/spam.qcls")),
    );
    let stages = r#"
[[stages]]
type = "decontaminate"
action = "drop"
[[stages.eval_sets]]
path = "evals/heldout.jsonl"

[[stages]]
type = "word_blocklist"
words_file = "lists/words.txt"

[[stages]]
type = "url_filter"
domains_file = "lists/domains.txt"
url_substrings_file = "lists/urls.txt"

[[stages]]
type = "lexicon"
path = "lists/profanity.txt"

[[stages]]
type = "classifier"
model = "models/spam.qcls"

[[stages]]
type = "exact_dedup"
spill_dir = "spill"
"#;
    let p = pipeline_file(&project, "p.toml", 50, stages);
    run_ok(
        quern()
            .arg("build")
            .arg(&p)
            .arg("--quiet")
            .current_dir(&elsewhere),
    );
    let m = manifest(&project.join("out-p.toml"));
    let rejected = |stage: &str| {
        m["accounting"]["stages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["stage"] == stage)
            .unwrap_or_else(|| panic!("no stage {stage}: {m}"))["rejected"]
            .as_u64()
            .unwrap()
    };
    assert!(rejected("decontaminate") >= 1, "{m}");
    assert!(rejected("word_blocklist") >= 1, "{m}");
    assert!(
        project.join("spill").is_dir(),
        "spill_dir is under the project"
    );
    assert_eq!(
        std::fs::read_dir(&elsewhere).unwrap().count(),
        0,
        "nothing was read from or written to the working directory"
    );
}

/// `quern build --stage ... INPUT --out DIR` (no pipeline file) builds what the same stages
/// and parameters in a pipeline file build: the same documents, byte for byte, and the same
/// funnel; --set values keep their TOML types; mistakes name the flag.
#[test]
fn one_off_stage_builds_equal_pipeline_builds() {
    let dir = tempfile::tempdir().unwrap();
    make_inputs(dir.path(), 3);
    // Output options at their defaults, as a one-off build has them.
    let file = dir.path().join("p.toml");
    std::fs::write(
        &file,
        "[input]\npaths = [\"input\"]\n\n[output]\ndir = \"out-p.toml\"\n\n\
         [[stages]]\ntype = \"exact_dedup\"\n\n[[stages]]\ntype = \"minhash_dedup\"\nngram = 3\nshingle = \"word\"\n",
    )
    .unwrap();
    let from_file = run_ok(quern().arg("build").arg(&file));
    let out = dir.path().join("oneoff");
    let one_off = run_ok(
        quern()
            .current_dir(dir.path())
            .args([
                "build",
                "--stage",
                "exact_dedup",
                "--stage",
                "minhash_dedup",
            ])
            .args([
                "--set",
                "minhash_dedup.ngram=3",
                "--set",
                "minhash_dedup.shingle=word",
            ])
            .arg("input")
            .arg("--out")
            .arg("oneoff"),
    );
    assert_eq!(
        String::from_utf8_lossy(&from_file.stdout),
        String::from_utf8_lossy(&one_off.stdout),
        "same funnel"
    );
    let docs = |root: &Path| {
        tree(root)
            .into_iter()
            .filter(|(k, _)| k.starts_with("docs/"))
            .map(|(k, v)| (k, xxhash_rust::xxh3::xxh3_64(&v)))
            .collect::<Vec<_>>()
    };
    let a = docs(&dir.path().join("out-p.toml"));
    assert!(!a.is_empty());
    assert_eq!(a, docs(&out), "same documents, byte for byte");

    // Mistakes name the flag.
    let err = run_err(
        quern()
            .current_dir(dir.path())
            .args([
                "build",
                "--stage",
                "exact_dedup",
                "--set",
                "minhash_dedup.ngram=3",
            ])
            .args(["input", "--out", "x"]),
    );
    assert!(
        err.contains("--set minhash_dedup.ngram=3") && err.contains("no --stage minhash_dedup"),
        "{err}"
    );
    let err = run_err(
        quern()
            .current_dir(dir.path())
            .args([
                "build",
                "--stage",
                "minhash_dedup",
                "--set",
                "minhash_dedup.ngram=many",
            ])
            .args(["input", "--out", "x"]),
    );
    assert!(err.contains("ngram"), "{err}");
    let err =
        run_err(
            quern()
                .current_dir(dir.path())
                .args(["build", "--stage", "exact_dedup", "input"]),
        );
    assert!(err.contains("--out"), "{err}");
    assert!(
        !dir.path().join("x").exists(),
        "nothing written by a refused build"
    );
}

/// The backticked names in serde's list of valid fields in `err` ("unknown field `zz`,
/// expected one of `a`, `b`", "expected `a` or `b`", "expected `a`"); empty for "there are
/// no fields". Panics when the error is not serde's unknown-field error.
pub(crate) fn fields_named_by(err: &str) -> Vec<String> {
    let rest = err
        .split_once("unknown field `zz_unknown`, ")
        .unwrap_or_else(|| panic!("not an unknown-field error: {err}"))
        .1;
    if rest.starts_with("there are no fields") {
        return Vec::new();
    }
    let list = rest
        .strip_prefix("expected ")
        .unwrap_or_else(|| panic!("{err}"));
    let list = list.split(" (").next().unwrap().lines().next().unwrap();
    let fields: Vec<String> = list
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect();
    assert!(!fields.is_empty(), "no fields in: {err}");
    fields
}

/// docs/pipeline.md cannot drift from the code (issue 19): for `[input]`, `[output]` and
/// every stage type `quern stages` lists, `quern build --check` on a pipeline with an unknown
/// key gets serde's list of every valid key, and the guide must have a `## <table or type>`
/// section with a parameter-table row for each (`| \`name\` | default | meaning |`). The
/// other way round, every parameter-table row in a section (nested keys written as
/// `name.key` or `name[].key`) must name a key the code accepts, so a removed or renamed
/// parameter cannot stay documented. A stage type with no parameters must say so.
#[test]
fn pipeline_guide_documents_every_key_of_every_stage() {
    let guide = std::fs::read_to_string(repo().join("docs/pipeline.md")).unwrap();
    let section = |title: &str| -> String {
        let head = format!("## {title}");
        let mut lines = guide.lines().skip_while(|l| l.trim_end() != head);
        assert!(
            lines.next().is_some(),
            "docs/pipeline.md has no `{head}` section"
        );
        lines
            .take_while(|l| !l.starts_with("## "))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let stages = String::from_utf8(run_ok(quern().arg("stages")).stdout).unwrap();
    let types: Vec<&str> = stages
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(types.len() > 15, "{stages}");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.toml");
    let base_input = "[input]\npaths = [\"in\"]\n";
    let base_output = "[output]\ndir = \"out\"\n";
    let mut cases: Vec<(String, String)> = vec![
        (
            "[input]".into(),
            format!("{base_input}zz_unknown = 1\n{base_output}"),
        ),
        (
            "[output]".into(),
            format!("{base_input}{base_output}zz_unknown = 1\n"),
        ),
    ];
    for t in &types {
        cases.push((
            t.to_string(),
            format!("{base_input}{base_output}[[stages]]\ntype = \"{t}\"\nzz_unknown = 1\n"),
        ));
    }
    let mut problems = Vec::new();
    for (title, text) in &cases {
        std::fs::write(&file, text).unwrap();
        let err = run_err(quern().arg("build").arg(&file).arg("--check"));
        let fields = fields_named_by(&err);
        let body = section(title);
        if fields.is_empty() && !body.contains("no parameters") {
            problems.push(format!(
                "`{title}` takes no parameters and its section does not say so"
            ));
        }
        for f in &fields {
            let row = format!("| `{f}` |");
            if !body.lines().any(|l| l.starts_with(&row)) {
                problems.push(format!(
                    "`{title}`: key `{f}` has no row in its parameter table"
                ));
            }
        }
        for row in body.lines().filter(|l| l.starts_with("| `")) {
            let name = row[3..].split('`').next().unwrap();
            let key = name.split(['.', '[']).next().unwrap();
            if !fields.iter().any(|f| f == key) {
                problems.push(format!(
                    "`{title}`: documents `{name}`, which the code does not accept"
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "docs/pipeline.md disagrees with the code:\n{}",
        problems.join("\n")
    );
}
