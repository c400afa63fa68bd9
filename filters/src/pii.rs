//! PII redaction: e-mail addresses, phone numbers (international, North American, and UK,
//! French and German national formats), IPv4 and IPv6 addresses (IPv4-mapped ones included), payment
//! card numbers (Luhn-checked), IBANs (mod-97 checked) and US social security numbers
//! (dashed; with spaces, dots or no separator only next to a context word such as `SSN` or
//! `social security`), each replaced by a configurable token; a `pii_redactions` count
//! column.
//!
//! Why: training data must not carry personal contact or financial identifiers, and a
//! count per document lets users audit and filter in SQL. Candidates come from precompiled
//! regexes and are then validated (checksums, number ranges, digit counts), so version
//! numbers (`1.2.3`), dates (`2024-01-15`), ISBNs and plain long numbers are left alone.
//! Documents are never dropped; only `text` is rewritten.
//!
//! ```toml
//! [[stages]]
//! type = "pii"
//! types = ["email", "phone", "ip", "credit_card", "iban", "ssn"]
//! email_token = "<EMAIL>"
//! ```

use std::net::Ipv6Addr;
use std::sync::LazyLock;

use regex::Regex;
use serde::Deserialize;

use crate::kernel::{DocKernel, Outcome};

/// PII kinds.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum PiiKind {
    Email,
    Phone,
    Ip,
    CreditCard,
    Iban,
    Ssn,
}

/// Configuration.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PiiConfig {
    /// Text column. Default `"text"`.
    pub column: String,
    /// Kinds to redact. Default: all six.
    pub types: Vec<PiiKind>,
    /// Default `"<EMAIL>"`.
    pub email_token: String,
    /// Default `"<PHONE>"`.
    pub phone_token: String,
    /// Default `"<IP_ADDRESS>"`.
    pub ip_token: String,
    /// Default `"<CREDIT_CARD>"`.
    pub credit_card_token: String,
    /// Default `"<IBAN>"`.
    pub iban_token: String,
    /// Default `"<SSN>"`.
    pub ssn_token: String,
}

impl Default for PiiConfig {
    fn default() -> Self {
        PiiConfig {
            column: "text".into(),
            types: vec![
                PiiKind::Email,
                PiiKind::Phone,
                PiiKind::Ip,
                PiiKind::CreditCard,
                PiiKind::Iban,
                PiiKind::Ssn,
            ],
            email_token: "<EMAIL>".into(),
            phone_token: "<PHONE>".into(),
            ip_token: "<IP_ADDRESS>".into(),
            credit_card_token: "<CREDIT_CARD>".into(),
            iban_token: "<IBAN>".into(),
            ssn_token: "<SSN>".into(),
        }
    }
}

static EMAIL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"[A-Za-z0-9][A-Za-z0-9._%+\-]*@[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?)*\.[A-Za-z]{2,24}")
        .expect("email regex")
});
static IPV4: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\b(?:\d{1,3}\.){3}\d{1,3}\b").expect("ipv4 regex"));
// An address ending in a dotted IPv4 part (`::ffff:192.0.2.1`, `64:ff9b::1.2.3.4`) is tried
// first: the plain form would stop at the first hex-looking group of the dotted part.
static IPV6: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)(?:[0-9a-f]{0,4}:){2,6}(?:\d{1,3}\.){3}\d{1,3}|[0-9a-f]{0,4}(?::[0-9a-f]{0,4}){2,7}",
    )
    .expect("ipv6 regex")
});
/// Digits run together or grouped by spaces or dashes, or printed in dotted groups
/// (`4111.1111.1111.1111`, Amex `3782.822463.10005` or `3782.8224.6310.005`): dots only
/// between groups of 3 to 6 digits after a first group of 4, so versions and dotted dates
/// never reach the Luhn check.
static CARD: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\b\d(?:[ \-]?\d){12,18}\b|\b\d{4}(?:\.\d{3,6}){2,4}\b").expect("card regex")
});
static IBAN: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b").expect("iban regex"));
static SSN: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\b\d{3}-\d{2}-\d{4}\b").expect("ssn regex"));
/// SSNs written with spaces, dots or no separator: nine digits are common (order numbers,
/// ids), so these count only next to a context word (as Presidio's recognizer does).
static SSN_LOOSE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\b(?:\d{3} \d{2} \d{4}|\d{3}\.\d{2}\.\d{4}|\d{9})\b").expect("ssn regex")
});
static SSN_CONTEXT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)\bssns?\b|\bss ?#|\bss\.? ?no\b|\bssid\b|\bsocial[ \-]security\b|\bsoc\. ?sec\b",
    )
    .expect("ssn context regex")
});
/// How far before (bytes) and after a loose SSN a context word may be.
const SSN_CONTEXT_BEFORE: usize = 40;
const SSN_CONTEXT_AFTER: usize = 24;
static PHONE_INTL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\+\d{1,3}(?:[ .\-]?\(?\d{1,4}\)?){1,2}(?:[ .\-]?\d{2,5}){1,4}")
        .expect("phone regex")
});
static PHONE_NANP: LazyLock<Regex> = LazyLock::new(|| {
    // One separator throughout (`555-123-4567`, `555.123.4567`), so citations such as
    // `252.227-7013` stay.
    Regex::new(r"(?:\b1[ .\-])?(?:\(\d{3}\) ?\d{3}[.\-]|\b\d{3}-\d{3}-|\b\d{3}\.\d{3}\.)\d{4}\b")
        .expect("nanp regex")
});
/// National numbers written with their trunk zero and the grouping each country uses, so a
/// bare run of digits never matches: UK (`020 7946 0958`, `0161 496 0000`, `07700 900123`,
/// `07700 900 123`, `(020) 7946 0958`), Australia (`(02) 9876 5432`), France
/// (`01 23 45 67 89`, with spaces, dots or dashes used throughout) and Germany (an area code
/// of 2 to 4 digits after the 0, then 6 to 8 digits: `030 12345678`, `089/1234567`,
/// `(0221) 1234567`).
static PHONE_NATIONAL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        r"\b0[1235789](?:\d \d{4} \d{4}|\d{2} \d{3} \d{4}|\d{3} \d{6}|\d{3} \d{3} \d{3})\b",
        r"|\(0[1235789]\d{1,3}\) \d{3,4} \d{3,4}\b|\(0[2-9]\) \d{4} \d{4}\b",
        r"|\b0[1-9](?: \d{2}){4}\b|\b0[1-9](?:\.\d{2}){4}\b|\b0[1-9](?:-\d{2}){4}\b",
        r"|\b0[2-9]\d{1,3}[ /]\d{6,8}\b|\(0[2-9]\d{1,3}\) \d{6,8}\b",
    ))
    .expect("national phone regex")
});

/// The Luhn checksum over the digits of `s`.
pub fn luhn_valid(s: &str) -> bool {
    let digits: Vec<u32> = s.chars().filter_map(|c| c.to_digit(10)).collect();
    if digits.len() < 2 {
        return false;
    }
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            if i % 2 == 1 {
                if d * 2 > 9 {
                    d * 2 - 9
                } else {
                    d * 2
                }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// Whether a digit string starts like a payment card of its length (Visa, Mastercard,
/// Amex, Discover, JCB, Diners, UnionPay, Maestro).
fn card_prefix_ok(d: &str) -> bool {
    let n = d.len();
    let p2: u32 = d[..2].parse().unwrap_or(0);
    let p4: u32 = d[..4].parse().unwrap_or(0);
    (d.starts_with('4') && matches!(n, 13 | 16 | 19))
        || ((51..=55).contains(&p2) || (2221..=2720).contains(&p4)) && n == 16
        || (p2 == 34 || p2 == 37) && n == 15
        || (d.starts_with("6011") || d.starts_with("65") || (644..=649).contains(&(p4 / 10)))
            && (16..=19).contains(&n)
        || (3528..=3589).contains(&p4) && (16..=19).contains(&n)
        || (p2 == 36 || p2 == 38 || (300..=305).contains(&(p4 / 10))) && (14..=19).contains(&n)
        || d.starts_with("62") && (16..=19).contains(&n)
        || matches!(p2, 50 | 56..=58) && (12..=19).contains(&n)
}

/// IBAN lengths by country (ISO 13616 registry).
const IBAN_LEN: &[(&str, usize)] = &[
    ("AD", 24),
    ("AE", 23),
    ("AL", 28),
    ("AT", 20),
    ("AZ", 28),
    ("BA", 20),
    ("BE", 16),
    ("BG", 22),
    ("BH", 22),
    ("BR", 29),
    ("BY", 28),
    ("CH", 21),
    ("CR", 22),
    ("CY", 28),
    ("CZ", 24),
    ("DE", 22),
    ("DK", 18),
    ("DO", 28),
    ("EE", 20),
    ("EG", 29),
    ("ES", 24),
    ("FI", 18),
    ("FO", 18),
    ("FR", 27),
    ("GB", 22),
    ("GE", 22),
    ("GI", 23),
    ("GL", 18),
    ("GR", 27),
    ("GT", 28),
    ("HR", 21),
    ("HU", 28),
    ("IE", 22),
    ("IL", 23),
    ("IQ", 23),
    ("IS", 26),
    ("IT", 27),
    ("JO", 30),
    ("KW", 30),
    ("KZ", 20),
    ("LB", 28),
    ("LC", 32),
    ("LI", 21),
    ("LT", 20),
    ("LU", 20),
    ("LV", 21),
    ("MC", 27),
    ("MD", 24),
    ("ME", 22),
    ("MK", 19),
    ("MR", 27),
    ("MT", 31),
    ("MU", 30),
    ("NL", 18),
    ("NO", 15),
    ("PK", 24),
    ("PL", 28),
    ("PS", 29),
    ("PT", 25),
    ("QA", 29),
    ("RO", 24),
    ("RS", 22),
    ("SA", 24),
    ("SC", 31),
    ("SE", 24),
    ("SI", 19),
    ("SK", 24),
    ("SM", 27),
    ("ST", 25),
    ("SV", 28),
    ("TL", 23),
    ("TN", 24),
    ("TR", 26),
    ("UA", 29),
    ("VA", 22),
    ("VG", 24),
    ("XK", 20),
];

/// The IBAN check: known country, its length, and the ISO 7064 mod-97 checksum.
pub fn iban_valid(s: &str) -> bool {
    let compact: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    let Some(&(_, len)) = IBAN_LEN.iter().find(|(cc, _)| compact.starts_with(cc)) else {
        return false;
    };
    if compact.len() != len || !compact.chars().all(|c| c.is_ascii_alphanumeric()) {
        return false;
    }
    let rearranged = compact[4..].chars().chain(compact[..4].chars());
    let mut rem: u32 = 0;
    for c in rearranged {
        let v = c.to_digit(36).unwrap_or(0);
        rem = if v >= 10 {
            (rem * 100 + v) % 97
        } else {
            (rem * 10 + v) % 97
        };
    }
    rem == 1
}

fn ssn_valid(s: &str) -> bool {
    let (area, rest) = s.split_at(3);
    let group = &rest[1..3];
    let serial = &rest[4..];
    area != "000" && area != "666" && !area.starts_with('9') && group != "00" && serial != "0000"
}

/// Whether a context word for SSNs refers to the number at `start..end`: one ends at most
/// [`SSN_CONTEXT_BEFORE`] bytes before it, or one starts at most [`SSN_CONTEXT_AFTER`]
/// bytes after it, with no digit in between (so `SSN: 123-45-6789, order 482915736` keeps
/// the order number: the SSN's own digits sit between the word and it).
fn ssn_context(text: &str, start: usize, end: usize) -> bool {
    let mut lo = start.saturating_sub(SSN_CONTEXT_BEFORE);
    while !text.is_char_boundary(lo) {
        lo += 1;
    }
    let mut hi = (end + SSN_CONTEXT_AFTER).min(text.len());
    while !text.is_char_boundary(hi) {
        hi -= 1;
    }
    let no_digit = |s: &str| !s.bytes().any(|b| b.is_ascii_digit());
    let before = &text[lo..start];
    let after = &text[end..hi];
    SSN_CONTEXT
        .find_iter(before)
        .last()
        .is_some_and(|m| no_digit(&before[m.end()..]))
        || SSN_CONTEXT
            .find(after)
            .is_some_and(|m| no_digit(&after[..m.start()]))
}

fn ipv4_valid(s: &str, text: &str, start: usize, end: usize) -> bool {
    // A fifth dotted part or a version prefix makes it something else (1.2.3.4.5, v1.2.3.4).
    let before = text[..start].chars().next_back();
    let after = &text[end..];
    if matches!(before, Some('.' | 'v' | 'V'))
        || (after.starts_with('.') && after[1..].starts_with(|c: char| c.is_ascii_digit()))
    {
        return false;
    }
    s.split('.')
        .all(|p| p.parse::<u32>().is_ok_and(|v| v <= 255) && !(p.len() > 1 && p.starts_with('0')))
}

fn phone_digits_ok(s: &str, min: usize) -> bool {
    let n = s.chars().filter(char::is_ascii_digit).count();
    (min..=15).contains(&n)
}

/// The PII kernel.
pub struct Pii {
    cfg: PiiConfig,
}

impl Pii {
    pub fn new(cfg: PiiConfig) -> Self {
        Pii { cfg }
    }

    fn token(&self, k: PiiKind) -> &str {
        match k {
            PiiKind::Email => &self.cfg.email_token,
            PiiKind::Phone => &self.cfg.phone_token,
            PiiKind::Ip => &self.cfg.ip_token,
            PiiKind::CreditCard => &self.cfg.credit_card_token,
            PiiKind::Iban => &self.cfg.iban_token,
            PiiKind::Ssn => &self.cfg.ssn_token,
        }
    }

    /// Validated PII spans in `text`, sorted and non-overlapping: `(start, end, kind)`.
    pub fn find(&self, text: &str) -> Vec<(usize, usize, PiiKind)> {
        let mut spans: Vec<(usize, usize, PiiKind)> = Vec::new();
        let on = |k| self.cfg.types.contains(&k);
        let has_digit = text.bytes().any(|b| b.is_ascii_digit());
        if on(PiiKind::Email) && text.contains('@') {
            spans.extend(
                EMAIL
                    .find_iter(text)
                    .map(|m| (m.start(), m.end(), PiiKind::Email)),
            );
        }
        if has_digit {
            if on(PiiKind::Iban) {
                spans.extend(
                    IBAN.find_iter(text)
                        .filter(|m| iban_valid(m.as_str()))
                        .map(|m| (m.start(), m.end(), PiiKind::Iban)),
                );
            }
            if on(PiiKind::CreditCard) {
                for m in CARD.find_iter(text) {
                    let d: String = m.as_str().chars().filter(char::is_ascii_digit).collect();
                    if (13..=19).contains(&d.len()) && card_prefix_ok(&d) && luhn_valid(&d) {
                        spans.push((m.start(), m.end(), PiiKind::CreditCard));
                    }
                }
            }
            if on(PiiKind::Ssn) {
                spans.extend(
                    SSN.find_iter(text)
                        .filter(|m| ssn_valid(m.as_str()))
                        .map(|m| (m.start(), m.end(), PiiKind::Ssn)),
                );
                for m in SSN_LOOSE.find_iter(text) {
                    let d: String = m.as_str().chars().filter(char::is_ascii_digit).collect();
                    let ok = ssn_valid(&format!("{}-{}-{}", &d[..3], &d[3..5], &d[5..]));
                    if ok && ssn_context(text, m.start(), m.end()) {
                        spans.push((m.start(), m.end(), PiiKind::Ssn));
                    }
                }
            }
            if on(PiiKind::Ip) {
                for m in IPV4.find_iter(text) {
                    if ipv4_valid(m.as_str(), text, m.start(), m.end()) {
                        spans.push((m.start(), m.end(), PiiKind::Ip));
                    }
                }
            }
            if on(PiiKind::Phone) {
                for m in PHONE_INTL.find_iter(text) {
                    if phone_digits_ok(m.as_str(), 8) {
                        spans.push((m.start(), m.end(), PiiKind::Phone));
                    }
                }
                for m in PHONE_NATIONAL.find_iter(text) {
                    let before = text[..m.start()].chars().next_back();
                    if !matches!(before, Some('+' | '-' | '.' | '/'))
                        && phone_digits_ok(m.as_str(), 10)
                    {
                        spans.push((m.start(), m.end(), PiiKind::Phone));
                    }
                }
                for m in PHONE_NANP.find_iter(text) {
                    let before = text[..m.start()].chars().next_back();
                    if !matches!(before, Some('+' | '-' | '.')) || m.as_str().starts_with('(') {
                        spans.push((m.start(), m.end(), PiiKind::Phone));
                    }
                }
            }
        }
        if on(PiiKind::Ip) && (text.contains("::") || text.matches(':').nth(2).is_some()) {
            for m in IPV6.find_iter(text) {
                let s = m.as_str();
                // Code is full of `A::B::C` and `Encode::Guess`: an address stands alone (no
                // letter, digit or `_` touching it) and holds a decimal digit.
                let word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
                let alone = !word(text[..m.start()].chars().next_back())
                    && !word(text[m.end()..].chars().next());
                if s.len() >= 3
                    && alone
                    && s.contains(|c: char| c.is_ascii_digit())
                    && s.parse::<Ipv6Addr>().is_ok()
                {
                    spans.push((m.start(), m.end(), PiiKind::Ip));
                }
            }
        }
        // Earliest first; at the same start the longest wins; overlaps dropped.
        spans.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
        let mut out: Vec<(usize, usize, PiiKind)> = Vec::with_capacity(spans.len());
        for s in spans {
            if out.last().is_none_or(|l| s.0 >= l.1) {
                out.push(s);
            }
        }
        out
    }

    /// Redacts `text`: the new text (None when unchanged) and the number of redactions.
    pub fn redact(&self, text: &str) -> (Option<String>, u32) {
        let spans = self.find(text);
        if spans.is_empty() {
            return (None, 0);
        }
        let mut out = String::with_capacity(text.len());
        let mut at = 0;
        for (s, e, k) in &spans {
            out.push_str(&text[at..*s]);
            out.push_str(self.token(*k));
            at = *e;
        }
        out.push_str(&text[at..]);
        (Some(out), spans.len() as u32)
    }
}

impl DocKernel for Pii {
    type Scratch = ();
    fn signals(&self) -> &[&'static str] {
        &[]
    }
    fn rewrites_text(&self) -> bool {
        true
    }
    fn count_column(&self) -> Option<&'static str> {
        Some("pii_redactions")
    }
    fn eval(&self, text: &str, _: &mut (), _: &mut [f64]) -> Outcome {
        let (t, n) = self.redact(text);
        Outcome {
            reason: None,
            text: t,
            count: n,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luhn_table() {
        for (n, ok) in [
            ("4111111111111111", true),
            ("4111 1111 1111 1112", false),
            ("5500-0000-0000-0004", true),
            ("378282246310005", true),
            ("6011111111111117", true),
            ("79927398713", true),
            ("79927398710", false),
        ] {
            assert_eq!(luhn_valid(n), ok, "{n}");
        }
    }

    #[test]
    fn iban_table() {
        for (n, ok) in [
            ("GB82 WEST 1234 5698 7654 32", true),
            ("DE89370400440532013000", true),
            ("FR1420041010050500013M02606", true),
            ("NL91ABNA0417164300", true),
            ("GB82 WEST 1234 5698 7654 33", false),
            ("DE8937040044053201300", false),
            ("XX89370400440532013000", false),
        ] {
            assert_eq!(iban_valid(n), ok, "{n}");
        }
    }

    fn redact(t: &str) -> String {
        Pii::new(PiiConfig::default())
            .redact(t)
            .0
            .unwrap_or_else(|| t.to_string())
    }

    #[test]
    fn redacts_and_leaves_lookalikes() {
        let cases = [
            ("Mail jane.doe@example.org today.", "Mail <EMAIL> today."),
            ("Call +44 20 7946 0958 now", "Call <PHONE> now"),
            ("Call +1 (555) 123-4567.", "Call <PHONE>."),
            (
                "Ring +49 30 12345678 or +33 1 23 45 67 89.",
                "Ring <PHONE> or <PHONE>.",
            ),
            ("Tel. +81-3-1234-5678", "Tel. <PHONE>"),
            // Indian mobile numbers group 5 + 5 digits.
            ("Mobile +91 98765 43210.", "Mobile <PHONE>."),
            ("US line (555) 123-4567 here", "US line <PHONE> here"),
            ("Server 192.168.1.20 is up", "Server <IP_ADDRESS> is up"),
            ("v6 2001:db8::8a2e:370:7334 ok", "v6 <IP_ADDRESS> ok"),
            (
                "Card 4111 1111 1111 1111 expired",
                "Card <CREDIT_CARD> expired",
            ),
            ("IBAN DE89 3704 0044 0532 0130 00.", "IBAN <IBAN>."),
            ("SSN 123-45-6789.", "SSN <SSN>."),
            // national phone formats without a country code
            ("London 020 7946 0958.", "London <PHONE>."),
            ("Manchester 0161 496 0000 ok", "Manchester <PHONE> ok"),
            (
                "Mobile 07700 900123 or 07700 900 123",
                "Mobile <PHONE> or <PHONE>",
            ),
            ("Office (020) 7946 0958", "Office <PHONE>"),
            (
                "Paris 01 23 45 67 89 ou 06.12.34.56.78",
                "Paris <PHONE> ou <PHONE>",
            ),
            // SSNs without dashes need a context word
            ("SSN: 123 45 6789", "SSN: <SSN>"),
            (
                "social security number 123456789",
                "social security number <SSN>",
            ),
            ("SS# 123.45.6789 on file", "SS# <SSN> on file"),
            ("Order 123456789 shipped", "Order 123456789 shipped"),
            ("Ref 123 45 6789 attached", "Ref 123 45 6789 attached"),
            ("SSN 000 12 3456 is invalid", "SSN 000 12 3456 is invalid"),
            (
                "SSN: 123-45-6789, order 482915736",
                "SSN: <SSN>, order 482915736",
            ),
            ("123456789 (SSN) on file", "<SSN> (SSN) on file"),
            ("Toll-free 1-800-555-0199.", "Toll-free <PHONE>."),
            ("Sydney (02) 9876 5432", "Sydney <PHONE>"),
            // round 3: dotted cards, German national numbers, `SS No:`
            (
                "Card 4111.1111.1111.1111 or 3782.822463.10005",
                "Card <CREDIT_CARD> or <CREDIT_CARD>",
            ),
            (
                "Berlin 030 12345678, Munich 089/1234567, Cologne (0221) 1234567",
                "Berlin <PHONE>, Munich <PHONE>, Cologne <PHONE>",
            ),
            ("SS No: 123 45 6789", "SS No: <SSN>"),
            (
                "Version 1.2.3 of 2024.01.15, build 2024.1015.1234",
                "Version 1.2.3 of 2024.01.15, build 2024.1015.1234",
            ),
            (
                "Released 4111.1111.1111.1112",
                "Released 4111.1111.1111.1112",
            ),
            // IPv4-mapped IPv6 is one address, not cut after its first group
            ("peer ::ffff:192.0.2.1 left", "peer <IP_ADDRESS> left"),
            // code and citations that look like addresses and numbers
            (
                "use Encode::Guess; A::B::C and ::Ba",
                "use Encode::Guess; A::B::C and ::Ba",
            ),
            ("DFARS 252.227-7013 applies", "DFARS 252.227-7013 applies"),
            (
                "loopback ::1 and fe80::1%eth0",
                "loopback <IP_ADDRESS> and <IP_ADDRESS>%eth0",
            ),
            ("nat64 64:ff9b::198.51.100.7.", "nat64 <IP_ADDRESS>."),
            // look-alikes stay
            (
                "Version 1.2.3 and v2.10.4.1 released",
                "Version 1.2.3 and v2.10.4.1 released",
            ),
            ("On 2024-01-15 at 12:30:45", "On 2024-01-15 at 12:30:45"),
            (
                "ISBN 978-3-16-148410-0 and 9783161484100",
                "ISBN 978-3-16-148410-0 and 9783161484100",
            ),
            (
                "Order 4111 1111 1111 1112 is not a card",
                "Order 4111 1111 1111 1112 is not a card",
            ),
            (
                "SSN-like 000-12-3456 is invalid",
                "SSN-like 000-12-3456 is invalid",
            ),
            (
                "Address 300.400.500.600 is not IP",
                "Address 300.400.500.600 is not IP",
            ),
            (
                "Call 0123456789 or 02079460958",
                "Call 0123456789 or 02079460958",
            ),
            ("Total 12 345 678 901 units", "Total 12 345 678 901 units"),
        ];
        for (input, want) in cases {
            assert_eq!(redact(input), want, "{input}");
        }
    }
}
