//! Log-likelihood of continuations given contexts: the engine under multiple-choice tasks.
//!
//! A [`Request`] is a context and a continuation, both token ids. Its score is the sum of
//! `log p(continuation[k] | context, continuation[..k])` and whether every continuation
//! token is the model's argmax (lm-evaluation-harness's `is_greedy`).
//!
//! How it runs, and why the results do not depend on the batch size:
//!
//! - The model reads `(context ++ continuation)[..-1]`, cut from the left to the model's
//!   context when longer (as lm-evaluation-harness does), and the last `len(continuation)`
//!   positions are scored.
//! - Requests with the same input ids are run once (every MMLU question's four one-letter
//!   continuations share one forward pass).
//! - Inputs are sorted by length (longest first, ties in request order) and batched with
//!   padding on the right. Attention is causal, so padding after a row's last token cannot
//!   change its logits, and positions start at 0 in every row.
//! - Only the scored positions go through the output projection and the log-softmax (in
//!   fp32), not every position of every row.

use std::collections::HashMap;

use quern_core::{Error, Result};
use quern_models::transformer::{Extras, Transformer};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

/// A context and the continuation to score after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub context: Vec<u32>,
    pub continuation: Vec<u32>,
}

/// The score of one [`Request`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Score {
    /// Sum of the continuation tokens' log-probabilities (natural log).
    pub logprob: f64,
    /// Whether every continuation token was the most likely one.
    pub greedy: bool,
}

/// Maps a libtorch error to quern's error type.
pub(crate) fn torch_err(what: &str) -> impl Fn(tch::TchError) -> Error + '_ {
    move |e| Error::usage(format!("{what}: {e}"))
}

/// One distinct model input and the positions its requests need.
struct Input {
    ids: Vec<u32>,
    /// Positions scored, counted from the end: `ids.len() - need .. ids.len()`.
    need: usize,
    /// First request that made it (for a stable order).
    first: usize,
}

/// Scores `requests` with `model`, `batch_size` distinct inputs per forward pass.
/// `progress` is called with the number of requests scored so far.
pub fn score(
    model: &Transformer,
    requests: &[Request],
    batch_size: usize,
    progress: &mut dyn FnMut(usize),
) -> Result<Vec<Score>> {
    if batch_size == 0 {
        return Err(Error::usage("the batch size must be at least 1"));
    }
    let max_len = model.seq_len() as usize;
    let mut inputs: Vec<Input> = Vec::new();
    let mut index: HashMap<Vec<u32>, usize> = HashMap::new();
    // For each request: its input and how many continuation tokens it scores.
    let mut of_request: Vec<(usize, usize)> = Vec::with_capacity(requests.len());
    for (i, r) in requests.iter().enumerate() {
        let n = r.continuation.len();
        if n == 0 {
            return Err(Error::usage(format!(
                "request {i}: the continuation has no tokens"
            )));
        }
        if n > max_len {
            return Err(Error::usage(format!(
                "request {i}: a continuation of {n} tokens does not fit the model's context of {max_len}"
            )));
        }
        if r.context.is_empty() {
            return Err(Error::usage(format!(
                "request {i}: the context has no tokens (give at least a beginning-of-text id)"
            )));
        }
        let mut whole: Vec<u32> = r.context.iter().chain(&r.continuation).copied().collect();
        if whole.len() > max_len + 1 {
            whole.drain(..whole.len() - (max_len + 1));
        }
        whole.pop();
        let k = match index.get(&whole) {
            Some(&k) => k,
            None => {
                index.insert(whole.clone(), inputs.len());
                inputs.push(Input {
                    ids: whole,
                    need: 0,
                    first: i,
                });
                inputs.len() - 1
            }
        };
        inputs[k].need = inputs[k].need.max(n);
        of_request.push((k, n));
    }
    drop(index);
    let mut order: Vec<usize> = (0..inputs.len()).collect();
    order.sort_by(|&a, &b| {
        inputs[b]
            .ids
            .len()
            .cmp(&inputs[a].ids.len())
            .then(inputs[a].first.cmp(&inputs[b].first))
    });
    // Requests by input, to score them when their input's batch is done.
    let mut by_input: Vec<Vec<usize>> = vec![Vec::new(); inputs.len()];
    for (i, &(k, _)) in of_request.iter().enumerate() {
        by_input[k].push(i);
    }
    let mut out: Vec<Option<Score>> = vec![None; requests.len()];
    let mut done = 0usize;
    let device = model.device();
    let _guard = tch::no_grad_guard();
    for chunk in order.chunks(batch_size) {
        let t = inputs[chunk[0]].ids.len();
        let b = chunk.len();
        let mut flat = vec![0i64; b * t];
        // Rows of the flattened `[b * t, dim]` hidden states to score, and where each
        // input's block of scored rows starts.
        let mut rows: Vec<i64> = Vec::new();
        let mut block_start: Vec<usize> = Vec::with_capacity(b);
        for (j, &k) in chunk.iter().enumerate() {
            let inp = &inputs[k];
            for (p, &id) in inp.ids.iter().enumerate() {
                flat[j * t + p] = id as i64;
            }
            block_start.push(rows.len());
            let len = inp.ids.len();
            rows.extend((len - inp.need..len).map(|p| (j * t + p) as i64));
        }
        let ids = Tensor::from_slice(&flat)
            .view([b as i64, t as i64])
            .to(device);
        let hidden = model.hidden(&ids, &Extras::default(), true, false, None)?;
        let dim = hidden.size()[2];
        let picked = hidden
            .reshape([-1, dim])
            .f_index_select(0, &Tensor::from_slice(&rows).to(device))
            .map_err(torch_err("selecting scored positions"))?;
        let logp = model
            .logits(&picked)
            .to_kind(Kind::Float)
            .log_softmax(-1, Kind::Float);
        let best: Vec<i64> = Vec::try_from(logp.argmax(-1, false).to_device(tch::Device::Cpu))
            .map_err(torch_err("reading argmax"))?;
        // Gather every request's target log-probabilities in one indexing call.
        let (mut gr, mut gc, mut spans) = (Vec::new(), Vec::new(), Vec::new());
        for (j, &k) in chunk.iter().enumerate() {
            for &i in &by_input[k] {
                let n = of_request[i].1;
                let cont = &requests[i].continuation;
                let first_row = block_start[j] + (inputs[k].need - n);
                let from = gr.len();
                for (q, &tok) in cont.iter().enumerate() {
                    gr.push((first_row + q) as i64);
                    gc.push(tok as i64);
                }
                spans.push((i, from, first_row));
            }
        }
        let vals: Vec<f32> = Vec::try_from(
            logp.f_index(&[
                Some(Tensor::from_slice(&gr).to(device)),
                Some(Tensor::from_slice(&gc).to(device)),
            ])
            .map_err(torch_err("gathering target log-probabilities"))?
            .to_device(tch::Device::Cpu),
        )
        .map_err(torch_err("reading log-probabilities"))?;
        for (i, from, first_row) in spans {
            let cont = &requests[i].continuation;
            let n = cont.len();
            let logprob = vals[from..from + n].iter().map(|&v| v as f64).sum();
            let greedy = cont
                .iter()
                .enumerate()
                .all(|(q, &tok)| best[first_row + q] == tok as i64);
            out[i] = Some(Score { logprob, greedy });
            done += 1;
        }
        progress(done);
    }
    out.into_iter()
        .enumerate()
        .map(|(i, s)| s.ok_or_else(|| Error::bug(format!("request {i} was not scored"))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use quern_models::ModelConfig;

    fn model() -> Transformer {
        let _g = crate::torch_rng_lock();
        tch::manual_seed(7);
        let cfg = ModelConfig::llama()
            .with_kv_heads(2)
            .with_layers(2)
            .with_dim(32)
            .with_seq_len(24)
            .with_vocab_size(50);
        Transformer::new(&cfg, tch::Device::Cpu)
    }

    /// The plain computation: the full logits of `context ++ continuation`, one request at
    /// a time, no batching, no deduplication.
    fn plain(m: &Transformer, r: &Request) -> (f64, bool) {
        let _g = tch::no_grad_guard();
        let mut whole: Vec<i64> = r
            .context
            .iter()
            .chain(&r.continuation)
            .map(|&x| x as i64)
            .collect();
        let keep = m.seq_len() as usize + 1;
        if whole.len() > keep {
            whole.drain(..whole.len() - keep);
        }
        let n = r.continuation.len();
        let input = Tensor::from_slice(&whole[..whole.len() - 1]).view([1, -1]);
        let logp = m.forward(&input, true, false).log_softmax(-1, Kind::Float);
        let l = whole.len() - 1;
        let mut lp = 0.0;
        let mut greedy = true;
        for q in 0..n {
            let row = logp.get(0).get((l - n + q) as i64);
            let tok = whole[l - n + q + 1];
            lp += row.double_value(&[tok]);
            greedy &= row.argmax(-1, false).int64_value(&[]) == tok;
        }
        (lp, greedy)
    }

    fn requests() -> Vec<Request> {
        let mut v = Vec::new();
        for (i, ctx_len) in [3usize, 9, 1, 9, 20, 30].iter().enumerate() {
            let context: Vec<u32> = (0..*ctx_len).map(|k| ((k * 7 + i) % 50) as u32).collect();
            for cont_len in [1usize, 4] {
                let continuation = (0..cont_len).map(|k| ((k * 3 + 11) % 50) as u32).collect();
                v.push(Request {
                    context: context.clone(),
                    continuation,
                });
            }
            // A single-token continuation sharing the input with the one above.
            v.push(Request {
                context: context.clone(),
                continuation: vec![42],
            });
        }
        v
    }

    #[test]
    fn scores_equal_the_plain_computation_at_every_batch_size() {
        let m = model();
        let reqs = requests();
        let want: Vec<(f64, bool)> = reqs.iter().map(|r| plain(&m, r)).collect();
        for bs in [1, 2, 5, 64] {
            let got = score(&m, &reqs, bs, &mut |_| {}).unwrap();
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (g.logprob - w.0).abs() < 1e-4,
                    "batch {bs}, request {i}: {} vs {}",
                    g.logprob,
                    w.0
                );
                assert_eq!(g.greedy, w.1, "batch {bs}, request {i}");
            }
        }
    }

    #[test]
    fn greedy_is_true_for_the_argmax_continuation() {
        let m = model();
        let ctx = vec![1u32, 2, 3, 4];
        let logits = m.forward(
            &Tensor::from_slice(&[1i64, 2, 3, 4]).view([1, 4]),
            true,
            false,
        );
        let top = logits.get(0).get(3).argmax(-1, false).int64_value(&[]) as u32;
        let other = (top + 1) % 50;
        let got = score(
            &m,
            &[
                Request {
                    context: ctx.clone(),
                    continuation: vec![top],
                },
                Request {
                    context: ctx,
                    continuation: vec![other],
                },
            ],
            4,
            &mut |_| {},
        )
        .unwrap();
        assert!(got[0].greedy && !got[1].greedy);
        assert!(got[0].logprob > got[1].logprob);
    }

    #[test]
    fn bad_requests_are_refused() {
        let m = model();
        let empty = Request {
            context: vec![1],
            continuation: vec![],
        };
        assert!(score(&m, &[empty], 1, &mut |_| {}).is_err());
        let long = Request {
            context: vec![1],
            continuation: vec![2; 40],
        };
        let e = score(&m, &[long], 1, &mut |_| {}).unwrap_err().to_string();
        assert!(e.contains("does not fit"), "{e}");
        assert!(score(&m, &[], 0, &mut |_| {}).is_err());
    }
}
