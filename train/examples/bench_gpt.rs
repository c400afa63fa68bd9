//! quern's side of the trainer benchmark (`benches/train/`): trains the same GPT-2-style
//! model as `../shared/bench/torch_ref_gpt.py` (pre-LayerNorm, learned positions, GELU MLP,
//! tied embeddings, no biases, causal SDPA) on random tokens through quern's own trainer
//! (model, objective, AdamW, clipping, autocast) and prints one JSON line in the reference
//! script's format.
//!
//! cargo run --release -p quern-train --example bench_gpt -- --layers 12 --heads 12 --dim 768 \
//!     --seq 1024 --vocab 50304 --batch 16 --steps 30 --warmup 10 --device cuda --bf16 1

use std::collections::HashMap;
use std::time::Instant;

use quern_core::Result;
use quern_train::config::{DeviceChoice, Fused, ModelConfig, Precision, TrainConfig};
use quern_train::data::{BatchSource, DataCursor};
use quern_train::objective::Clm;
use quern_train::trainer::{resolve_device, Trainer};
use tch::{Kind, Tensor};

/// The same random rows every step, like the reference script.
struct Fixed(Tensor);

impl BatchSource for Fixed {
    fn row_width(&self) -> usize {
        self.0.size()[1] as usize
    }
    fn rows(&self) -> usize {
        self.0.size()[0] as usize
    }
    fn next_rows(&mut self, n: usize) -> Result<Tensor> {
        Ok(self.0.narrow(0, 0, n as i64))
    }
    fn cursor(&self) -> DataCursor {
        DataCursor::default()
    }
    fn seek(&mut self, _: DataCursor) -> Result<()> {
        Ok(())
    }
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut a: HashMap<String, String> = HashMap::new();
    for pair in args.chunks(2) {
        let key = pair[0].trim_start_matches("--").to_string();
        a.insert(key, pair.get(1).cloned().unwrap_or_default());
    }
    let get = |k: &str, d: &str| a.get(k).cloned().unwrap_or_else(|| d.to_string());
    let num = |k: &str, d: usize| get(k, &d.to_string()).parse::<usize>().expect(k);
    let (layers, heads, dim, seq, vocab, batch) = (
        num("layers", 12),
        num("heads", 12),
        num("dim", 768),
        num("seq", 1024),
        num("vocab", 50304),
        num("batch", 16),
    );
    let (steps, warmup) = (num("steps", 30), num("warmup", 10));
    let bf16 = get("bf16", "1") == "1";
    let device_s = get("device", "cuda");
    let peak: f64 = get("peak-tflops", "989").parse().expect("peak-tflops");
    let device = resolve_device(if device_s == "cpu" {
        DeviceChoice::Cpu
    } else {
        DeviceChoice::Cuda
    })?;
    let mut cfg = TrainConfig::new("unused", std::env::temp_dir().join("quern-bench"));
    cfg.model = ModelConfig {
        layers,
        heads,
        dim,
        seq_len: Some(seq),
        vocab_size: Some(vocab),
        bias: false,
        tie_embeddings: true,
        ..ModelConfig::default()
    };
    cfg.optim.lr = 3e-4;
    cfg.optim.weight_decay = 0.1;
    cfg.optim.decay = quern_train::config::Decay::Constant;
    // libtorch's fused AdamW kernel exists for CPU and CUDA; `--fused 0` uses quern's
    // per-tensor update (what the reference script runs on CPU).
    cfg.optim.fused = if get("fused", "1") == "1" {
        Fused::On
    } else {
        Fused::Off
    };
    cfg.train.micro_batch = batch;
    cfg.train.max_steps = (steps + warmup) as u64;
    cfg.train.precision = if bf16 {
        Precision::Bf16
    } else {
        Precision::Fp32
    };
    cfg.train.peak_tflops = Some(peak);
    tch::manual_seed(0);
    let rows = Tensor::randint(
        vocab as i64,
        [batch as i64, seq as i64 + 1],
        (Kind::Int64, tch::Device::Cpu),
    );
    let mut t = Trainer::new(
        &cfg,
        &cfg.model.clone(),
        Box::new(Clm),
        Box::new(Fixed(rows)),
        None,
        device,
    )?;
    let mut times = Vec::new();
    let mut loss = 0.0;
    for step in 0..steps + warmup {
        if device.is_cuda() {
            tch::Cuda::synchronize(0);
        }
        let t0 = Instant::now();
        let log = t.train_step()?;
        if device.is_cuda() {
            tch::Cuda::synchronize(0);
        }
        if step >= warmup {
            times.push(t0.elapsed().as_secs_f64());
        }
        loss = log.loss;
    }
    times.sort_by(f64::total_cmp);
    let med = times[times.len() / 2];
    let tok_s = (batch * seq) as f64 / med;
    let n_params = t.model.params().numel() - (seq * dim) as i64;
    let fpt = 6.0 * n_params as f64 + 12.0 * (layers * dim * seq) as f64;
    println!(
        "{}",
        serde_json::json!({
            "impl": "quern", "params": n_params, "batch": batch, "seq": seq,
            "step_ms_median": (med * 1e6).round() / 1e3, "tokens_per_s": tok_s.round(),
            "mfu": ((tok_s * fpt / (peak * 1e12)) * 1e4).round() / 1e4,
            "final_loss": (loss * 1e4).round() / 1e4, "device": device_s, "bf16": bf16,
            "fused_adamw": t.optimizer.fused(),
        })
    );
    Ok(())
}
