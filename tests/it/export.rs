//! `quern export --format hf`: every family goes out as the Hugging Face class a user
//! deploys with, `transformers` loads it (no missing, unexpected or mismatched weights) and
//! its logits equal quern's; the weights come back byte for byte through `quern import`;
//! the real SmolLM2 goes out with its tokenizer and chat template; bad requests are refused
//! with nothing written.

use std::collections::HashMap;
use std::path::Path;

use quern_models::config::{Mlp, ModelConfig};
use quern_models::generate::{GenerateConfig, Generator};
use quern_models::head::{HeadConfig, Pooling};
use quern_models::store::{self, ModelMeta, Special};
use quern_models::transformer::Extras;
use quern_models::Transformer;
use tch::{Device, Kind, Tensor};

use crate::common::{quern, run_err, run_ok, run_peer};

const VOCAB: i64 = 96;

/// A tiny model of `cfg` with every weight drawn (norms, biases and heads too, so that all
/// are checked), saved as a quern model directory at `dir`.
fn tiny(dir: &Path, cfg: &ModelConfig) -> Transformer {
    let mut m = Transformer::new(cfg, Device::Cpu);
    // Noise from our own seeded generator, not libtorch's global one (tests run in parallel
    // threads), so the weights, and what a test sees, are the same on every run.
    let mut state = 0x9E37_79B9_7F4A_7C15u64 ^ cfg.dim as u64 ^ ((cfg.layers as u64) << 8);
    tch::no_grad(|| {
        for p in &mut m.params_mut().params {
            let n = p.tensor.numel();
            let v: Vec<f32> = (0..n)
                .map(|_| {
                    state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
                    let mut z = state;
                    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                    z ^= z >> 31;
                    ((z >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.6
                })
                .collect();
            let noise = Tensor::from_slice(&v).view(p.tensor.size().as_slice());
            let _ = p.tensor.f_add_(&noise).unwrap();
        }
    });
    let mut meta = ModelMeta::new(cfg.clone());
    meta.special = special();
    store::save(dir, &meta, &m.params().named(), None, false).unwrap();
    m
}

/// The special ids of the tiny models: pad 0, bos 1, eos 2.
fn special() -> Special {
    Special {
        bos: Some(1),
        eos: vec![2],
        pad: Some(0),
        add_bos: false,
    }
}

/// New tokens of the greedy comparisons.
const GREEDY: usize = 8;

fn sized(c: ModelConfig) -> ModelConfig {
    c.with_layers(2)
        .with_heads(4)
        .with_dim(32)
        .with_seq_len(24)
        .with_vocab_size(VOCAB as usize)
}

fn head(pooling: Pooling, pooler: bool, n: usize) -> HeadConfig {
    HeadConfig {
        num_labels: n,
        labels: (0..n).map(|i| format!("class{i}")).collect(),
        pooling,
        pooler,
    }
}

/// `quern export MODEL --out OUT` with `extra` arguments (`--format hf` unless they name one).
fn export(model: &Path, out: &Path, extra: &[&str]) {
    let mut cmd = quern();
    cmd.arg("export")
        .arg(model)
        .arg("--out")
        .arg(out)
        .args(extra);
    if !extra.contains(&"--format") {
        cmd.args(["--format", "hf"]);
    }
    run_ok(&mut cmd);
}

/// A tiny model of `cfg` named `name` in `dir`, exported as `format`: the export must fail
/// and write nothing; its error message.
fn refused_export(dir: &Path, name: &str, cfg: &ModelConfig, format: &str) -> String {
    let q = dir.join(format!("{name}.quern"));
    tiny(&q, cfg);
    let out = dir.join(format!("{name}.{format}"));
    let err = run_err(
        quern()
            .arg("export")
            .arg(&q)
            .args(["--format", format, "--out"])
            .arg(&out),
    );
    assert!(!out.exists(), "nothing is written for a refused export");
    err
}

/// Runs `tests/peers/hf_export.py` on `{"tasks": [...]}` in `dir`; its tensors by name.
fn peer(dir: &Path, tasks: serde_json::Value) -> HashMap<String, Tensor> {
    let out = run_peer(dir, "hf_export.py", &tasks, "out.safetensors");
    Tensor::read_safetensors(&out)
        .unwrap()
        .into_iter()
        .collect()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size());
    (a - b).abs().max().double_value(&[])
}

fn t2(v: &[Vec<i64>]) -> Tensor {
    Tensor::from_slice(&v.concat()).view([v.len() as i64, -1])
}

/// Every family and head, exported, loaded by `transformers` with the class its config
/// names, gives quern's logits (hidden states for `BertModel`) within 1e-4 in fp32, and
/// every decoder's greedy generation (`generate`, 8 new tokens) equals quern's.
#[test]
fn every_family_exports_to_transformers_with_equal_logits() {
    tch::manual_seed(11);
    let tmp = tempfile::tempdir().unwrap();
    // Two rows, the second right-padded with 0 (the pad id) after 7 real tokens.
    let ids = vec![
        (0..12)
            .map(|i| 3 + (i * 7 + 5) % (VOCAB - 3))
            .collect::<Vec<i64>>(),
        [
            (0..7).map(|i| 3 + (i * 11 + 2) % (VOCAB - 3)).collect(),
            vec![0; 5],
        ]
        .concat(),
    ];
    let mask = vec![vec![1i64; 12], [vec![1i64; 7], vec![0; 5]].concat()];
    let types = vec![
        [vec![0i64; 6], vec![1; 6]].concat(),
        [vec![0i64; 4], vec![1; 3], vec![0; 5]].concat(),
    ];
    let (x, km, tt) = (t2(&ids), t2(&mask), t2(&types));

    let llama_gqa = sized(ModelConfig::llama()).with_kv_heads(2);
    let mut llama_untied = llama_gqa.clone();
    llama_untied.tie_embeddings = false;
    let mut gpt2_untied_nobias = sized(ModelConfig::gpt2());
    gpt2_untied_nobias.bias = false;
    gpt2_untied_nobias.tie_embeddings = false;
    gpt2_untied_nobias.mlp = Mlp::GeluErf;
    let bert = sized(ModelConfig::bert());
    let mut bert_mlm = bert.clone();
    bert_mlm.mlm_head = Some(true);
    let mut bert_pretraining = bert_mlm.clone();
    bert_pretraining.head = Some(head(Pooling::First, true, 2));
    let mut bert_cls = bert.clone();
    bert_cls.head = Some(head(Pooling::First, true, 3));
    let mut llama_cls = llama_gqa.clone();
    llama_cls.head = Some(head(Pooling::Last, false, 3));

    // (name, config, Auto class, what quern computes)
    let cases: Vec<(&str, ModelConfig, &str)> = vec![
        ("llama_tied_gqa", llama_gqa, "causal"),
        ("llama_untied", llama_untied, "causal"),
        ("gpt2", sized(ModelConfig::gpt2()), "causal"),
        ("gpt2_untied_nobias_erf", gpt2_untied_nobias, "causal"),
        ("bert", bert, "base"),
        ("bert_mlm", bert_mlm, "mlm"),
        ("bert_pretraining", bert_pretraining, "pretraining"),
        ("bert_cls", bert_cls, "seqcls"),
        ("llama_cls", llama_cls, "seqcls"),
    ];
    let mut tasks = Vec::new();
    let mut want: Vec<(String, Tensor)> = Vec::new();
    let mut greedy: Vec<(String, Vec<u32>)> = Vec::new();
    for (name, cfg, class) in &cases {
        let qdir = tmp.path().join(format!("{name}.quern"));
        let hdir = tmp.path().join(format!("{name}.hf"));
        let m = tiny(&qdir, cfg);
        export(&qdir, &hdir, &[]);
        let encoder = cfg.post_norm;
        let mut task = serde_json::json!({"dir": hdir, "class": class, "ids": ids, "mask": mask});
        if encoder && *class != "seqcls" {
            task["types"] = serde_json::json!(types);
        }
        if *class == "causal" {
            task["greedy"] = serde_json::json!(GREEDY);
            task["greedy_prompt"] = serde_json::json!(ids[1][..7]);
            let sp = special();
            let gen = Generator::new(&m, None, &sp);
            let cfg = GenerateConfig {
                ignore_eos: true,
                ..GenerateConfig::greedy(GREEDY)
            };
            let prompt: Vec<u32> = ids[1][..7].iter().map(|&i| i as u32).collect();
            let (outs, _) = gen.generate(&[prompt], &cfg).unwrap();
            greedy.push((name.to_string(), outs[0].tokens.clone()));
        }
        tasks.push(task);
        let extras = Extras {
            key_mask: Some(&km),
            token_types: (encoder && *class != "seqcls").then_some(&tt),
            ..Extras::default()
        };
        tch::no_grad(|| {
            let h = m.hidden(&x, &extras, !encoder, false, None).unwrap();
            match *class {
                "base" => want.push((format!("{name}/hidden"), h)),
                "causal" | "mlm" => want.push((format!("{name}/logits"), m.logits(&h))),
                "pretraining" => {
                    want.push((format!("{name}/logits"), m.logits(&h)));
                    want.push((format!("{name}/nsp"), m.classify_hidden(&h, &km).unwrap()));
                }
                _ => want.push((
                    format!("{name}/logits"),
                    m.classify(&x, &km, false).unwrap(),
                )),
            }
        });
    }
    let got = peer(tmp.path(), serde_json::json!({"tasks": tasks}));
    let names: Vec<&str> = cases.iter().map(|c| c.0).collect();
    for (name, tokens) in &greedy {
        let i = names.iter().position(|n| n == name).unwrap();
        let hf: Vec<u32> = Vec::<i64>::try_from(&got[&format!("t{i}_greedy")])
            .unwrap()
            .into_iter()
            .map(|t| t as u32)
            .collect();
        assert_eq!(
            &hf, tokens,
            "{name}: greedy generation differs from transformers'"
        );
    }
    for (key, w) in &want {
        let (name, what) = key.split_once('/').unwrap();
        let i = names.iter().position(|n| *n == name).unwrap();
        let g = &got[&format!("t{i}_{what}")];
        // Padded positions are computed differently on each side (and mean nothing).
        let (g, w) = if what == "hidden" || (what == "logits" && g.dim() == 3) {
            let keep = km.unsqueeze(-1).to_kind(Kind::Float);
            (g * &keep, w * &keep)
        } else {
            (g.shallow_clone(), w.shallow_clone())
        };
        let d = max_diff(&g, &w);
        assert!(d <= 1e-4, "{key}: transformers differs from quern by {d}");
    }
}

/// Llama, BERT and GPT-2 (tied and untied) exports come back through `quern import` with
/// the same config and every weight equal to the byte; `--dtype bf16` writes half the bytes, each weight rounded to bf16; an existing
/// directory is refused without `--force`; a head no Hugging Face class holds is refused
/// naming the key, with nothing written.
#[test]
fn export_round_trips_and_refuses_clearly() {
    tch::manual_seed(12);
    let tmp = tempfile::tempdir().unwrap();
    let mut gpt2_untied = sized(ModelConfig::gpt2());
    gpt2_untied.tie_embeddings = false;
    for (name, cfg) in [
        ("llama", sized(ModelConfig::llama()).with_kv_heads(2)),
        ("bert", sized(ModelConfig::bert())),
        ("gpt2", sized(ModelConfig::gpt2())),
        ("gpt2_untied", gpt2_untied),
    ] {
        let q = tmp.path().join(format!("{name}.quern"));
        let h = tmp.path().join(format!("{name}.hf"));
        let back = tmp.path().join(format!("{name}.back"));
        let m = tiny(&q, &cfg);
        export(&q, &h, &[]);
        run_ok(quern().arg("import").arg(&h).arg("--out").arg(&back));
        let b = store::load(&back, Device::Cpu).unwrap();
        let resolved = |c: &ModelConfig| {
            let mut c = c.clone();
            c.mlp_hidden = Some(c.hidden());
            c.norm_eps = Some(c.norm_eps());
            c
        };
        assert_eq!(
            resolved(b.model.config()),
            resolved(&cfg),
            "{name}: the config changed in the round trip"
        );
        for (n, t) in m.params().named() {
            let u = b
                .model
                .params()
                .get(&n)
                .unwrap_or_else(|| panic!("{name}: {n} lost"));
            assert!(t.equal(u), "{name}: {n} changed in the round trip");
        }
        if name == "llama" {
            let h16 = tmp.path().join("llama.bf16");
            export(&q, &h16, &["--dtype", "bf16"]);
            let w16: HashMap<String, Tensor> =
                Tensor::read_safetensors(h16.join("model.safetensors"))
                    .unwrap()
                    .into_iter()
                    .collect();
            let e = &w16["model.embed_tokens.weight"];
            assert_eq!(e.kind(), Kind::BFloat16);
            assert!(e.equal(
                &m.params()
                    .get("tok_emb.weight")
                    .unwrap()
                    .to_kind(Kind::BFloat16)
            ));
            let size = |d: &Path| {
                std::fs::metadata(d.join("model.safetensors"))
                    .unwrap()
                    .len()
            };
            assert!(size(&h16) * 2 <= size(&h) + 4096, "bf16 is half the bytes");
            let err = run_err(
                quern()
                    .arg("export")
                    .arg(&q)
                    .args(["--format", "hf", "--out"])
                    .arg(&h),
            );
            assert!(
                err.contains("already exists") && err.contains("--force"),
                "{err}"
            );
            export(&q, &h, &["--force"]);
        }
    }
    let mut gpt2_cls = sized(ModelConfig::gpt2());
    gpt2_cls.head = Some(head(Pooling::Last, false, 2));
    let err = refused_export(tmp.path(), "gpt2_cls", &gpt2_cls, "hf");
    assert!(err.contains("model.head"), "{err}");
    let mut bert_mean = sized(ModelConfig::bert());
    bert_mean.head = Some(head(Pooling::Mean, false, 2));
    let err = refused_export(tmp.path(), "bert_mean", &bert_mean, "hf");
    assert!(err.contains("model.head") && err.contains("mean"), "{err}");
}

/// The real SmolLM2-135M-Instruct, straight from its GGUF: `transformers` loads the export
/// with `AutoModelForCausalLM` and gives quern's logits; `AutoTokenizer` on the exported
/// `tokenizer.json` gives quern's ids, and `apply_chat_template` (the template from
/// `tokenizer_config.json`) quern's rendering of the same conversation.
#[test]
fn smollm2_exports_with_tokenizer_and_chat_template() {
    let gguf = crate::models::smollm2();
    let tmp = tempfile::tempdir().unwrap();
    let h = tmp.path().join("smollm2.hf");
    export(&gguf, &h, &[]);
    let m = store::load(&gguf, Device::Cpu).unwrap();
    let tok = m.tokenizer.as_ref().expect("tokenizer");
    let texts = [
        "Hello, world!",
        "Quern grinds grain; 1234 + 5678 = 6912.",
        "日本語 and émigré",
    ];
    let chat = serde_json::json!([{"role": "user", "content": "What is the capital of France?"}]);
    let ids: Vec<i64> = tok
        .encode("The capital of France is", false)
        .unwrap()
        .get_ids()
        .iter()
        .map(|&i| i as i64)
        .collect();
    let got = peer(
        tmp.path(),
        serde_json::json!({"tasks": [{
            "dir": h, "class": "causal", "ids": [ids.clone()], "texts": texts, "chat": chat,
        }]}),
    );
    let want = tch::no_grad(|| {
        m.model
            .forward(&Tensor::from_slice(&ids).view([1, -1]), true, false)
    });
    let d = max_diff(&got["t0_logits"], &want);
    assert!(d <= 1e-4, "SmolLM2 logits differ from quern's by {d}");
    for (i, s) in texts.iter().enumerate() {
        let q: Vec<i64> = tok
            .encode(*s, false)
            .unwrap()
            .get_ids()
            .iter()
            .map(|&i| i as i64)
            .collect();
        let hf = Vec::<i64>::try_from(&got[&format!("t0_text_{i}")]).unwrap();
        assert_eq!(hf, q, "tokenizer ids of {s:?}");
    }
    let template = m
        .meta
        .chat_template
        .as_deref()
        .expect("SmolLM2 has a chat template");
    let bos = m
        .meta
        .special
        .bos
        .and_then(|i| tok.id_to_token(i))
        .unwrap_or_default();
    let eos = m
        .meta
        .special
        .eos
        .first()
        .and_then(|&i| tok.id_to_token(i))
        .unwrap_or_default();
    let messages = vec![quern_models::chat::Message::new(
        "user",
        "What is the capital of France?",
    )];
    let text = quern_models::chat::render(template, &messages, true, &bos, &eos).unwrap();
    let q: Vec<i64> = tok
        .encode(text.as_str(), false)
        .unwrap()
        .get_ids()
        .iter()
        .map(|&i| i as i64)
        .collect();
    let hf = Vec::<i64>::try_from(&got["t0_chat"]).unwrap();
    assert_eq!(hf, q, "chat template ids");
    let cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(h.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["architectures"][0], "LlamaForCausalLM");
    assert_eq!(cfg["tie_word_embeddings"], true);
}

/// Exports the model directory `q` (holding `m`) as a GGUF file `f` of type `ty` and reads it
/// back with quern; in f32 every weight of `m` must come back to the bit.
fn gguf_read_back(q: &Path, f: &Path, ty: &str, m: &Transformer) -> Transformer {
    export(q, f, &["--format", "gguf", "--dtype", ty]);
    let back = store::load(f, Device::Cpu).unwrap().model;
    if ty == "f32" {
        for (n, t) in m.params().named() {
            assert!(
                t.equal(back.params().get(&n).unwrap()),
                "{n} changed through f32"
            );
        }
    }
    back
}

/// transformers' logits from a GGUF file of type `ty` equal quern's from the same file
/// within 1e-4, and those stay within `near` of the fp32 model's `want`.
fn assert_gguf_logits(ty: &str, theirs: &Tensor, ours: &Tensor, want: &Tensor, near: f64) {
    let d = max_diff(theirs, ours);
    assert!(
        d <= 1e-4,
        "{ty}: transformers' logits differ from quern's on the same file by {d}"
    );
    let e = max_diff(ours, want);
    assert!(e <= near, "{ty}: logits moved {e} from the fp32 model");
}

/// `--format gguf`, checked against llama.cpp's Python reader (`gguf`) and `transformers`'
/// GGUF loader on a tiny Llama (grouped-query attention, untied output, every weight drawn)
/// in every type: the reader sees each matrix in the type asked for and the norms in F32,
/// and `transformers`' logits equal quern's from the same file within 1e-4 (both dequantize
/// the same bytes); in f32 every weight comes back to the bit (q and k through llama.cpp's
/// rotary permutation and back); f16 and q8_0 logits stay within 0.01 and 0.25 of the fp32
/// model's (its logits reach 4.5 here; 4-bit types are checked only against transformers). A BERT-like model
/// is refused naming the key, with nothing written.
#[test]
fn tiny_llama_exports_to_gguf_in_every_type() {
    tch::manual_seed(13);
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = sized(ModelConfig::llama()).with_kv_heads(2);
    cfg.tie_embeddings = false;
    let q = tmp.path().join("tiny.quern");
    let m = tiny(&q, &cfg);
    let ids = vec![(0..10)
        .map(|i| 3 + (i * 13 + 1) % (VOCAB - 3))
        .collect::<Vec<i64>>()];
    let x = t2(&ids);
    let want = tch::no_grad(|| m.forward(&x, true, false));
    let types = [
        ("f32", 0i64, 1e-5),
        ("f16", 1, 0.01),
        ("q8_0", 8, 0.25),
        ("q4_0", 2, f64::INFINITY),
        ("q4_1", 3, f64::INFINITY),
    ];
    let mut tasks = Vec::new();
    let mut quern_logits = Vec::new();
    for (ty, _, _) in &types {
        let f = tmp.path().join(format!("tiny-{ty}.gguf"));
        let back = gguf_read_back(&q, &f, ty, &m);
        quern_logits.push(tch::no_grad(|| back.forward(&x, true, false)));
        tasks.push(serde_json::json!({"gguf": f, "ids": ids}));
    }
    let got = peer(tmp.path(), serde_json::json!({"tasks": tasks}));
    for (i, (ty, id, near)) in types.iter().enumerate() {
        let tys = Vec::<i64>::try_from(&got[&format!("t{i}_types")]).unwrap();
        // token_embd, then per block attn_norm, q, k, v, o, ffn_norm, gate, up, down; then
        // output_norm and output.
        assert_eq!(tys.len(), 1 + 9 * 2 + 2, "{ty}");
        let norms = tys.iter().filter(|&&t| t == 0).count();
        assert!(tys.iter().all(|&t| t == *id || t == 0), "{ty}: {tys:?}");
        if *id != 0 {
            assert_eq!(norms, 2 * 2 + 1, "{ty}: norms stay F32");
        }
        assert_gguf_logits(
            ty,
            &got[&format!("t{i}_logits")],
            &quern_logits[i],
            &want,
            *near,
        );
    }
    let err = refused_export(tmp.path(), "bert", &sized(ModelConfig::bert()), "gguf");
    assert!(err.contains("model.post_norm"), "{err}");
}

/// `--format gguf` for a GPT-2-like model (llama.cpp's `gpt2` architecture), with biases
/// and every weight drawn and a small byte-level BPE tokenizer (the loaders take the
/// vocabulary's size from its tokens): the `gguf` reader sees `gpt2` tensors, the block
/// matrices in the type asked for and biases, norms and position embeddings in F32, and
/// `transformers`' GGUF loader gives the logits quern computes from the same file (which
/// `quern import` reads back: every weight to the bit in f32, tied) within 1e-4, and those
/// stay within 0.25 of the fp32 model's in q8_0. The erf GELU, which llama.cpp's `gpt2` does not compute, is refused naming `model.mlp`.
#[test]
fn tiny_gpt2_exports_to_gguf() {
    let tmp = tempfile::tempdir().unwrap();
    // transformers' GGUF loader builds GPT-2 with its default 1024 positions (it maps
    // `gpt2.context_length` to `n_ctx`, which GPT2Config does not size by).
    let cfg = sized(ModelConfig::gpt2()).with_seq_len(1024);
    assert_eq!(cfg.mlp, Mlp::Gelu);
    let q = tmp.path().join("gpt2.quern");
    let m = tiny(&q, &cfg);
    // Printable ASCII as byte-level BPE tokens (ids 0..93); the loaders pad the rest.
    let vocab: serde_json::Map<String, serde_json::Value> = (0x21u8..0x7f)
        .enumerate()
        .map(|(i, c)| ((c as char).to_string(), serde_json::Value::from(i)))
        .collect();
    let tokenizer = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
        "normalizer": null,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true,
                          "use_regex": true},
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true,
                    "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null,
                  "continuing_subword_prefix": null, "end_of_word_suffix": null,
                  "fuse_unk": false, "byte_fallback": false, "vocab": vocab, "merges": []}
    })
    .to_string();
    let mut meta = ModelMeta::new(cfg.clone());
    meta.special = special();
    store::save(&q, &meta, &m.params().named(), Some(&tokenizer), true).unwrap();
    let ids = vec![(0..10)
        .map(|i| 3 + (i * 11 + 2) % (VOCAB - 3))
        .collect::<Vec<i64>>()];
    let want = tch::no_grad(|| m.forward(&t2(&ids), true, false));
    let types = [("f32", 0i64, 1e-4), ("q8_0", 8, 0.25)];
    let mut tasks = Vec::new();
    let mut quern_logits = Vec::new();
    for (ty, _, _) in &types {
        let f = tmp.path().join(format!("gpt2-{ty}.gguf"));
        // quern reads its own GGUF back: every weight to the bit in f32, tied again.
        let back = gguf_read_back(&q, &f, ty, &m);
        assert!(back.config().tie_embeddings);
        assert_eq!(back.params().params.len(), m.params().params.len());
        quern_logits.push(tch::no_grad(|| back.forward(&t2(&ids), true, false)));
        tasks.push(serde_json::json!({"gguf": f, "ids": ids, "arch": "gpt2"}));
    }
    let got = peer(tmp.path(), serde_json::json!({"tasks": tasks}));
    for (i, (ty, id, near)) in types.iter().enumerate() {
        let tys = Vec::<i64>::try_from(&got[&format!("t{i}_types")]).unwrap();
        // token_embd, position_embd, per block 6 weights and 6 biases, output_norm weight
        // and bias, output.
        assert_eq!(tys.len(), 2 + 12 * 2 + 3, "{ty}");
        let matrices = tys.iter().filter(|&&t| t == *id).count();
        if *id != 0 {
            // token_embd, 4 per block, output; the rest F32.
            assert_eq!(matrices, 1 + 4 * 2 + 1, "{ty}: {tys:?}");
            assert!(tys.iter().all(|&t| t == *id || t == 0), "{ty}: {tys:?}");
        }
        assert_gguf_logits(
            ty,
            &got[&format!("t{i}_logits")],
            &quern_logits[i],
            &want,
            *near,
        );
    }
    let mut erf = sized(ModelConfig::gpt2());
    erf.mlp = Mlp::GeluErf;
    let err = refused_export(tmp.path(), "erf", &erf, "gguf");
    assert!(err.contains("model.mlp"), "{err}");
}

/// SmolLM2 out of its own GGUF and back through quern: in f32, the config, special ids,
/// chat template and every weight come back equal, and the tokenizer rebuilt from the
/// exported metadata gives the source tokenizer's ids; in q8_0 (145 MB instead of 540), the
/// `gguf` reader sees Q8_0 matrices and F32 norms, and the model picks the f32 model's next
/// token.
#[test]
fn smollm2_round_trips_through_gguf() {
    let gguf = crate::models::smollm2();
    let tmp = tempfile::tempdir().unwrap();
    let f32_path = tmp.path().join("smollm2-f32.gguf");
    let q8_path = tmp.path().join("smollm2-q8_0.gguf");
    export(&gguf, &f32_path, &["--format", "gguf"]);
    let src = store::load(&gguf, Device::Cpu).unwrap();
    let back = store::load(&f32_path, Device::Cpu).unwrap();
    assert_eq!(back.meta.config, src.meta.config);
    assert_eq!(back.meta.special, src.meta.special);
    assert_eq!(back.meta.chat_template, src.meta.chat_template);
    for (n, t) in src.model.params().named() {
        assert!(
            t.equal(back.model.params().get(&n).unwrap()),
            "{n} changed through the f32 GGUF"
        );
    }
    let (tok, tok_back) = (
        src.tokenizer.as_ref().unwrap(),
        back.tokenizer.as_ref().unwrap(),
    );
    let chat = "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n";
    for s in [
        "Hello, world!",
        "Quern grinds grain; 1234 + 5678 = 6912.",
        "日本語 and émigré",
        chat,
    ] {
        assert_eq!(
            tok_back.encode(s, false).unwrap().get_ids(),
            tok.encode(s, false).unwrap().get_ids(),
            "{s:?}"
        );
    }
    drop(back);
    std::fs::remove_file(&f32_path).unwrap();
    export(&gguf, &q8_path, &["--format", "gguf", "--dtype", "q8_0"]);
    let size = std::fs::metadata(&q8_path).unwrap().len();
    assert!(size < 150_000_000, "{size}");
    let got = peer(
        tmp.path(),
        serde_json::json!({"tasks": [{"gguf": q8_path}]}),
    );
    let types = Vec::<i64>::try_from(&got["t0_types"]).unwrap();
    assert_eq!(types.len(), 272);
    assert_eq!(types[0], 8, "token_embd is Q8_0");
    assert!(types.iter().all(|&t| t == 8 || t == 0), "{types:?}");
    assert_eq!(
        types.iter().filter(|&&t| t == 0).count(),
        2 * 30 + 1,
        "norms stay F32"
    );
    let q8 = store::load(&q8_path, Device::Cpu).unwrap();
    for prompt in ["The capital of France is", "def fib(n):"] {
        let ids: Vec<i64> = tok
            .encode(prompt, false)
            .unwrap()
            .get_ids()
            .iter()
            .map(|&i| i as i64)
            .collect();
        let x = Tensor::from_slice(&ids).view([1, -1]);
        let next = |m: &Transformer| {
            tch::no_grad(|| m.forward(&x, true, false))
                .get(0)
                .get(-1)
                .argmax(0, false)
                .int64_value(&[])
        };
        assert_eq!(
            next(&q8.model),
            next(&src.model),
            "q8_0's next token after {prompt:?}"
        );
    }
}
