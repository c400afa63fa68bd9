//! Held-out evaluation: accuracy, per-label precision/recall/F1, macro-F1 and the
//! confusion matrix, as printed by `quern label train` and `quern label eval`.

use serde::Serialize;

/// Scores of predictions against gold labels.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Metrics {
    pub labels: Vec<String>,
    pub examples: usize,
    pub accuracy: f64,
    pub macro_f1: f64,
    pub precision: Vec<f64>,
    pub recall: Vec<f64>,
    pub f1: Vec<f64>,
    /// `confusion[gold][predicted]`.
    pub confusion: Vec<Vec<u64>>,
}

impl Metrics {
    /// Computes the metrics; `gold` and `pred` index `labels`.
    pub fn compute(labels: &[String], gold: &[u32], pred: &[u32]) -> Metrics {
        let k = labels.len();
        let mut confusion = vec![vec![0u64; k]; k];
        for (&g, &p) in gold.iter().zip(pred) {
            confusion[g as usize][p as usize] += 1;
        }
        let n = gold.len();
        let correct: u64 = (0..k).map(|i| confusion[i][i]).sum();
        let (mut precision, mut recall, mut f1) = (vec![0.0; k], vec![0.0; k], vec![0.0; k]);
        for i in 0..k {
            let tp = confusion[i][i] as f64;
            let predicted: u64 = (0..k).map(|g| confusion[g][i]).sum();
            let actual: u64 = confusion[i].iter().sum();
            precision[i] = if predicted > 0 {
                tp / predicted as f64
            } else {
                0.0
            };
            recall[i] = if actual > 0 { tp / actual as f64 } else { 0.0 };
            let s = precision[i] + recall[i];
            f1[i] = if s > 0.0 {
                2.0 * precision[i] * recall[i] / s
            } else {
                0.0
            };
        }
        // Macro-F1 over the labels that occur in the gold data or the predictions.
        let present: Vec<usize> = (0..k)
            .filter(|&i| {
                confusion[i].iter().sum::<u64>() > 0 || (0..k).any(|g| confusion[g][i] > 0)
            })
            .collect();
        let macro_f1 = if present.is_empty() {
            0.0
        } else {
            present.iter().map(|&i| f1[i]).sum::<f64>() / present.len() as f64
        };
        Metrics {
            labels: labels.to_vec(),
            examples: n,
            accuracy: if n > 0 {
                correct as f64 / n as f64
            } else {
                0.0
            },
            macro_f1,
            precision,
            recall,
            f1,
            confusion,
        }
    }
}

impl std::fmt::Display for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "examples   {}", self.examples)?;
        writeln!(f, "accuracy   {:.4}", self.accuracy)?;
        writeln!(f, "macro-F1   {:.4}", self.macro_f1)?;
        let w = self
            .labels
            .iter()
            .map(|l| l.len())
            .max()
            .unwrap_or(4)
            .clamp(6, 24);
        writeln!(
            f,
            "\n{:<w$}  {:>9} {:>9} {:>9}",
            "label", "precision", "recall", "f1"
        )?;
        for (i, l) in self.labels.iter().enumerate() {
            writeln!(
                f,
                "{:<w$}  {:>9.4} {:>9.4} {:>9.4}",
                l, self.precision[i], self.recall[i], self.f1[i]
            )?;
        }
        writeln!(f, "\nconfusion (rows: gold, columns: predicted)")?;
        write!(f, "{:<w$}", "")?;
        for l in &self.labels {
            write!(f, " {:>w$}", l)?;
        }
        writeln!(f)?;
        for (i, l) in self.labels.iter().enumerate() {
            write!(f, "{:<w$}", l)?;
            for c in &self.confusion[i] {
                write!(f, " {:>w$}", c)?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_by_hand() {
        let labels = vec!["a".to_string(), "b".to_string()];
        // gold a a a b, pred a a b b: a: P=1 R=2/3; b: P=1/2 R=1.
        let m = Metrics::compute(&labels, &[0, 0, 0, 1], &[0, 0, 1, 1]);
        assert_eq!(m.confusion, vec![vec![2, 1], vec![0, 1]]);
        assert!((m.accuracy - 0.75).abs() < 1e-12);
        let f_a = 2.0 * (2.0 / 3.0) / (1.0 + 2.0 / 3.0);
        let f_b = 2.0 * 0.5 / 1.5;
        assert!(
            (m.macro_f1 - (f_a + f_b) / 2.0).abs() < 1e-12,
            "{}",
            m.macro_f1
        );
        let text = m.to_string();
        assert!(
            text.contains("accuracy   0.7500") && text.contains("confusion"),
            "{text}"
        );
    }
}
