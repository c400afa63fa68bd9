//! `pipeline.toml`: the declared form of a batch build, validated before any data is read.
//!
//! ```toml
//! [input]
//! paths = ["corpus/*.jsonl.gz"]    # files, globs, folders (recursive)
//! text_field = "text"              # optional: format, id_field, source, strict, batch_rows, max_page_bytes
//!
//! [output]
//! dir = "out"                      # relative to the pipeline file
//! shard_rows = 100000              # optional: shard_bytes, row_group_rows, zstd_level
//!
//! [[stages]]
//! type = "gopher_quality"          # a registered stage type (`quern stages` lists them)
//! name = "gopher"                  # optional; defaults to the type; must be unique
//! min_doc_words = 50               # the stage's own parameters
//! ```
//!
//! Every relative path in the file (`input.paths`, `output.dir`, and every path-valued stage
//! parameter: lists, models, evaluation sets, spill directories) is relative to the
//! directory of the pipeline file, not to the working directory.
//!
//! Every table uses `deny_unknown_fields`, so a misspelt key is an error naming it, and every
//! stage type's parameters do the same. Nothing in the file is accepted and ignored: a
//! `[tokenize]` table is refused (tokenize with `quern tokenize` after the build).

use std::path::{Path, PathBuf};

use quern_core::error::{Error, Result};
use quern_core::shard::ShardOptions;
use quern_core::stage::StageSpec;
use serde::{Deserialize, Serialize};

fn default_text_field() -> String {
    "text".to_string()
}
fn default_batch_rows() -> usize {
    8192
}

/// `[input]`: what to read, as `quern ingest` takes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputConfig {
    /// Files, globs or folders. Required. Relative paths are relative to the pipeline file.
    pub paths: Vec<String>,
    /// Force a format (`jsonl`, `json`, `parquet`, `csv`, `tsv`, `text`, `warc`). Default: by
    /// extension.
    #[serde(default)]
    pub format: Option<String>,
    /// Field holding the text. Default `text`.
    #[serde(default = "default_text_field")]
    pub text_field: String,
    /// Field holding a stable id. Default: none (ids from file and line).
    #[serde(default)]
    pub id_field: Option<String>,
    /// Source name for every document. Default: the record's `source` field, else the file stem.
    #[serde(default)]
    pub source: Option<String>,
    /// Stop at the first malformed record instead of quarantining it. Default false.
    #[serde(default)]
    pub strict: bool,
    /// Rows per batch flowing through the stages. Default 8192.
    #[serde(default = "default_batch_rows")]
    pub batch_rows: usize,
    /// WARC/WET: the largest page kept in memory and extracted. Default 16 MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_page_bytes: Option<u64>,
}

/// `[output]`: where and how shards are written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputConfig {
    /// Output directory. Required. Relative to the pipeline file.
    pub dir: String,
    /// Rows per output shard. Default 100,000.
    #[serde(default)]
    pub shard_rows: Option<usize>,
    /// Approximate in-memory bytes per output shard. Default 256 MiB.
    #[serde(default)]
    pub shard_bytes: Option<usize>,
    /// Rows per Parquet row group. Default 4,096.
    #[serde(default)]
    pub row_group_rows: Option<usize>,
    /// zstd level of the shards, 1 (fastest, the default) to 22 (smallest).
    #[serde(default)]
    pub zstd_level: Option<i32>,
}

impl OutputConfig {
    pub fn shard_options(&self) -> ShardOptions {
        let mut o = ShardOptions::default();
        if let Some(n) = self.shard_rows {
            o = o.with_max_rows(n);
        }
        if let Some(n) = self.shard_bytes {
            o = o.with_max_bytes(n);
        }
        if let Some(n) = self.row_group_rows {
            o = o.with_row_group_rows(n);
        }
        if let Some(l) = self.zstd_level {
            o = o.with_zstd_level(l);
        }
        o
    }
}

/// The whole file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    pub input: InputConfig,
    pub output: OutputConfig,
    /// The stages, in order. Default: none (the build is an ingest with accounting).
    #[serde(default)]
    pub stages: Vec<toml::Table>,
}

/// A validated pipeline: paths resolved, stage specs extracted.
#[derive(Debug, Clone)]
pub struct Pipeline {
    pub config: PipelineConfig,
    /// The pipeline file (as given), named in configuration errors.
    pub file: PathBuf,
    /// Directory of the pipeline file; relative paths resolve against it.
    pub base: PathBuf,
    pub out: PathBuf,
    pub specs: Vec<StageSpec>,
}

/// A configuration error with the file it is in appended, as `run.toml`'s errors are.
pub fn in_file(e: Error, file: &Path) -> Error {
    match e {
        Error::BadConfig { key, message } if !message.contains(&file.display().to_string()) => {
            Error::bad_config(key, format!("{message} (in {})", file.display()))
        }
        e => e,
    }
}

/// A TOML syntax error, with the line and column toml reports.
fn toml_error(file: &Path, e: toml::de::Error) -> Error {
    Error::bad_config(file.display().to_string(), format!("not valid TOML: {e}"))
}

impl Pipeline {
    /// Parses and validates pipeline TOML text. `file` names it in errors; `base` resolves
    /// relative paths.
    pub fn parse(text: &str, file: &Path, base: &Path) -> Result<Pipeline> {
        let value: toml::Value = toml::from_str(text).map_err(|e| toml_error(file, e))?;
        // A build does not tokenize; a `[tokenize]` table was once accepted and ignored, so
        // it gets its own explanation rather than serde's "unknown field".
        if value.get("tokenize").is_some() {
            return Err(Error::bad_config(
                "tokenize",
                format!(
                    "{} has a [tokenize] table, but a build does not tokenize: remove it, and after \
                     the build run `quern tokenize --corpus <output.dir> --out DIR`, with the \
                     table's options in a file given as `--config FILE`",
                    file.display()
                ),
            ));
        }
        let config: PipelineConfig = serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            Error::bad_config(
                if path == "." {
                    "pipeline".to_string()
                } else {
                    path
                },
                e.inner().message().to_string(),
            )
        })?;
        if config.input.paths.is_empty() {
            return Err(Error::bad_config(
                "input.paths",
                "needs at least one file, glob or folder",
            ));
        }
        if config.input.batch_rows == 0 {
            return Err(Error::bad_config("input.batch_rows", "must be at least 1"));
        }
        if config.output.dir.trim().is_empty() {
            return Err(Error::bad_config("output.dir", "must name a directory"));
        }
        for (key, v) in [
            ("output.shard_rows", config.output.shard_rows),
            ("output.shard_bytes", config.output.shard_bytes),
            ("output.row_group_rows", config.output.row_group_rows),
        ] {
            if v == Some(0) {
                return Err(Error::bad_config(key, "must be at least 1"));
            }
        }
        if let Some(l) = config.output.zstd_level.filter(|l| !(1..=22).contains(l)) {
            return Err(Error::bad_config(
                "output.zstd_level",
                format!("{l} is not a zstd level: use 1 (fastest) to 22 (smallest)"),
            ));
        }
        let mut specs = Vec::with_capacity(config.stages.len());
        let mut names = std::collections::BTreeSet::new();
        for (i, table) in config.stages.iter().enumerate() {
            let key = format!("stages[{i}]");
            let mut params = table.clone();
            let type_name = match params.remove("type") {
                Some(toml::Value::String(s)) => s,
                Some(_) => {
                    return Err(Error::bad_config(
                        format!("{key}.type"),
                        "must be a string naming a stage type",
                    ))
                }
                None => {
                    return Err(Error::bad_config(
                        format!("{key}.type"),
                        "missing: every stage needs `type = \"...\"`",
                    ))
                }
            };
            let name = match params.remove("name") {
                Some(toml::Value::String(s)) if !s.is_empty() => s,
                Some(_) => {
                    return Err(Error::bad_config(
                        format!("{key}.name"),
                        "must be a non-empty string",
                    ))
                }
                None => type_name.clone(),
            };
            if !names.insert(name.clone()) {
                return Err(Error::bad_config(
                    format!("{key}.name"),
                    format!("stage name `{name}` is used twice; give one of them `name = \"...\"`"),
                ));
            }
            let params = serde_json::to_value(&params)
                .map_err(|e| Error::bad_config(&key, e.to_string()))?;
            specs.push(StageSpec {
                type_name,
                name,
                key,
                params,
                base_dir: base.to_path_buf(),
            });
        }
        let out = base.join(&config.output.dir);
        Ok(Pipeline {
            config,
            file: file.to_path_buf(),
            base: base.to_path_buf(),
            out,
            specs,
        })
    }

    /// Reads and validates a pipeline file.
    pub fn load(path: &Path) -> Result<Pipeline> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let base = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        Pipeline::parse(&text, path, base).map_err(|e| in_file(e, path))
    }

    /// Input paths resolved against the pipeline's directory (globs kept as globs).
    pub fn input_paths(&self) -> Vec<String> {
        self.config
            .input
            .paths
            .iter()
            .map(|p| {
                if Path::new(p).is_absolute() {
                    p.clone()
                } else {
                    self.base.join(p).to_string_lossy().into_owned()
                }
            })
            .collect()
    }

    /// The configuration recorded in the manifest (its hash decides resume vs refuse).
    pub fn manifest_config(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(&self.config).unwrap_or(serde_json::Value::Null);
        // The output directory itself is not part of what the build computes.
        if let Some(o) = v.get_mut("output").and_then(|o| o.as_object_mut()) {
            o.remove("dir");
        }
        if let Some(i) = v.get_mut("input").and_then(|o| o.as_object_mut()) {
            i.insert(
                "paths".into(),
                serde_json::to_value(self.input_paths()).unwrap_or_default(),
            );
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = "[input]\npaths = [\"in\"]\n[output]\ndir = \"out\"\n";

    fn parse(text: &str) -> Result<Pipeline> {
        Pipeline::parse(text, Path::new("conf/p.toml"), Path::new("conf"))
    }

    /// `[tokenize]` was accepted and silently ignored (issue 19): it is refused, naming the
    /// key and the file and saying what to run instead.
    #[test]
    fn a_tokenize_table_is_refused_not_ignored() {
        let e = parse(&format!("{OK}[tokenize]\nseq_len = 128\n"))
            .expect_err("a [tokenize] table must be refused")
            .to_string();
        assert!(
            e.contains("`tokenize`") && e.contains("conf/p.toml") && e.contains("quern tokenize"),
            "{e}"
        );
    }

    /// Every other key outside the known tables, and every unknown parameter of every
    /// registered stage type, is an error naming it.
    #[test]
    fn unknown_keys_are_refused_everywhere() {
        for (text, key) in [
            (format!("{OK}[tokenizer]\nx = 1\n"), "tokenizer"),
            (format!("{OK}extra = 1\n"), "extra"),
            (
                OK.replace("dir = \"out\"", "dir = \"out\"\nshards = 3"),
                "shards",
            ),
            (
                OK.replace("paths = [\"in\"]", "paths = [\"in\"]\nfield = \"t\""),
                "field",
            ),
        ] {
            let e = parse(&text).expect_err(key).to_string();
            assert!(e.contains(key), "{key}: {e}");
        }
        let reg = crate::stages::registry();
        let types: Vec<String> = reg.list().iter().map(|(t, _)| t.to_string()).collect();
        assert!(types.len() > 15, "{types:?}");
        for t in types {
            let p = parse(&format!(
                "{OK}[[stages]]\ntype = \"{t}\"\nnot_a_param = 1\n"
            ))
            .unwrap();
            let e = crate::pipeline::runner::build_stages(&p, &reg)
                .err()
                .unwrap_or_else(|| panic!("stage `{t}` accepted an unknown parameter"))
                .to_string();
            assert!(e.contains("not_a_param"), "stage `{t}`: {e}");
        }
    }
}
