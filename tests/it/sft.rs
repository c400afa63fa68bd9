//! `sft` end to end: `{"messages": [...]}` conversations (the chatterbot corpus fixture) through
//! `quern tokenize --objective sft` (every assistant turn trained, nothing else), `quern train`
//! with `objective = "sft"` (the loss falls; accumulating micro-batches that hold different
//! numbers of response tokens gives the one-batch losses; a resumed run repeats the
//! uninterrupted one), the loss checked against transformers on SmolLM2-135M with its own chat
//! template, and mismatched splits and rows too long for the model refused. Packed rows:
//! `sft_pack.rs`.
//!
//! Training runs go through the binary (one process each), so no other test's use of
//! libtorch's global generator can reach their initialisation.

use std::path::{Path, PathBuf};

use arrow::array::AsArray;
use arrow::datatypes::{Int32Type, Int8Type};
use quern_tokenize::TokenMeta;

use crate::common::{fixture, quern, read_jsonl, run_err, run_ok, run_peer};

/// One row of an sft split: input ids, loss mask, the document id.
type SftRow = (Vec<i32>, Vec<i8>, String);

/// The rows of a split directory in the order they were written.
fn split_rows(dir: &Path) -> Vec<SftRow> {
    let meta = TokenMeta::load(dir).unwrap();
    let mut rows = Vec::new();
    for s in &meta.shards {
        let path = dir.join(&s.file);
        let batches = quern_tokenize::input::read_columns(
            &path,
            &["input_ids", "loss_mask", "doc_ids"],
            1024,
        )
        .unwrap();
        for b in batches {
            let b = b.unwrap();
            let ids = b.column_by_name("input_ids").unwrap().as_list::<i32>();
            let mask = b.column_by_name("loss_mask").unwrap().as_list::<i32>();
            let docs = b.column_by_name("doc_ids").unwrap().as_list::<i32>();
            for i in 0..b.num_rows() {
                rows.push((
                    ids.value(i).as_primitive::<Int32Type>().values().to_vec(),
                    mask.value(i).as_primitive::<Int8Type>().values().to_vec(),
                    docs.value(i).as_string::<i32>().value(0).to_string(),
                ));
            }
        }
    }
    rows
}

/// The maximal runs of ids whose mask is 1.
fn trained_runs(ids: &[i32], mask: &[i8]) -> Vec<Vec<u32>> {
    let mut runs = Vec::new();
    let mut cur = Vec::new();
    for (&i, &m) in ids.iter().zip(mask) {
        if m == 1 {
            cur.push(i as u32);
        } else if !cur.is_empty() {
            runs.push(std::mem::take(&mut cur));
        }
    }
    if !cur.is_empty() {
        runs.push(cur);
    }
    runs
}

/// The assistant turns of a conversation record, in order.
fn assistant_turns(rec: &serde_json::Value) -> Vec<String> {
    rec["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "assistant")
        .map(|m| m["content"].as_str().unwrap().to_string())
        .collect()
}

/// A byte-level BPE tokenizer trained on the fixture's turns, and the fixture tokenized for
/// sft with the plain template into `root/tokens/{train,val}`.
fn tokenized(root: &Path) -> (PathBuf, PathBuf) {
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
    let tokens = root.join("tokens");
    run_ok(
        quern()
            .args([
                "tokenize",
                "--objective",
                "sft",
                "--seq-len",
                "512",
                "--json",
            ])
            .arg("--corpus")
            .arg(fixture("sft/chatterbot_en.jsonl"))
            .arg("--tokenizer")
            .arg(&tok)
            .arg("--out")
            .arg(&tokens),
    );
    (tok, tokens)
}

/// The plain template on real multi-turn conversations: each row's trained ids are exactly
/// its assistant turns, each with the template's `<|end|>` (the last also with the end-of-text
/// id), and every conversation became one row of its split.
#[test]
fn conversations_become_rows_that_train_every_assistant_turn_and_only_those() {
    let dir = tempfile::tempdir().unwrap();
    let (tok, tokens) = tokenized(dir.path());
    let tok = quern_tokenize::tokenizer::load_tokenizer(&tok).unwrap();
    let records = read_jsonl(&fixture("sft/chatterbot_en.jsonl"));
    let mut seen = 0;
    let mut truncated = 0;
    for split in ["train", "val"] {
        let want: Vec<&serde_json::Value> =
            records.iter().filter(|r| r["split"] == split).collect();
        let rows = split_rows(&tokens.join(split));
        assert_eq!(rows.len(), want.len(), "{split}: one row per conversation");
        for ((ids, mask, doc), rec) in rows.iter().zip(&want) {
            assert_eq!(doc, rec["id"].as_str().unwrap());
            let got: Vec<String> = trained_runs(ids, mask)
                .iter()
                .map(|r| tok.decode(r, false).unwrap())
                .collect();
            let turns = assistant_turns(rec);
            let mut expect: Vec<String> = turns.iter().map(|t| format!("{t}<|end|>")).collect();
            if let Some(last) = expect.last_mut() {
                last.push_str("<|endoftext|>");
            }
            if ids.len() == 512 {
                // Cut to seq_len: the turns that fit, the last one perhaps in part.
                truncated += 1;
                let k = got.len() - 1;
                assert_eq!(got[..k], expect[..k], "{doc}");
                assert!(expect[k].starts_with(&got[k]), "{doc}: {}", got[k]);
            } else {
                assert_eq!(got, expect, "{doc}");
            }
            // Everything that is not trained is the prompts and role headers.
            let untrained: Vec<u32> = ids
                .iter()
                .zip(mask)
                .filter(|(_, &m)| m == 0)
                .map(|(&i, _)| i as u32)
                .collect();
            let text = tok.decode(&untrained, false).unwrap();
            assert!(
                text.starts_with("<|user|>\n")
                    && (ids.len() == 512 || text.ends_with("<|assistant|>\n")),
                "{doc}: {text:?}"
            );
            seen += 1;
        }
    }
    assert_eq!(seen, records.len());
    assert!(truncated < seen / 10, "{truncated} of {seen} rows cut");
}

fn run_toml(root: &Path, name: &str, train: &str) -> PathBuf {
    let text = format!(
        "out_dir = \"{name}\"\n[data]\ntrain = \"tokens/train\"\nval = \"tokens/val\"\n\
         [model]\nlayers = 2\nheads = 2\ndim = 32\n\
         [optim]\nlr = 3e-3\ndecay = \"constant\"\n\
         [train]\nobjective = \"sft\"\neval_every = 0\neval_batches = 3\n{train}\n\
         [checkpoint]\nevery = 2\nkeep = 5\n"
    );
    let path = root.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

fn losses(report: &[u8]) -> Vec<f64> {
    let v: serde_json::Value = serde_json::from_slice(report).unwrap();
    v["losses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["loss"].as_f64().unwrap())
        .collect()
}

/// A short real SFT run lowers the loss; a run interrupted and resumed repeats the
/// uninterrupted run's losses exactly (the sft data cursor is checkpointed and restored).
#[test]
fn an_sft_run_on_conversations_lowers_the_loss_and_resumes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    tokenized(dir.path());
    let cfg = run_toml(dir.path(), "long", "micro_batch = 8\nmax_steps = 60");
    let out = run_ok(quern().args(["train", "--quiet", "--json"]).arg(&cfg));
    let l = losses(&out.stdout);
    assert_eq!(l.len(), 60);
    let mean = |s: &[f64]| s.iter().sum::<f64>() / s.len() as f64;
    let (first, last) = (mean(&l[..5]), mean(&l[55..]));
    // Uniform over the 600 ids is ln(600) = 6.4; 60 steps of a tiny model reach about 5.0.
    assert!(last < first - 1.0, "sft loss {first} -> {last}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["objective"], "sft");
    let val = v["evals"][0]["val_loss"].as_f64().unwrap();
    assert!(val.is_finite() && val < first, "val loss {val}");
    // quern eval finds each row's source in the JSONL records the split was tokenized from.
    let out = run_ok(
        quern()
            .args(["eval", "ppl", "--json", "--model"])
            .arg(dir.path().join("long"))
            .arg("--data")
            .arg(dir.path().join("tokens/val")),
    );
    let e: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // The run's last validation (3 batches of 8 cover the 17 val rows, each once) is quern
    // eval's perplexity of the same checkpoint on the same split.
    let nll = e["result"]["overall"]["nll"].as_f64().unwrap();
    let last_val = v["evals"].as_array().unwrap().last().unwrap()["val_loss"]
        .as_f64()
        .unwrap();
    assert!(
        (nll - last_val).abs() < 1e-4,
        "quern eval {nll} vs the run's val loss {last_val}"
    );
    let sources: Vec<&String> = e["result"]["sources"].as_object().unwrap().keys().collect();
    assert!(
        !sources.is_empty() && sources.iter().all(|s| s.starts_with("chatterbot/")),
        "{e}"
    );

    let whole = run_toml(dir.path(), "whole", "micro_batch = 4\nmax_steps = 6");
    let want = losses(&run_ok(quern().args(["train", "--quiet", "--json"]).arg(&whole)).stdout);
    let parts = run_toml(dir.path(), "parts", "micro_batch = 4\nmax_steps = 6");
    let a = run_ok(
        quern()
            .args(["train", "--quiet", "--json", "--max-steps", "4"])
            .arg(&parts),
    );
    let b = run_ok(
        quern()
            .args(["train", "--quiet", "--json", "--resume"])
            .arg(&parts),
    );
    let mut got = losses(&a.stdout);
    got.extend(losses(&b.stdout));
    assert_eq!(
        got, want,
        "resumed sft losses differ from the uninterrupted run"
    );
}

/// Gradient accumulation over micro-batches that hold different numbers of response tokens
/// gives the losses of one batch of all their rows, step after step: each micro-batch's
/// summed loss is divided by the step's response-token count.
#[test]
fn accumulating_sft_micro_batches_equals_one_large_batch() {
    let dir = tempfile::tempdir().unwrap();
    let (_, tokens) = tokenized(dir.path());
    let one = run_toml(
        dir.path(),
        "one",
        "micro_batch = 8\ngrad_accum = 1\nmax_steps = 4",
    );
    let four = run_toml(
        dir.path(),
        "four",
        "micro_batch = 2\ngrad_accum = 4\nmax_steps = 4",
    );
    let a = losses(&run_ok(quern().args(["train", "--quiet", "--json"]).arg(&one)).stdout);
    let b = losses(&run_ok(quern().args(["train", "--quiet", "--json"]).arg(&four)).stdout);
    assert_eq!(a.len(), 4);
    for (x, y) in a.iter().zip(&b) {
        assert!((x - y).abs() < 5e-6, "{a:?} vs {b:?}");
    }
    // The first step's four micro-batches hold different numbers of response targets (so
    // averaging per micro-batch would weigh their tokens differently).
    use quern_train::data::BatchSource;
    use quern_train::objective::Objective;
    let (mut src, _) = quern_train::data::SftRows::open(&tokens.join("train"), 1234, 0, 1).unwrap();
    let counts: Vec<i64> = (0..4)
        .map(|_| {
            let rows = src.next_batch(2).unwrap();
            quern_train::objective::Sft
                .prepare_rows(&rows)
                .unwrap()
                .count
        })
        .collect();
    assert!(counts.iter().any(|&c| c != counts[0]), "{counts:?}");
}

/// quern's SFT loss on SmolLM2-135M, its rows tokenized with the model's own chat template
/// (ChatML, whose `<|im_start|>` is also the model's BOS: with --add-bos it is not doubled),
/// equals transformers' on the same weights and rows, packed (`--pack`) or not; the rows' ids
/// are what `apply_chat_template` gives, and the trained text of each row is its assistant
/// turns with their `<|im_end|>\n`.
#[test]
fn sft_loss_equals_transformers_on_smollm2_with_its_chat_template() {
    let gguf = crate::models::smollm2();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let m = quern_models::store::load(&gguf, tch::Device::Cpu).unwrap();
    let tok_path = d.join("tokenizer.json");
    std::fs::write(&tok_path, m.tokenizer_json.as_ref().unwrap()).unwrap();
    std::fs::write(
        d.join("chat_template.jinja"),
        m.meta.chat_template.as_ref().unwrap(),
    )
    .unwrap();
    // SmolLM2's BOS (GGUF bos_token_id 1) is `<|im_start|>`, which its template also writes.
    let config = d.join("tokenize.toml");
    std::fs::write(
        &config,
        "objective = \"sft\"\nseq_len = 256\nadd_bos = true\njinja_template = \"chat_template.jinja\"\n\
         [special_tokens]\nbos = \"<|im_start|>\"\n",
    )
    .unwrap();
    // Real conversations of 2 to 6 turns, and one with a system turn.
    let mut convs: Vec<serde_json::Value> = read_jsonl(&fixture("sft/chatterbot_en.jsonl"))
        .into_iter()
        .filter(|r| (2..=6).contains(&r["messages"].as_array().unwrap().len()))
        .take(4)
        .map(|r| r["messages"].clone())
        .collect();
    let mut with_system = convs[0].as_array().unwrap().clone();
    with_system.insert(
        0,
        serde_json::json!({"role": "system", "content": "Answer briefly."}),
    );
    convs.push(serde_json::Value::Array(with_system));
    let input = d.join("chats.jsonl");
    let lines: Vec<String> = convs
        .iter()
        .map(|m| serde_json::json!({"messages": m}).to_string())
        .collect();
    std::fs::write(&input, lines.join("\n")).unwrap();
    let tokens = d.join("tokens");
    run_ok(
        quern()
            .args(["tokenize", "--json", "--config"])
            .arg(&config)
            .arg("--corpus")
            .arg(&input)
            .arg("--tokenizer")
            .arg(&tok_path)
            .arg("--out")
            .arg(&tokens),
    );
    let split = tokens.join("train");
    let rows = split_rows(&split);
    assert_eq!(rows.len(), convs.len());
    let meta = TokenMeta::load(&split).unwrap();
    let bos = meta.bos_id.unwrap() as i32;
    assert_eq!(bos, 1);
    for (ids, _, doc) in &rows {
        assert_eq!(ids[0], bos, "{doc}");
        assert_ne!(ids[1], bos, "{doc}: doubled BOS");
    }

    // quern: the objective on the split as the trainer reads it, one batch of every row.
    let ours = {
        use quern_train::data::BatchSource;
        use quern_train::objective::Objective;
        let (mut src, _) = quern_train::data::SftRows::open(&split, 0, 0, 1).unwrap();
        let batch = src.next_batch(rows.len()).unwrap();
        let p = quern_train::objective::Sft.prepare_rows(&batch).unwrap();
        let _g = tch::no_grad_guard();
        let sum = quern_train::objective::Sft
            .loss_sum(&m.model, &p, false)
            .double_value(&[]);
        (sum / p.count as f64, p.count)
    };
    let got: serde_json::Value = serde_json::from_slice(
        &std::fs::read(run_peer(
            d,
            "sft_loss.py",
            &serde_json::json!({
                "dir": gguf.parent().unwrap(),
                "file": gguf.file_name().unwrap().to_str().unwrap(),
                "split": split,
                "conversations": convs,
            }),
            "out.json",
        ))
        .unwrap(),
    )
    .unwrap();
    assert_eq!(got["count"].as_i64().unwrap(), ours.1);
    let theirs = got["loss"].as_f64().unwrap();
    assert!(
        (ours.0 - theirs).abs() < 1e-4 * theirs.abs().max(1.0),
        "sft loss: quern {} vs transformers {theirs}",
        ours.0
    );
    // The same conversations packed (`--pack`: fewer rows, attention kept inside each
    // conversation) give transformers' loss on each conversation alone, on the real model.
    let packed = d.join("packed");
    run_ok(
        quern()
            .args(["tokenize", "--json", "--pack", "--config"])
            .arg(&config)
            .arg("--corpus")
            .arg(&input)
            .arg("--tokenizer")
            .arg(&tok_path)
            .arg("--out")
            .arg(&packed),
    );
    let meta = TokenMeta::load(&packed.join("train")).unwrap();
    assert!(meta.packed && meta.rows < rows.len() as u64, "{meta:?}");
    let (packed_loss, packed_count) = {
        use quern_train::data::BatchSource;
        use quern_train::objective::Objective;
        let (mut src, _) =
            quern_train::data::SftRows::open(&packed.join("train"), 0, 0, 1).unwrap();
        let batch = src.next_batch(meta.rows as usize).unwrap();
        let p = quern_train::objective::Sft.prepare_rows(&batch).unwrap();
        let _g = tch::no_grad_guard();
        let sum = quern_train::objective::Sft
            .loss_sum(&m.model, &p, false)
            .double_value(&[]);
        (sum / p.count as f64, p.count)
    };
    assert_eq!(packed_count, ours.1);
    assert!(
        (packed_loss - theirs).abs() < 1e-4 * theirs.abs().max(1.0),
        "packed sft loss: quern {packed_loss} vs transformers {theirs}"
    );
    for (k, ((ids, _, doc), conv)) in rows.iter().zip(&convs).enumerate() {
        let want: Vec<i32> = got["template_ids"][k]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap() as i32)
            .collect();
        assert_eq!(ids, &want, "{doc}: ids differ from apply_chat_template");
        let turns = assistant_turns(&serde_json::json!({ "messages": conv }));
        let expect: Vec<String> = turns.iter().map(|t| format!("{t}<|im_end|>\n")).collect();
        let trained: Vec<String> = got["trained_text"][k]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap().to_string())
            .collect();
        assert_eq!(trained, expect, "{doc}");
    }
}

/// An sft run on clm shards, a clm run on sft shards and a model whose context cannot hold
/// the split's rows are each refused before any training, naming the file or the key
/// (`pack` where it cannot work: `sft_pack.rs`).
#[test]
fn mismatched_splits_and_long_rows_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    tokenized(d);
    // clm shards of the GPL text, byte-level.
    let text = std::fs::read(fixture("train/gpl-3.0.txt")).unwrap();
    quern_train::data::write_byte_split(&d.join("bytes/train"), &text[..4000], 32, false).unwrap();
    let toml = |name: &str, body: &str| {
        let p = d.join(name);
        std::fs::write(&p, body).unwrap();
        p
    };
    let sft_on_clm = toml(
        "a.toml",
        "out_dir = \"a\"\n[data]\ntrain = \"bytes/train\"\n[train]\nobjective = \"sft\"\n",
    );
    let e = run_err(quern().args(["train", "--quiet"]).arg(&sft_on_clm));
    assert!(
        e.contains("meta.json") && e.contains("`objective` is `clm`") && e.contains("sft"),
        "{e}"
    );
    let clm_on_sft = toml(
        "b.toml",
        "out_dir = \"b\"\n[data]\ntrain = \"tokens/train\"\n[train]\nobjective = \"clm\"\n",
    );
    let e = run_err(quern().args(["train", "--quiet"]).arg(&clm_on_sft));
    assert!(
        e.contains("meta.json")
            && e.contains("`objective` is `sft`")
            && e.contains("train.objective"),
        "{e}"
    );
    let short = toml(
        "c.toml",
        "out_dir = \"c\"\n[data]\ntrain = \"tokens/train\"\n[model]\nseq_len = 64\n[train]\nobjective = \"sft\"\n",
    );
    let e = run_err(quern().args(["train", "--quiet"]).arg(&short));
    assert!(e.contains("model.seq_len") && e.contains("512"), "{e}");
    for name in ["a", "b", "c"] {
        assert!(
            !d.join(name).join("metrics.jsonl").exists(),
            "{name} started"
        );
    }
}
