//! `exact_dedup` and `minhash_dedup` in a real build: planted copies of documents of the
//! mixed corpus are removed with the right reasons and `dup_of`, every document is
//! accounted for, and two builds are byte-identical.

use std::io::Write;
use std::path::Path;

use arrow::array::{Array, StringArray};

use crate::common::*;

/// The mixed corpus plus, for every 10th document, an exact copy (different case and
/// spacing) and a near copy (one word in 120 replaced). Returns (exact, near) planted counts.
fn make_input(dir: &Path) -> (usize, usize) {
    let docs = read_jsonl(&fixture("corpus/mixed.jsonl"));
    let input = dir.join("input");
    std::fs::create_dir_all(&input).unwrap();
    let mut f = std::fs::File::create(input.join("docs.jsonl")).unwrap();
    let (mut exact, mut near) = (0, 0);
    let mut planted = Vec::new();
    for (i, d) in docs.iter().enumerate() {
        writeln!(f, "{d}").unwrap();
        let text = d["text"].as_str().unwrap();
        let words: Vec<&str> = text.split_whitespace().collect();
        if i % 10 == 0 && words.len() >= 200 && d["lang"] == "en" && d["source"] != "licenses" {
            let mut c = d.clone();
            c["id"] = format!("{}-exact-copy", d["id"].as_str().unwrap()).into();
            c["text"] = format!("  {}  ", words.join("   ").to_uppercase()).into();
            planted.push(c);
            exact += 1;
            let mut n = d.clone();
            n["id"] = format!("{}-near-copy", d["id"].as_str().unwrap()).into();
            let changed: Vec<&str> = words
                .iter()
                .enumerate()
                .map(|(k, w)| if k % 120 == 60 { "quern" } else { w })
                .collect();
            n["text"] = changed.join(" ").into();
            planted.push(n);
            near += 1;
        }
    }
    for p in planted {
        writeln!(f, "{p}").unwrap();
    }
    (exact, near)
}

fn pipeline(dir: &Path, name: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(
        &p,
        format!(
            r#"[input]
paths = ["input"]
id_field = "id"

[output]
dir = "out-{name}"
shard_rows = 100

[[stages]]
type = "exact_dedup"

[[stages]]
type = "minhash_dedup"
memory_limit = "64KB"
"#
        ),
    )
    .unwrap();
    p
}

#[test]
fn build_removes_planted_duplicates_deterministically() {
    let dir = tempfile::tempdir().unwrap();
    let (exact, near) = make_input(dir.path());
    assert!(
        exact >= 3 && near >= 3,
        "the fixture plants enough duplicates: {exact} exact, {near} near"
    );
    run_ok(quern().arg("build").arg(pipeline(dir.path(), "a.toml")));
    run_ok(quern().arg("build").arg(pipeline(dir.path(), "b.toml")));
    let (oa, ob) = (dir.path().join("out-a.toml"), dir.path().join("out-b.toml"));
    assert_same_tree(&oa, &ob);

    let rejected = quern_core::shard::read_table(&oa.join("rejected")).unwrap();
    let (mut by_reason, mut planted_hits) = (std::collections::BTreeMap::<String, usize>::new(), 0);
    let mut removed = std::collections::BTreeSet::new();
    for b in &rejected {
        let ids = b
            .column_by_name("id")
            .unwrap()
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        removed.extend((0..b.num_rows()).map(|i| ids.value(i).to_string()));
    }
    for b in &rejected {
        let col = |n: &str| {
            b.column_by_name(n)
                .unwrap()
                .as_any()
                .downcast_ref::<StringArray>()
                .unwrap()
                .clone()
        };
        let (ids, reasons, details) = (col("id"), col("reason"), col("details"));
        for i in 0..b.num_rows() {
            *by_reason.entry(reasons.value(i).to_string()).or_default() += 1;
            let d: serde_json::Value = serde_json::from_str(details.value(i)).unwrap();
            let of = d["dup_of"]
                .as_str()
                .unwrap_or_else(|| panic!("dup_of in details: {d}"));
            let id = ids.value(i);
            if let Some(orig) = id
                .strip_suffix("-exact-copy")
                .or_else(|| id.strip_suffix("-near-copy"))
            {
                // An original that is itself a copy of an earlier document leads its copies there.
                if !removed.contains(orig) {
                    assert_eq!(of, orig, "{id} is a duplicate of its original");
                }
                planted_hits += 1;
            }
        }
    }
    assert!(
        by_reason.get("exact_duplicate").copied().unwrap_or(0) >= exact,
        "{by_reason:?}"
    );
    assert!(
        by_reason.get("near_duplicate").copied().unwrap_or(0) >= near,
        "{by_reason:?}"
    );
    assert_eq!(
        planted_hits,
        exact + near,
        "every planted copy removed in favour of its original"
    );

    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(oa.join("manifest.json")).unwrap()).unwrap();
    let acc = &m["accounting"];
    let n = |k: &str| acc[k].as_u64().unwrap();
    assert_eq!(n("input"), n("kept") + n("rejected") + n("quarantined"));
}

#[test]
fn bad_dedup_config_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    make_input(dir.path());
    let p = dir.path().join("bad.toml");
    std::fs::write(&p, "[input]\npaths = [\"input\"]\n\n[output]\ndir = \"out\"\n\n[[stages]]\ntype = \"minhash_dedup\"\nbands = 20\nrows = 8\nnum_perm = 64\n").unwrap();
    let err = run_err(quern().arg("build").arg(&p));
    assert!(err.contains("stages[0].num_perm"), "{err}");
}
