//! The page of a `quern tokenize` output directory: one row per split (its `meta.json`:
//! rows, tokens, documents, sequence length, padding share), tokens per split, and the
//! tokenize accounting from `manifest.json` (documents rejected, by reason).

use std::path::{Path, PathBuf};

use quern_core::error::{IoContext, Result};
use quern_core::manifest::Manifest;
use quern_tokenize::meta::{Objective, TokenMeta, META_JSON};

use super::svg::hbar_chart;
use super::{cards, page, table};

/// The split directories of a tokenized output: every subdirectory with a `meta.json`
/// (sorted by name), or `dir` itself when it is one split directory. The name is the
/// directory's, `.` for `dir` itself.
pub(super) fn split_dirs(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    if dir.join(META_JSON).is_file() {
        return Ok(vec![(".".into(), dir.to_path_buf())]);
    }
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).at(dir)? {
        let p = e.at(dir)?.path();
        if p.join(META_JSON).is_file() {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            out.push((name, p));
        }
    }
    out.sort();
    Ok(out)
}

/// The share of a split's token slots that hold padding: for packed rows (`clm`, `mlm`) the
/// stored padding of `rows × (seq_len + 1)` ids; for `sft`, `cls` and `nsp` rows (stored
/// unpadded) what padding every row to `seq_len` would add. `None` for `rm`/`dpo` (three sequences a
/// row) and for an empty split.
pub(super) fn padding_share(m: &TokenMeta) -> Option<f64> {
    let per_row = match m.objective {
        Objective::Clm | Objective::Mlm => m.seq_len.saturating_add(1),
        Objective::Sft | Objective::Cls | Objective::Nsp => m.seq_len,
        Objective::Rm | Objective::Dpo => return None,
    };
    let slots = m.rows.checked_mul(per_row).filter(|s| *s > 0)?;
    Some(1.0 - m.tokens.min(slots) as f64 / slots as f64)
}

/// Renders the report of the tokenized output in `dir`.
pub fn tokens_html(dir: &Path) -> Result<String> {
    let splits = split_dirs(dir)?;
    let metas: Vec<(String, TokenMeta)> = splits
        .into_iter()
        .map(|(name, p)| Ok((name, TokenMeta::load(&p)?)))
        .collect::<Result<_>>()?;
    let manifest = Manifest::load(dir)?;
    // Saturating: the numbers come from files, and a page is no place to panic.
    let sum =
        |f: fn(&TokenMeta) -> u64| metas.iter().fold(0u64, |a, (_, m)| a.saturating_add(f(m)));
    let mut objectives: Vec<&str> = metas.iter().map(|(_, m)| m.objective.name()).collect();
    objectives.sort_unstable();
    objectives.dedup();
    let mut b = String::new();
    b.push_str(&cards(&[
        (metas.len().to_string(), "splits"),
        (sum(|m| m.rows).to_string(), "rows"),
        (sum(|m| m.tokens).to_string(), "tokens"),
        (sum(|m| m.documents).to_string(), "documents"),
        (objectives.join(", "), "objective"),
    ]));

    b.push_str("<h2>Splits</h2>\n");
    let rows: Vec<Vec<String>> = metas
        .iter()
        .map(|(name, m)| {
            vec![
                name.clone(),
                m.objective.name().to_string(),
                m.rows.to_string(),
                m.tokens.to_string(),
                m.documents.to_string(),
                m.seq_len.to_string(),
                padding_share(m).map_or("-".into(), |p| format!("{:.1}%", 100.0 * p)),
                m.vocab_size.to_string(),
                m.shards.len().to_string(),
            ]
        })
        .collect();
    b.push_str(&table(
        &[
            "split",
            "objective",
            "rows",
            "tokens",
            "documents",
            "seq_len",
            "padding",
            "vocab",
            "shards",
        ],
        &rows,
    ));
    b.push_str("<p class=\"sub\">Tokens count the ids of documents and separators, not padding. Padding is the share of the split's token slots without a token: stored padding of the packed rows (<code>clm</code>, <code>mlm</code>: seq_len + 1 ids a row), or what padding each row to seq_len would add (<code>sft</code>, <code>cls</code>, <code>nsp</code>).</p>\n");
    let items: Vec<(String, f64)> = metas
        .iter()
        .map(|(name, m)| (name.clone(), m.tokens as f64))
        .collect();
    b.push_str(&hbar_chart("Tokens per split", "tokens", &items));
    b.push('\n');

    if let Some(a) = manifest.as_ref().and_then(|m| m.accounting.as_ref()) {
        b.push_str("<h2>Documents</h2>\n");
        b.push_str(&format!(
            "<p>{} input documents: {} made rows, {} rejected.</p>\n",
            a.input, a.kept, a.rejected
        ));
        let reasons: Vec<Vec<String>> = a
            .stages
            .iter()
            .flat_map(|s| {
                s.reasons
                    .iter()
                    .map(|(r, n)| vec![s.stage.clone(), r.clone(), n.to_string()])
            })
            .collect();
        if !reasons.is_empty() {
            b.push_str(&table(&["stage", "reason", "documents"], &reasons));
        }
    }
    Ok(page("quern tokenize report", &b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(objective: Objective, rows: u64, tokens: u64, seq_len: u64) -> TokenMeta {
        TokenMeta {
            objective,
            vocab_size: 100,
            seq_len,
            rows,
            tokens,
            documents: 1,
            tokenizer_hash: String::new(),
            pad_id: Some(0),
            bos_id: None,
            eos_id: Some(1),
            mask_id: None,
            labels: Vec::new(),
            packed: false,
            shards: Vec::new(),
        }
    }

    #[test]
    fn padding_is_the_share_of_empty_slots() {
        // 4 packed rows of 9 ids hold 27 tokens: 9 of 36 slots are padding.
        assert_eq!(padding_share(&meta(Objective::Clm, 4, 27, 8)), Some(0.25));
        // 2 sft rows of at most 10 ids with 15 tokens: 5 of 20 slots.
        assert_eq!(padding_share(&meta(Objective::Sft, 2, 15, 10)), Some(0.25));
        assert_eq!(padding_share(&meta(Objective::Cls, 0, 0, 10)), None);
        assert_eq!(padding_share(&meta(Objective::Dpo, 2, 15, 10)), None);
        // A meta.json with absurd numbers gives no share rather than an overflow.
        assert_eq!(padding_share(&meta(Objective::Clm, 2, 5, u64::MAX)), None);
        let huge = padding_share(&meta(Objective::Clm, 1, u64::MAX, u64::MAX - 1));
        assert_eq!(huge, Some(0.0));
    }
}
