//! Rewards: each `[[reward]]` term scores every sample of a step; the reward is their
//! weighted sum.
//!
//! - `exact_match`: 1 when the completion's final number equals the answer's (`#### N`),
//!   extracted and normalised exactly as `quern eval gen` does
//!   (`quern_eval::generation`: `strict` = the first `#### N`, `flexible` = the last number).
//! - `regex`: 1 when the pattern matches somewhere in the completion.
//! - `format`: 1 when the completion has a `#### N` final answer.
//! - `length`: completion tokens / `generation.max_new_tokens`.
//! - `truncated`: 1 when the completion hit `generation.max_new_tokens` or the context
//!   without stopping (no end-of-sequence id, no stop string); a negative weight is TRL's
//!   `missing_eos_penalty`.
//! - `command`: an external program. It gets one JSON object per sample on stdin (`id`,
//!   `prompt` (the question), `completion`, `answer` (the final answer after `####`),
//!   `reference` (the whole answer)) and must print one JSON number per line, in order, and
//!   exit 0. A program that cannot start, exits otherwise, prints another number of lines or
//!   something that is not a finite number fails the step ([`Failure`]).
//! - `rm`: a reward model trained by `quern train` (`objective = "rm"`) scores prompt +
//!   completion ids (the policy's tokenizer must be the reward model's).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use quern_core::{Error, Result};
use quern_eval::generation::{extract_flexible, extract_strict, is_match, Problem};
use quern_models::transformer::Transformer;
use tch::{Device, Kind, Tensor};

use super::config::{Extract, RewardKind, RewardTerm};

/// One sample to score.
#[derive(Debug, Clone)]
pub struct Sample<'a> {
    /// `<prompt id>#<sample>`: the prompt's `id`, or `line N` of the prompts file.
    pub id: String,
    pub problem: &'a Problem,
    pub completion: &'a str,
    /// Prompt + completion ids (as trained on) and the completion's length.
    pub ids: &'a [i64],
    pub completion_tokens: usize,
    /// Whether generation cut it off (length or context) rather than it stopping.
    pub truncated: bool,
}

/// A reward that could not be computed for a step's samples.
#[derive(Debug, Clone)]
pub struct Failure {
    pub term: String,
    pub reason: String,
}

/// A loaded reward term.
pub enum Scorer {
    ExactMatch(Extract),
    Regex(regex::Regex),
    Format,
    Length(usize),
    Truncated,
    Command { argv: Vec<String>, dir: PathBuf },
    Rm(Box<Transformer>),
}

impl std::fmt::Debug for Scorer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scorer::ExactMatch(e) => write!(f, "ExactMatch({e:?})"),
            Scorer::Regex(r) => write!(f, "Regex({})", r.as_str()),
            Scorer::Format => write!(f, "Format"),
            Scorer::Length(n) => write!(f, "Length({n})"),
            Scorer::Truncated => write!(f, "Truncated"),
            Scorer::Command { argv, .. } => write!(f, "Command({argv:?})"),
            Scorer::Rm(_) => write!(f, "Rm"),
        }
    }
}

/// The policy's tokenizer vocabulary, to check a reward model against.
pub type Vocab = std::collections::HashMap<String, u32>;

impl Scorer {
    /// Loads term `i`: compiles its regex, loads its reward model (checked to share the
    /// policy's vocabulary and to hold `longest` ids). `dir` is where commands run.
    pub fn load(
        i: usize,
        t: &RewardTerm,
        max_new_tokens: usize,
        dir: PathBuf,
        policy_vocab: &Vocab,
        longest: usize,
        device: Device,
    ) -> Result<Scorer> {
        let key = |k: &str| format!("reward[{i}].{k}");
        Ok(match t.kind {
            RewardKind::ExactMatch => Scorer::ExactMatch(t.extract.unwrap_or_default()),
            RewardKind::Regex => Scorer::Regex(
                regex::Regex::new(t.pattern.as_deref().unwrap_or_default())
                    .map_err(|e| Error::bad_config(key("pattern"), format!("not a regex: {e}")))?,
            ),
            RewardKind::Format => Scorer::Format,
            RewardKind::Length => Scorer::Length(max_new_tokens),
            RewardKind::Truncated => Scorer::Truncated,
            RewardKind::Command => Scorer::Command {
                argv: t.command.clone().unwrap_or_default(),
                dir,
            },
            RewardKind::Rm => {
                let path = t
                    .model
                    .as_ref()
                    .ok_or_else(|| Error::bad_config(key("model"), "a `rm` term needs it"))?;
                let bad =
                    |m: String| Error::bad_config(key("model"), format!("{}: {m}", path.display()));
                let l = quern_models::store::load(path, device).map_err(|e| bad(e.to_string()))?;
                let head = l.model.head().ok_or_else(|| {
                    bad("has no reward head: train one with `quern train` and train.objective = \"rm\"".into())
                })?;
                if head.num_labels != 1 {
                    return Err(bad(format!(
                        "its head has {} outputs ({}); a reward model has one",
                        head.num_labels,
                        head.labels.join(", ")
                    )));
                }
                let tok = l.tokenizer.as_ref().ok_or_else(|| {
                    bad(
                        "has no tokenizer.json: the policy's ids cannot be checked against it"
                            .into(),
                    )
                })?;
                if &tok.get_vocab(true) != policy_vocab {
                    return Err(bad(format!(
                        "has another vocabulary ({} tokens) than the policy ({} tokens): a reward model must read the policy's token ids, train it on data tokenized with the policy's tokenizer",
                        tok.get_vocab_size(true),
                        policy_vocab.len()
                    )));
                }
                if (l.model.seq_len() as usize) < longest {
                    return Err(bad(format!(
                        "has a context of {} positions, but prompt + completion can take {longest}",
                        l.model.seq_len()
                    )));
                }
                Scorer::Rm(Box::new(l.model))
            }
        })
    }

    /// This term's value for every sample, or why it could not be computed.
    pub fn score(&self, samples: &[Sample<'_>]) -> std::result::Result<Vec<f64>, String> {
        Ok(match self {
            Scorer::ExactMatch(e) => samples
                .iter()
                .map(|s| {
                    let got = match e {
                        Extract::Strict => extract_strict(s.completion),
                        Extract::Flexible => extract_flexible(s.completion),
                    };
                    f64::from(u8::from(is_match(got, &s.problem.target)))
                })
                .collect(),
            Scorer::Regex(r) => samples
                .iter()
                .map(|s| f64::from(u8::from(r.is_match(s.completion))))
                .collect(),
            Scorer::Format => samples
                .iter()
                .map(|s| f64::from(u8::from(extract_strict(s.completion).is_some())))
                .collect(),
            Scorer::Length(n) => samples
                .iter()
                .map(|s| s.completion_tokens as f64 / *n as f64)
                .collect(),
            Scorer::Truncated => samples
                .iter()
                .map(|s| f64::from(u8::from(s.truncated)))
                .collect(),
            Scorer::Command { argv, dir } => run_command(argv, dir, samples)?,
            Scorer::Rm(m) => rm_scores(m, samples).map_err(|e| e.to_string())?,
        })
    }
}

/// Runs a reward program on the samples (see the module docs).
fn run_command(
    argv: &[String],
    dir: &Path,
    samples: &[Sample<'_>],
) -> std::result::Result<Vec<f64>, String> {
    let mut input = Vec::new();
    for s in samples {
        let row = serde_json::json!({
            "id": s.id,
            "prompt": s.problem.question,
            "completion": s.completion,
            "answer": s.problem.target,
            "reference": s.problem.answer,
        });
        input.extend(row.to_string().into_bytes());
        input.push(b'\n');
    }
    let mut child = Command::new(&argv[0])
        .args(&argv[1..])
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("could not start {:?}: {e}", argv[0]))?;
    let mut stdin = child.stdin.take().ok_or("no stdin")?;
    // Written from another thread, so a program that prints before reading all its input
    // cannot block on a full pipe while we block on its stdin.
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let mut out = String::new();
    let mut err = String::new();
    if let Some(mut o) = child.stdout.take() {
        o.read_to_string(&mut out)
            .map_err(|e| format!("reading its output: {e}"))?;
    }
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    let _ = writer.join();
    let status = child.wait().map_err(|e| format!("waiting for it: {e}"))?;
    let tail = |s: &str| {
        let s = s.trim();
        let cut = s.len().saturating_sub(300);
        let mut i = cut;
        while !s.is_char_boundary(i) {
            i += 1;
        }
        s[i..].to_string()
    };
    if !status.success() {
        return Err(format!(
            "{:?} exited with {status}; stderr: {}",
            argv[0],
            tail(&err)
        ));
    }
    let lines: Vec<&str> = out.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.len() != samples.len() {
        return Err(format!(
            "{:?} printed {} lines for {} samples (one JSON number per line expected)",
            argv[0],
            lines.len(),
            samples.len()
        ));
    }
    lines
        .iter()
        .enumerate()
        .map(
            |(i, l)| match serde_json::from_str::<serde_json::Value>(l.trim()) {
                Ok(serde_json::Value::Number(n)) => {
                    n.as_f64().filter(|x| x.is_finite()).ok_or_else(|| {
                        format!("line {} of its output is not a finite number: {l}", i + 1)
                    })
                }
                _ => Err(format!(
                    "line {} of its output is not a JSON number: {:?}",
                    i + 1,
                    tail(l)
                )),
            },
        )
        .collect()
}

/// A reward model's score of every sample's ids, right-padded in batches of 8.
fn rm_scores(m: &Transformer, samples: &[Sample<'_>]) -> Result<Vec<f64>> {
    let _g = tch::no_grad_guard();
    let dev = m.device();
    let mut out = Vec::with_capacity(samples.len());
    for chunk in samples.chunks(8) {
        let w = chunk.iter().map(|s| s.ids.len()).max().unwrap_or(1);
        let mut ids = Vec::with_capacity(chunk.len() * w);
        let mut mask = Vec::with_capacity(chunk.len() * w);
        for s in chunk {
            ids.extend_from_slice(s.ids);
            ids.extend(std::iter::repeat_n(0i64, w - s.ids.len()));
            mask.extend(std::iter::repeat_n(1i64, s.ids.len()));
            mask.extend(std::iter::repeat_n(0i64, w - s.ids.len()));
        }
        let b = chunk.len() as i64;
        let ids = Tensor::from_slice(&ids).view([b, w as i64]).to_device(dev);
        let mask = Tensor::from_slice(&mask).view([b, w as i64]).to_device(dev);
        let r = m.classify(&ids, &mask, false)?.select(1, 0);
        out.extend(
            Vec::<f64>::try_from(r.to_kind(Kind::Double).to_device(Device::Cpu))
                .map_err(|e| Error::bug(format!("reading rewards: {e}")))?,
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(target: &str) -> Problem {
        Problem {
            line: 1,
            id: None,
            question: "q".into(),
            answer: format!("... #### {target}"),
            target: target.into(),
        }
    }

    #[test]
    fn checkers_score_the_completion() {
        let p = problem("1,234");
        let ids = [1i64, 2, 3];
        let texts = ["so it is 1234.", "#### 1234 then 7", "no number", "#### 12"];
        let samples: Vec<Sample> = texts
            .iter()
            .enumerate()
            .map(|(i, t)| Sample {
                id: format!("line 1#{i}"),
                problem: &p,
                completion: t,
                ids: &ids,
                completion_tokens: i + 1,
                truncated: i == 3,
            })
            .collect();
        let flex = Scorer::ExactMatch(Extract::Flexible)
            .score(&samples)
            .unwrap();
        assert_eq!(flex, vec![1.0, 0.0, 0.0, 0.0]);
        let strict = Scorer::ExactMatch(Extract::Strict).score(&samples).unwrap();
        assert_eq!(strict, vec![0.0, 1.0, 0.0, 0.0]);
        assert_eq!(
            Scorer::Format.score(&samples).unwrap(),
            vec![0.0, 1.0, 0.0, 1.0]
        );
        let re = Scorer::Regex(regex::Regex::new("^no").unwrap());
        assert_eq!(re.score(&samples).unwrap(), vec![0.0, 0.0, 1.0, 0.0]);
        assert_eq!(
            Scorer::Length(4).score(&samples).unwrap(),
            vec![0.25, 0.5, 0.75, 1.0]
        );
        assert_eq!(
            Scorer::Truncated.score(&samples).unwrap(),
            vec![0.0, 0.0, 0.0, 1.0]
        );
    }

    #[test]
    fn a_command_scores_or_fails_with_the_reason() {
        let p = problem("5");
        let ids = [1i64];
        let samples: Vec<Sample> = ["a", "bb"]
            .iter()
            .enumerate()
            .map(|(i, t)| Sample {
                id: format!("x#{i}"),
                problem: &p,
                completion: t,
                ids: &ids,
                completion_tokens: 1,
                truncated: false,
            })
            .collect();
        let dir = std::env::temp_dir();
        let sh = |script: &str| Scorer::Command {
            argv: vec!["sh".into(), "-c".into(), script.into()],
            dir: dir.clone(),
        };
        // The length of each line's completion field, read back from the JSON sent.
        let ok = sh("while read l; do echo \"$l\" | grep -q '\"completion\":\"bb\"' && echo 2 || echo 1.5; done");
        assert_eq!(ok.score(&samples).unwrap(), vec![1.5, 2.0]);
        let crash = sh("cat >/dev/null; echo boom >&2; exit 3")
            .score(&samples)
            .unwrap_err();
        assert!(
            crash.contains("exit status: 3") && crash.contains("boom"),
            "{crash}"
        );
        let garbage = sh("cat >/dev/null; echo 1; echo nope")
            .score(&samples)
            .unwrap_err();
        assert!(
            garbage.contains("line 2") && garbage.contains("nope"),
            "{garbage}"
        );
        let short = sh("cat >/dev/null; echo 1").score(&samples).unwrap_err();
        assert!(short.contains("1 lines for 2 samples"), "{short}");
        let missing = Scorer::Command {
            argv: vec!["/nonexistent/quern-reward".into()],
            dir,
        }
        .score(&samples)
        .unwrap_err();
        assert!(missing.contains("could not start"), "{missing}");
    }
}
