//! Train/validation/test assignment: the `split` stage and the [`assign`] function behind
//! the `quern_split` SQL function.
//!
//! Why it is built this way:
//!
//! - **Deterministic and order-free.** A document's split is a function of its key, the
//!   seed and the ratios alone: `mix(xxh3(key) ^ seed)` mapped to `[0, 1)` and cut at the
//!   cumulative ratios. Re-running, resharding or adding documents never moves one.
//! - **Near-duplicates stay together.** When a `dup_cluster` column exists (written by
//!   dedup), a document whose cluster is non-null is keyed by its cluster id instead of its
//!   own id, so every member of a near-duplicate cluster lands in the same split and no
//!   validation document has a near-copy in train. Since the cluster id is the id of the
//!   cluster's representative, the representative (keyed by its id) goes with its cluster
//!   whether or not its own `dup_cluster` is filled in.
//! - **Stratified on request.** With `stratify_by = "<label column>"`, the stage becomes a
//!   global one: it first gathers every group (cluster or document) and its label, then in
//!   each label deals the groups, in seeded hash order, to the splits in exact proportion
//!   (largest remainder). Every label is then represented in each split as closely as the
//!   ratios allow, which a hash cut only does on average. A cluster whose members carry
//!   different labels is dealt in the stratum of its smallest label.
//!
//! ```toml
//! [[stages]]
//! type = "split"
//! train = 0.8                  # default 0.8
//! val = 0.1                    # default 0.1
//! test = 0.1                   # default 0.1 (the three must add up to 1)
//! seed = 0                     # default 0
//! key = "id"                   # default "id"
//! cluster_column = "dup_cluster"  # default "dup_cluster" (used when the column exists)
//! stratify_by = "topic"        # default none
//! column = "split"             # default "split"
//! ```

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use arrow::array::{Array, ArrayRef, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field};
use quern_core::stage::{
    parse_params, with_column, BatchCtx, Stage, StageKind, StageSpec, Verdict,
};
use quern_core::{Error, Result};
use serde::Deserialize;

use crate::classifier::model::HashIndex;
use crate::text::{hash_str, mix64};

/// Split names, in the order of the ratios.
pub const SPLITS: [&str; 3] = ["train", "val", "test"];

/// Config of the `split` stage (see the module docs for defaults).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitConfig {
    #[serde(default = "d_train")]
    pub train: f64,
    #[serde(default = "d_val")]
    pub val: f64,
    #[serde(default = "d_val")]
    pub test: f64,
    #[serde(default)]
    pub seed: u64,
    #[serde(default = "d_key")]
    pub key: String,
    #[serde(default = "d_cluster")]
    pub cluster_column: String,
    #[serde(default)]
    pub stratify_by: Option<String>,
    #[serde(default = "d_column")]
    pub column: String,
}

fn d_train() -> f64 {
    0.8
}
fn d_val() -> f64 {
    0.1
}
fn d_key() -> String {
    "id".into()
}
fn d_cluster() -> String {
    "dup_cluster".into()
}
fn d_column() -> String {
    "split".into()
}

impl Default for SplitConfig {
    fn default() -> Self {
        SplitConfig {
            train: d_train(),
            val: d_val(),
            test: d_val(),
            seed: 0,
            key: d_key(),
            cluster_column: d_cluster(),
            stratify_by: None,
            column: d_column(),
        }
    }
}

/// Ratios checked: non-negative, adding up to 1.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ratios(pub [f64; 3]);

impl Ratios {
    pub fn new(train: f64, val: f64, test: f64, key: &str) -> Result<Ratios> {
        let r = [train, val, test];
        if r.iter().any(|x| !x.is_finite() || *x < 0.0) || ((train + val + test) - 1.0).abs() > 1e-6
        {
            return Err(Error::bad_config(
                key,
                format!("train, val and test must be non-negative and add up to 1 (got {train}, {val}, {test})"),
            ));
        }
        Ok(Ratios(r))
    }
}

/// The hash of a group key (a document id or a cluster id).
#[inline]
pub fn key_hash(key: &str) -> u64 {
    hash_str(key, 0)
}

/// Where a key hash falls in `[0, 1)` for a seed.
#[inline]
fn unit(h: u64, seed: u64) -> f64 {
    (mix64(h ^ mix64(seed.wrapping_add(0x9e37_79b9_7f4a_7c15))) >> 11) as f64 / (1u64 << 53) as f64
}

/// The split index (into [`SPLITS`]) of a key, by hash cut.
pub fn assign(key: &str, seed: u64, ratios: Ratios) -> usize {
    let u = unit(key_hash(key), seed);
    let [a, b, _] = ratios.0;
    if u < a {
        0
    } else if u < a + b {
        1
    } else {
        2
    }
}

/// Deals `n` items to the splits in exact proportion (largest remainder, ties to the
/// earlier split).
fn allocate(n: usize, ratios: Ratios) -> [usize; 3] {
    let exact: Vec<f64> = ratios.0.iter().map(|r| r * n as f64).collect();
    let mut counts = [0usize; 3];
    for i in 0..3 {
        counts[i] = exact[i].floor() as usize;
    }
    let mut left = n - counts.iter().sum::<usize>();
    let mut order: Vec<usize> = (0..3).collect();
    order.sort_by(|&a, &b| {
        (exact[b] - exact[b].floor())
            .total_cmp(&(exact[a] - exact[a].floor()))
            .then(a.cmp(&b))
    });
    for &i in order.iter().cycle() {
        if left == 0 {
            break;
        }
        if ratios.0[i] > 0.0 {
            counts[i] += 1;
            left -= 1;
        }
    }
    counts
}

#[derive(Default)]
struct Gathered {
    strata: Vec<String>,
    stratum_of: HashMap<String, u32>,
    /// group key hash -> stratum (the smallest label seen for the group).
    groups: HashIndex<u32>,
}

/// The `split` stage.
pub struct SplitStage {
    name: String,
    cfg: SplitConfig,
    ratios: Ratios,
    gathered: Mutex<Gathered>,
    assigned: OnceLock<HashIndex<u8>>,
}

impl SplitStage {
    pub fn new(name: &str, cfg: SplitConfig, key: &str) -> Result<Self> {
        let ratios = Ratios::new(cfg.train, cfg.val, cfg.test, key)?;
        Ok(SplitStage {
            name: name.to_string(),
            cfg,
            ratios,
            gathered: Mutex::default(),
            assigned: OnceLock::new(),
        })
    }

    pub fn from_spec(spec: &StageSpec) -> Result<Self> {
        Self::new(&spec.name, parse_params(spec)?, &spec.key)
    }

    /// The group key hash of every row: the cluster id where there is one, else the key.
    fn group_hashes(&self, batch: &RecordBatch) -> Result<Vec<u64>> {
        let key = text_like(batch, &self.cfg.key, &self.name, "key")?;
        let cluster = match batch.column_by_name(&self.cfg.cluster_column) {
            Some(_) => Some(text_like(
                batch,
                &self.cfg.cluster_column,
                &self.name,
                "cluster_column",
            )?),
            None => None,
        };
        (0..batch.num_rows())
            .map(|i| {
                if let Some(c) = &cluster {
                    if c.is_valid(i) {
                        return Ok(key_hash(c.value(i)));
                    }
                }
                if key.is_null(i) {
                    return Err(Error::bad_config(
                        format!("{}.key", self.name),
                        format!("column `{}` is null in a row; a split key must be set on every document", self.cfg.key),
                    ));
                }
                Ok(key_hash(key.value(i)))
            })
            .collect()
    }
}

/// A column as Utf8 (cast from whatever it is), with errors naming the stage key.
fn text_like(batch: &RecordBatch, column: &str, stage: &str, what: &str) -> Result<StringArray> {
    let col = batch.column_by_name(column).ok_or_else(|| {
        Error::bad_config(
            format!("{stage}.{what}"),
            format!("no column `{column}` in the batch"),
        )
    })?;
    let col = arrow::compute::cast(col, &DataType::Utf8).map_err(|e| {
        Error::bad_config(
            format!("{stage}.{what}"),
            format!("column `{column}` cannot be read as text: {e}"),
        )
    })?;
    Ok(col
        .as_any()
        .downcast_ref::<StringArray>()
        .ok_or_else(|| Error::bug("cast to Utf8 gave another type"))?
        .clone())
}

impl Stage for SplitStage {
    fn name(&self) -> &str {
        &self.name
    }
    fn reads(&self) -> Vec<String> {
        let mut r = vec![self.cfg.key.clone()];
        if let Some(s) = &self.cfg.stratify_by {
            r.push(s.clone());
        }
        r
    }
    fn adds(&self) -> Vec<Field> {
        vec![Field::new(&self.cfg.column, DataType::Utf8, false)]
    }
    fn kind(&self) -> StageKind {
        if self.cfg.stratify_by.is_some() {
            StageKind::Global
        } else {
            StageKind::Map
        }
    }
    fn gather(&self, _ctx: &BatchCtx, batch: &RecordBatch) -> Result<()> {
        let Some(strat) = &self.cfg.stratify_by else {
            return Ok(());
        };
        let groups = self.group_hashes(batch)?;
        let labels = text_like(batch, strat, &self.name, "stratify_by")?;
        let mut g = self
            .gathered
            .lock()
            .map_err(|_| Error::bug("split gather lock poisoned"))?;
        let g = &mut *g;
        for (i, h) in groups.into_iter().enumerate() {
            let label = if labels.is_null(i) {
                ""
            } else {
                labels.value(i)
            };
            let s = match g.stratum_of.get(label) {
                Some(&s) => s,
                None => {
                    let s = g.strata.len() as u32;
                    g.strata.push(label.to_string());
                    g.stratum_of.insert(label.to_string(), s);
                    s
                }
            };
            g.groups
                .entry(h)
                .and_modify(|old| {
                    if g.strata[s as usize] < g.strata[*old as usize] {
                        *old = s;
                    }
                })
                .or_insert(s);
        }
        Ok(())
    }
    fn end_gather(&self) -> Result<()> {
        if self.cfg.stratify_by.is_none() {
            return Ok(());
        }
        let g = std::mem::take(
            &mut *self
                .gathered
                .lock()
                .map_err(|_| Error::bug("split gather lock poisoned"))?,
        );
        let mut by_stratum: Vec<Vec<(u64, u64)>> = vec![Vec::new(); g.strata.len()];
        for (&h, &s) in &g.groups {
            by_stratum[s as usize].push((mix64(h ^ mix64(self.cfg.seed)), h));
        }
        let mut assigned = HashIndex::with_capacity_and_hasher(g.groups.len(), Default::default());
        for mut groups in by_stratum {
            groups.sort_unstable();
            let counts = allocate(groups.len(), self.ratios);
            let mut it = groups.into_iter();
            for (split, &c) in counts.iter().enumerate() {
                for (_, h) in it.by_ref().take(c) {
                    assigned.insert(h, split as u8);
                }
            }
        }
        self.assigned
            .set(assigned)
            .map_err(|_| Error::bug("split end_gather called twice"))?;
        Ok(())
    }
    fn apply(&self, _ctx: &BatchCtx, batch: RecordBatch) -> Result<Verdict> {
        let groups = self.group_hashes(&batch)?;
        let names: StringArray = if self.cfg.stratify_by.is_some() {
            let assigned = self.assigned.get().ok_or_else(|| {
                Error::bug(format!(
                    "stage `{}` is stratified (global) but was applied before gather/end_gather",
                    self.name
                ))
            })?;
            groups
                .iter()
                .map(|h| {
                    assigned
                        .get(h)
                        .map(|&s| Some(SPLITS[s as usize]))
                        .ok_or_else(|| {
                            Error::bug(format!(
                                "stage `{}` sees a document that was not gathered",
                                self.name
                            ))
                        })
                })
                .collect::<Result<_>>()?
        } else {
            groups
                .iter()
                .map(|&h| {
                    let u = unit(h, self.cfg.seed);
                    let [a, b, _] = self.ratios.0;
                    Some(
                        SPLITS[if u < a {
                            0
                        } else if u < a + b {
                            1
                        } else {
                            2
                        }],
                    )
                })
                .collect()
        };
        let batch = with_column(
            &batch,
            Field::new(&self.cfg.column, DataType::Utf8, false),
            Arc::new(names) as ArrayRef,
        )?;
        Ok(Verdict::columns(batch))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocation_is_exact() {
        let r = Ratios::new(0.8, 0.1, 0.1, "k").unwrap();
        assert_eq!(allocate(10, r), [8, 1, 1]);
        assert_eq!(allocate(0, r), [0, 0, 0]);
        assert_eq!(allocate(1, r), [1, 0, 0]);
        let r = Ratios::new(0.5, 0.0, 0.5, "k").unwrap();
        assert_eq!(allocate(3, r), [2, 0, 1]);
        for n in 0..50 {
            assert_eq!(
                allocate(n, Ratios::new(0.7, 0.2, 0.1, "k").unwrap())
                    .iter()
                    .sum::<usize>(),
                n
            );
        }
    }

    #[test]
    fn ratios_must_add_up() {
        let e = Ratios::new(0.8, 0.1, 0.2, "stages[3]")
            .unwrap_err()
            .to_string();
        assert!(e.contains("stages[3]") && e.contains("add up to 1"), "{e}");
        assert!(Ratios::new(1.2, -0.1, -0.1, "k").is_err());
    }

    #[test]
    fn assign_follows_the_ratios_and_the_seed() {
        let r = Ratios::new(0.8, 0.1, 0.1, "k").unwrap();
        let mut counts = [0usize; 3];
        for i in 0..20_000 {
            counts[assign(&format!("doc-{i}"), 1, r)] += 1;
        }
        // Binomial standard deviation at n = 20000, p = 0.1 is about 42; allow 5 sigma.
        assert!((counts[0] as i64 - 16_000).abs() < 300, "{counts:?}");
        assert!((counts[1] as i64 - 2_000).abs() < 210, "{counts:?}");
        let moved = (0..1000)
            .filter(|i| assign(&format!("doc-{i}"), 1, r) != assign(&format!("doc-{i}"), 2, r))
            .count();
        assert!(
            moved > 100,
            "another seed should move documents, moved {moved}"
        );
    }
}
