//! Writes a packed `clm` split of pseudo-random bytes (ids 0-255, vocabulary 259) for
//! benchmarks that train from a run.toml without a corpus (`benches/train/dist_gpu.sh`).
//!
//! cargo run --release -p quern-train --example byte_split -- OUT_DIR SEQ_LEN MEGABYTES

use quern_core::{Error, Result};
use quern_train::data::{write_byte_split, SplitMix64};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [out, seq, mb] = args.as_slice() else {
        return Err(Error::usage("usage: byte_split OUT_DIR SEQ_LEN MEGABYTES"));
    };
    let seq: usize = seq
        .parse()
        .map_err(|_| Error::usage(format!("SEQ_LEN {seq} is not a number")))?;
    let mb: usize = mb
        .parse()
        .map_err(|_| Error::usage(format!("MEGABYTES {mb} is not a number")))?;
    let mut rng = SplitMix64(17);
    let bytes: Vec<u8> = (0..mb * 1024 * 1024)
        .map(|_| rng.next_u64() as u8)
        .collect();
    write_byte_split(std::path::Path::new(out), &bytes, seq, false)
}
