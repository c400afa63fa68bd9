//! The two pipeline stages, `exact_dedup` and `minhash_dedup`, and their configs.
//!
//! Why: this is what a pipeline declares (`[[stages]] type = "minhash_dedup"`). Both are
//! [`StageKind::Global`]: `gather` hashes every batch (rayon inside the batch) and hands
//! compact records to the [`Engine`]; `end_gather` clusters; `apply` adds `dup_cluster`
//! (the kept document's id, on every member of a cluster; null when unique) and `dup_of`
//! (the kept id, on removed rows) and drops duplicates with reason `exact_duplicate` or
//! `near_duplicate` (the `rejected` table's `details` carry `dup_of`).
//!
//! ```toml
//! [[stages]]
//! type = "minhash_dedup"
//! ngram = 5              # 5-word shingles (datatrove's default)
//! bands = 14             # 14 × 8 = 112 permutations (datatrove's default)
//! rows = 8
//! # threshold = 0.8      # instead of bands/rows: derived as datasketch/text-dedup do
//! verify = "none"        # or "estimated": drop band collisions below verify_threshold
//! keep = "first"         # or "longest", or "max_column" with keep_column = "quality"
//! memory_limit = "1GB"   # spill sorted runs to disk past a quarter of this
//! ```

use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::{Array, RecordBatch, StringArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field};
use quern_core::stage::{parse_params, string_column, with_column, StageSpec};
use quern_core::{BatchCtx, Error, Result, Stage, StageKind, Verdict};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_128;

use crate::cluster::{position, ClusterStats, DocIn, Engine, KeepRule, Membership, Verify};
use crate::minhash::{
    optimal_bands_rows, MinHashParams, MinHasher, Scratch, DEFAULT_BANDS, DEFAULT_ROWS,
};
use crate::normalize::{normalize_into, NormalizeConfig};
use crate::shingle::ShingleKind;

/// `dup_cluster`: the id of the kept document of the row's cluster (null when unique).
pub const DUP_CLUSTER: &str = "dup_cluster";
/// `dup_of`: on a removed duplicate, the id of the document kept in its place.
pub const DUP_OF: &str = "dup_of";
/// Reason for rows removed by `exact_dedup`.
pub const EXACT_DUPLICATE: &str = "exact_duplicate";
/// Reason for rows removed by `minhash_dedup`.
pub const NEAR_DUPLICATE: &str = "near_duplicate";

/// Parses a size such as `"1GB"`, `"512MiB"`, `"800M"` or `"1000000"` (bytes). Decimal
/// and binary units are both accepted; `GB` and `GiB` both mean 2^30 bytes, as in most
/// tools' memory flags.
pub fn parse_memory(s: &str, key: &str) -> Result<u64> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let bad = || {
        Error::bad_config(
            key,
            format!("`{s}` is not a size; write e.g. \"1GB\", \"512MB\" or a number of bytes"),
        )
    };
    let v: f64 = num.parse().map_err(|_| bad())?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => return Err(bad()),
    };
    let bytes = (v * mult as f64) as u64;
    if bytes < (64 << 10) {
        return Err(Error::bad_config(
            key,
            format!("`{s}` is below the 64KB minimum"),
        ));
    }
    Ok(bytes)
}

fn default_column() -> String {
    quern_core::schema::TEXT.to_string()
}

fn default_id_column() -> String {
    quern_core::schema::ID.to_string()
}

/// `exact_dedup`: one kept per group of documents with the same normalized text.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExactDedupConfig {
    /// Column to compare. Default `"text"`.
    #[serde(default = "default_column")]
    pub column: String,
    /// Column naming documents in `dup_cluster`/`dup_of`. Default `"id"`.
    #[serde(default = "default_id_column")]
    pub id_column: String,
    /// Normalization before hashing. Default: datatrove's `simplify_text` (all on); set
    /// every switch to false to compare raw bytes.
    #[serde(default)]
    pub normalize: NormalizeConfig,
    /// Which document of a group is kept. Default `"first"`.
    #[serde(default)]
    pub keep: KeepRule,
    /// The numeric column for `keep = "max_column"`. Default none.
    #[serde(default)]
    pub keep_column: Option<String>,
    /// Memory budget such as `"1GB"`; records spill to disk past a quarter of it. Default
    /// none (everything in memory).
    #[serde(default)]
    pub memory_limit: Option<String>,
    /// Directory for spilled runs, relative to the pipeline file. Default: the system's
    /// temporary directory.
    #[serde(default)]
    pub spill_dir: Option<PathBuf>,
}

impl Default for ExactDedupConfig {
    fn default() -> Self {
        serde_json::from_value(serde_json::json!({})).expect("every field has a default")
    }
}

/// Whether band collisions are checked before two documents are joined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VerifyMode {
    /// Every band collision joins (datatrove's behaviour). The default.
    #[default]
    None,
    /// Join only when the signatures' estimated Jaccard reaches `verify_threshold`. Costs
    /// `4 × num_perm` bytes per document on disk, not in memory.
    Estimated,
}

/// `minhash_dedup`: MinHash-LSH near-duplicate removal. Defaults equal datatrove's.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MinhashDedupConfig {
    /// Column to compare. Default `"text"`.
    #[serde(default = "default_column")]
    pub column: String,
    /// Column naming documents in `dup_cluster`/`dup_of`. Default `"id"`.
    #[serde(default = "default_id_column")]
    pub id_column: String,
    /// Normalization before shingling. Default: datatrove's `simplify_text`.
    #[serde(default)]
    pub normalize: NormalizeConfig,
    /// `"word"` or `"char"` n-grams. Default `"word"`.
    #[serde(default = "default_shingle")]
    pub shingle: ShingleKind,
    /// n of the n-grams. Default 5.
    #[serde(default = "default_ngram")]
    pub ngram: usize,
    /// Number of permutations. Default `bands × rows` (112), or 112 with `threshold`.
    #[serde(default)]
    pub num_perm: Option<usize>,
    /// Bands. Default 14 (unless `threshold` is set).
    #[serde(default)]
    pub bands: Option<usize>,
    /// Rows per band. Default 8 (unless `threshold` is set).
    #[serde(default)]
    pub rows: Option<usize>,
    /// A Jaccard threshold from which bands × rows are derived (exclusive with bands/rows).
    /// Default none.
    #[serde(default)]
    pub threshold: Option<f64>,
    /// Seed of the hash functions. Default 1.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Candidate verification. Default `"none"`.
    #[serde(default)]
    pub verify: VerifyMode,
    /// Estimated Jaccard a candidate pair needs with `verify = "estimated"`. Default:
    /// `threshold` when set, else the S-curve's midpoint `(1/bands)^(1/rows)`.
    #[serde(default)]
    pub verify_threshold: Option<f64>,
    /// Which document of a cluster is kept. Default `"first"`.
    #[serde(default)]
    pub keep: KeepRule,
    /// The numeric column for `keep = "max_column"`. Default none.
    #[serde(default)]
    pub keep_column: Option<String>,
    /// Memory budget such as `"1GB"`. Default none (everything in memory).
    #[serde(default)]
    pub memory_limit: Option<String>,
    /// Directory for spilled runs, relative to the pipeline file. Default: the system's
    /// temporary directory.
    #[serde(default)]
    pub spill_dir: Option<PathBuf>,
}

fn default_shingle() -> ShingleKind {
    ShingleKind::Word
}
fn default_ngram() -> usize {
    5
}
fn default_seed() -> u64 {
    1
}

impl Default for MinhashDedupConfig {
    fn default() -> Self {
        serde_json::from_value(serde_json::json!({})).expect("every field has a default")
    }
}

impl MinhashDedupConfig {
    pub fn with_threshold(mut self, t: f64) -> Self {
        self.threshold = Some(t);
        self
    }
    pub fn with_bands_rows(mut self, bands: usize, rows: usize) -> Self {
        self.bands = Some(bands);
        self.rows = Some(rows);
        self
    }
    pub fn with_verify(mut self, threshold: f64) -> Self {
        self.verify = VerifyMode::Estimated;
        self.verify_threshold = Some(threshold);
        self
    }
    pub fn with_memory_limit(mut self, limit: &str) -> Self {
        self.memory_limit = Some(limit.to_string());
        self
    }
    pub fn with_keep(mut self, keep: KeepRule, column: Option<&str>) -> Self {
        self.keep = keep;
        self.keep_column = column.map(str::to_string);
        self
    }

    /// The resolved hashing parameters; errors name the key under `key`.
    pub fn params(&self, key: &str) -> Result<MinHashParams> {
        let (num_perm, bands, rows) = match self.threshold {
            Some(t) => {
                if self.bands.is_some() || self.rows.is_some() {
                    return Err(Error::bad_config(
                        format!("{key}.threshold"),
                        "set either threshold or bands/rows, not both",
                    ));
                }
                if !(t > 0.0 && t < 1.0) {
                    return Err(Error::bad_config(
                        format!("{key}.threshold"),
                        format!("{t} is not in (0, 1)"),
                    ));
                }
                let np = self.num_perm.unwrap_or(DEFAULT_BANDS * DEFAULT_ROWS);
                let (b, r) = optimal_bands_rows(t, np);
                (np, b, r)
            }
            None => {
                let b = self.bands.unwrap_or(DEFAULT_BANDS);
                let r = self.rows.unwrap_or(DEFAULT_ROWS);
                (self.num_perm.unwrap_or(b * r), b, r)
            }
        };
        let p = MinHashParams {
            normalize: self.normalize,
            shingle: self.shingle,
            ngram: self.ngram,
            num_perm,
            bands,
            rows,
            seed: self.seed,
        };
        p.validate(key)?;
        Ok(p)
    }
}

fn check_keep(keep: KeepRule, column: &Option<String>, key: &str) -> Result<()> {
    match (keep, column) {
        (KeepRule::MaxColumn, None) => Err(Error::bad_config(
            format!("{key}.keep_column"),
            "keep = \"max_column\" needs keep_column",
        )),
        (KeepRule::First | KeepRule::Longest, Some(_)) => Err(Error::bad_config(
            format!("{key}.keep_column"),
            "only used with keep = \"max_column\"",
        )),
        _ => Ok(()),
    }
}

fn sort_budget(limit: &Option<String>, key: &str) -> Result<Option<u64>> {
    // A quarter for the sort buffer; the rest covers the document table, batches in flight
    // and the merge's read buffers.
    limit
        .as_deref()
        .map(|l| parse_memory(l, &format!("{key}.memory_limit")).map(|b| b / 4))
        .transpose()
}

/// Per-row keep scores for the keep rule.
fn scores(
    batch: &RecordBatch,
    keep: KeepRule,
    text: &StringArray,
    keep_column: Option<&str>,
    stage: &str,
) -> Result<Vec<f64>> {
    Ok(match keep {
        KeepRule::First => vec![0.0; batch.num_rows()],
        KeepRule::Longest => (0..text.len())
            .map(|i| {
                if text.is_null(i) {
                    0.0
                } else {
                    text.value(i).len() as f64
                }
            })
            .collect(),
        KeepRule::MaxColumn => {
            let name = keep_column.unwrap_or_default();
            let col = batch.column_by_name(name).ok_or_else(|| {
                Error::bad_config(
                    format!("{stage}.keep_column"),
                    format!("no column `{name}` in the batch"),
                )
            })?;
            let f = cast(col, &DataType::Float64).map_err(|e| {
                Error::bad_config(
                    format!("{stage}.keep_column"),
                    format!("column `{name}` is not numeric: {e}"),
                )
            })?;
            let f = f
                .as_any()
                .downcast_ref::<arrow::array::Float64Array>()
                .expect("cast to Float64");
            (0..f.len())
                .map(|i| {
                    if f.is_null(i) {
                        f64::NEG_INFINITY
                    } else {
                        f.value(i)
                    }
                })
                .collect()
        }
    })
}

fn output(
    batch: RecordBatch,
    clusters: &crate::cluster::Clusters,
    ctx: &BatchCtx,
    reason: &str,
) -> Result<Verdict> {
    let n = batch.num_rows();
    let mut cluster: Vec<Option<&str>> = Vec::with_capacity(n);
    let mut dup_of: Vec<Option<&str>> = Vec::with_capacity(n);
    let mut reasons: Vec<Option<String>> = Vec::with_capacity(n);
    for i in 0..n {
        match clusters.lookup(position(ctx, i)?)? {
            Membership::Unique => {
                cluster.push(None);
                dup_of.push(None);
                reasons.push(None);
            }
            Membership::Kept(id) => {
                cluster.push(Some(id));
                dup_of.push(None);
                reasons.push(None);
            }
            Membership::Duplicate(id) => {
                cluster.push(Some(id));
                dup_of.push(Some(id));
                reasons.push(Some(reason.to_string()));
            }
        }
    }
    let batch = with_column(
        &batch,
        Field::new(DUP_CLUSTER, DataType::Utf8, true),
        Arc::new(StringArray::from(cluster)),
    )?;
    let batch = with_column(
        &batch,
        Field::new(DUP_OF, DataType::Utf8, true),
        Arc::new(StringArray::from(dup_of)),
    )?;
    Ok(Verdict::with_reasons(batch, reasons))
}

fn dup_fields() -> Vec<Field> {
    vec![
        Field::new(DUP_CLUSTER, DataType::Utf8, true),
        Field::new(DUP_OF, DataType::Utf8, true),
    ]
}

/// The `exact_dedup` stage.
pub struct ExactDedup {
    name: String,
    cfg: ExactDedupConfig,
    engine: Engine<(u128, u64)>,
}

impl ExactDedup {
    /// Builds the stage; `key` names it in config errors (e.g. `stages[3]`).
    pub fn new(name: &str, key: &str, cfg: ExactDedupConfig) -> Result<Self> {
        check_keep(cfg.keep, &cfg.keep_column, key)?;
        let budget = sort_budget(&cfg.memory_limit, key)?;
        let engine = Engine::new(name, cfg.keep, None, budget, cfg.spill_dir.as_deref())?;
        Ok(ExactDedup {
            name: name.to_string(),
            cfg,
            engine,
        })
    }

    pub fn from_spec(spec: &StageSpec) -> Result<Self> {
        let mut cfg: ExactDedupConfig = parse_params(spec)?;
        cfg.spill_dir = cfg.spill_dir.map(|d| spec.resolve(&d));
        Self::new(&spec.name, &spec.key, cfg)
    }

    /// Counts of the clustering (after `end_gather`).
    pub fn stats(&self) -> Result<ClusterStats> {
        Ok(self.engine.clusters()?.stats.clone())
    }

    /// The content hash of one text (128-bit xxh3 of the normalized text).
    pub fn content_hash(text: &str, normalize: &NormalizeConfig) -> u128 {
        let mut buf = String::new();
        normalize_into(text, normalize, &mut buf);
        xxh3_128(buf.as_bytes())
    }
}

/// What both dedup stages read from a batch: the text, the ids and each row's keep score.
struct Gathered<'a> {
    text: &'a StringArray,
    ids: &'a StringArray,
    scores: Vec<f64>,
}

impl<'a> Gathered<'a> {
    fn read(
        batch: &'a RecordBatch,
        stage: &str,
        column: &str,
        id_column: &str,
        keep: KeepRule,
        keep_column: Option<&str>,
    ) -> Result<Self> {
        let text = string_column(batch, column, stage)?;
        let ids = string_column(batch, id_column, stage)?;
        let scores = scores(batch, keep, text, keep_column, stage)?;
        Ok(Gathered { text, ids, scores })
    }

    /// The clustering input of row `i`: its position, id, keep score and signature.
    fn doc<'b>(&self, ctx: &BatchCtx, i: usize, sig: Option<&'b [u32]>) -> Result<DocIn<'b>>
    where
        'a: 'b,
    {
        Ok(DocIn {
            pos: position(ctx, i)?,
            id: if self.ids.is_null(i) {
                ""
            } else {
                self.ids.value(i)
            },
            score: self.scores[i],
            sig,
        })
    }
}

impl Stage for ExactDedup {
    fn name(&self) -> &str {
        &self.name
    }
    fn reads(&self) -> Vec<String> {
        let mut r = vec![self.cfg.column.clone(), self.cfg.id_column.clone()];
        r.extend(self.cfg.keep_column.clone());
        r
    }
    fn adds(&self) -> Vec<Field> {
        dup_fields()
    }
    fn kind(&self) -> StageKind {
        StageKind::Global
    }
    fn gather(&self, ctx: &BatchCtx, batch: &RecordBatch) -> Result<()> {
        let g = Gathered::read(
            batch,
            &self.name,
            &self.cfg.column,
            &self.cfg.id_column,
            self.cfg.keep,
            self.cfg.keep_column.as_deref(),
        )?;
        let text = g.text;
        let norm = self.cfg.normalize;
        let hashes: Vec<u128> = (0..batch.num_rows())
            .into_par_iter()
            .map_init(String::new, |buf, i| {
                let t = if text.is_null(i) { "" } else { text.value(i) };
                normalize_into(t, &norm, buf);
                xxh3_128(buf.as_bytes())
            })
            .collect();
        let mut docs = Vec::with_capacity(hashes.len());
        let mut recs = Vec::with_capacity(hashes.len());
        for (i, h) in hashes.into_iter().enumerate() {
            let doc = g.doc(ctx, i, None)?;
            recs.push((h, doc.pos));
            docs.push(doc);
        }
        self.engine.add(&docs, recs)
    }
    fn end_gather(&self) -> Result<()> {
        self.engine.finish().map(|_| ())
    }
    fn apply(&self, ctx: &BatchCtx, batch: RecordBatch) -> Result<Verdict> {
        output(batch, self.engine.clusters()?, ctx, EXACT_DUPLICATE)
    }
}

/// The `minhash_dedup` stage.
pub struct MinhashDedup {
    name: String,
    cfg: MinhashDedupConfig,
    hasher: MinHasher,
    verify: bool,
    engine: Engine<(u64, u64)>,
}

impl MinhashDedup {
    /// Builds the stage; `key` names it in config errors (e.g. `stages[3]`).
    pub fn new(name: &str, key: &str, cfg: MinhashDedupConfig) -> Result<Self> {
        let params = cfg.params(key)?;
        check_keep(cfg.keep, &cfg.keep_column, key)?;
        let verify = match cfg.verify {
            VerifyMode::None => {
                if cfg.verify_threshold.is_some() {
                    return Err(Error::bad_config(
                        format!("{key}.verify_threshold"),
                        "only used with verify = \"estimated\"",
                    ));
                }
                None
            }
            VerifyMode::Estimated => {
                let t = cfg
                    .verify_threshold
                    .or(cfg.threshold)
                    .unwrap_or_else(|| params.threshold());
                if !(0.0..=1.0).contains(&t) {
                    return Err(Error::bad_config(
                        format!("{key}.verify_threshold"),
                        format!("{t} is not in [0, 1]"),
                    ));
                }
                Some(Verify {
                    threshold: t,
                    sig_len: params.num_perm,
                })
            }
        };
        let budget = sort_budget(&cfg.memory_limit, key)?;
        let engine = Engine::new(name, cfg.keep, verify, budget, cfg.spill_dir.as_deref())?;
        Ok(MinhashDedup {
            name: name.to_string(),
            hasher: MinHasher::new(params),
            verify: verify.is_some(),
            cfg,
            engine,
        })
    }

    pub fn from_spec(spec: &StageSpec) -> Result<Self> {
        let mut cfg: MinhashDedupConfig = parse_params(spec)?;
        cfg.spill_dir = cfg.spill_dir.map(|d| spec.resolve(&d));
        Self::new(&spec.name, &spec.key, cfg)
    }

    pub fn hasher(&self) -> &MinHasher {
        &self.hasher
    }

    /// Counts of the clustering (after `end_gather`).
    pub fn stats(&self) -> Result<ClusterStats> {
        Ok(self.engine.clusters()?.stats.clone())
    }

    /// Kept id and member positions of every cluster (after `end_gather`).
    pub fn clusters(&self) -> Result<Vec<(String, Vec<u64>)>> {
        Ok(self.engine.clusters()?.cluster_members())
    }
}

impl ExactDedup {
    /// Kept id and member positions of every cluster (after `end_gather`).
    pub fn clusters(&self) -> Result<Vec<(String, Vec<u64>)>> {
        Ok(self.engine.clusters()?.cluster_members())
    }
}

impl Stage for MinhashDedup {
    fn name(&self) -> &str {
        &self.name
    }
    fn reads(&self) -> Vec<String> {
        let mut r = vec![self.cfg.column.clone(), self.cfg.id_column.clone()];
        r.extend(self.cfg.keep_column.clone());
        r
    }
    fn adds(&self) -> Vec<Field> {
        dup_fields()
    }
    fn kind(&self) -> StageKind {
        StageKind::Global
    }
    fn gather(&self, ctx: &BatchCtx, batch: &RecordBatch) -> Result<()> {
        let g = Gathered::read(
            batch,
            &self.name,
            &self.cfg.column,
            &self.cfg.id_column,
            self.cfg.keep,
            self.cfg.keep_column.as_deref(),
        )?;
        let text = g.text;
        let p = self.hasher.params();
        let (np, bands) = (p.num_perm, p.bands);
        let n = batch.num_rows();
        // Signatures for the batch as one flat row-major matrix (n × num_perm u32 lanes),
        // in parallel chunks; `has` marks documents with at least one shingle.
        let mut sigs = vec![0u32; n * np];
        let mut keys = vec![0u64; n * bands];
        let mut has = vec![false; n];
        sigs.par_chunks_mut(np)
            .zip(keys.par_chunks_mut(bands))
            .zip(has.par_iter_mut())
            .enumerate()
            .for_each_init(
                || (Scratch::default(), Vec::with_capacity(bands)),
                |(scratch, kbuf), (i, ((sig, key), has))| {
                    let t = if text.is_null(i) { "" } else { text.value(i) };
                    *has = self.hasher.signature_into(t, scratch, sig);
                    if *has {
                        kbuf.clear();
                        self.hasher.band_keys(sig, scratch, kbuf);
                        key.copy_from_slice(kbuf);
                    }
                },
            );
        let mut docs = Vec::with_capacity(n);
        let mut recs = Vec::with_capacity(n * bands);
        for i in 0..n {
            let sig = &sigs[i * np..(i + 1) * np];
            let doc = g.doc(ctx, i, (self.verify && has[i]).then_some(sig))?;
            if has[i] {
                let pos = doc.pos;
                recs.extend(keys[i * bands..(i + 1) * bands].iter().map(|&k| (k, pos)));
            }
            docs.push(doc);
        }
        self.engine.add(&docs, recs)
    }
    fn end_gather(&self) -> Result<()> {
        self.engine.finish().map(|_| ())
    }
    fn apply(&self, ctx: &BatchCtx, batch: RecordBatch) -> Result<Verdict> {
        output(batch, self.engine.clusters()?, ctx, NEAR_DUPLICATE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_sizes() {
        let cases = [
            ("1GB", 1u64 << 30),
            ("512MiB", 512 << 20),
            ("1.5g", 3 << 29),
            (" 2000000 ", 2_000_000),
        ];
        for (s, want) in cases {
            assert_eq!(parse_memory(s, "k").unwrap(), want, "{s}");
        }
        for bad in ["", "GB", "1XB", "12", "-1GB"] {
            let e = parse_memory(bad, "stages[1].memory_limit")
                .unwrap_err()
                .to_string();
            assert!(e.contains("stages[1].memory_limit"), "{e}");
        }
    }

    #[test]
    fn config_defaults_equal_datatrove() {
        let c = MinhashDedupConfig::default();
        let p = c.params("s").unwrap();
        assert_eq!(
            (p.ngram, p.bands, p.rows, p.num_perm, p.seed),
            (5, 14, 8, 112, 1)
        );
        assert_eq!(p.normalize, NormalizeConfig::default());
        assert_eq!(c.keep, KeepRule::First);
    }

    #[test]
    fn bad_configs_name_the_key() {
        let spec = |params| StageSpec {
            type_name: "minhash_dedup".into(),
            name: "mh".into(),
            key: "stages[2]".into(),
            params,
            ..Default::default()
        };
        let cases = [
            (serde_json::json!({"bandz": 3}), "bandz"),
            (
                serde_json::json!({"threshold": 0.8, "bands": 4}),
                "stages[2].threshold",
            ),
            (
                serde_json::json!({"bands": 20, "rows": 8, "num_perm": 100}),
                "stages[2].num_perm",
            ),
            (
                serde_json::json!({"keep": "max_column"}),
                "stages[2].keep_column",
            ),
            (
                serde_json::json!({"memory_limit": "lots"}),
                "stages[2].memory_limit",
            ),
            (
                serde_json::json!({"shingle": "sentence"}),
                "stages[2].shingle",
            ),
        ];
        for (params, want) in cases {
            let e = MinhashDedup::from_spec(&spec(params.clone()))
                .err()
                .unwrap()
                .to_string();
            assert!(e.contains(want), "{params}: {e}");
        }
    }

    #[test]
    fn threshold_derives_bands_and_rows() {
        let p = MinhashDedupConfig::default()
            .with_threshold(0.8)
            .params("s")
            .unwrap();
        assert!(p.bands * p.rows <= 112);
        assert!((p.threshold() - 0.8).abs() < 0.1, "{}x{}", p.bands, p.rows);
    }
}
