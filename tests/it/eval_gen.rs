//! `quern eval gen`: GSM8K-style exact match on SmolLM2-135M (real GSM8K test questions from
//! `tests/data/gsm8k/`). The answers equal `quern generate`'s greedy output for the same
//! prompts, do not depend on the batch size, and the saved outputs give the same extractions
//! and scores when an independent implementation of the harness's regexes reads them.

use std::path::{Path, PathBuf};

use crate::common::{fixture, quern, read_jsonl, run_err, run_ok};
use crate::models::smollm2;

const TOKENS: &str = "32";

/// The first `n` problems of the committed GSM8K sample.
fn task(dir: &Path, n: usize) -> PathBuf {
    let text = std::fs::read_to_string(fixture("gsm8k/test-100.jsonl")).unwrap();
    let lines: Vec<&str> = text.lines().take(n).collect();
    let p = dir.join("task.jsonl");
    std::fs::write(&p, lines.join("\n") + "\n").unwrap();
    p
}

fn eval_gen(task: &Path, details: &Path, extra: &[&str]) -> serde_json::Value {
    let out = run_ok(
        quern()
            .args([
                "eval",
                "gen",
                "--device",
                "cpu",
                "--json",
                "--max-tokens",
                TOKENS,
            ])
            .arg("--model")
            .arg(smollm2())
            .arg("--task")
            .arg(task)
            .arg("--details")
            .arg(details)
            .args(extra),
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `quern generate --json` on a prompts file: the completions.
fn generate(prompts: &Path, chat: bool) -> Vec<String> {
    let out = run_ok(
        quern()
            .args([
                "generate",
                "--device",
                "cpu",
                "--json",
                "--max-tokens",
                TOKENS,
            ])
            .arg(format!("--chat={chat}"))
            .args([
                "--stop",
                "Question:",
                "--stop",
                "</s>",
                "--stop",
                "<|im_end|>",
            ])
            .arg("--model")
            .arg(smollm2())
            .arg("--prompts-file")
            .arg(prompts),
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["completion"].as_str().unwrap().to_string()
        })
        .collect()
}

/// lm-evaluation-harness's gsm8k filters and normalisation, written again with `regex`.
fn reference_extract(text: &str) -> (Option<String>, Option<String>) {
    let strict = regex::Regex::new(r"#### (\-?[0-9\.\,]+)").unwrap();
    let flexible = regex::Regex::new(r"(-?[$0-9.,]{2,})|(-?[0-9]+)").unwrap();
    (
        strict.captures(text).map(|c| c[1].to_string()),
        flexible
            .find_iter(text)
            .last()
            .map(|m| m.as_str().to_string()),
    )
}

fn reference_normalize(s: &str) -> String {
    let mut s = s.to_string();
    for re in [",", r"\$", r"(?s).*#### ", r"\.$"] {
        s = regex::Regex::new(re)
            .unwrap()
            .replace_all(&s, "")
            .into_owned();
    }
    let s = s.to_lowercase();
    // quern's zero-fraction rule.
    regex::Regex::new(r"^(-?[0-9]+)\.0+$")
        .unwrap()
        .replace(&s, "$1")
        .into_owned()
}

#[test]
fn gen_answers_equal_quern_generate_for_any_batch_and_rescore_from_the_details() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let task = task(t, 4);
    let r1 = eval_gen(
        &task,
        &t.join("d1.jsonl"),
        &["--shots", "1", "--batch-size", "1"],
    );
    let r4 = eval_gen(
        &task,
        &t.join("d4.jsonl"),
        &["--shots", "1", "--batch-size", "4"],
    );
    let d1 = read_jsonl(&t.join("d1.jsonl"));
    let d4 = read_jsonl(&t.join("d4.jsonl"));
    assert_eq!(d1.len(), 4);
    assert_eq!(d1, d4, "the answers depend on the batch size");
    assert_eq!(r1["result"]["strict_match"], r4["result"]["strict_match"]);
    assert_eq!(r1["result"]["questions"], 4);
    assert_eq!(r1["data"]["task_xxh3"].as_str().unwrap().len(), 16);
    assert!(r1["model"]["weights_xxh3"].as_str().is_some());

    // Problem 1's example is problem 2 (the first other one); the others' is problem 1.
    let problems = read_jsonl(&task);
    let prompt0 = d1[0]["prompt"].as_str().unwrap();
    assert!(prompt0.starts_with(&format!(
        "Question: {}\nAnswer: {}\n\nQuestion: {}\nAnswer:",
        problems[1]["question"].as_str().unwrap(),
        problems[1]["answer"].as_str().unwrap(),
        problems[0]["question"].as_str().unwrap()
    )));

    // The same prompts through quern generate.
    let prompts = t.join("prompts.jsonl");
    let lines: Vec<String> = d1
        .iter()
        .map(|d| serde_json::json!({ "prompt": d["prompt"] }).to_string())
        .collect();
    std::fs::write(&prompts, lines.join("\n")).unwrap();
    let completions: Vec<String> = d1
        .iter()
        .map(|d| d["completion"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(generate(&prompts, false), completions);
    assert!(completions.iter().any(|c| !c.trim().is_empty()));

    // The figures again from the saved outputs, with the harness's regexes.
    let (mut strict_ok, mut flexible_ok) = (0, 0);
    for d in &d1 {
        let completion = d["completion"].as_str().unwrap();
        let target = d["target"].as_str().unwrap();
        let (strict, flexible) = reference_extract(completion);
        assert_eq!(
            d["strict"].as_str().map(String::from),
            strict,
            "{completion:?}"
        );
        assert_eq!(
            d["flexible"].as_str().map(String::from),
            flexible,
            "{completion:?}"
        );
        let right = |e: &Option<String>| {
            e.as_ref()
                .is_some_and(|e| reference_normalize(e) == reference_normalize(target))
        };
        assert_eq!(d["strict_correct"], right(&strict));
        assert_eq!(d["flexible_correct"], right(&flexible));
        strict_ok += usize::from(right(&strict));
        flexible_ok += usize::from(right(&flexible));
    }
    let r = &r1["result"];
    assert_eq!(r["strict_match"]["correct"], strict_ok);
    assert_eq!(r["flexible_extract"]["correct"], flexible_ok);
    assert_eq!(
        r["flexible_extract"]["exact_match"].as_f64().unwrap(),
        flexible_ok as f64 / 4.0
    );
    // Every problem's target is the text after its answer's `####`.
    for (d, p) in d1.iter().zip(&problems) {
        let answer = p["answer"].as_str().unwrap();
        assert_eq!(
            d["target"].as_str().unwrap(),
            answer.rsplit("####").next().unwrap().trim()
        );
    }
}

#[test]
fn gen_with_the_chat_template_equals_quern_generate_of_the_conversation() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let task = task(t, 2);
    let r = eval_gen(&task, &t.join("d.jsonl"), &["--chat", "--batch-size", "2"]);
    assert_eq!(r["result"]["chat"], true);
    let d = read_jsonl(&t.join("d.jsonl"));
    let problems = read_jsonl(&task);
    let prompts = t.join("prompts.jsonl");
    let lines: Vec<String> = problems
        .iter()
        .map(|p| {
            let q = format!("Question: {}\nAnswer:", p["question"].as_str().unwrap());
            serde_json::json!({ "messages": [{ "role": "user", "content": q }] }).to_string()
        })
        .collect();
    std::fs::write(&prompts, lines.join("\n")).unwrap();
    let completions: Vec<String> = d
        .iter()
        .map(|d| d["completion"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(generate(&prompts, true), completions);
    assert!(d[0]["prompt"]
        .as_str()
        .unwrap()
        .contains("<|im_start|>user"));
}

#[test]
fn bad_gen_tasks_are_refused_naming_file_and_line_with_nothing_written() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    for (text, line, why) in [
        (
            "{\"question\": \"1+1?\", \"answer\": \"#### 2\"}\n{\"question\": \"2+2?\"}\n",
            2,
            "no `answer`",
        ),
        (
            "{\"question\": \"1+1?\", \"answer\": \"2\"}\n",
            1,
            "no `####`",
        ),
    ] {
        let p = t.join("bad.jsonl");
        std::fs::write(&p, text).unwrap();
        let out = t.join("out.json");
        let err = run_err(
            quern()
                .args(["eval", "gen", "--device", "cpu", "--model"])
                .arg(smollm2())
                .arg("--task")
                .arg(&p)
                .arg("--out")
                .arg(&out)
                .arg("--details")
                .arg(t.join("d.jsonl")),
        );
        assert!(
            err.contains(&format!("{}:{line}", p.display())) && err.contains(why),
            "{err}"
        );
        assert!(!out.exists() && !t.join("d.jsonl").exists());
    }
}
