//! The page of a training run directory: `metrics.jsonl` (one JSON line per logged step
//! and per evaluation, over every resume of the run) and `report.json` (this process's
//! summary and every step it ran). Fields are read by name, leniently, so the page does
//! not depend on the trainer's crate.

use std::collections::BTreeMap;
use std::path::Path;

use quern_core::error::{Error, IoContext, Place, Result};
use serde_json::Value;

use super::svg::{fmt_num, line_chart, line_chart_marked, Series};
use super::{cards, escape, page, read_json, table};

/// One step's numbers (`None` where the line does not have them or they are not finite).
#[derive(Debug, Default, Clone)]
struct Step {
    loss: Option<f64>,
    lr: Option<f64>,
    grad_norm: Option<f64>,
    tokens_per_s: Option<f64>,
    mfu: Option<f64>,
    skipped: bool,
    /// `nsp` runs: the two parts of `loss`, and the NSP accuracy.
    mlm_loss: Option<f64>,
    nsp_loss: Option<f64>,
    nsp_accuracy: Option<f64>,
    /// `rm`/`dpo` runs: the share of pairs ranked right, and the mean margin.
    pair_accuracy: Option<f64>,
    margin: Option<f64>,
}

impl Step {
    fn from_json(v: &Value) -> Self {
        let f = |k: &str| v.get(k).and_then(Value::as_f64).filter(|x| x.is_finite());
        Step {
            loss: f("loss"),
            lr: f("lr"),
            grad_norm: f("grad_norm"),
            tokens_per_s: f("tokens_per_s"),
            mfu: f("mfu"),
            skipped: v.get("skipped").and_then(Value::as_bool).unwrap_or(false),
            mlm_loss: f("mlm_loss"),
            nsp_loss: f("nsp_loss"),
            nsp_accuracy: f("nsp_accuracy"),
            pair_accuracy: f("pair_accuracy"),
            margin: f("margin"),
        }
    }
}

/// Steps and evaluations by step number.
#[derive(Debug, Default)]
struct Curves {
    steps: BTreeMap<u64, Step>,
    evals: BTreeMap<u64, EvalRow>,
}

/// One evaluation's figures: validation loss and perplexity, for `cls` runs accuracy and
/// macro-F1, for `nsp` runs the MLM and NSP losses and the NSP accuracy, for `rm`/`dpo`
/// runs the pair accuracy, margin and mean chosen and rejected scores.
#[derive(Debug, Default, Clone, Copy)]
struct EvalRow {
    loss: Option<f64>,
    ppl: Option<f64>,
    accuracy: Option<f64>,
    macro_f1: Option<f64>,
    mlm_loss: Option<f64>,
    nsp_loss: Option<f64>,
    nsp_accuracy: Option<f64>,
    pair_accuracy: Option<f64>,
    margin: Option<f64>,
    reward_chosen: Option<f64>,
    reward_rejected: Option<f64>,
}

impl Curves {
    /// Adds one record: an evaluation when it has `val_loss`, else a step when it has
    /// `loss`; other lines are ignored. A record already present is kept.
    fn add(&mut self, v: &Value) {
        let Some(step) = v.get("step").and_then(Value::as_u64) else {
            return;
        };
        if v.get("val_loss").is_some() {
            let f = |k: &str| v.get(k).and_then(Value::as_f64);
            self.evals.entry(step).or_insert(EvalRow {
                loss: f("val_loss"),
                ppl: f("val_ppl"),
                accuracy: f("accuracy"),
                macro_f1: f("macro_f1"),
                mlm_loss: f("val_mlm_loss"),
                nsp_loss: f("val_nsp_loss"),
                nsp_accuracy: f("val_nsp_accuracy"),
                pair_accuracy: f("pair_accuracy"),
                margin: f("margin"),
                reward_chosen: f("reward_chosen"),
                reward_rejected: f("reward_rejected"),
            });
        } else if v.get("loss").is_some() {
            self.steps.entry(step).or_insert_with(|| Step::from_json(v));
        }
    }
}

/// Renders the report of the training run in `dir`.
pub fn run_html(dir: &Path) -> Result<String> {
    let mut curves = Curves::default();
    let metrics = dir.join("metrics.jsonl");
    if metrics.is_file() {
        let text = std::fs::read_to_string(&metrics).at(&metrics)?;
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let v: Value = serde_json::from_str(line).map_err(|e| {
                Error::bad_input(
                    Place::file(&metrics).with_line(i as u64 + 1),
                    format!("not a JSON line ({e})"),
                )
            })?;
            curves.add(&v);
        }
    }
    let report_path = dir.join("report.json");
    let report = if report_path.is_file() {
        Some(read_json(&report_path)?)
    } else {
        None
    };
    // report.json holds every step of the last process, metrics.jsonl every logged step.
    if let Some(r) = &report {
        for key in ["losses", "evals"] {
            for v in r.get(key).and_then(Value::as_array).into_iter().flatten() {
                curves.add(v);
            }
        }
    }
    if report.is_none() && curves.steps.is_empty() && curves.evals.is_empty() {
        return Err(Error::bad_input(
            Place::file(&metrics),
            "no training steps or evaluations in it, and no report.json beside it",
        ));
    }

    let mut b = String::new();
    let r = report.as_ref();
    let s = |k: &str| r.and_then(|r| r.get(k));
    let text = |k: &str| match s(k) {
        Some(Value::String(t)) => t.clone(),
        Some(v) if !v.is_null() => v.to_string(),
        _ => "?".into(),
    };
    if r.is_some() {
        let params = text("parameters");
        let trainable = text("trainable_parameters");
        let mut items = vec![
            (text("objective"), "objective"),
            (text("device"), "device"),
            (params.clone(), "parameters"),
        ];
        if trainable != params && trainable != "0" && trainable != "?" {
            items.push((trainable, "trainable parameters"));
        }
        items.extend([
            (
                format!("{}..{}", text("start_step"), text("steps")),
                "steps",
            ),
            (text("tokens_seen"), "tokens seen"),
            (
                s("elapsed_s")
                    .and_then(Value::as_f64)
                    .map_or("?".into(), |t| format!("{t:.1} s")),
                "elapsed (last process)",
            ),
            (
                s("tokens_per_s")
                    .and_then(Value::as_f64)
                    .map_or("?".into(), |t| fmt_num(t.round())),
                "tokens/s (median)",
            ),
        ]);
        if let Some(m) = s("mfu").and_then(Value::as_f64) {
            items.push((format!("{:.1}%", 100.0 * m), "MFU"));
        }
        items.push((text("skipped_steps"), "skipped steps"));
        b.push_str(&cards(&items));
    } else {
        b.push_str("<p class=\"sub\">No report.json: the run has not finished; the curves are from metrics.jsonl.</p>\n");
    }

    let series = |name: &str, get: fn(&Step) -> Option<f64>| {
        Series::new(
            name,
            curves
                .steps
                .iter()
                .filter(|(_, st)| !st.skipped)
                .filter_map(|(k, st)| Some((*k as f64, get(st)?)))
                .collect(),
        )
    };
    b.push_str("<h2>Loss</h2>\n");
    let val = Series::new(
        "validation loss",
        curves
            .evals
            .iter()
            .filter_map(|(k, e)| Some((*k as f64, e.loss?)))
            .collect(),
    )
    .with_markers();
    let skipped: Vec<u64> = curves
        .steps
        .iter()
        .filter(|(_, s)| s.skipped)
        .map(|(k, _)| *k)
        .collect();
    let marks: Vec<(f64, String)> = skipped
        .iter()
        .map(|k| {
            (
                *k as f64,
                format!("step {k} skipped (non-finite loss or gradient)"),
            )
        })
        .collect();
    b.push_str(&line_chart_marked(
        "Train and validation loss",
        "step",
        "loss",
        &[series("train loss", |s| s.loss), val],
        &marks,
    ));
    b.push('\n');
    // BERT pretraining (`nsp`): the loss is the MLM loss plus the NSP loss; each part and
    // the NSP accuracy get a chart.
    if curves.steps.values().any(|s| s.nsp_loss.is_some()) {
        let val = |name: &str, get: fn(&EvalRow) -> Option<f64>| {
            Series::new(
                name,
                curves
                    .evals
                    .iter()
                    .filter_map(|(k, e)| Some((*k as f64, get(e)?)))
                    .collect(),
            )
            .with_markers()
        };
        b.push_str(&line_chart(
            "Masked-LM and next-sentence losses",
            "step",
            "loss",
            &[
                series("train MLM loss", |s| s.mlm_loss),
                series("train NSP loss", |s| s.nsp_loss),
                val("validation MLM loss", |e| e.mlm_loss),
                val("validation NSP loss", |e| e.nsp_loss),
            ],
        ));
        b.push('\n');
        b.push_str(&line_chart(
            "Next-sentence prediction accuracy",
            "step",
            "accuracy",
            &[
                series("train NSP accuracy", |s| s.nsp_accuracy),
                val("validation NSP accuracy", |e| e.nsp_accuracy),
            ],
        ));
        b.push('\n');
    }
    // Preference runs (`rm`, `dpo`): how often the chosen completion scores higher, and by
    // how much.
    if curves.steps.values().any(|s| s.pair_accuracy.is_some()) {
        let val = |name: &str, get: fn(&EvalRow) -> Option<f64>| {
            Series::new(
                name,
                curves
                    .evals
                    .iter()
                    .filter_map(|(k, e)| Some((*k as f64, get(e)?)))
                    .collect(),
            )
            .with_markers()
        };
        b.push_str(&line_chart(
            "Pair accuracy (chosen scored above rejected)",
            "step",
            "accuracy",
            &[
                series("train pair accuracy", |s| s.pair_accuracy),
                val("validation pair accuracy", |e| e.pair_accuracy),
            ],
        ));
        b.push('\n');
        b.push_str(&line_chart(
            "Reward margin (chosen minus rejected)",
            "step",
            "margin",
            &[
                series("train margin", |s| s.margin),
                val("validation margin", |e| e.margin),
            ],
        ));
        b.push('\n');
    }
    b.push_str("<h2>Optimisation</h2>\n");
    for (title, y, get) in [
        (
            "Learning rate",
            "learning rate",
            (|s: &Step| s.lr) as fn(&Step) -> _,
        ),
        ("Gradient norm (before clipping)", "gradient norm", |s| {
            s.grad_norm
        }),
        ("Throughput", "tokens/s", |s| s.tokens_per_s),
    ] {
        b.push_str(&line_chart(title, "step", y, &[series(y, get)]));
        b.push('\n');
    }
    if curves.steps.values().any(|s| s.mfu.is_some()) {
        b.push_str(&line_chart(
            "Model FLOPs utilisation",
            "step",
            "MFU",
            &[series("MFU", |s| s.mfu)],
        ));
        b.push('\n');
    }

    let skipped: Vec<String> = skipped.iter().map(u64::to_string).collect();
    b.push_str("<h2>Skipped steps</h2>\n");
    if skipped.is_empty() {
        b.push_str("<p>No step was skipped.</p>\n");
    } else {
        let n = match skipped.len() {
            1 => "1 step".to_string(),
            n => format!("{n} steps"),
        };
        b.push_str(&format!(
            "<p>{n} had a non-finite loss or gradient and made no update (dashed red lines on the loss chart): {}.</p>\n",
            escape(&skipped.join(", "))
        ));
    }

    b.push_str("<h2>Evaluations</h2>\n");
    if curves.evals.is_empty() {
        b.push_str("<p>No evaluation was run.</p>\n");
    } else {
        let num = |v: &Option<f64>| v.map_or("-".into(), |x| format!("{x:.4}"));
        // A classifier's evaluations also have accuracy and macro-F1 (and no perplexity worth
        // reading); the columns appear when any evaluation has them.
        let cls = curves.evals.values().any(|e| e.accuracy.is_some());
        // BERT pretraining's evaluations split the loss (the perplexity is the MLM part's).
        let nsp = curves.evals.values().any(|e| e.nsp_loss.is_some());
        // Preference runs' evaluations: pair accuracy, margin, mean chosen and rejected scores.
        let pairs = curves.evals.values().any(|e| e.pair_accuracy.is_some());
        let rows: Vec<Vec<String>> = curves
            .evals
            .iter()
            .map(|(k, e)| {
                let mut row = vec![k.to_string(), num(&e.loss), num(&e.ppl)];
                if cls {
                    row.extend([num(&e.accuracy), num(&e.macro_f1)]);
                }
                if nsp {
                    row.extend([num(&e.mlm_loss), num(&e.nsp_loss), num(&e.nsp_accuracy)]);
                }
                if pairs {
                    row.extend([
                        num(&e.pair_accuracy),
                        num(&e.margin),
                        num(&e.reward_chosen),
                        num(&e.reward_rejected),
                    ]);
                }
                row
            })
            .collect();
        let mut head = vec!["step", "validation loss", "perplexity"];
        if cls {
            head.extend(["accuracy", "macro-F1"]);
        }
        if nsp {
            head.extend(["MLM loss", "NSP loss", "NSP accuracy"]);
        }
        if pairs {
            head.extend(["pair accuracy", "margin", "chosen score", "rejected score"]);
        }
        b.push_str(&table(&head, &rows));
    }
    Ok(page("quern training run report", &b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_and_evals_from_metrics_lines_and_report() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("metrics.jsonl"),
            concat!(
                r#"{"step":1,"loss":3.5,"lr":0.001,"grad_norm":1.2,"tokens":64,"tokens_per_s":900.0,"mfu":null,"skipped":false,"loss_scale":1.0,"kind":"step"}"#,
                "\n",
                r#"{"step":2,"loss":null,"lr":0.001,"grad_norm":null,"tokens":64,"tokens_per_s":910.0,"mfu":null,"skipped":true,"loss_scale":1.0,"kind":"step"}"#,
                "\n",
                r#"{"step":2,"val_loss":3.1,"val_ppl":22.2,"kind":"eval"}"#,
                "\n",
            ),
        )
        .unwrap();
        let html = run_html(d.path()).unwrap();
        assert!(html.contains("Train and validation loss"));
        assert!(html.contains("1 step had a non-finite loss or gradient"));
        assert!(html.contains("<td>3.1000</td><td>22.2000</td>"));
        assert!(html.contains("No report.json"));
        assert!(
            !html.contains("macro-F1"),
            "no classifier columns for a clm run"
        );
        // A classifier's evaluations add accuracy and macro-F1 columns.
        std::fs::write(
            d.path().join("metrics.jsonl"),
            r#"{"step":4,"val_loss":0.7,"val_ppl":2.0,"accuracy":0.625,"macro_f1":0.5,"kind":"eval"}"#,
        )
        .unwrap();
        let html = run_html(d.path()).unwrap();
        assert!(html.contains("<th>macro-F1</th>"), "{html}");
        assert!(
            html.contains("<td>0.7000</td><td>2.0000</td><td>0.6250</td><td>0.5000</td>"),
            "{html}"
        );
        // BERT pretraining: the MLM and NSP parts and the NSP accuracy.
        std::fs::write(
            d.path().join("metrics.jsonl"),
            concat!(
                r#"{"step":1,"loss":11.0,"lr":0.001,"grad_norm":1.0,"tokens":64,"tokens_per_s":900.0,"mfu":null,"skipped":false,"loss_scale":1.0,"mlm_loss":10.3,"nsp_loss":0.7,"nsp_accuracy":0.5,"kind":"train"}"#,
                "\n",
                r#"{"step":1,"val_loss":10.9,"val_ppl":22026.5,"val_mlm_loss":10.0,"val_nsp_loss":0.9,"val_nsp_accuracy":0.625,"kind":"eval"}"#,
            ),
        )
        .unwrap();
        let html = run_html(d.path()).unwrap();
        assert!(html.contains("Next-sentence prediction accuracy"), "{html}");
        assert!(html.contains("<th>NSP accuracy</th>"), "{html}");
        assert!(
            html.contains("<td>10.0000</td><td>0.9000</td><td>0.6250</td>"),
            "{html}"
        );
        // A reward model or DPO: pair accuracy and margin charts and columns.
        std::fs::write(
            d.path().join("metrics.jsonl"),
            concat!(
                r#"{"step":1,"loss":0.69,"lr":0.001,"grad_norm":1.0,"tokens":64,"tokens_per_s":900.0,"mfu":null,"skipped":false,"loss_scale":1.0,"pair_accuracy":0.5,"margin":0.1,"reward_chosen":0.2,"reward_rejected":0.1,"reward_mean":0.15,"reward_std":0.05,"kind":"train"}"#,
                "\n",
                r#"{"step":1,"val_loss":0.6,"val_ppl":1.8,"pair_accuracy":0.75,"margin":0.3,"reward_chosen":0.4,"reward_rejected":0.1,"reward_mean":0.25,"reward_std":0.2,"kind":"eval"}"#,
            ),
        )
        .unwrap();
        let html = run_html(d.path()).unwrap();
        assert!(
            html.contains("Pair accuracy (chosen scored above rejected)"),
            "{html}"
        );
        assert!(html.contains("<th>pair accuracy</th>"), "{html}");
        assert!(
            html.contains("<td>0.7500</td><td>0.3000</td><td>0.4000</td><td>0.1000</td>"),
            "{html}"
        );
        std::fs::write(d.path().join("metrics.jsonl"), "{\"step\":1,\n").unwrap();
        let e = run_html(d.path()).unwrap_err().to_string();
        assert!(e.contains("metrics.jsonl:1"), "{e}");
    }
}
