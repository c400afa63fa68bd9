//! The user guides against the code they describe.

use crate::build::fields_named_by;
use crate::common::*;

/// docs/train.md cannot drift from the run.toml parser (issue 19): for the top level and
/// every table, `quern train` on a run.toml with an unknown key gets serde's list of every
/// valid key (before anything is loaded), and the guide must have a section with a
/// parameter-table row for each; every row must name a key the parser accepts.
#[test]
fn train_guide_documents_every_key_of_run_toml() {
    let guide = std::fs::read_to_string(repo().join("docs/train.md")).unwrap();
    let section = |title: &str| -> String {
        let head = format!("## {title}");
        let mut lines = guide.lines().skip_while(|l| l.trim_end() != head);
        assert!(
            lines.next().is_some(),
            "docs/train.md has no `{head}` section"
        );
        lines
            .take_while(|l| !l.starts_with("## "))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("run.toml");
    let base = "out_dir = \"o\"\n[data]\ntrain = \"t\"\n";
    let mut cases = vec![("The file".to_string(), format!("zz_unknown = 1\n{base}"))];
    cases.push(("[data]".into(), format!("{base}zz_unknown = 1\n")));
    for t in [
        "init",
        "model",
        "optim",
        "train",
        "checkpoint",
        "lora",
        "cls",
        "rm",
        "dpo",
        "dist",
    ] {
        cases.push((format!("[{t}]"), format!("{base}[{t}]\nzz_unknown = 1\n")));
    }
    let mut problems = Vec::new();
    for (title, text) in &cases {
        std::fs::write(&file, text).unwrap();
        let err = run_err(quern().arg("train").arg(&file));
        let fields = fields_named_by(&err);
        assert!(!fields.is_empty(), "{title}: {err}");
        let body = section(title);
        for f in &fields {
            let row = format!("| `{f}` |");
            if !body.lines().any(|l| l.starts_with(&row)) {
                problems.push(format!("{title}: key `{f}` has no row"));
            }
        }
        for row in body.lines().filter(|l| l.starts_with("| `")) {
            let name = row[3..].split('`').next().unwrap();
            if !fields.iter().any(|f| f == name) {
                problems.push(format!(
                    "{title}: documents `{name}`, which the parser does not accept"
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "docs/train.md disagrees with the code:\n{}",
        problems.join("\n")
    );
}
