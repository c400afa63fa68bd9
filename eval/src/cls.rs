//! Classification metrics: accuracy, macro-F1, per-class precision/recall/F1 and the
//! confusion matrix, with scikit-learn's conventions (a ratio with a zero denominator is
//! 0; macro averages weigh every class once, classes without support included).

use quern_core::{Error, Result};
use serde::{Deserialize, Serialize};

/// One class's figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassStats {
    pub label: String,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    /// Examples whose gold label is this class.
    pub support: u64,
}

/// Classification results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassReport {
    pub examples: u64,
    pub accuracy: f64,
    pub macro_f1: f64,
    pub classes: Vec<ClassStats>,
    /// `confusion[gold][predicted]`.
    pub confusion: Vec<Vec<u64>>,
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

/// The report for gold and predicted class ids (indices into `labels`).
pub fn class_report(labels: &[String], gold: &[usize], pred: &[usize]) -> Result<ClassReport> {
    if gold.len() != pred.len() {
        return Err(Error::bug(format!(
            "{} gold labels but {} predictions",
            gold.len(),
            pred.len()
        )));
    }
    let k = labels.len();
    let mut confusion = vec![vec![0u64; k]; k];
    for (&g, &p) in gold.iter().zip(pred) {
        if g >= k || p >= k {
            return Err(Error::bug(format!(
                "class id {} outside the {k} labels",
                g.max(p)
            )));
        }
        confusion[g][p] += 1;
    }
    let classes: Vec<ClassStats> = (0..k)
        .map(|c| {
            let tp = confusion[c][c];
            let support: u64 = confusion[c].iter().sum();
            let predicted: u64 = confusion.iter().map(|row| row[c]).sum();
            let precision = ratio(tp, predicted);
            let recall = ratio(tp, support);
            let f1 = if precision + recall > 0.0 {
                2.0 * precision * recall / (precision + recall)
            } else {
                0.0
            };
            ClassStats {
                label: labels[c].clone(),
                precision,
                recall,
                f1,
                support,
            }
        })
        .collect();
    let correct: u64 = (0..k).map(|c| confusion[c][c]).sum();
    Ok(ClassReport {
        examples: gold.len() as u64,
        accuracy: ratio(correct, gold.len() as u64),
        macro_f1: if k == 0 {
            0.0
        } else {
            classes.iter().map(|c| c.f1).sum::<f64>() / k as f64
        },
        classes,
        confusion,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_match_a_hand_computation() {
        let labels: Vec<String> = ["neg", "pos", "neutral"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        // gold: neg neg neg pos pos ; pred: neg pos neg pos neg ; neutral never occurs.
        let r = class_report(&labels, &[0, 0, 0, 1, 1], &[0, 1, 0, 1, 0]).unwrap();
        assert_eq!(
            r.confusion,
            vec![vec![2, 1, 0], vec![1, 1, 0], vec![0, 0, 0]]
        );
        assert!((r.accuracy - 0.6).abs() < 1e-12);
        // neg: p = 2/3, r = 2/3; pos: p = 1/2, r = 1/2; neutral: 0.
        assert!((r.classes[0].f1 - 2.0 / 3.0).abs() < 1e-12);
        assert!((r.classes[1].precision - 0.5).abs() < 1e-12);
        assert_eq!(r.classes[2].f1, 0.0);
        assert!((r.macro_f1 - (2.0 / 3.0 + 0.5) / 3.0).abs() < 1e-12);
        assert_eq!(r.classes[0].support, 3);
        assert!(class_report(&labels, &[0], &[3]).is_err());
        assert!(class_report(&labels, &[0], &[]).is_err());
    }
}
