//! PII precision and recall per type on real text with planted PII and look-alikes.
//!
//! Usage: `pii_eval CORPUS.jsonl [N]` — takes N (default 2000) English paragraphs of the
//! corpus in which the detector finds nothing, plants into each (fixed-seed generator) one
//! PII item of a random type and one look-alike (version numbers, dates, ISBNs, times,
//! Luhn-failing card numbers, IBANs with a wrong checksum, invalid SSNs, out-of-range
//! dotted quads), redacts, and prints per type: planted, found (recall), redactions and
//! how many were right (precision), and how many look-alikes were left alone.

use std::collections::BTreeMap;
use std::io::BufRead;

use quern_filters::pii::{luhn_valid, Pii, PiiConfig, PiiKind};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn digits(&mut self, n: usize) -> String {
        (0..n)
            .map(|_| char::from(b'0' + self.below(10) as u8))
            .collect()
    }
    fn pick<'a>(&mut self, v: &[&'a str]) -> &'a str {
        v[self.below(v.len() as u64) as usize]
    }
}

fn luhn_complete(prefix: &str, len: usize, rng: &mut Rng) -> String {
    let mut s = format!("{prefix}{}", rng.digits(len - prefix.len() - 1));
    for d in 0..10 {
        let cand = format!("{s}{d}");
        if luhn_valid(&cand) {
            s = cand;
            break;
        }
    }
    s
}

fn group(s: &str, sizes: &[usize], sep: &str) -> String {
    let mut out = Vec::new();
    let mut at = 0;
    for &n in sizes {
        if at >= s.len() {
            break;
        }
        let e = (at + n).min(s.len());
        out.push(&s[at..e]);
        at = e;
    }
    if at < s.len() {
        out.push(&s[at..]);
    }
    out.join(sep)
}

fn iban(cc: &str, bban: &str) -> String {
    let rearranged = format!("{bban}{cc}00");
    let mut rem: u64 = 0;
    for c in rearranged.chars() {
        let v = c.to_digit(36).unwrap_or(0) as u64;
        rem = if v >= 10 {
            (rem * 100 + v) % 97
        } else {
            (rem * 10 + v) % 97
        };
    }
    format!("{cc}{:02}{bban}", 98 - rem)
}

fn plant(kind: PiiKind, rng: &mut Rng) -> String {
    match kind {
        PiiKind::Email => format!(
            "{}.{}{}@{}",
            rng.pick(&["anna", "jean", "li", "omar", "maria", "k"]),
            rng.pick(&["smith", "dupont", "wang", "haddad", "rossi"]),
            rng.below(100),
            rng.pick(&[
                "example.com",
                "mail.example.org",
                "uni-example.de",
                "example.co.uk"
            ])
        ),
        PiiKind::Phone => match rng.below(7) {
            0 => format!("+1 ({}) {}-{}", rng.digits(3), rng.digits(3), rng.digits(4)),
            1 => format!("+44 20 {} {}", rng.digits(4), rng.digits(4)),
            2 => format!("+49 30 {}", rng.digits(8)),
            3 => format!(
                "+33 1 {} {} {} {}",
                rng.digits(2),
                rng.digits(2),
                rng.digits(2),
                rng.digits(2)
            ),
            4 => format!("+81-3-{}-{}", rng.digits(4), rng.digits(4)),
            5 => format!("+91 {} {}", rng.digits(5), rng.digits(5)),
            _ => format!(
                "({}) {}-{}",
                200 + rng.below(700),
                rng.digits(3),
                rng.digits(4)
            ),
        },
        PiiKind::Ip => {
            if rng.below(3) == 0 {
                format!("2001:db8:{:x}::{:x}", rng.below(65536), rng.below(65536))
            } else {
                format!(
                    "{}.{}.{}.{}",
                    1 + rng.below(223),
                    rng.below(256),
                    rng.below(256),
                    1 + rng.below(254)
                )
            }
        }
        PiiKind::CreditCard => {
            let (p, len) = [
                ("4", 16),
                ("51", 16),
                ("55", 16),
                ("34", 15),
                ("37", 15),
                ("6011", 16),
            ][rng.below(6) as usize];
            let n = luhn_complete(p, len, rng);
            match rng.below(3) {
                0 => n,
                1 => group(&n, &[4, 4, 4, 4], " "),
                _ => group(&n, &[4, 4, 4, 4], "-"),
            }
        }
        PiiKind::Iban => {
            let s = match rng.below(4) {
                0 => iban("DE", &rng.digits(18)),
                1 => iban("GB", &format!("WEST{}", rng.digits(14))),
                2 => iban("NL", &format!("ABNA{}", rng.digits(10))),
                _ => iban("FR", &rng.digits(23)),
            };
            if rng.below(2) == 0 {
                group(&s, &[4, 4, 4, 4, 4, 4, 4], " ")
            } else {
                s
            }
        }
        PiiKind::Ssn => format!(
            "{:03}-{:02}-{:04}",
            1 + rng.below(665),
            1 + rng.below(99),
            1 + rng.below(9999)
        ),
    }
}

fn lookalike(rng: &mut Rng) -> String {
    match rng.below(9) {
        0 => format!(
            "version {}.{}.{}",
            rng.below(10),
            rng.below(30),
            rng.below(100)
        ),
        1 => format!(
            "2{:03}-{:02}-{:02}",
            rng.below(100),
            1 + rng.below(12),
            1 + rng.below(28)
        ),
        2 => format!(
            "{:02}.{:02}.20{:02}",
            1 + rng.below(28),
            1 + rng.below(12),
            rng.below(30)
        ),
        3 => "ISBN 978-3-16-148410-0".to_string(),
        4 => format!(
            "{:02}:{:02}:{:02}",
            rng.below(24),
            rng.below(60),
            rng.below(60)
        ),
        5 => {
            let n = luhn_complete("4", 16, rng);
            let last = n.as_bytes()[15] - b'0';
            format!("{}{}", &n[..15], (last + 1) % 10)
        }
        6 => {
            let good = iban("DE", &rng.digits(18));
            let check: u32 = good[2..4].parse().unwrap_or(0);
            format!("DE{:02}{}", (check + 1) % 97 + 2, &good[4..])
        }
        7 => format!("000-{:02}-{:04}", 1 + rng.below(99), rng.below(10000)),
        _ => format!(
            "{}.{}.{}.{}",
            256 + rng.below(700),
            rng.below(256),
            rng.below(256),
            rng.below(256)
        ),
    }
}

fn name(k: PiiKind) -> &'static str {
    match k {
        PiiKind::Email => "email",
        PiiKind::Phone => "phone",
        PiiKind::Ip => "ip",
        PiiKind::CreditCard => "credit_card",
        PiiKind::Iban => "iban",
        PiiKind::Ssn => "ssn",
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let corpus = std::env::args()
        .nth(1)
        .ok_or("usage: pii_eval CORPUS.jsonl [N]")?;
    let n: usize = std::env::args().nth(2).map_or(Ok(2000), |s| s.parse())?;
    let pii = Pii::new(PiiConfig::default());
    let mut paras = Vec::new();
    'outer: for line in std::io::BufReader::new(std::fs::File::open(&corpus)?).lines() {
        let v: serde_json::Value = serde_json::from_str(&line?)?;
        if v["lang"] != "en" {
            continue;
        }
        for p in v["text"].as_str().unwrap_or_default().split("\n\n") {
            let p = p.trim();
            if p.len() > 200 && p.len() < 2000 && pii.find(p).is_empty() {
                paras.push(p.to_string());
                if paras.len() >= n {
                    break 'outer;
                }
            }
        }
    }
    let kinds = [
        PiiKind::Email,
        PiiKind::Phone,
        PiiKind::Ip,
        PiiKind::CreditCard,
        PiiKind::Iban,
        PiiKind::Ssn,
    ];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    // per kind: planted, found, redactions, correct redactions
    let mut stats: BTreeMap<&str, [usize; 4]> = BTreeMap::new();
    let (mut looks, mut looks_hit) = (0usize, 0usize);
    for p in &paras {
        let kind = kinds[rng.below(kinds.len() as u64) as usize];
        let item = plant(kind, &mut rng);
        let look = lookalike(&mut rng);
        let cut = p.find(". ").map_or(p.len(), |i| i + 2);
        let text = format!(
            "{} Contact: {item} today. Note {look} here. {}",
            &p[..cut],
            &p[cut..]
        );
        let s = text.find(&item).unwrap_or(0);
        let e = s + item.len();
        let ls = text.find(&look).unwrap_or(0);
        let le = ls + look.len();
        let spans = pii.find(&text);
        stats.entry(name(kind)).or_default()[0] += 1;
        if spans
            .iter()
            .any(|(a, b, k)| *a <= s && *b >= e && *k == kind)
        {
            stats.entry(name(kind)).or_default()[1] += 1;
        }
        looks += 1;
        if spans.iter().any(|(a, b, _)| *a < le && *b > ls) {
            looks_hit += 1;
        }
        for (a, b, k) in &spans {
            let st = stats.entry(name(*k)).or_default();
            st[2] += 1;
            if *k == kind && *a <= s && *b >= e && *a >= s.saturating_sub(1) && *b <= e + 1 {
                st[3] += 1;
            }
        }
    }
    println!(
        "{} paragraphs of real English text, one planted item and one look-alike each\n",
        paras.len()
    );
    println!("| type | planted | recall | redactions | precision |");
    println!("|---|---:|---:|---:|---:|");
    for (k, [planted, found, red, right]) in &stats {
        println!(
            "| {k} | {planted} | {:.1}% | {red} | {:.1}% |",
            100.0 * *found as f64 / (*planted).max(1) as f64,
            100.0 * *right as f64 / (*red).max(1) as f64
        );
    }
    println!(
        "\nlook-alikes left alone: {}/{looks} ({:.1}%)",
        looks - looks_hit,
        100.0 * (looks - looks_hit) as f64 / looks.max(1) as f64
    );
    Ok(())
}
