//! The manifest: what an output directory holds and how every input document was accounted for.
//!
//! `manifest.json` sits at the root of every output directory quern writes (an ingest, a
//! build, tokenized shards). It records the kind of run and the hash of its configuration
//! (so a different run into the same directory is refused), one [`UnitRecord`] per
//! committed unit of work (the shards it wrote and its counts), and, once the run is
//! complete, the [`Accounting`] totals.
//!
//! Work is committed unit by unit: a unit's shards are committed first, then the manifest
//! is rewritten atomically with the unit added. A rerun skips units already recorded and
//! removes shards no unit claims (left by a run killed between the two steps).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};
use crate::shard::{write_atomic, ShardInfo};

/// File name of the manifest in an output directory.
pub const MANIFEST: &str = "manifest.json";

/// Counts for one input file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileCounts {
    pub file: String,
    /// Records read from the file (documents found, readable or not).
    pub records: u64,
    pub ingested: u64,
    pub quarantined: u64,
    /// Bytes read from the file (compressed size on disk).
    pub bytes: u64,
}

/// Counts for one stage.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageCounts {
    pub stage: String,
    pub input: u64,
    pub kept: u64,
    pub rejected: u64,
    pub input_bytes: u64,
    pub kept_bytes: u64,
    /// Rejected documents by reason.
    pub reasons: BTreeMap<String, u64>,
}

impl StageCounts {
    pub fn add(&mut self, o: &StageCounts) {
        self.input += o.input;
        self.kept += o.kept;
        self.rejected += o.rejected;
        self.input_bytes += o.input_bytes;
        self.kept_bytes += o.kept_bytes;
        for (r, n) in &o.reasons {
            *self.reasons.entry(r.clone()).or_default() += n;
        }
    }
}

/// What one committed unit of work wrote and counted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitRecord {
    /// Shards by table name (`docs`, `rejected`, `quarantine`, …).
    pub tables: BTreeMap<String, Vec<ShardInfo>>,
    pub files: Vec<FileCounts>,
    pub stages: Vec<StageCounts>,
}

/// Totals over a whole run: `input = kept + rejected + quarantined`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accounting {
    pub input: u64,
    pub kept: u64,
    pub rejected: u64,
    pub quarantined: u64,
    pub files: Vec<FileCounts>,
    pub stages: Vec<StageCounts>,
}

impl Accounting {
    /// Checks that every input document is accounted for, in total, per file and per stage.
    pub fn check(&self) -> Result<()> {
        let fail = |m: String| Err(Error::bug(format!("accounting does not add up: {m}")));
        if self.input != self.kept + self.rejected + self.quarantined {
            return fail(format!(
                "input {} != kept {} + rejected {} + quarantined {}",
                self.input, self.kept, self.rejected, self.quarantined
            ));
        }
        for f in &self.files {
            if f.records != f.ingested + f.quarantined {
                return fail(format!(
                    "{}: records {} != ingested {} + quarantined {}",
                    f.file, f.records, f.ingested, f.quarantined
                ));
            }
        }
        for s in &self.stages {
            if s.input != s.kept + s.rejected || s.reasons.values().sum::<u64>() != s.rejected {
                return fail(format!(
                    "stage {}: input {} != kept {} + rejected {} (reasons {:?})",
                    s.stage, s.input, s.kept, s.rejected, s.reasons
                ));
            }
        }
        Ok(())
    }
}

/// The manifest of an output directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: u32,
    pub quern_version: String,
    /// `ingest`, `build`, `tokenize`, …
    pub kind: String,
    /// xxh3-64 (hex) of the canonical JSON of `config`.
    pub config_hash: String,
    pub config: serde_json::Value,
    /// Committed units of work by key. Keys sort in input order.
    pub units: BTreeMap<String, UnitRecord>,
    /// Set once every unit is committed and the accounting checked.
    pub complete: bool,
    pub accounting: Option<Accounting>,
}

/// Hash of a configuration value: xxh3-64 of its JSON text, as hex.
pub fn config_hash(config: &serde_json::Value) -> String {
    format!(
        "{:016x}",
        xxhash_rust::xxh3::xxh3_64(config.to_string().as_bytes())
    )
}

impl Manifest {
    pub fn new(kind: &str, config: serde_json::Value) -> Self {
        Manifest {
            format: 1,
            quern_version: env!("CARGO_PKG_VERSION").to_string(),
            kind: kind.to_string(),
            config_hash: config_hash(&config),
            config,
            units: BTreeMap::new(),
            complete: false,
            accounting: None,
        }
    }

    /// Loads `dir/manifest.json`, or `None` when there is none.
    pub fn load(dir: &Path) -> Result<Option<Manifest>> {
        let path = dir.join(MANIFEST);
        if !path.exists() {
            return Ok(None);
        }
        let text = fs::read_to_string(&path).at(&path)?;
        let m: Manifest = serde_json::from_str(&text).map_err(|e| {
            Error::bad_input(
                crate::error::Place::file(&path).with_line(e.line() as u64),
                format!("not a quern manifest: {e}"),
            )
        })?;
        Ok(Some(m))
    }

    /// Writes `dir/manifest.json` atomically.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let text = serde_json::to_vec_pretty(self)?;
        write_atomic(&dir.join(MANIFEST), &text)
    }

    /// Opens an output directory for a run of `kind` with `config`:
    /// - an empty or missing directory gets a fresh manifest;
    /// - a directory holding the same run (same kind and config hash) is resumed;
    /// - a directory holding a different run is refused, unless `force`, which clears it;
    /// - a non-empty directory without a manifest is refused (it is not ours to overwrite).
    pub fn open_output(
        dir: &Path,
        kind: &str,
        config: serde_json::Value,
        force: bool,
    ) -> Result<Manifest> {
        let fresh = Manifest::new(kind, config);
        let existing = Manifest::load(dir)?;
        match existing {
            Some(m) if m.kind == kind && m.config_hash == fresh.config_hash => {
                remove_unclaimed_shards(dir, &m)?;
                Ok(m)
            }
            Some(m) => {
                if !force {
                    return Err(Error::usage(format!(
                        "{} holds a different {} run (config hash {}, this run's is {}); \
                         choose another output directory, or pass --force to replace it",
                        dir.display(),
                        m.kind,
                        m.config_hash,
                        fresh.config_hash
                    )));
                }
                clear_dir(dir)?;
                Ok(fresh)
            }
            None => {
                if dir.exists() && fs::read_dir(dir).at(dir)?.next().is_some() {
                    if !force {
                        return Err(Error::usage(format!(
                            "{} is not empty and holds no quern manifest; choose an empty or new directory, or pass --force to clear it",
                            dir.display()
                        )));
                    }
                    clear_dir(dir)?;
                }
                fs::create_dir_all(dir).at(dir)?;
                Ok(fresh)
            }
        }
    }

    /// Every committed shard by table, in unit order.
    pub fn tables(&self) -> BTreeMap<String, Vec<ShardInfo>> {
        let mut out: BTreeMap<String, Vec<ShardInfo>> = BTreeMap::new();
        for u in self.units.values() {
            for (t, shards) in &u.tables {
                out.entry(t.clone())
                    .or_default()
                    .extend(shards.iter().cloned());
            }
        }
        out
    }

    /// Sums the units' counts. `kept` is the row count of the `docs` table, `rejected` the
    /// sum of every stage's rejections, `quarantined` the files' quarantined records.
    pub fn compute_accounting(&self) -> Accounting {
        let mut files: Vec<FileCounts> = Vec::new();
        let mut stages: Vec<StageCounts> = Vec::new();
        for u in self.units.values() {
            for f in &u.files {
                match files.iter_mut().find(|x| x.file == f.file) {
                    Some(x) => {
                        x.records += f.records;
                        x.ingested += f.ingested;
                        x.quarantined += f.quarantined;
                        x.bytes += f.bytes;
                    }
                    None => files.push(f.clone()),
                }
            }
            for s in &u.stages {
                match stages.iter_mut().find(|x| x.stage == s.stage) {
                    Some(x) => x.add(s),
                    None => stages.push(s.clone()),
                }
            }
        }
        let tables = self.tables();
        let rows = |t: &str| {
            tables
                .get(t)
                .map(|v| v.iter().map(|s| s.rows).sum())
                .unwrap_or(0)
        };
        Accounting {
            input: files.iter().map(|f| f.records).sum(),
            kept: rows("docs"),
            rejected: stages.iter().map(|s| s.rejected).sum(),
            quarantined: files.iter().map(|f| f.quarantined).sum(),
            files,
            stages,
        }
    }
}

fn clear_dir(dir: &Path) -> Result<()> {
    for entry in fs::read_dir(dir).at(dir)? {
        let p = entry.at(dir)?.path();
        if p.is_dir() {
            fs::remove_dir_all(&p).at(&p)?;
        } else {
            fs::remove_file(&p).at(&p)?;
        }
    }
    Ok(())
}

/// Removes Parquet files (and temporary files) under `dir` that no committed unit claims:
/// the leftovers of a run killed between writing a shard and recording it.
pub fn remove_unclaimed_shards(dir: &Path, m: &Manifest) -> Result<()> {
    let claimed: BTreeSet<String> = m
        .tables()
        .values()
        .flatten()
        .map(|s| s.file.clone())
        .collect();
    fn walk(root: &Path, d: &Path, claimed: &BTreeSet<String>) -> Result<()> {
        for entry in fs::read_dir(d).at(d)? {
            let p = entry.at(d)?.path();
            if p.is_dir() {
                walk(root, &p, claimed)?;
                continue;
            }
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let rel = p
                .strip_prefix(root)
                .unwrap_or(&p)
                .to_string_lossy()
                .replace('\\', "/");
            let stale_tmp = name.starts_with('.') && name.contains(".tmp-");
            if stale_tmp || (name.ends_with(".parquet") && !claimed.contains(&rel)) {
                fs::remove_file(&p).at(&p)?;
            }
        }
        Ok(())
    }
    walk(dir, dir, &claimed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn different_run_is_refused_same_is_resumed() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let m = Manifest::open_output(&out, "ingest", serde_json::json!({"a": 1}), false).unwrap();
        m.save(&out).unwrap();
        fs::create_dir_all(out.join("docs")).unwrap();
        fs::write(out.join("docs/part-x-00000.parquet"), b"stale").unwrap();
        let again =
            Manifest::open_output(&out, "ingest", serde_json::json!({"a": 1}), false).unwrap();
        assert_eq!(again, m);
        assert!(
            !out.join("docs/part-x-00000.parquet").exists(),
            "unclaimed shard removed on resume"
        );
        let e =
            Manifest::open_output(&out, "ingest", serde_json::json!({"a": 2}), false).unwrap_err();
        assert!(e.to_string().contains("different ingest run"), "{e}");
        let forced =
            Manifest::open_output(&out, "ingest", serde_json::json!({"a": 2}), true).unwrap();
        assert!(forced.units.is_empty());
    }

    #[test]
    fn foreign_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("precious.txt"), b"x").unwrap();
        let e =
            Manifest::open_output(dir.path(), "build", serde_json::json!({}), false).unwrap_err();
        assert!(e.to_string().contains("holds no quern manifest"));
        assert!(dir.path().join("precious.txt").exists());
    }

    #[test]
    fn accounting_checks_catch_a_lost_document() {
        let mut a = Accounting {
            input: 10,
            kept: 6,
            rejected: 3,
            quarantined: 1,
            ..Default::default()
        };
        a.check().unwrap();
        a.kept = 5;
        assert!(a.check().is_err());
    }
}
