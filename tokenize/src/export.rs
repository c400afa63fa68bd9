//! Exports of packed splits to the flat formats other trainers read.
//!
//! - **nanoGPT**: `<split>.bin`, the token stream as little-endian `uint16` when every id
//!   fits (vocabulary ≤ 65,536, as nanoGPT's `np.memmap(..., dtype=np.uint16)` expects),
//!   else `uint32`. Documents are separated by the end-of-text id, as in nanoGPT's
//!   `prepare.py`.
//! - **Megatron-LM**: `<split>_text_document.bin` / `.idx`, the `MMapIndexedDataset`
//!   layout of Megatron-Core's `indexed_dataset.py`: the `.bin` holds every document's ids
//!   (each ending with end-of-text, as `preprocess_data.py --append-eod` writes them), and
//!   the `.idx` holds the header `MMIDIDX\0\0`, version 1 (u64), the dtype code (u8: 8 =
//!   uint16 when the vocabulary is below 65,500, else 4 = int32, Megatron's own rule), the
//!   sequence count (u64), the document-index count (u64), then the sequence lengths
//!   (int32), the sequence byte offsets (int64) and the document indices (int64, starting
//!   at 0, one sequence per document).
//!
//! Documents are recovered from the packed rows with `doc_starts`, so a document that
//! spans rows is one Megatron sequence again. Padding at the end of a unit's last row is
//! left out when the pad id differs from the end-of-text id.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use arrow::array::AsArray;
use arrow::datatypes::Int32Type;
use indicatif::{ProgressBar, ProgressStyle};
use quern_core::error::IoContext;
use quern_core::shard::read_shard;
use quern_core::{Error, Result};
use serde::Serialize;

use crate::meta::TokenMeta;
use crate::schema::{DOC_STARTS, TOKENS};

/// The flat formats [`export_split`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    Nanogpt,
    Megatron,
}

impl ExportFormat {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "nanogpt" => Ok(ExportFormat::Nanogpt),
            "megatron" => Ok(ExportFormat::Megatron),
            other => Err(Error::bad_config(
                "format",
                format!("`{other}` is not one of nanogpt, megatron"),
            )),
        }
    }
}

/// What an export wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExportReport {
    pub files: Vec<PathBuf>,
    pub tokens: u64,
    pub documents: u64,
    pub dtype: &'static str,
}

/// Streams a packed split's rows (padding stripped) with their document starts.
fn for_each_row(
    split_dir: &Path,
    meta: &TokenMeta,
    progress: &ProgressBar,
    mut f: impl FnMut(&[i32], &[i32]) -> Result<()>,
) -> Result<()> {
    if !meta.objective.is_packed() {
        return Err(Error::usage(format!(
            "{} holds `{}` rows; exports are for packed `clm`/`mlm` splits",
            split_dir.display(),
            meta.objective
        )));
    }
    let strip = meta
        .pad_id
        .filter(|p| Some(*p) != meta.eos_id)
        .map(|p| p as i32);
    for s in &meta.shards {
        let path = split_dir.join(&s.file);
        for b in read_shard(&path, 1024)? {
            let b = b?;
            let (Some(t), Some(d)) = (b.column_by_name(TOKENS), b.column_by_name(DOC_STARTS))
            else {
                return Err(Error::bad_input(
                    quern_core::error::Place::file(&path),
                    "no tokens/doc_starts columns",
                ));
            };
            let (t, d) = (t.as_list::<i32>(), d.as_list::<i32>());
            for i in 0..b.num_rows() {
                let tv = t.value(i);
                let mut tokens = tv.as_primitive::<Int32Type>().values().as_ref();
                if let Some(p) = strip {
                    while tokens.last() == Some(&p) {
                        tokens = &tokens[..tokens.len() - 1];
                    }
                }
                let dv = d.value(i);
                f(tokens, dv.as_primitive::<Int32Type>().values().as_ref())?;
            }
            progress.inc(b.num_rows() as u64);
        }
    }
    progress.finish_and_clear();
    Ok(())
}

struct Out {
    tmp: PathBuf,
    dest: PathBuf,
    w: BufWriter<File>,
}

impl Out {
    fn create(dest: PathBuf) -> Result<Out> {
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = dest.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
        let f = File::create(&tmp).at(&tmp)?;
        Ok(Out {
            tmp,
            dest,
            w: BufWriter::with_capacity(1 << 20, f),
        })
    }
    fn write(&mut self, b: &[u8]) -> Result<()> {
        self.w.write_all(b).at(&self.tmp)
    }
    fn commit(self) -> Result<PathBuf> {
        let f = self
            .w
            .into_inner()
            .map_err(|e| Error::io(&self.tmp, e.into_error()))?;
        f.sync_all().at(&self.tmp)?;
        std::fs::rename(&self.tmp, &self.dest).at(&self.dest)?;
        Ok(self.dest)
    }
}

fn put_ids(out: &mut Out, ids: &[i32], wide: bool, buf: &mut Vec<u8>) -> Result<()> {
    buf.clear();
    if wide {
        for &i in ids {
            buf.extend_from_slice(&(i as u32).to_le_bytes());
        }
    } else {
        for &i in ids {
            buf.extend_from_slice(&(i as u16).to_le_bytes());
        }
    }
    out.write(buf)
}

/// Exports the packed split in `split_dir` into `out_dir`, named after the split directory.
pub fn export_split(
    split_dir: &Path,
    format: ExportFormat,
    out_dir: &Path,
) -> Result<ExportReport> {
    export_split_with(split_dir, format, out_dir, false)
}

/// [`export_split`], with a progress bar on stderr (rows of the split) when `progress`.
pub fn export_split_with(
    split_dir: &Path,
    format: ExportFormat,
    out_dir: &Path,
    progress: bool,
) -> Result<ExportReport> {
    let meta = TokenMeta::load(split_dir)?;
    let bar = if progress {
        ProgressBar::new(meta.rows)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} export {prefix} [{bar:30}] {pos}/{len} rows ({per_sec}, {elapsed}<{eta})",
        )
        .map_err(|e| Error::bug(format!("progress template: {e}")))?
        .progress_chars("=> "),
    );
    let split = split_dir
        .canonicalize()
        .at(split_dir)?
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "train".into());
    bar.set_prefix(split.clone());
    std::fs::create_dir_all(out_dir).at(out_dir)?;
    let mut buf = Vec::new();
    match format {
        ExportFormat::Nanogpt => {
            let wide = meta.vocab_size > 65_536;
            let mut out = Out::create(out_dir.join(format!("{split}.bin")))?;
            let (mut tokens, mut documents) = (0u64, 0u64);
            for_each_row(split_dir, &meta, &bar, |t, starts| {
                tokens += t.len() as u64;
                documents += starts.len() as u64;
                put_ids(&mut out, t, wide, &mut buf)
            })?;
            let file = out.commit()?;
            Ok(ExportReport {
                files: vec![file],
                tokens,
                documents,
                dtype: if wide { "uint32" } else { "uint16" },
            })
        }
        ExportFormat::Megatron => {
            let wide = meta.vocab_size >= 65_500;
            let size = if wide { 4 } else { 2 };
            let stem = format!("{split}_text_document");
            let mut bin = Out::create(out_dir.join(format!("{stem}.bin")))?;
            let mut lengths: Vec<i32> = Vec::new();
            let mut current: u64 = 0; // ids of the document being written
            let mut tokens = 0u64;
            for_each_row(split_dir, &meta, &bar, |t, starts| {
                let mut cut: Vec<usize> = starts
                    .iter()
                    .map(|&s| s as usize)
                    .filter(|&s| s <= t.len())
                    .collect();
                cut.push(t.len());
                let mut from = 0;
                for &c in &cut {
                    if c > from {
                        put_ids(&mut bin, &t[from..c], wide, &mut buf)?;
                        current += (c - from) as u64;
                        from = c;
                    }
                    if c < t.len() && current > 0 {
                        // A document starts at `c`: the previous one is complete.
                        lengths.push(
                            i32::try_from(current)
                                .map_err(|_| Error::usage("a document longer than 2^31 ids"))?,
                        );
                        current = 0;
                    }
                }
                tokens += t.len() as u64;
                Ok(())
            })?;
            if current > 0 {
                lengths.push(
                    i32::try_from(current)
                        .map_err(|_| Error::usage("a document longer than 2^31 ids"))?,
                );
            }
            let bin_path = bin.commit()?;
            let mut idx = Out::create(out_dir.join(format!("{stem}.idx")))?;
            idx.write(b"MMIDIDX\x00\x00")?;
            idx.write(&1u64.to_le_bytes())?;
            idx.write(&[if wide { 4u8 } else { 8u8 }])?;
            idx.write(&(lengths.len() as u64).to_le_bytes())?;
            idx.write(&(lengths.len() as u64 + 1).to_le_bytes())?;
            let mut b = Vec::with_capacity(lengths.len() * 20);
            for l in &lengths {
                b.extend_from_slice(&l.to_le_bytes());
            }
            let mut ptr = 0i64;
            for l in &lengths {
                b.extend_from_slice(&ptr.to_le_bytes());
                ptr += *l as i64 * size;
            }
            for d in 0..=lengths.len() as i64 {
                b.extend_from_slice(&d.to_le_bytes());
            }
            idx.write(&b)?;
            let idx_path = idx.commit()?;
            Ok(ExportReport {
                files: vec![bin_path, idx_path],
                tokens,
                documents: lengths.len() as u64,
                dtype: if wide { "int32" } else { "uint16" },
            })
        }
    }
}
