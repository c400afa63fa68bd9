//! PII redaction: e-mail addresses, phone numbers (international and North American
//! formats), IPv4 and IPv6 addresses, payment card numbers (Luhn-checked), IBANs (mod-97
//! checked) and US social security numbers, each replaced by a configurable token; a
//! `pii_redactions` count column.
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
static IPV6: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)[0-9a-f]{0,4}(?::[0-9a-f]{0,4}){2,7}(?:(?:\d{1,3}\.){3}\d{1,3})?")
        .expect("ipv6 regex")
});
static CARD: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\b\d(?:[ \-]?\d){12,18}\b").expect("card regex"));
static IBAN: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b").expect("iban regex"));
static SSN: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\b\d{3}-\d{2}-\d{4}\b").expect("ssn regex"));
static PHONE_INTL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\+\d{1,3}(?:[ .\-]?\(?\d{1,4}\)?){1,2}(?:[ .\-]?\d{2,5}){1,4}")
        .expect("phone regex")
});
static PHONE_NANP: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?:\(\d{3}\) ?|\b\d{3}[.\-])\d{3}[.\-]\d{4}\b").expect("nanp regex")
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
                if s.len() >= 3
                    && s.parse::<Ipv6Addr>().is_ok()
                    && s.contains(|c: char| c.is_ascii_hexdigit())
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
        ];
        for (input, want) in cases {
            assert_eq!(redact(input), want, "{input}");
        }
    }
}
