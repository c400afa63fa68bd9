//! The Rust side of `benches/tokenize/run.sh` (run it with `--release`).
//!
//! - `train <docs dir> <tokenizer.json> <vocab> <max docs>`: trains the benchmark tokenizer.
//! - `limit <docs dir> <tokenizer.json> <batch docs>`: the raw `tokenizers` limit: every
//!   text is first read into memory, then only `encode_batch` and `encode_batch_fast` are
//!   timed.
//! - `quern <docs dir> <tokenizer.json> <out dir> <seq len>`: `tokenize_corpus` end to end
//!   (Parquet read, encode, pack, Parquet write, manifest), into a fresh directory.
//!
//! Each prints one JSON line with the bytes of text and seconds.

use std::path::{Path, PathBuf};
use std::time::Instant;

use arrow::array::{Array, AsArray};
use quern_tokenize::corpus::{tokenize_corpus, TokenizeConfig};
use quern_tokenize::input::{read_columns, resolve_docs, TextSource, TextStream};
use quern_tokenize::tokenizer::{
    load_tokenizer, save_tokenizer, train_tokenizer, TrainTokenizerConfig,
};

fn texts(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for shard in resolve_docs(dir).expect("docs") {
        for b in read_columns(&shard, &["text"], 8192).expect("read") {
            let b = b.expect("batch");
            let t = b
                .column_by_name("text")
                .expect("text")
                .as_string::<i32>()
                .clone();
            out.extend((0..t.len()).map(|i| t.value(i).to_string()));
        }
    }
    out
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| {
        args.get(i)
            .unwrap_or_else(|| panic!("missing argument {i}; see the file's docs"))
            .clone()
    };
    match arg(0).as_str() {
        "train" => {
            let cfg = TrainTokenizerConfig {
                max_documents: Some(arg(4).parse().expect("max docs")),
                ..TrainTokenizerConfig::default().with_vocab_size(arg(3).parse().expect("vocab"))
            };
            let t0 = Instant::now();
            let src = TextSource::resolve(Path::new(&arg(1)), None).expect("input");
            let tok = train_tokenizer(&cfg, TextStream::new(vec![src], "text")).expect("train");
            save_tokenizer(&tok, Path::new(&arg(2))).expect("save");
            println!(
                "{{\"what\": \"train\", \"seconds\": {:.3}}}",
                t0.elapsed().as_secs_f64()
            );
        }
        "limit" => {
            let texts = texts(Path::new(&arg(1)));
            let tok = load_tokenizer(Path::new(&arg(2))).expect("tokenizer");
            let batch: usize = arg(3).parse().expect("batch");
            let bytes: usize = texts.iter().map(String::len).sum();
            for (what, fast) in [
                ("rust_encode_batch", false),
                ("rust_encode_batch_fast", true),
            ] {
                let t0 = Instant::now();
                let mut ids = 0usize;
                for chunk in texts.chunks(batch) {
                    let v: Vec<&str> = chunk.iter().map(String::as_str).collect();
                    let enc = if fast {
                        tok.encode_batch_fast(v, false)
                    } else {
                        tok.encode_batch(v, false)
                    }
                    .expect("encode");
                    ids += enc.iter().map(|e| e.get_ids().len()).sum::<usize>();
                }
                println!("{{\"what\": \"{what}\", \"bytes\": {bytes}, \"tokens\": {ids}, \"seconds\": {:.3}}}", t0.elapsed().as_secs_f64());
            }
        }
        "quern" => {
            let shards: Vec<PathBuf> = resolve_docs(Path::new(&arg(1))).expect("docs");
            let out = PathBuf::from(arg(3));
            if out.exists() {
                std::fs::remove_dir_all(&out).expect("clear the output directory");
            }
            let cfg = TokenizeConfig::default()
                .with_tokenizer(arg(2))
                .with_seq_len(arg(4).parse().expect("seq len"));
            let t0 = Instant::now();
            let r = tokenize_corpus(&shards, &out, &cfg).expect("tokenize");
            let tokens: u64 = r.splits.values().map(|s| s.tokens).sum();
            println!(
                "{{\"what\": \"quern_tokenize\", \"bytes\": {}, \"tokens\": {tokens}, \"seconds\": {:.3}}}",
                r.text_bytes,
                t0.elapsed().as_secs_f64()
            );
        }
        other => panic!("unknown mode {other}"),
    }
}
