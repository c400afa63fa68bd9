//! `quern rl`: reinforcement learning from rewards on a tiny random Llama with a word-level
//! tokenizer (digits, a few words), written here as a quern model directory.
//!
//! - The reward rises: GRPO with the `exact_match` checker on prompts whose answer is always
//!   7, seeded; the mean reward of the last steps is well above the first steps'.
//! - Exact resume: a run stopped after step 4 and resumed equals the uninterrupted run (every
//!   metric but the timings, and the final weights byte for byte), with RLOO, a KL term to
//!   the reference and two epochs per step (old log-probabilities, clipping).
//! - The loss against plain PyTorch (`tests/peers/rl_loss.py`): the clipped objective with
//!   the k3 KL, both length normalisations, and its gradient, on the same numbers.
//! - PPO against plain PyTorch (`tests/peers/ppo_loss.py`, laid out as TRL's PPOTrainer):
//!   per-token rewards with the KL, GAE, whitening across micro-batches, the clipped policy
//!   and value losses and their gradients; PPO raises the reward on the same task, and a
//!   resumed PPO run (value head, its optimizer state) equals an uninterrupted one.
//! - LoRA: adapters alone train and are checkpointed with their base's record (read back
//!   merged), resume is exact, the reward rises.
//! - A reward model trained by `quern train` (`rm`) as a reward term; one of another
//!   vocabulary is refused.
//! - Bad input: a reward command that crashes (the step is logged failed with its rows; past
//!   `train.max_failed_steps` the run stops) or prints garbage (the run goes on), a prompts
//!   line without an answer (the file and line are named), an unknown key, a reference with
//!   another vocabulary.

use std::path::{Path, PathBuf};

use tch::{Device, Kind, Tensor};

use crate::common::{quern, read_jsonl, run_err, run_ok, run_peer};

const WORDS: [&str; 8] = [
    "Question", "Answer", "add", "and", "the", "is", "so", "####",
];

/// A word-level tokenizer.json: `<|endoftext|>` (0, eos), `[UNK]` (1), `:` (2), the digits
/// (3..13), then [`WORDS`]; whitespace splits words and punctuation.
fn tokenizer_json(extra: &[&str]) -> String {
    let mut vocab = vec!["<|endoftext|>", "[UNK]", ":"];
    let digits: Vec<String> = (0..10).map(|d| d.to_string()).collect();
    vocab.extend(digits.iter().map(String::as_str));
    vocab.extend(WORDS);
    vocab.extend(extra);
    let map: serde_json::Map<String, serde_json::Value> = vocab
        .iter()
        .enumerate()
        .map(|(i, w)| (w.to_string(), serde_json::Value::from(i)))
        .collect();
    serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [{"id": 0, "content": "<|endoftext|>", "single_word": false,
            "lstrip": false, "rstrip": false, "normalized": false, "special": true}],
        "normalizer": null,
        "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": null,
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": map, "unk_token": "[UNK]"}
    })
    .to_string()
}

/// A tiny random Llama (seeded) with that tokenizer, as a quern model directory.
fn tiny_model(dir: &Path, seed: i64, extra: &[&str]) -> PathBuf {
    let json = tokenizer_json(extra);
    let vocab = 3 + 10 + WORDS.len() + extra.len();
    let cfg = quern_models::config::ModelConfig::llama()
        .with_layers(2)
        .with_heads(2)
        .with_kv_heads(1)
        .with_dim(32)
        .with_seq_len(48)
        .with_vocab_size(vocab);
    // Weights from our own generator, not libtorch's global one (tests run in parallel).
    let mut m = quern_models::transformer::Transformer::new(&cfg, Device::Cpu);
    let mut s = seed as u64;
    for p in &mut m.params_mut().params {
        if p.name.contains(".ln") || p.name.starts_with("ln_f") {
            continue;
        }
        let n = p.tensor.numel();
        let v: Vec<f32> = (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.2
            })
            .collect();
        let _g = tch::no_grad_guard();
        p.tensor
            .copy_(&Tensor::from_slice(&v).view(p.tensor.size().as_slice()));
    }
    let mut meta = quern_models::store::ModelMeta::new(m.config().clone());
    meta.special = quern_models::store::Special {
        bos: None,
        eos: vec![0],
        pad: Some(0),
        add_bos: false,
    };
    quern_models::store::save(dir, &meta, &m.params().named(), Some(json.as_str()), true).unwrap();
    dir.to_path_buf()
}

/// `n` prompts "add A and B" whose answer is always 7 (the task is to say 7).
fn prompts(path: &Path, n: usize) {
    let lines: Vec<String> = (0..n)
        .map(|i| {
            serde_json::json!({
                "question": format!("add {} and {}", i % 10, (i * 3) % 10),
                "answer": "the answer is #### 7",
            })
            .to_string()
        })
        .collect();
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

fn write_toml(root: &Path, name: &str, body: &str) -> PathBuf {
    let path = root.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            "out_dir = \"{name}\"\n[init]\nfrom = \"model\"\n[prompts]\nfile = \"prompts.jsonl\"\nper_step = 4\n{body}"
        ),
    )
    .unwrap();
    path
}

fn setup() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    tiny_model(&tmp.path().join("model"), 5, &[]);
    prompts(&tmp.path().join("prompts.jsonl"), 12);
    tmp
}

const GRPO: &str = "[generation]\ngroup_size = 8\nmax_new_tokens = 4\ntemperature = 1.0\n\
                    [algorithm]\ntype = \"grpo\"\n\
                    [[reward]]\ntype = \"exact_match\"\n\
                    [optim]\nlr = 1e-2\n\
                    [train]\nsteps = 30\nseed = 3\ndevice = \"cpu\"\nmicro_batch = 16\n\
                    [checkpoint]\nevery = 0\nkeep = 1\n";

fn rewards(metrics: &Path) -> Vec<f64> {
    read_jsonl(metrics)
        .iter()
        .filter_map(|l| l["reward_mean"].as_f64())
        .collect()
}

/// Runs the 30-step run `body` as `name` in `t` and asserts that the mean reward of its last
/// 5 steps is above 0.5 and 0.3 above the first 5 steps', and that the first metrics line
/// has a number for each of `keys`; its metrics lines.
fn assert_reward_rises(t: &Path, name: &str, body: &str, keys: &[&str]) -> Vec<serde_json::Value> {
    assert_reward_rises_by(t, name, body, keys, (0.3, 0.5))
}

/// [`assert_reward_rises`] with the rise and the final level to reach.
fn assert_reward_rises_by(
    t: &Path,
    name: &str,
    body: &str,
    keys: &[&str],
    (rise, level): (f64, f64),
) -> Vec<serde_json::Value> {
    run_ok(
        quern()
            .args(["rl", "--quiet"])
            .arg(write_toml(t, name, body)),
    );
    let metrics = t.join(name).join("metrics.jsonl");
    let r = rewards(&metrics);
    assert_eq!(r.len(), 30);
    let mean = |s: &[f64]| s.iter().sum::<f64>() / s.len() as f64;
    let (before, after) = (mean(&r[..5]), mean(&r[25..]));
    eprintln!("{name} mean reward: first 5 steps {before:.3}, last 5 steps {after:.3}");
    assert!(
        after > before + rise && after > level,
        "{name}: the reward did not rise: {before:.3} -> {after:.3} ({r:?})"
    );
    let lines = read_jsonl(&metrics);
    for key in keys.iter().chain(&["truncated_frac", "response_length"]) {
        assert!(
            lines[0][key].as_f64().is_some(),
            "{key} missing: {}",
            lines[0]
        );
    }
    // Every task here generates at most 4 tokens (a stop id counts as one): a step whose
    // completions were all cut off has exactly 4 each.
    for l in &lines {
        let (cut, len) = (
            l["truncated_frac"].as_f64().unwrap(),
            l["response_length"].as_f64().unwrap(),
        );
        assert!((0.0..=1.0).contains(&cut), "{l}");
        if cut == 1.0 {
            assert_eq!(len, 4.0, "{l}");
        }
    }
    lines
}

/// The greedy completion (4 tokens) of the model in `dir` for a prompt of the task.
fn greedy_completion(dir: &Path) -> String {
    let out = run_ok(
        quern()
            .args([
                "generate",
                "--device",
                "cpu",
                "--max-tokens",
                "4",
                "--json",
                "--model",
            ])
            .arg(dir)
            .arg("Question: add 1 and 2\nAnswer:"),
    );
    let v: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().next().unwrap()).unwrap();
    v["completion"].as_str().unwrap().to_string()
}

#[test]
fn grpo_raises_the_reward_on_a_verifiable_task() {
    let tmp = setup();
    let t = tmp.path();
    let keys = [
        "reward_std",
        "zero_std_frac",
        "entropy",
        "clip_frac",
        "gen_tokens_per_s",
        "train_tokens_per_s",
        "grad_norm",
    ];
    let lines = assert_reward_rises(t, "grpo", GRPO, &keys);
    // With one epoch the ratio is 1: nothing is clipped.
    assert!(lines.iter().all(|l| l["clip_frac"].as_f64() == Some(0.0)));
    // The final checkpoint is a model `quern generate` reads, and it now says 7.
    let text = greedy_completion(&t.join("grpo"));
    assert!(
        text.contains('7'),
        "greedy completion after training: {text:?}"
    );
}

/// Every field of the metrics but the timings.
fn without_timings(lines: Vec<serde_json::Value>) -> Vec<serde_json::Value> {
    lines
        .into_iter()
        .map(|mut l| {
            let o = l.as_object_mut().unwrap();
            for k in [
                "gen_s",
                "train_s",
                "step_s",
                "gen_tokens_per_s",
                "train_tokens_per_s",
            ] {
                o.remove(k);
            }
            l
        })
        .collect()
}

fn rl_opts(resume: bool, stop_after: Option<u64>) -> quern_train::rl::RlOptions {
    quern_train::rl::RlOptions {
        progress: false,
        resume,
        force: false,
        stop_after,
    }
}

/// Runs `body` (`steps` steps, a checkpoint every 2) in `t` as `whole`, uninterrupted, and as
/// `cut`, stopped after step 3 and resumed from the checkpoint of step 2. Asserts that both
/// write the same metrics but for the timings, and the same bytes in each of `files` of the
/// final checkpoint; returns the metrics lines.
fn assert_resume_is_exact(
    t: &Path,
    body: &str,
    steps: u64,
    files: &[&str],
) -> Vec<serde_json::Value> {
    use quern_train::rl::{config::RlConfig, run_with};
    let load = |name: &str| RlConfig::load(&write_toml(t, name, body)).unwrap();
    let whole = run_with(&load("whole"), &rl_opts(false, None)).unwrap();
    assert_eq!(whole.steps, steps);
    let cut = load("cut");
    let first = run_with(&cut, &rl_opts(false, Some(3))).unwrap();
    assert_eq!(first.steps, 3);
    let rest = run_with(&cut, &rl_opts(true, None)).unwrap();
    assert_eq!(rest.start_step, 2, "resumes from the checkpoint of step 2");
    let a = without_timings(read_jsonl(&t.join("whole/metrics.jsonl")));
    let b = without_timings(read_jsonl(&t.join("cut/metrics.jsonl")));
    assert_eq!(a.len() as u64, steps);
    assert_eq!(a, b);
    let last = format!("checkpoints/step-{steps:08}");
    for file in files {
        let read = |run: &str| std::fs::read(t.join(run).join(&last).join(file)).unwrap();
        assert!(read("whole") == read("cut"), "the final {file} differs");
    }
    a
}

#[test]
fn a_resumed_run_equals_an_uninterrupted_one() {
    let tmp = setup();
    let t = tmp.path();
    let body = "[generation]\ngroup_size = 4\nmax_new_tokens = 5\n\
                [algorithm]\ntype = \"rloo\"\nbeta = 0.1\nepochs = 2\nepsilon = 0.1\n\
                [[reward]]\ntype = \"exact_match\"\n[[reward]]\ntype = \"length\"\nweight = -0.5\n\
                [optim]\nlr = 5e-3\ndecay = \"cosine\"\nwarmup_steps = 2\n\
                [train]\nsteps = 6\nseed = 9\ndevice = \"cpu\"\nmicro_batch = 5\n\
                [checkpoint]\nevery = 2\nkeep = 2\n";
    let a = assert_resume_is_exact(t, body, 6, &["model.safetensors"]);
    // Clipping happened in the second epochs, and the KL was measured.
    assert!(
        a.iter().any(|l| l["clip_frac"].as_f64().unwrap() > 0.0),
        "{a:?}"
    );
    assert!(
        a.iter().skip(1).all(|l| l["kl"].as_f64().unwrap() > 0.0),
        "{a:?}"
    );
}

/// Draws of `n` numbers uniform in `[lo, hi)` from a seeded LCG (the same on every run).
fn uniform(seed: u64) -> impl FnMut(usize, f64, f64) -> Vec<f64> {
    let mut s = seed;
    move |n, lo, hi| {
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                lo + (hi - lo) * ((s >> 11) as f64 / (1u64 << 53) as f64)
            })
            .collect()
    }
}

/// The clipped objective and the k3 KL against plain PyTorch on the same log-probabilities.
#[test]
fn the_loss_and_its_gradient_equal_plain_pytorch() {
    use quern_train::rl::algo::policy_loss;
    let tmp = tempfile::tempdir().unwrap();
    let (b, l) = (3i64, 5i64);
    let mut draw = uniform(17);
    let logp = draw((b * l) as usize, -3.0, -0.1);
    // Old log-probabilities within ±0.4 of the current ones: ratios on both sides of the clip.
    let old: Vec<f64> = logp
        .iter()
        .zip(draw((b * l) as usize, -0.4, 0.4))
        .map(|(x, d)| x + d)
        .collect();
    let reference: Vec<f64> = logp
        .iter()
        .zip(draw((b * l) as usize, -0.5, 0.5))
        .map(|(x, d)| x + d)
        .collect();
    let adv = vec![1.3, -0.7, 0.4];
    let mask = vec![
        1.0, 1.0, 1.0, 1.0, 1.0, //
        0.0, 1.0, 1.0, 0.0, 0.0, //
        1.0, 1.0, 1.0, 1.0, 0.0,
    ];
    let t = |v: &[f64], shape: &[i64]| Tensor::from_slice(v).view(shape).to_kind(Kind::Double);
    let task = serde_json::json!({
        "logp": logp, "old": old, "ref": reference, "adv": adv, "mask": mask,
        "shape": [b, l], "eps_low": 0.2, "eps_high": 0.28, "beta": 0.05, "max_len": 8,
    });
    let out = run_peer(tmp.path(), "rl_loss.py", &task, "peer.safetensors");
    let peer: std::collections::HashMap<String, Tensor> = Tensor::read_safetensors(&out)
        .unwrap()
        .into_iter()
        .collect();
    for (name, norm) in [("token_mean", None), ("constant", Some(8.0))] {
        let lp = t(&logp, &[b, l]).set_requires_grad(true);
        let parts = policy_loss(
            &lp,
            &t(&old, &[b, l]),
            Some(&t(&reference, &[b, l])),
            &t(&adv, &[b]),
            &t(&mask, &[b, l]),
            0.2,
            0.28,
            0.05,
            norm,
        );
        let loss = &parts.loss_sum / b as f64;
        loss.backward();
        let want = peer[&format!("{name}_loss")].double_value(&[]);
        assert!(
            (loss.double_value(&[]) - want).abs() < 1e-9,
            "{name}: {} vs {want}",
            loss.double_value(&[])
        );
        let gdiff = (lp.grad() - &peer[&format!("{name}_grad")])
            .abs()
            .max()
            .double_value(&[]);
        assert!(gdiff < 1e-9, "{name}: gradients differ by {gdiff}");
        let kl = peer["kl_sum"].double_value(&[]);
        assert!(
            (parts.kl_sum - kl).abs() < 1e-9,
            "kl {} vs {kl}",
            parts.kl_sum
        );
        assert_eq!(
            parts.clipped,
            peer["clipped"].double_value(&[]),
            "clipped tokens"
        );
        assert!(parts.clipped > 0.0, "the numbers should clip some tokens");
    }
}

#[test]
fn a_crashing_or_garbage_reward_command_fails_its_steps_with_their_rows() {
    let tmp = setup();
    let t = tmp.path();
    std::fs::write(
        t.join("crash.sh"),
        "cat > /dev/null\necho 'scorer exploded' >&2\nexit 2\n",
    )
    .unwrap();
    std::fs::write(
        t.join("garbage.sh"),
        "cat > /dev/null\nfor i in $(seq 8); do echo 'not a number'; done\n",
    )
    .unwrap();
    let body = |script: &str, max_failed: u64| {
        format!(
            "[generation]\ngroup_size = 2\nmax_new_tokens = 3\n\
             [[reward]]\ntype = \"exact_match\"\n\
             [[reward]]\ntype = \"command\"\ncommand = [\"sh\", \"{script}\"]\n\
             [train]\nsteps = 3\ndevice = \"cpu\"\nmax_failed_steps = {max_failed}\n"
        )
    };
    // Crashing: tolerated once, the second failure stops the run.
    let err = run_err(quern().args(["rl", "--quiet"]).arg(write_toml(
        t,
        "crash",
        &body("crash.sh", 1),
    )));
    assert!(
        err.contains("max_failed_steps")
            && err.contains("scorer exploded")
            && err.contains("exit status: 2"),
        "{err}"
    );
    let lines = read_jsonl(&t.join("crash/metrics.jsonl"));
    assert_eq!(lines.len(), 2, "{lines:?}");
    for l in &lines {
        assert_eq!(l["failed"], true);
        let rows: Vec<&str> = l["failed_rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_str().unwrap())
            .collect();
        assert_eq!(rows.len(), 8);
        assert!(
            rows.iter()
                .all(|r| r.starts_with("line ") && r.contains('#')),
            "{rows:?}"
        );
        assert!(
            l["error"].as_str().unwrap().contains("reward `command`"),
            "{l}"
        );
    }
    // Garbage: every step fails, the limit allows it, the run ends with its checkpoint.
    run_ok(
        quern()
            .args(["rl", "--quiet"])
            .arg(write_toml(t, "garbage", &body("garbage.sh", 5))),
    );
    let lines = read_jsonl(&t.join("garbage/metrics.jsonl"));
    assert_eq!(lines.len(), 3);
    assert!(
        lines
            .iter()
            .all(|l| l["failed"] == true
                && l["error"].as_str().unwrap().contains("not a JSON number"))
    );
    assert!(t
        .join("garbage/checkpoints/step-00000003/model.safetensors")
        .exists());
}

#[test]
fn bad_prompts_keys_and_references_are_refused_by_name() {
    let tmp = setup();
    let t = tmp.path();
    let ok = "[[reward]]\ntype = \"exact_match\"\n[train]\nsteps = 1\ndevice = \"cpu\"\n";
    std::fs::write(
        t.join("prompts.jsonl"),
        "{\"question\": \"add 1 and 2\", \"answer\": \"#### 3\"}\n{\"question\": \"add 2 and 2\"}\n",
    )
    .unwrap();
    let err = run_err(quern().args(["rl", "--quiet"]).arg(write_toml(t, "a", ok)));
    assert!(
        err.contains("prompts.jsonl:2") && err.contains("answer"),
        "{err}"
    );
    prompts(&t.join("prompts.jsonl"), 4);
    let err = run_err(quern().args(["rl"]).arg(write_toml(
        t,
        "b",
        &format!("{ok}[generation]\ngroupsize = 3\n"),
    )));
    assert!(
        err.contains("generation") && err.contains("groupsize"),
        "{err}"
    );
    // LoRA dropout would be ignored (log-probabilities are taken without dropout): refused.
    let err = run_err(quern().args(["rl"]).arg(write_toml(
        t,
        "b",
        &format!("{ok}[lora]\ndropout = 0.1\n"),
    )));
    assert!(err.contains("lora.dropout"), "{err}");
    // A reference with another vocabulary (one more word).
    tiny_model(&t.join("other"), 5, &["extra"]);
    let err = run_err(
        quern()
            .args(["rl"])
            .arg(write_toml(t, "c", "[init.reference]\n")),
    );
    assert!(err.contains("init.reference"), "{err}");
    let toml = t.join("d.toml");
    std::fs::write(
        &toml,
        format!(
            "out_dir = \"d\"\n[init]\nfrom = \"model\"\nreference = \"other\"\n[prompts]\nfile = \"prompts.jsonl\"\n\
             [algorithm]\nbeta = 0.1\n{ok}"
        ),
    )
    .unwrap();
    let err = run_err(quern().args(["rl"]).arg(&toml));
    assert!(
        err.contains("init.reference") && err.contains("vocabulary"),
        "{err}"
    );
    assert!(
        !t.join("d").exists(),
        "nothing is written before the run can start"
    );
}

/// docs/rl.md cannot drift from the parser: for the top level and every table, `quern rl`
/// on a file with an unknown key gets serde's list of the valid keys, and the guide's
/// section has a row for each, and no row for a key the parser refuses.
#[test]
fn the_guide_documents_every_key_of_rl_toml() {
    use crate::build::fields_named_by;
    let guide = std::fs::read_to_string(crate::common::repo().join("docs/rl.md")).unwrap();
    let section = |title: &str| -> String {
        let head = format!("## {title}");
        let mut lines = guide.lines().skip_while(|l| l.trim_end() != head);
        assert!(lines.next().is_some(), "docs/rl.md has no `{head}` section");
        lines
            .take_while(|l| !l.starts_with("## "))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("rl.toml");
    let base = "[init]\nfrom = \"m\"\n[prompts]\nfile = \"p\"\n[[reward]]\ntype = \"format\"\n";
    let mut cases = vec![("The file".to_string(), format!("zz_unknown = 1\n{base}"))];
    cases.push((
        "[init]".into(),
        base.replace("from = \"m\"\n", "from = \"m\"\nzz_unknown = 1\n"),
    ));
    cases.push((
        "[prompts]".into(),
        base.replace("file = \"p\"\n", "file = \"p\"\nzz_unknown = 1\n"),
    ));
    cases.push(("[[reward]]".into(), format!("{base}zz_unknown = 1\n")));
    for t in [
        "generation",
        "algorithm",
        "optim",
        "train",
        "checkpoint",
        "lora",
    ] {
        cases.push((format!("[{t}]"), format!("{base}[{t}]\nzz_unknown = 1\n")));
    }
    let mut problems = Vec::new();
    for (title, text) in &cases {
        std::fs::write(&file, text).unwrap();
        let err = run_err(quern().arg("rl").arg(&file));
        let fields = fields_named_by(&err);
        let body = section(title);
        for f in &fields {
            if !body.lines().any(|l| l.starts_with(&format!("| `{f}` |"))) {
                problems.push(format!("{title}: key `{f}` has no row"));
            }
        }
        for row in body.lines().filter(|l| l.starts_with("| `")) {
            let name = row[3..].split('`').next().unwrap();
            if !fields.iter().any(|f| f == name) {
                problems.push(format!(
                    "{title}: documents `{name}`, which the parser refuses"
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "docs/rl.md disagrees with the code:\n{}",
        problems.join("\n")
    );
}

/// A reward model trained by `quern train` (`rm`, on pairs tokenized with the policy's
/// tokenizer: "7" then eos chosen over "3" then eos) scores the samples; one trained on
/// another vocabulary is refused naming the term.
#[test]
fn a_trained_reward_model_is_a_reward_term() {
    let tmp = setup();
    let t = tmp.path();
    let write_rm_split = |dir: &Path, extra: &[&str]| {
        let rows: Vec<(Vec<i32>, Vec<i32>, Vec<i32>)> = (0..24)
            .map(|i| {
                (
                    vec![15, 3 + i % 10, 16, 3 + (i * 3) % 10],
                    vec![10, 0],
                    vec![6, 0],
                )
            })
            .collect();
        let vocab = 3 + 10 + WORDS.len() + extra.len();
        quern_train::data::write_pref_split(
            dir,
            quern_tokenize::Objective::Rm,
            &rows,
            24,
            vocab,
            [Some(0), None, Some(0), None],
            "toy",
        )
        .unwrap();
        std::fs::write(dir.join("tokenizer.json"), tokenizer_json(extra)).unwrap();
    };
    let rm_toml = |name: &str, split: &str| {
        let p = t.join(format!("{name}.toml"));
        std::fs::write(
            &p,
            format!(
                "out_dir = \"{name}\"\n[data]\ntrain = \"{split}\"\n[model]\nlayers = 1\nheads = 2\ndim = 32\n\
                 positions = \"rotary\"\nnorm = \"rmsnorm\"\nmlp = \"swiglu\"\n\
                 [optim]\nlr = 3e-3\n[train]\nobjective = \"rm\"\nmicro_batch = 8\nmax_steps = 20\ndevice = \"cpu\"\n\
                 [checkpoint]\nevery = 0\nkeep = 1\nkeep_best = false\n"
            ),
        )
        .unwrap();
        p
    };
    write_rm_split(&t.join("pairs"), &[]);
    run_ok(
        quern()
            .args(["train", "--quiet"])
            .arg(rm_toml("rmrun", "pairs")),
    );
    let body = "[generation]\ngroup_size = 4\nmax_new_tokens = 4\n\
                [[reward]]\ntype = \"rm\"\nmodel = \"rmrun\"\n\
                [train]\nsteps = 2\ndevice = \"cpu\"\n";
    run_ok(
        quern()
            .args(["rl", "--quiet"])
            .arg(write_toml(t, "withrm", body)),
    );
    let lines = read_jsonl(&t.join("withrm/metrics.jsonl"));
    assert_eq!(lines.len(), 2);
    for l in &lines {
        let r = l["rewards"]["rm"].as_f64().unwrap();
        assert!(
            r.is_finite() && l["reward_mean"].as_f64().unwrap() == r,
            "{l}"
        );
        assert!(
            l["reward_std"].as_f64().unwrap() > 0.0,
            "the samples differ: {l}"
        );
    }
    // A reward model of another vocabulary cannot read the policy's ids.
    write_rm_split(&t.join("pairs2"), &["extra"]);
    run_ok(
        quern()
            .args(["train", "--quiet"])
            .arg(rm_toml("rmother", "pairs2")),
    );
    let err = run_err(quern().args(["rl"]).arg(write_toml(
        t,
        "badrm",
        &body.replace("\"rmrun\"", "\"rmother\""),
    )));
    assert!(
        err.contains("reward[0].model") && err.contains("vocabulary"),
        "{err}"
    );
}

const PPO: &str = "[generation]\ngroup_size = 4\nmax_new_tokens = 4\ntemperature = 1.0\n\
                   [algorithm]\ntype = \"ppo\"\nepochs = 2\nlam = 0.9\nvf_coef = 0.5\n\
                   [[reward]]\ntype = \"exact_match\"\n\
                   [optim]\nlr = 1e-2\n\
                   [train]\nsteps = 30\nseed = 3\ndevice = \"cpu\"\nmicro_batch = 16\n\
                   [checkpoint]\nevery = 0\nkeep = 1\n";

#[test]
fn ppo_raises_the_reward_on_a_verifiable_task() {
    let tmp = setup();
    let t = tmp.path();
    let keys = [
        "value_loss",
        "value_clip_frac",
        "clip_frac",
        "entropy",
        "grad_norm",
    ];
    let lines = assert_reward_rises(t, "ppo", PPO, &keys);
    // PPO has no groups: no zero-std fraction; the second epoch clips some values.
    assert!(lines.iter().all(|l| l.get("zero_std_frac").is_none()));
    assert!(
        lines
            .iter()
            .any(|l| l["value_clip_frac"].as_f64().unwrap() > 0.0),
        "{lines:?}"
    );
    // The value head is saved beside the policy, which stays a plain model directory.
    let ckpt = t.join("ppo/checkpoints/step-00000030");
    let v: std::collections::HashMap<String, Tensor> =
        Tensor::read_safetensors(ckpt.join("value_head.safetensors"))
            .unwrap()
            .into_iter()
            .collect();
    assert_eq!(v["value_head.weight"].size(), vec![1, 32]);
    assert!(
        v["value_head.weight"]
            .abs()
            .sum(Kind::Double)
            .double_value(&[])
            > 0.0
    );
    // It generates: the JSON line has a completion.
    greedy_completion(&t.join("ppo"));
}

#[test]
fn a_resumed_ppo_run_equals_an_uninterrupted_one() {
    let tmp = setup();
    let t = tmp.path();
    let body = "[generation]\ngroup_size = 2\nmax_new_tokens = 5\n\
                [algorithm]\ntype = \"ppo\"\nbeta = 0.1\nepochs = 2\ngamma = 0.99\n\
                [[reward]]\ntype = \"exact_match\"\n[[reward]]\ntype = \"length\"\nweight = -0.5\n\
                [optim]\nlr = 5e-3\n\
                [train]\nsteps = 4\nseed = 11\ndevice = \"cpu\"\nmicro_batch = 3\n\
                [checkpoint]\nevery = 2\nkeep = 2\n";
    let a = assert_resume_is_exact(
        t,
        body,
        4,
        &[
            "model.safetensors",
            "value_head.safetensors",
            "optimizer.safetensors",
        ],
    );
    assert!(
        a.iter().skip(1).all(|l| l["kl"].as_f64().unwrap() != 0.0),
        "{a:?}"
    );
    // A GRPO checkpoint does not resume as PPO.
    let grpo = body
        .replace("type = \"ppo\"", "type = \"grpo\"")
        .replace("gamma = 0.99\n", "");
    let g = quern_train::rl::config::RlConfig::load(&write_toml(t, "mixed", &grpo)).unwrap();
    quern_train::rl::run_with(&g, &rl_opts(false, Some(2))).unwrap();
    let ppo = quern_train::rl::config::RlConfig::load(&write_toml(t, "mixed", body)).unwrap();
    let err = quern_train::rl::run_with(&ppo, &rl_opts(true, None))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("algorithm.type") && err.contains("grpo"),
        "{err}"
    );
}

/// PPO's arithmetic against plain PyTorch, on two micro-batches whitened together.
#[test]
fn ppo_losses_and_gradients_equal_plain_pytorch() {
    use quern_train::rl::algo::{gae, ppo_loss, ppo_rewards, whiten};
    let tmp = tempfile::tempdir().unwrap();
    let (b, l) = (3usize, 6usize);
    let mut draw = uniform(29);
    let n = b * l;
    let logp = draw(n, -3.0, -0.1);
    let old: Vec<f64> = logp
        .iter()
        .zip(draw(n, -0.4, 0.4))
        .map(|(x, d)| x + d)
        .collect();
    let reference: Vec<f64> = old
        .iter()
        .zip(draw(n, -0.5, 0.5))
        .map(|(x, d)| x + d)
        .collect();
    let old_values = draw(n, -1.0, 1.0);
    // Current values within ±0.5 of the stored ones: some beyond the value clip of 0.2.
    let values: Vec<f64> = old_values
        .iter()
        .zip(draw(n, -0.5, 0.5))
        .map(|(x, d)| x + d)
        .collect();
    // Row 0: completion from position 0, cut short; row 1: a prompt position first, to the
    // end; row 2: two prompt positions, three tokens.
    let mask = vec![
        1.0, 1.0, 1.0, 1.0, 0.0, 0.0, //
        0.0, 1.0, 1.0, 1.0, 1.0, 1.0, //
        0.0, 0.0, 1.0, 1.0, 1.0, 0.0,
    ];
    let scores = [1.0, -0.5, 2.0];
    let (beta, gamma, lam, lo, hi, cv, vf) = (0.1, 0.97, 0.9, 0.2, 0.28, 0.2, 0.3);
    let task = serde_json::json!({
        "logp": logp, "old": old, "ref": reference, "values": values,
        "old_values": old_values, "mask": mask, "scores": scores, "shape": [b, l],
        "beta": beta, "gamma": gamma, "lam": lam, "eps_low": lo, "eps_high": hi,
        "clip_value": cv, "vf_coef": vf,
    });
    let out = run_peer(tmp.path(), "ppo_loss.py", &task, "peer.safetensors");
    let peer: std::collections::HashMap<String, Tensor> = Tensor::read_safetensors(&out)
        .unwrap()
        .into_iter()
        .collect();
    // As the loop does it: micro-batches of rows [0, 1] and [2].
    let parts = [0..2 * l, 2 * l..n];
    let kl: Vec<f64> = old.iter().zip(&reference).map(|(o, r)| o - r).collect();
    let mut advs = Vec::new();
    let mut rets = Vec::new();
    let mut masks = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        let rows = p.len() / l;
        let sc = if i == 0 { &scores[..2] } else { &scores[2..] };
        let r = ppo_rewards(Some(&kl[p.clone()]), &mask[p.clone()], l, sc, beta);
        assert_eq!(r.len(), rows * l);
        let (a, ret) = gae(&r, &old_values[p.clone()], &mask[p.clone()], l, gamma, lam);
        advs.push(a);
        rets.push(ret);
        masks.push(mask[p.clone()].to_vec());
    }
    whiten(&mut advs, &masks);
    let flat = |v: &[Vec<f64>]| v.concat();
    let diff = |a: &[f64], name: &str| {
        let want = Vec::<f64>::try_from(peer[name].reshape([-1])).unwrap();
        let d = a
            .iter()
            .zip(&want)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f64::max);
        assert!(d < 1e-9, "{name} differs by {d}: {a:?} vs {want:?}");
    };
    diff(&flat(&advs), "advantages");
    diff(&flat(&rets), "returns");
    let t = |v: &[f64], rows: usize| Tensor::from_slice(v).view([rows as i64, l as i64]);
    let tokens: f64 = mask.iter().sum();
    let lp = t(&logp, b).set_requires_grad(true);
    let v = t(&values, b).set_requires_grad(true);
    let (mut loss, mut vf_sum, mut vf_clipped) = (0.0, 0.0, 0.0);
    for (i, p) in parts.iter().enumerate() {
        let (r0, rows) = ((p.start / l) as i64, (p.len() / l) as i64);
        let sl = |x: &[f64]| t(&x[p.clone()], rows as usize);
        let part = ppo_loss(
            &lp.narrow(0, r0, rows),
            &sl(&old),
            &t(&advs[i], rows as usize),
            &v.narrow(0, r0, rows),
            &sl(&old_values),
            &t(&rets[i], rows as usize),
            &sl(&mask),
            lo,
            hi,
            cv,
            vf,
        );
        vf_sum += part.vf_sum;
        vf_clipped += part.vf_clipped;
        let scaled = part.loss_sum / tokens;
        loss += scaled.double_value(&[]);
        scaled.backward();
    }
    diff(&[loss], "loss");
    diff(&[vf_sum / tokens], "vf_loss");
    assert_eq!(vf_clipped, peer["vf_clipped"].double_value(&[]));
    assert!(vf_clipped > 0.0, "the numbers should clip some values");
    diff(
        &Vec::<f64>::try_from(lp.grad().reshape([-1])).unwrap(),
        "logp_grad",
    );
    diff(
        &Vec::<f64>::try_from(v.grad().reshape([-1])).unwrap(),
        "values_grad",
    );
}

/// GRPO with `[lora]`: the adapters alone train (B = 0 at the start, so the first step's
/// KL to the reference is 0); the default reference (the policy without its adapters) gives
/// the same run as a second copy of the base; a resumed run equals an uninterrupted one; the checkpoint holds
/// only adapters with a `lora` record and no model.json, and model readers merge it into the
/// base: weights outside the targets are the base's, targeted ones moved; the reward rises.
#[test]
fn lora_trains_adapters_only_and_checkpoints_them() {
    let tmp = setup();
    let t = tmp.path();
    let body = GRPO
        .replace("steps = 30", "steps = 6")
        .replace("every = 0", "every = 2")
        .replace("lr = 1e-2", "lr = 3e-2")
        + "[lora]\nrank = 4\nalpha = 8\ntargets = [\"q\", \"v\", \"out\"]\n";
    let body = body.replace("type = \"grpo\"", "type = \"grpo\"\nbeta = 0.1");
    let lines =
        assert_resume_is_exact(t, &body, 6, &["model.safetensors", "optimizer.safetensors"]);
    assert_eq!(lines[0]["kl"].as_f64(), Some(0.0), "{}", lines[0]);
    assert!(lines.iter().any(|l| l["kl"].as_f64().unwrap() > 0.0));
    // The reference is the policy with its adapters set aside: the same run against a
    // second copy of the base (init.reference) logs the same numbers.
    let explicit_toml = t.join("explicit.toml");
    std::fs::write(
        &explicit_toml,
        format!(
            "out_dir = \"explicit\"\n[init]\nfrom = \"model\"\nreference = \"model\"\n\
             [prompts]\nfile = \"prompts.jsonl\"\nper_step = 4\n{body}"
        ),
    )
    .unwrap();
    run_ok(quern().args(["rl", "--quiet"]).arg(&explicit_toml));
    assert_eq!(
        without_timings(read_jsonl(&t.join("explicit/metrics.jsonl"))),
        lines
    );
    let ck = t.join("whole/checkpoints/step-00000006");
    assert!(!ck.join("model.json").exists());
    let adapters = quern_models::store::read_safetensors(&ck.join("model.safetensors")).unwrap();
    assert_eq!(
        adapters.len(),
        2 * 3 * 2,
        "A and B of q, v and out in 2 layers"
    );
    assert!(
        adapters.keys().all(|k| k.contains("lora")),
        "{:?}",
        adapters.keys()
    );
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(ck.join("state.json")).unwrap()).unwrap();
    assert_eq!(
        state["lora"]["base"].as_str().unwrap(),
        std::fs::canonicalize(t.join("model"))
            .unwrap()
            .to_str()
            .unwrap()
    );
    let base = quern_models::store::load_weights(&t.join("model")).unwrap();
    let merged = quern_models::store::load_weights(&t.join("whole")).unwrap();
    let mut moved = 0;
    for (name, w) in &base.tensors {
        let m = &merged.tensors[name];
        let targeted = name.ends_with("attn.qkv.weight") || name.ends_with("mlp.out.weight");
        if targeted {
            moved += usize::from(!m.equal(w));
        } else {
            assert!(m.equal(w), "{name} changed outside the adapters' targets");
        }
    }
    assert_eq!(moved, 4, "qkv and out of both layers moved");
    // The whole task, with adapters only.
    // Adapters on the block matrices alone (the output projection frozen) learn to say 7
    // more slowly than full weights on this 32-wide model: over the same 30 steps the reward
    // rises from about 0.2 to 0.45 (full weights: past 0.5).
    let long = GRPO.to_string() + "[lora]\nrank = 8\nalpha = 16\ntargets = [\"all-linear\"]\n";
    assert_reward_rises_by(t, "lora", &long, &["reward_std", "grad_norm"], (0.15, 0.35));
}
