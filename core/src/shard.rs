//! Parquet shards: writing with atomic commit, and reading back.
//!
//! A shard is committed atomically: it is written to a hidden temporary file in the same
//! directory, flushed and fsynced, renamed into place, and the directory is fsynced. A
//! reader (or a resumed build) therefore never sees half a shard. While writing, the bytes
//! are hashed with xxh3-64, so the manifest can record a checksum without reading the file
//! again.
//!
//! Shards are zstd-compressed, with row groups of [`ShardOptions::row_group_rows`] rows (a
//! few thousand, so scans by DuckDB and DataFusion parallelise across row groups), and a new
//! shard starts once a shard reaches [`ShardOptions::max_rows`] rows or about
//! [`ShardOptions::max_bytes`] bytes of Arrow data.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::Xxh3;

use crate::error::{Context, Error, IoContext, Result};

/// How shards are cut and compressed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShardOptions {
    /// Start a new shard after this many rows. Default 100,000.
    pub max_rows: usize,
    /// Start a new shard after about this many bytes of in-memory Arrow data. Default 256 MiB.
    pub max_bytes: usize,
    /// Rows per Parquet row group. Default 4,096.
    pub row_group_rows: usize,
    /// zstd level (1-22). Default 1: level 3 compresses text shards only a few percent
    /// smaller and takes about twice as long, which made compression the slowest step of
    /// ingest (measured in BENCHMARKS.md, `ingest`).
    pub zstd_level: i32,
}

impl Default for ShardOptions {
    fn default() -> Self {
        ShardOptions {
            max_rows: 100_000,
            max_bytes: 256 << 20,
            row_group_rows: 4096,
            zstd_level: 1,
        }
    }
}

impl ShardOptions {
    pub fn with_max_rows(mut self, n: usize) -> Self {
        self.max_rows = n.max(1);
        self
    }
    pub fn with_max_bytes(mut self, n: usize) -> Self {
        self.max_bytes = n.max(1);
        self
    }
    pub fn with_row_group_rows(mut self, n: usize) -> Self {
        self.row_group_rows = n.max(1);
        self
    }
    pub fn with_zstd_level(mut self, level: i32) -> Self {
        self.zstd_level = level;
        self
    }

    fn writer_properties(&self) -> Result<WriterProperties> {
        Ok(WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::try_new(self.zstd_level)?))
            .set_max_row_group_row_count(Some(self.row_group_rows.max(1)))
            .set_statistics_enabled(EnabledStatistics::Chunk)
            .set_created_by(format!("quern {}", env!("CARGO_PKG_VERSION")))
            .build())
    }
}

/// A committed shard as the manifest records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardInfo {
    /// Path relative to the output root, with `/` separators.
    pub file: String,
    pub rows: u64,
    pub bytes: u64,
    /// xxh3-64 of the file's bytes, as 16 hex digits.
    pub xxh3: String,
}

struct HashingWriter<W: Write> {
    inner: W,
    hasher: Xxh3,
    written: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

struct Open {
    writer: ArrowWriter<HashingWriter<BufWriter<File>>>,
    tmp: PathBuf,
    dest: PathBuf,
    rows: usize,
    bytes: usize,
}

/// Writes a stream of batches into shards `{dir}/{stem}-{k:05}.parquet`, committing each
/// atomically. Names depend only on `stem` and the shard's position, so the same input
/// gives the same files.
pub struct ShardWriter {
    root: PathBuf,
    dir: PathBuf,
    stem: String,
    schema: SchemaRef,
    opts: ShardOptions,
    props: WriterProperties,
    open: Option<Open>,
    next: usize,
    committed: Vec<ShardInfo>,
}

impl ShardWriter {
    /// `root` is the output root (paths in [`ShardInfo`] are relative to it); `dir` is the
    /// table directory below it, created if missing.
    pub fn new(
        root: impl AsRef<Path>,
        dir: impl AsRef<Path>,
        stem: &str,
        schema: SchemaRef,
        opts: ShardOptions,
    ) -> Result<Self> {
        let root = root.as_ref().to_path_buf();
        let dir = root.join(dir.as_ref());
        fs::create_dir_all(&dir).at(&dir)?;
        let props = opts.writer_properties()?;
        Ok(ShardWriter {
            root,
            dir,
            stem: stem.to_string(),
            schema,
            opts,
            props,
            open: None,
            next: 0,
            committed: Vec::new(),
        })
    }

    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn open_next(&mut self) -> Result<&mut Open> {
        if self.open.is_none() {
            let name = format!("{}-{:05}.parquet", self.stem, self.next);
            self.next += 1;
            let dest = self.dir.join(&name);
            let tmp = self.dir.join(format!(".{name}.tmp-{}", std::process::id()));
            let file = File::create(&tmp).at(&tmp)?;
            let hw = HashingWriter {
                inner: BufWriter::with_capacity(1 << 20, file),
                hasher: Xxh3::new(),
                written: 0,
            };
            let writer = ArrowWriter::try_new(hw, self.schema.clone(), Some(self.props.clone()))
                .with_context(|| format!("opening shard {}", dest.display()))?;
            self.open = Some(Open {
                writer,
                tmp,
                dest,
                rows: 0,
                bytes: 0,
            });
        }
        Ok(self.open.as_mut().expect("just opened"))
    }

    /// Appends a batch, splitting it across shards at the row and byte limits.
    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        if batch.schema().fields() != self.schema.fields() {
            return Err(Error::bug(format!(
                "batch schema {:?} differs from the shard schema {:?}",
                batch.schema(),
                self.schema
            )));
        }
        let mut offset = 0;
        let total = batch.num_rows();
        let per_row = batch.get_array_memory_size().max(1) / total.max(1);
        while offset < total {
            let max_rows = self.opts.max_rows;
            let max_bytes = self.opts.max_bytes;
            let open = self.open_next()?;
            let room_rows = max_rows.saturating_sub(open.rows);
            let room_bytes = max_bytes.saturating_sub(open.bytes) / per_row.max(1);
            let take = room_rows.min(room_bytes.max(1)).min(total - offset).max(1);
            let slice = batch.slice(offset, take);
            open.writer.write(&slice)?;
            open.rows += take;
            open.bytes += take * per_row;
            offset += take;
            if open.rows >= max_rows || open.bytes >= max_bytes {
                self.commit_open()?;
            }
        }
        Ok(())
    }

    fn commit_open(&mut self) -> Result<()> {
        let Some(open) = self.open.take() else {
            return Ok(());
        };
        let Open {
            writer,
            tmp,
            dest,
            rows,
            ..
        } = open;
        let hw = writer
            .into_inner()
            .with_context(|| format!("finishing shard {}", dest.display()))?;
        let HashingWriter {
            inner,
            hasher,
            written,
        } = hw;
        let file = inner
            .into_inner()
            .map_err(|e| Error::io(&tmp, e.into_error()))?;
        file.sync_all().at(&tmp)?;
        drop(file);
        fs::rename(&tmp, &dest).at(&dest)?;
        sync_dir(&self.dir)?;
        let rel = dest.strip_prefix(&self.root).unwrap_or(&dest);
        self.committed.push(ShardInfo {
            file: rel.to_string_lossy().replace('\\', "/"),
            rows: rows as u64,
            bytes: written,
            xxh3: format!("{:016x}", hasher.digest()),
        });
        Ok(())
    }

    /// Commits the open shard and returns every shard written, in order.
    pub fn finish(mut self) -> Result<Vec<ShardInfo>> {
        self.commit_open()?;
        Ok(std::mem::take(&mut self.committed))
    }
}

impl Drop for ShardWriter {
    fn drop(&mut self) {
        // An unfinished shard is abandoned: remove its temporary file.
        if let Some(open) = self.open.take() {
            let _ = fs::remove_file(&open.tmp);
        }
    }
}

/// fsyncs a directory so a rename in it is durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).at(dir)
}

/// Writes `bytes` to `path` atomically (temporary file, fsync, rename, fsync of the directory).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(dir).at(dir)?;
    let name = path
        .file_name()
        .ok_or_else(|| Error::bug(format!("no file name in {}", path.display())))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    {
        let mut f = File::create(&tmp).at(&tmp)?;
        f.write_all(bytes).at(&tmp)?;
        f.sync_all().at(&tmp)?;
    }
    fs::rename(&tmp, path).at(path)?;
    sync_dir(dir)
}

/// The committed Parquet shards of a table directory, sorted by name. Hidden files
/// (temporary shards of an interrupted run) are ignored.
pub fn list_shards(dir: &Path) -> Result<Vec<PathBuf>> {
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).at(dir)? {
        let entry = entry.at(dir)?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if !name.starts_with('.') && name.ends_with(".parquet") {
            out.push(entry.path());
        }
    }
    out.sort();
    Ok(out)
}

/// Reads a Parquet file as batches of at most `batch_rows` rows.
pub fn read_shard(
    path: &Path,
    batch_rows: usize,
) -> Result<impl Iterator<Item = Result<RecordBatch>>> {
    let file = File::open(path).at(path)?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .with_context(|| format!("reading Parquet footer of {}", path.display()))?
        .with_batch_size(batch_rows.max(1))
        .build()
        .with_context(|| format!("opening {}", path.display()))?;
    let path = path.to_path_buf();
    Ok(reader.map(move |b| b.with_context(|| format!("reading {}", path.display()))))
}

/// Reads every row of a table directory into memory. For tests and small tables.
pub fn read_table(dir: &Path) -> Result<Vec<RecordBatch>> {
    let mut out = Vec::new();
    for shard in list_shards(dir)? {
        for b in read_shard(&shard, 8192)? {
            out.push(b?);
        }
    }
    Ok(out)
}

/// xxh3-64 of a file's bytes as 16 hex digits, for checking a shard against the manifest.
pub fn file_xxh3(path: &Path) -> Result<String> {
    let bytes = fs::read(path).at(path)?;
    Ok(format!("{:016x}", xxhash_rust::xxh3::xxh3_64(&bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::doc_schema;
    use arrow::array::StringArray;
    use std::sync::Arc;

    fn docs(n: usize) -> RecordBatch {
        let ids: Vec<String> = (0..n).map(|i| format!("d{i}")).collect();
        let texts: Vec<String> = (0..n).map(|i| format!("text number {i}")).collect();
        RecordBatch::try_new(
            doc_schema(),
            vec![
                Arc::new(StringArray::from(ids)),
                Arc::new(StringArray::from(texts)),
                Arc::new(StringArray::from(vec!["s"; n])),
                Arc::new(StringArray::from(vec![None::<&str>; n])),
            ],
        )
        .unwrap()
    }

    #[test]
    fn shards_split_at_row_limit_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = ShardWriter::new(
            dir.path(),
            "docs",
            "part",
            doc_schema(),
            ShardOptions::default().with_max_rows(40),
        )
        .unwrap();
        w.write(&docs(30)).unwrap();
        w.write(&docs(30)).unwrap();
        w.write(&docs(30)).unwrap();
        let shards = w.finish().unwrap();
        assert_eq!(
            shards.iter().map(|s| s.rows).collect::<Vec<_>>(),
            vec![40, 40, 10]
        );
        assert_eq!(shards[0].file, "docs/part-00000.parquet");
        for s in &shards {
            let p = dir.path().join(&s.file);
            assert_eq!(file_xxh3(&p).unwrap(), s.xxh3, "checksum of {}", s.file);
            assert_eq!(fs::metadata(&p).unwrap().len(), s.bytes);
        }
        let rows: usize = read_table(&dir.path().join("docs"))
            .unwrap()
            .iter()
            .map(|b| b.num_rows())
            .sum();
        assert_eq!(rows, 90);
        // No temporary files left behind.
        assert!(fs::read_dir(dir.path().join("docs")).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with('.')));
    }

    #[test]
    fn same_input_same_bytes() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        for d in [&a, &b] {
            let mut w = ShardWriter::new(
                d.path(),
                "docs",
                "part",
                doc_schema(),
                ShardOptions::default(),
            )
            .unwrap();
            w.write(&docs(100)).unwrap();
            w.finish().unwrap();
        }
        assert_eq!(
            fs::read(a.path().join("docs/part-00000.parquet")).unwrap(),
            fs::read(b.path().join("docs/part-00000.parquet")).unwrap()
        );
    }

    #[test]
    fn dropped_writer_leaves_no_shard() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = ShardWriter::new(
            dir.path(),
            "docs",
            "part",
            doc_schema(),
            ShardOptions::default(),
        )
        .unwrap();
        w.write(&docs(5)).unwrap();
        drop(w);
        assert!(list_shards(&dir.path().join("docs")).unwrap().is_empty());
        assert_eq!(fs::read_dir(dir.path().join("docs")).unwrap().count(), 0);
    }

    #[test]
    fn wrong_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = ShardWriter::new(
            dir.path(),
            "q",
            "part",
            crate::schema::quarantine_schema(),
            ShardOptions::default(),
        )
        .unwrap();
        assert!(w.write(&docs(1)).is_err());
    }
}
