//! Packed `sft`: `quern tokenize --objective sft --pack` puts several whole conversations in
//! each row (every conversation once, whole, with its loss mask; the same counts as the
//! unpacked split; the same bytes on a rerun), the trainer keeps attention and positions inside
//! each conversation (a packed row's logits are those transformers' LlamaForCausalLM gives
//! each conversation alone), a packed run starts from the unpacked run's loss, `quern eval ppl`
//! scores both splits the same, and `pack` where it cannot work is refused naming the key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use arrow::array::AsArray;
use arrow::datatypes::{Int32Type, Int8Type};
use quern_tokenize::TokenMeta;
use tch::{Device, Kind, Tensor};

use crate::common::{assert_same_tree, fixture, quern, read_jsonl, run_err, run_ok, run_peer};

/// A conversation as stored: ids and loss mask.
type Conv = (Vec<i32>, Vec<i8>);

/// The conversations of a split by document id, and each row's conversation ids in order.
fn conversations(dir: &Path) -> (BTreeMap<String, Conv>, Vec<Vec<String>>) {
    let meta = TokenMeta::load(dir).unwrap();
    let (mut convs, mut rows) = (BTreeMap::new(), Vec::new());
    let mut cols = vec!["input_ids", "loss_mask", "doc_ids"];
    if meta.packed {
        cols.push("doc_starts");
    }
    for s in &meta.shards {
        for b in quern_tokenize::input::read_columns(&dir.join(&s.file), &cols, 1024).unwrap() {
            let b = b.unwrap();
            let list = |n: &str| b.column_by_name(n).unwrap().as_list::<i32>().clone();
            let (ids, mask, docs) = (list("input_ids"), list("loss_mask"), list("doc_ids"));
            for r in 0..b.num_rows() {
                let ids = ids.value(r).as_primitive::<Int32Type>().values().to_vec();
                let mask = mask.value(r).as_primitive::<Int8Type>().values().to_vec();
                let d = docs.value(r);
                let docs: Vec<String> = d
                    .as_string::<i32>()
                    .iter()
                    .map(|x| x.unwrap().to_string())
                    .collect();
                let starts: Vec<usize> = if meta.packed {
                    let s = list("doc_starts").value(r);
                    let s = s.as_primitive::<Int32Type>().values().to_vec();
                    s.iter().map(|&x| x as usize).collect()
                } else {
                    vec![0]
                };
                assert_eq!(starts.len(), docs.len());
                assert!(ids.len() as u64 <= meta.seq_len);
                for (k, doc) in docs.iter().enumerate() {
                    let e = starts.get(k + 1).copied().unwrap_or(ids.len());
                    let c = (ids[starts[k]..e].to_vec(), mask[starts[k]..e].to_vec());
                    assert!(convs.insert(doc.clone(), c).is_none(), "{doc} twice");
                }
                rows.push(docs);
            }
        }
    }
    (convs, rows)
}

/// A byte-level BPE tokenizer trained on the fixture's turns.
fn tokenizer(root: &Path) -> PathBuf {
    let texts = root.join("texts.jsonl");
    let lines: Vec<String> = read_jsonl(&fixture("sft/chatterbot_en.jsonl"))
        .iter()
        .flat_map(|r| r["messages"].as_array().unwrap().clone())
        .map(|m| serde_json::json!({"text": m["content"]}).to_string())
        .collect();
    std::fs::write(&texts, lines.join("\n")).unwrap();
    let tok = root.join("tokenizer.json");
    run_ok(
        quern()
            .args(["tokenizer", "train", "--vocab-size", "600", "--out"])
            .arg(&tok)
            .arg("--input")
            .arg(&texts),
    );
    tok
}

/// `quern tokenize --objective sft` of `corpus` into `out`, packed or not; the JSON report.
fn tokenize(
    corpus: &Path,
    tok: &Path,
    out: &Path,
    seq_len: usize,
    pack: bool,
) -> serde_json::Value {
    let mut cmd = quern();
    cmd.args(["tokenize", "--objective", "sft", "--json", "--seq-len"])
        .arg(seq_len.to_string())
        .arg("--corpus")
        .arg(corpus)
        .arg("--tokenizer")
        .arg(tok)
        .arg("--out")
        .arg(out);
    if pack {
        cmd.arg("--pack");
    }
    serde_json::from_slice(&run_ok(&mut cmd).stdout).unwrap()
}

/// The fixture packed and not, at a length that cuts some conversations: every conversation
/// is in the packed split once, whole, with the ids and mask of its unpacked row (a cut one
/// cut the same way, alone in its row); the report's documents, tokens, truncated and
/// dropped counts and the accounting are the unpacked run's, in fewer rows; a rerun writes
/// the same bytes.
#[test]
fn packing_keeps_every_conversation_whole_and_is_reproducible() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let tok = tokenizer(d);
    let corpus = fixture("sft/chatterbot_en.jsonl");
    let seq_len = 96;
    let plain = tokenize(&corpus, &tok, &d.join("plain"), seq_len, false);
    let packed = tokenize(&corpus, &tok, &d.join("packed"), seq_len, true);
    assert_eq!(plain["accounting"], packed["accounting"]);
    let mut cut = 0;
    for split in ["train", "val"] {
        let (p, q) = (&plain["splits"][split], &packed["splits"][split]);
        for key in ["documents", "tokens", "truncated", "dropped", "padding"] {
            assert_eq!(p[key], q[key], "{split} {key}");
        }
        let (rows_p, rows_q) = (p["rows"].as_u64().unwrap(), q["rows"].as_u64().unwrap());
        // First fit fills the rows (the ids over the rows' room), in fewer rows.
        let fill = q["tokens"].as_f64().unwrap() / (rows_q * seq_len as u64) as f64;
        assert!(
            rows_q < rows_p && fill > 0.8,
            "{split}: {rows_q} packed rows of {rows_p}, {fill:.3} full"
        );
        cut += p["truncated"].as_u64().unwrap();

        let (want, _) = conversations(&d.join("plain").join(split));
        let (got, rows) = conversations(&d.join("packed").join(split));
        assert_eq!(got, want, "{split}: conversations differ");
        assert_eq!(rows.len() as u64, rows_q);
        // A conversation cut to seq_len fills its row alone.
        for r in &rows {
            if r.iter().any(|doc| got[doc].0.len() == seq_len) {
                assert_eq!(r.len(), 1, "{r:?}");
            }
        }
        let meta = TokenMeta::load(&d.join("packed").join(split)).unwrap();
        assert!(meta.packed);
        assert_eq!(
            (meta.rows, meta.documents, meta.tokens),
            (
                rows_q,
                q["documents"].as_u64().unwrap(),
                q["tokens"].as_u64().unwrap()
            )
        );
        assert!(
            !TokenMeta::load(&d.join("plain").join(split))
                .unwrap()
                .packed
        );
    }
    assert!(cut > 0, "no conversation was longer than {seq_len} ids");
    tokenize(&corpus, &tok, &d.join("again"), seq_len, true);
    assert_same_tree(&d.join("packed"), &d.join("again"));
}

fn run_toml(root: &Path, name: &str, data: &str, train: &str) -> PathBuf {
    let text = format!(
        "out_dir = \"{name}\"\n[data]\ntrain = \"{data}/train\"\n\
         [model]\nlayers = 2\nheads = 2\ndim = 32\nseq_len = 256\n\
         [optim]\nlr = 3e-3\ndecay = \"constant\"\n\
         [train]\nobjective = \"sft\"\neval_every = 0\n{train}\n"
    );
    let path = root.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

fn first_losses(report: &[u8]) -> Vec<f64> {
    let v: serde_json::Value = serde_json::from_slice(report).unwrap();
    v["losses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["loss"].as_f64().unwrap())
        .collect()
}

/// The same conversations packed and not, each run's first step taking all of them: the
/// same model gives the same loss per response token, the packed one accumulated over one
/// row per micro-batch (so the normalisation by the step's response tokens is the same);
/// the trained model's perplexity on the packed and unpacked val splits is the same.
#[test]
fn a_packed_run_starts_from_the_unpacked_loss_and_eval_agrees() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let tok = tokenizer(d);
    let records = read_jsonl(&fixture("sft/chatterbot_en.jsonl"));
    let train: Vec<&serde_json::Value> = records
        .iter()
        .filter(|r| r["split"] == "train")
        .take(24)
        .collect();
    let val = records.iter().filter(|r| r["split"] == "val");
    let lines: Vec<String> = train
        .into_iter()
        .chain(val)
        .map(|r| r.to_string())
        .collect();
    let corpus = d.join("chats.jsonl");
    std::fs::write(&corpus, lines.join("\n")).unwrap();
    let plain = tokenize(&corpus, &tok, &d.join("plain"), 256, false);
    tokenize(&corpus, &tok, &d.join("packed"), 256, true);
    // (A conversation cut to 256 ids is cut the same way in both.)
    assert_eq!(plain["splits"]["train"]["documents"], 24);
    let n_plain = TokenMeta::load(&d.join("plain/train")).unwrap().rows;
    let n_packed = TokenMeta::load(&d.join("packed/train")).unwrap().rows;
    assert!(
        n_packed > 1 && n_packed < n_plain,
        "{n_packed} of {n_plain}"
    );
    let a = run_toml(
        d,
        "a",
        "plain",
        &format!("micro_batch = {n_plain}\nmax_steps = 1"),
    );
    let b = run_toml(
        d,
        "b",
        "packed",
        &format!("micro_batch = 1\ngrad_accum = {n_packed}\nmax_steps = 1"),
    );
    let la = first_losses(&run_ok(quern().args(["train", "--quiet", "--json"]).arg(&a)).stdout);
    let lb = first_losses(&run_ok(quern().args(["train", "--quiet", "--json"]).arg(&b)).stdout);
    assert!(
        (la[0] - lb[0]).abs() < 1e-5 * la[0],
        "first loss: unpacked {} vs packed {}",
        la[0],
        lb[0]
    );
    let ppl = |data: &str| -> serde_json::Value {
        let out = run_ok(
            quern()
                .args(["eval", "ppl", "--json", "--model"])
                .arg(d.join("a"))
                .arg("--data")
                .arg(d.join(data).join("val")),
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["result"]["overall"]
            .clone()
    };
    let (p, q) = (ppl("plain"), ppl("packed"));
    assert_eq!(p["tokens"], q["tokens"], "{p} vs {q}");
    let (x, y) = (p["nll"].as_f64().unwrap(), q["nll"].as_f64().unwrap());
    assert!((x - y).abs() < 1e-5, "eval nll: unpacked {x} vs packed {y}");
}

/// A packed row through quern's sft objective on a tiny Llama (grouped-query attention,
/// rotary positions) made by transformers gives, token for token, the logits
/// LlamaForCausalLM gives each conversation alone, and the summed loss computed from them.
#[test]
fn a_packed_row_matches_transformers_on_each_conversation_alone() {
    use quern_train::objective::{Objective, Sft};
    let dir = tempfile::tempdir().unwrap();
    let convs: Vec<(Vec<i64>, Vec<i64>)> = vec![
        (vec![1, 17, 9, 33, 7, 2], vec![0, 0, 0, 1, 1, 1]),
        (
            vec![1, 40, 41, 5, 60, 61, 62, 2],
            vec![0, 0, 0, 0, 1, 1, 1, 1],
        ),
        (vec![1, 12, 3, 2, 44, 45, 2], vec![1, 0, 0, 1, 1, 0, 1]),
    ];
    let each: Vec<&Vec<i64>> = convs.iter().map(|c| &c.0).collect();
    let want: std::collections::HashMap<String, Tensor> = {
        let out = run_peer(
            dir.path(),
            "hf_models.py",
            &serde_json::json!({
                "kind": "llama_hf_tiny", "dir": dir.path().join("llama"), "tie": false,
                "ids": [[1, 2, 3]], "each": each,
            }),
            "out.safetensors",
        );
        Tensor::read_safetensors(&out)
            .unwrap()
            .into_iter()
            .collect()
    };
    let m = quern_models::store::load(&dir.path().join("llama"), Device::Cpu).unwrap();
    let (mut ids, mut mask, mut seg) = (vec![], vec![], vec![]);
    for (k, (i, mk)) in convs.iter().enumerate() {
        ids.extend_from_slice(i);
        mask.extend_from_slice(mk);
        seg.extend(std::iter::repeat_n(k as i64, i.len()));
    }
    let rows = quern_train::data::Rows {
        ids: Tensor::from_slice(&ids).view([1, -1]),
        loss_mask: Some(Tensor::from_slice(&mask).view([1, -1])),
        lengths: vec![ids.len()],
        labels: None,
        segments: Some(Tensor::from_slice(&seg).view([1, -1])),
        token_types: None,
    };
    let p = Sft.prepare_rows(&rows).unwrap();
    let _g = tch::no_grad_guard();
    let seg_in = p.segments.as_ref().unwrap();
    let positions = quern_models::transformer::positions_from_segments(seg_in);
    let extras = quern_models::transformer::Extras {
        positions: Some(&positions),
        segments: Some(seg_in),
        ..Default::default()
    };
    let logits = m.model.logits(
        &m.model
            .hidden(&p.input, &extras, true, false, None)
            .unwrap(),
    );
    let (mut at, mut sum, mut count) = (0i64, 0.0, 0);
    for (k, (i, mk)) in convs.iter().enumerate() {
        let theirs = &want[&format!("each_{k}")];
        let n = i.len() as i64;
        // Every input position of the conversation (its last id only in the last one,
        // whose final id is the row's and never an input).
        let inputs = if k + 1 == convs.len() { n - 1 } else { n };
        let ours = logits.get(0).narrow(0, at, inputs);
        let diff = (ours - theirs.narrow(0, 0, inputs))
            .abs()
            .max()
            .double_value(&[]);
        assert!(diff < 1e-5, "conversation {k}: logits differ by {diff}");
        // The loss from transformers' logits, with the objective's rule (target t + 1
        // counted where its mask is 1), conversation by conversation.
        let logp = theirs.log_softmax(-1, Kind::Double);
        for t in 0..i.len() - 1 {
            if mk[t + 1] == 1 {
                sum -= logp.double_value(&[t as i64, i[t + 1]]);
                count += 1;
            }
        }
        at += n;
    }
    assert_eq!(p.count, count);
    let ours = Sft.loss_sum(&m.model, &p, false).double_value(&[]);
    assert!(
        (ours - sum).abs() < 1e-5 * sum.abs(),
        "summed loss: quern {ours} vs transformers {sum}"
    );
}

/// `pack` on an objective whose rows cannot be packed this way is refused before anything
/// is written, naming the key.
#[test]
fn pack_is_refused_where_it_cannot_work() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (objective, why) in [("clm", "always packed"), ("cls", "never packed")] {
        let out = d.join(objective);
        let e = run_err(
            quern()
                .args(["tokenize", "--pack", "--objective", objective])
                .arg("--corpus")
                .arg(fixture("sft/chatterbot_en.jsonl"))
                .arg("--train-vocab-size")
                .arg("300")
                .arg("--out")
                .arg(&out),
        );
        assert!(
            e.contains("pack") && e.contains("sft only") && e.contains(why),
            "{objective}: {e}"
        );
        assert!(!out.exists(), "{objective}: output written");
    }
}
