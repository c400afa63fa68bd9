//! Exact-match generation tasks (GSM8K-style): generate an answer greedily, extract the final
//! number, compare it with the reference's.
//!
//! **Task file.** JSONL, one problem per line: `question` and `answer` (worked steps, then
//! `#### <final answer>`, as GSM8K writes it); an optional `id`. A line without either key,
//! or whose answer has no `####`, is an error naming the file and line.
//!
//! **Prompt** (lm-evaluation-harness's `gsm8k` task): `Question: {question}\nAnswer:`. With
//! `shots = k`, k solved examples come first, each `Question: {q}\nAnswer: {answer}` (the
//! whole worked answer), separated by blank lines: the first k lines of a separate shots
//! file, or else the first k other problems of the task file (never the question itself).
//! With `chat`, the examples become user/assistant turns (the harness's
//! `--apply_chat_template --fewshot_as_multiturn`) rendered by the model's chat template, and
//! the answer is the assistant's turn.
//!
//! **Generation**: greedy, with [`quern_models::generate::Generator`] (KV cache, batched;
//! a row's output does not depend on the batch), at most `max_new_tokens` tokens, stopping at
//! the model's end-of-sequence ids or a stop string (the harness's `Question:`, `</s>`,
//! `<|im_end|>`, and any added).
//!
//! **Extraction**, both reported, as the harness's two gsm8k filters:
//! - `strict-match`: the first `#### (-?[0-9.,]+)` in the output: the model must write the
//!   answer in the examples' format.
//! - `flexible-extract`: the last match of `(-?[$0-9.,]{2,})|(-?[0-9]+)`: the last number
//!   in the output, whatever the format. Like the harness's regex, a run such as `..` counts
//!   as a match.
//!
//! **Normalisation** before the exact match, on both sides (the harness's
//! `regexes_to_ignore` and `ignore_case`): everything up to the last `#### ` is dropped (the
//! reference's worked steps), commas and `$` are removed, one trailing `.` is removed, the
//! text is lowercased. quern adds one rule the harness does not have: a zero fraction is
//! dropped (`18.0` and `18.00` are `18`), so a model that writes `18.00` for `#### 18` is
//! right. No match is `[invalid]`, which never equals a reference.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use quern_core::error::{IoContext, Place};
use quern_core::{Error, Result};
use quern_models::chat::{Message, DEFAULT_TEMPLATE};
use quern_models::generate::{Finish, GenerateConfig, Generator};
use quern_models::store::Special;
use quern_models::transformer::Transformer;
use serde::{Deserialize, Serialize};
use tokenizers::Tokenizer;

/// What a failed extraction gives (the harness's fallback).
pub const INVALID: &str = "[invalid]";

/// The harness's gsm8k stop strings.
pub const DEFAULT_STOPS: [&str; 3] = ["Question:", "</s>", "<|im_end|>"];

/// One problem.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Problem {
    /// 1-based line in the file.
    pub line: u64,
    pub id: Option<String>,
    pub question: String,
    /// The worked answer as given.
    pub answer: String,
    /// What follows the last `####`, trimmed.
    pub target: String,
}

/// A task file, read.
#[derive(Debug, Clone)]
pub struct GenTask {
    pub path: PathBuf,
    pub xxh3: String,
    pub problems: Vec<Problem>,
}

#[derive(Debug, Deserialize)]
struct Line {
    question: Option<String>,
    answer: Option<String>,
    #[serde(default)]
    id: Option<serde_json::Value>,
}

impl GenTask {
    /// Reads a task file; errors name the file and line.
    pub fn load(path: &Path) -> Result<GenTask> {
        let bytes = fs::read(path).at(path)?;
        let text = std::str::from_utf8(&bytes)
            .map_err(|e| Error::bad_input(Place::file(path), format!("not UTF-8: {e}")))?;
        let text = quern_core::text::strip_bom(text);
        let mut problems = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line_no = i as u64 + 1;
            let at = || Place::file(path).with_line(line_no);
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty() {
                continue;
            }
            let l: Line = serde_json::from_str(line).map_err(|e| {
                Error::bad_input(
                    at(),
                    format!("not a JSON object with `question` and `answer`: {e}"),
                )
            })?;
            let question = l
                .question
                .ok_or_else(|| Error::bad_input(at(), "no `question` (a string)"))?;
            let answer = l.answer.ok_or_else(|| {
                Error::bad_input(
                    at(),
                    "no `answer` (a string: worked steps, then `#### <final answer>`)",
                )
            })?;
            let target = answer
                .rsplit_once("####")
                .map(|(_, t)| t.trim().to_string())
                .ok_or_else(|| {
                    Error::bad_input(
                        at(),
                        "the `answer` has no `####`: GSM8K-style answers end with `#### <final answer>`",
                    )
                })?;
            if target.is_empty() {
                return Err(Error::bad_input(
                    at(),
                    "nothing follows `####` in the `answer`",
                ));
            }
            let id = l.id.map(|v| match v {
                serde_json::Value::String(s) => s,
                v => v.to_string(),
            });
            problems.push(Problem {
                line: line_no,
                id,
                question,
                answer,
                target,
            });
        }
        if problems.is_empty() {
            return Err(Error::bad_input(
                Place::file(path),
                "no problems in the file",
            ));
        }
        Ok(GenTask {
            path: path.to_path_buf(),
            xxh3: format!("{:016x}", xxhash_rust::xxh3::xxh3_64(&bytes)),
            problems,
        })
    }
}

/// `strict-match`: the first `#### (-?[0-9.,]+)`.
pub fn extract_strict(text: &str) -> Option<&str> {
    for (at, _) in text.match_indices("#### ") {
        let rest = &text[at + 5..];
        let b = rest.as_bytes();
        let sign = usize::from(b.first() == Some(&b'-'));
        let run = b[sign..]
            .iter()
            .take_while(|c| c.is_ascii_digit() || **c == b'.' || **c == b',')
            .count();
        if run > 0 {
            return Some(&rest[..sign + run]);
        }
    }
    None
}

/// Every match of `(-?[$0-9.,]{2,})|(-?[0-9]+)`, left to right, as a regex engine finds them.
fn flexible_matches(text: &str) -> Vec<&str> {
    let b = text.as_bytes();
    let in_set = |c: u8| c.is_ascii_digit() || c == b'$' || c == b'.' || c == b',';
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let sign = usize::from(b[i] == b'-');
        let run = b[i + sign..].iter().take_while(|&&c| in_set(c)).count();
        if run >= 2 {
            out.push(&text[i..i + sign + run]);
            i += sign + run;
            continue;
        }
        let digits = b[i + sign..]
            .iter()
            .take_while(|c| c.is_ascii_digit())
            .count();
        if digits > 0 {
            out.push(&text[i..i + sign + digits]);
            i += sign + digits;
            continue;
        }
        // Next character (the sets are ASCII, so a match starts on a char boundary).
        i += 1;
        while i < b.len() && !text.is_char_boundary(i) {
            i += 1;
        }
    }
    out
}

/// `flexible-extract`: the last match of `(-?[$0-9.,]{2,})|(-?[0-9]+)`.
pub fn extract_flexible(text: &str) -> Option<&str> {
    flexible_matches(text).pop()
}

/// The harness's gsm8k normalisation plus quern's zero-fraction rule (see the module docs).
pub fn normalize(s: &str) -> String {
    let s = match s.rfind("#### ") {
        Some(i) => &s[i + 5..],
        None => s,
    };
    let mut s: String = s.chars().filter(|&c| c != ',' && c != '$').collect();
    if s.ends_with('.') {
        s.pop();
    }
    let mut s = s.to_lowercase();
    if let Some(dot) = s.rfind('.') {
        let (int, frac) = s.split_at(dot);
        let frac = &frac[1..];
        let digits = int.strip_prefix('-').unwrap_or(int);
        if !frac.is_empty()
            && frac.bytes().all(|c| c == b'0')
            && !digits.is_empty()
            && digits.bytes().all(|c| c.is_ascii_digit())
        {
            s.truncate(dot);
        }
    }
    s
}

/// Whether an extraction equals the reference (both normalised).
pub fn is_match(extracted: Option<&str>, target: &str) -> bool {
    extracted.is_some_and(|e| normalize(e) == normalize(target))
}

/// The plain prompt of `q` after the `shots` examples.
pub fn prompt_text(shots: &[&Problem], q: &Problem) -> String {
    let mut s = String::new();
    for ex in shots {
        s.push_str(&format!(
            "Question: {}\nAnswer: {}\n\n",
            ex.question, ex.answer
        ));
    }
    s.push_str(&format!("Question: {}\nAnswer:", q.question));
    s
}

/// The chat messages of `q` after the `shots` examples (one user/assistant pair each).
pub fn prompt_messages(shots: &[&Problem], q: &Problem) -> Vec<Message> {
    let mut m = Vec::new();
    for ex in shots {
        m.push(Message::new(
            "user",
            &format!("Question: {}\nAnswer:", ex.question),
        ));
        m.push(Message::new("assistant", &ex.answer));
    }
    m.push(Message::new(
        "user",
        &format!("Question: {}\nAnswer:", q.question),
    ));
    m
}

/// How to run a task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenOptions {
    /// Solved examples before each question.
    pub shots: usize,
    /// Through the model's chat template (few-shot as turns).
    pub chat: bool,
    /// New tokens at most per answer.
    pub max_new_tokens: usize,
    /// Prompts per generation batch (results do not depend on it).
    pub batch_size: usize,
    /// Only the first N problems.
    pub limit: Option<usize>,
    /// Stop strings beside [`DEFAULT_STOPS`].
    pub stop: Vec<String>,
}

impl Default for GenOptions {
    fn default() -> Self {
        GenOptions {
            shots: 0,
            chat: false,
            max_new_tokens: 256,
            batch_size: 8,
            limit: None,
            stop: Vec::new(),
        }
    }
}

/// Accuracy of one filter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExactMatch {
    pub correct: u64,
    pub exact_match: f64,
    /// Sample standard deviation / sqrt(n), as the harness.
    pub stderr: f64,
}

/// One problem's result (for `--details`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenDetail {
    pub line: u64,
    pub id: Option<String>,
    pub question: String,
    pub target: String,
    /// The prompt as text (the rendered template with `chat`).
    pub prompt: String,
    pub prompt_tokens: usize,
    pub completion: String,
    pub completion_tokens: usize,
    pub finish: Finish,
    pub strict: Option<String>,
    pub strict_correct: bool,
    pub flexible: Option<String>,
    pub flexible_correct: bool,
}

/// The result of a task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenReport {
    pub task: String,
    pub task_xxh3: String,
    pub shots_from: Option<String>,
    pub shots_xxh3: Option<String>,
    pub shots: usize,
    pub chat: bool,
    pub max_new_tokens: usize,
    pub stop: Vec<String>,
    pub questions: u64,
    pub strict_match: ExactMatch,
    pub flexible_extract: ExactMatch,
    /// How many answers ended each way (`stop`, `stop_string`, `length`, `context`).
    pub finish: BTreeMap<String, u64>,
    pub prompt_tokens: u64,
    pub generated_tokens: u64,
    pub seconds: f64,
    #[serde(skip)]
    pub details: Vec<GenDetail>,
}

fn exact_match(flags: &[bool]) -> ExactMatch {
    let n = flags.len() as f64;
    let correct = flags.iter().filter(|&&f| f).count() as u64;
    let mean = if n > 0.0 { correct as f64 / n } else { 0.0 };
    let var = if n > 1.0 {
        flags
            .iter()
            .map(|&f| (f64::from(u8::from(f)) - mean).powi(2))
            .sum::<f64>()
            / (n - 1.0)
    } else {
        0.0
    };
    ExactMatch {
        correct,
        exact_match: mean,
        stderr: (var / n.max(1.0)).sqrt(),
    }
}

/// Scores a list of (completion, target) pairs: what a report's figures are made of.
pub fn score_outputs(outputs: &[(&str, &str)]) -> (ExactMatch, ExactMatch) {
    let strict: Vec<bool> = outputs
        .iter()
        .map(|(c, t)| is_match(extract_strict(c), t))
        .collect();
    let flexible: Vec<bool> = outputs
        .iter()
        .map(|(c, t)| is_match(extract_flexible(c), t))
        .collect();
    (exact_match(&strict), exact_match(&flexible))
}

/// Runs a task: builds every prompt, generates greedily in batches, extracts and scores.
/// `shots_from` is a separate file of examples (its first `shots` problems); without it the
/// examples are the first `shots` other problems of the task. `progress(done, total)`.
pub fn run(
    model: &Transformer,
    tok: &Tokenizer,
    special: &Special,
    chat_template: Option<&str>,
    task: &GenTask,
    shots_from: Option<&GenTask>,
    opts: &GenOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<GenReport> {
    if opts.batch_size == 0 {
        return Err(Error::bad_config("batch_size", "must be at least 1"));
    }
    if opts.max_new_tokens == 0 {
        return Err(Error::bad_config("max_new_tokens", "must be at least 1"));
    }
    let t0 = Instant::now();
    let n = opts
        .limit
        .unwrap_or(task.problems.len())
        .min(task.problems.len());
    let pool: &[Problem] = match shots_from {
        Some(s) => &s.problems,
        None => &task.problems,
    };
    let available = if shots_from.is_some() {
        pool.len()
    } else {
        pool.len().saturating_sub(1)
    };
    if opts.shots > available {
        return Err(Error::usage(format!(
            "{} shots asked, but {} has {available} problems to take them from",
            opts.shots,
            shots_from.map_or(&task.path, |s| &s.path).display()
        )));
    }
    let gen = Generator::new(model, Some(tok), special);
    let template = chat_template.unwrap_or(DEFAULT_TEMPLATE);
    let mut prompts = Vec::with_capacity(n);
    let mut ids = Vec::with_capacity(n);
    for (i, q) in task.problems[..n].iter().enumerate() {
        let shots: Vec<&Problem> = pool
            .iter()
            .enumerate()
            .filter(|(j, _)| shots_from.is_some() || *j != i)
            .map(|(_, p)| p)
            .take(opts.shots)
            .collect();
        if opts.chat {
            let msgs = prompt_messages(&shots, q);
            let name = |id: Option<u32>| id.and_then(|i| tok.id_to_token(i)).unwrap_or_default();
            let text = quern_models::chat::render(
                template,
                &msgs,
                true,
                &name(special.bos),
                &name(special.eos.first().copied()),
            )?;
            ids.push(gen.encode(&text, true)?);
            prompts.push(text);
        } else {
            let text = prompt_text(&shots, q);
            ids.push(gen.encode(&text, false)?);
            prompts.push(text);
        }
    }
    let mut stop: Vec<String> = DEFAULT_STOPS.iter().map(|s| s.to_string()).collect();
    for s in &opts.stop {
        if !stop.contains(s) {
            stop.push(s.clone());
        }
    }
    let cfg = GenerateConfig {
        max_new_tokens: opts.max_new_tokens,
        stop_strings: stop.clone(),
        ..GenerateConfig::default()
    };
    let mut outs = Vec::with_capacity(n);
    progress(0, n);
    for chunk in ids.chunks(opts.batch_size) {
        let (o, _) = gen.generate(chunk, &cfg)?;
        outs.extend(o);
        progress(outs.len(), n);
    }
    let mut details = Vec::with_capacity(n);
    let mut finish = BTreeMap::new();
    let (mut prompt_tokens, mut generated) = (0u64, 0u64);
    for ((q, prompt), out) in task.problems[..n].iter().zip(prompts).zip(outs) {
        let strict = extract_strict(&out.text).map(str::to_string);
        let flexible = extract_flexible(&out.text).map(str::to_string);
        let name = serde_json::to_value(out.finish)?
            .as_str()
            .unwrap_or("other")
            .to_string();
        *finish.entry(name).or_insert(0) += 1;
        prompt_tokens += out.prompt_tokens as u64;
        generated += out.tokens.len() as u64;
        details.push(GenDetail {
            line: q.line,
            id: q.id.clone(),
            question: q.question.clone(),
            target: q.target.clone(),
            prompt,
            prompt_tokens: out.prompt_tokens,
            completion_tokens: out.tokens.len(),
            finish: out.finish,
            strict_correct: is_match(strict.as_deref(), &q.target),
            flexible_correct: is_match(flexible.as_deref(), &q.target),
            strict,
            flexible,
            completion: out.text,
        });
    }
    let strict: Vec<bool> = details.iter().map(|d| d.strict_correct).collect();
    let flexible: Vec<bool> = details.iter().map(|d| d.flexible_correct).collect();
    Ok(GenReport {
        task: task.path.display().to_string(),
        task_xxh3: task.xxh3.clone(),
        shots_from: shots_from.map(|s| s.path.display().to_string()),
        shots_xxh3: shots_from.map(|s| s.xxh3.clone()),
        shots: opts.shots,
        chat: opts.chat,
        max_new_tokens: opts.max_new_tokens,
        stop,
        questions: n as u64,
        strict_match: exact_match(&strict),
        flexible_extract: exact_match(&flexible),
        finish,
        prompt_tokens,
        generated_tokens: generated,
        seconds: t0.elapsed().as_secs_f64(),
        details,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_match_takes_the_first_hash_answer() {
        let cases: [(&str, Option<&str>); 7] = [
            ("So 3 + 4 = 7.\n#### 7", Some("7")),
            ("#### -1,234.5 and more", Some("-1,234.5")),
            ("#### 5\n#### 6", Some("5")),
            ("The answer is 7.", None),
            ("####7", None),
            ("#### $7", None),
            ("##### 12", Some("12")),
        ];
        for (text, want) in cases {
            assert_eq!(extract_strict(text), want, "{text:?}");
        }
    }

    #[test]
    fn flexible_extract_takes_the_last_number_as_the_harness_regex() {
        let cases: [(&str, Option<&str>); 9] = [
            ("She has 3 apples and buys 12 more: 15", Some("15")),
            ("It costs $1,200.50.", Some("$1,200.50.")),
            ("The loss is -7 dollars", Some("-7")),
            ("no number here", None),
            ("x 5 - 3", Some("3")),
            ("a-b 1", Some("1")),
            ("wait... so", Some("...")),
            ("é 42 ü", Some("42")),
            ("12.\n", Some("12.")),
        ];
        for (text, want) in cases {
            assert_eq!(extract_flexible(text), want, "{text:?}");
        }
        assert_eq!(flexible_matches("1 22 -3 $4"), ["1", "22", "-3", "$4"]);
    }

    #[test]
    fn normalisation_and_matching() {
        let cases = [
            ("1,234", "1234"),
            ("$18", "18"),
            ("18.", "18"),
            ("18.0", "18"),
            ("18.00", "18"),
            ("-3.50", "-3.50"),
            ("0.5", "0.5"),
            ("Steps <<1+1=2>>\n#### 2", "2"),
            ("ABC", "abc"),
            (".0", ".0"),
        ];
        for (s, want) in cases {
            assert_eq!(normalize(s), want, "{s:?}");
        }
        assert!(is_match(Some("$1,200."), "1200"));
        assert!(is_match(Some("7.0"), "7"));
        assert!(!is_match(Some("7.5"), "7"));
        assert!(!is_match(None, "7"));
        let (s, f) = score_outputs(&[("#### 7", "7"), ("it is 8", "8"), ("9", "10")]);
        assert_eq!((s.correct, f.correct), (1, 2));
        assert!((f.exact_match - 2.0 / 3.0).abs() < 1e-12);
        // Sample standard deviation of [1, 1, 0] over sqrt(3).
        let sd = ((2.0 * (1.0f64 / 3.0).powi(2) + (2.0f64 / 3.0).powi(2)) / 2.0).sqrt();
        assert!((f.stderr - sd / 3f64.sqrt()).abs() < 1e-12);
    }

    #[test]
    fn task_files_are_read_and_bad_lines_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.jsonl");
        fs::write(
            &p,
            "{\"question\": \"1+1?\", \"answer\": \"1+1=2\\n#### 2\", \"id\": 5}\n\n\
             {\"question\": \"2+2?\", \"answer\": \"#### 4\"}\n",
        )
        .unwrap();
        let t = GenTask::load(&p).unwrap();
        assert_eq!(t.problems.len(), 2);
        assert_eq!(t.problems[0].target, "2");
        assert_eq!(t.problems[0].id.as_deref(), Some("5"));
        assert_eq!(t.problems[1].line, 3);
        let shot = &t.problems[0];
        assert_eq!(
            prompt_text(&[shot], &t.problems[1]),
            "Question: 1+1?\nAnswer: 1+1=2\n#### 2\n\nQuestion: 2+2?\nAnswer:"
        );
        for (text, why) in [
            (
                "{\"question\": \"q\", \"answer\": \"#### 1\"}\n{\"question\": \"q\"}\n",
                "no `answer`",
            ),
            ("{\"question\": \"q\", \"answer\": \"2\"}\n", "no `####`"),
            ("{\"answer\": \"#### 2\"}\n", "no `question`"),
            ("not json\n", "not a JSON object"),
        ] {
            fs::write(&p, text).unwrap();
            let e = GenTask::load(&p).unwrap_err().to_string();
            let line = if why == "no `answer`" { 2 } else { 1 };
            assert!(
                e.contains(&format!("{}:{line}", p.display())) && e.contains(why),
                "{e}"
            );
        }
    }
}
