//! PII precision and recall per type on real text with planted PII and look-alikes.
//!
//! Usage: `pii_eval CORPUS.jsonl [N]` — takes N (default 2000) English paragraphs of the
//! corpus in which the detector finds nothing, plants into each (fixed-seed generator) one
//! PII item of a random type and format and one look-alike (version numbers, dates, ISBNs,
//! times, Luhn-failing card numbers, IBANs with a wrong checksum, invalid SSNs, bare
//! nine- and ten-digit numbers, out-of-range dotted quads), redacts, and prints per type:
//! planted, found (recall), redactions and how many were right (precision); recall per
//! format, tuned formats apart from held-out ones; and per look-alike how many were left
//! alone.

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

/// One planted item: its type, the format's name, whether the format is held out (written
/// down before the detector's national-phone, loose-SSN and mapped-IPv6 work and never
/// tuned on), context text put just before it, and the item itself.
struct Planted {
    format: &'static str,
    held_out: bool,
    context: String,
    item: String,
    /// Text right after the item that is not part of it (a port after an address).
    suffix: String,
}

fn p(format: &'static str, held_out: bool, context: &str, item: String) -> Planted {
    Planted {
        format,
        held_out,
        context: context.to_string(),
        item,
        suffix: String::new(),
    }
}

/// A NANP number: area and exchange start with 2-9.
fn nanp(rng: &mut Rng) -> (String, String, String) {
    (
        format!("{}{}", 2 + rng.below(8), rng.digits(2)),
        format!("{}{}", 2 + rng.below(8), rng.digits(2)),
        rng.digits(4),
    )
}

/// A valid SSN's three parts (area not 000, 666 or 9xx; group and serial not zero).
fn ssn(rng: &mut Rng) -> (String, String, String) {
    let mut area = 1 + rng.below(899);
    if area == 666 {
        area = 667;
    }
    (
        format!("{area:03}"),
        format!("{:02}", 1 + rng.below(99)),
        format!("{:04}", 1 + rng.below(9999)),
    )
}

fn plant(kind: PiiKind, rng: &mut Rng) -> Planted {
    use PiiKind::*;
    match kind {
        Email => {
            let user = format!(
                "{}.{}{}",
                rng.pick(&["anna", "jean", "li", "omar", "maria", "k"]),
                rng.pick(&["smith", "dupont", "wang", "haddad", "rossi"]),
                rng.below(100)
            );
            let host = rng.pick(&[
                "example.com",
                "mail.example.org",
                "uni-example.de",
                "example.co.uk",
            ]);
            if rng.below(4) == 0 {
                let item = format!("{user}+news@lists.{host}");
                p("user+tag@sub.domain", true, "", item)
            } else if rng.below(3) == 0 {
                let item = format!("{user}@{}", host.to_uppercase());
                p("user@UPPER.CASE", true, "", item)
            } else {
                p("first.last@domain", false, "", format!("{user}@{host}"))
            }
        }
        Phone => match rng.below(19) {
            0 => {
                let (a, b, c) = nanp(rng);
                p("+1 (NXX) NXX-XXXX", false, "", format!("+1 ({a}) {b}-{c}"))
            }
            1 => {
                let item = format!("+44 20 {} {}", rng.digits(4), rng.digits(4));
                p("+44 20 XXXX XXXX", false, "", item)
            }
            2 => p(
                "+49 30 XXXXXXXX",
                false,
                "",
                format!("+49 30 {}", rng.digits(8)),
            ),
            3 => {
                let d: Vec<String> = (0..4).map(|_| rng.digits(2)).collect();
                let item = format!("+33 1 {}", d.join(" "));
                p("+33 1 XX XX XX XX", false, "", item)
            }
            4 => {
                let item = format!("+81-3-{}-{}", rng.digits(4), rng.digits(4));
                p("+81-3-XXXX-XXXX", false, "", item)
            }
            5 => {
                let item = format!("+91 {} {}", rng.digits(5), rng.digits(5));
                p("+91 XXXXX XXXXX", false, "", item)
            }
            6 => {
                let (a, b, c) = nanp(rng);
                p("US (NXX) NXX-XXXX", false, "", format!("({a}) {b}-{c}"))
            }
            7 => {
                let item = format!("020 {} {}", rng.digits(4), rng.digits(4));
                p("UK 020 XXXX XXXX", false, "", item)
            }
            8 => {
                let item = format!("0161 {} {}", rng.digits(3), rng.digits(4));
                p("UK 0161 XXX XXXX", false, "", item)
            }
            9 => {
                let item = format!("07{} {}", rng.digits(3), rng.digits(6));
                p("UK 07XXX XXXXXX", false, "", item)
            }
            10 => {
                let d: Vec<String> = (0..4).map(|_| rng.digits(2)).collect();
                let item = format!("0{} {}", 1 + rng.below(9), d.join(" "));
                p("FR 0X XX XX XX XX", false, "", item)
            }
            11 => {
                let item = format!("+44 (0)20 {} {}", rng.digits(4), rng.digits(4));
                p("+44 (0)20 XXXX XXXX", true, "", item)
            }
            12 => {
                let item = format!("1-800-{}-{}", rng.digits(3), rng.digits(4));
                p("US 1-800-XXX-XXXX", false, "", item)
            }
            13 => {
                let (a, b, c) = nanp(rng);
                p("US NXX.NXX.XXXX", true, "", format!("{a}.{b}.{c}"))
            }
            14 => {
                let d: Vec<String> = (0..4).map(|_| rng.digits(2)).collect();
                let item = format!("0{}.{}", 1 + rng.below(9), d.join("."));
                p("FR 0X.XX.XX.XX.XX", true, "", item)
            }
            15 => {
                let item = format!("(02) {} {}", rng.digits(4), rng.digits(4));
                p("AU (0X) XXXX XXXX", false, "", item)
            }
            16 => {
                let (a, b, c) = nanp(rng);
                p("+1.NXX.NXX.XXXX", true, "", format!("+1.{a}.{b}.{c}"))
            }
            17 => {
                let item = format!("030 {}", rng.digits(8));
                p("DE 030 XXXXXXXX", true, "", item)
            }
            _ => {
                let (a, b, c) = nanp(rng);
                p("US (NXX)NXX-XXXX", true, "", format!("({a}){b}-{c}"))
            }
        },
        Ip => match rng.below(8) {
            0 => {
                let item = format!("2001:db8:{:x}::{:x}", rng.below(65536), rng.below(65536));
                p("IPv6 compressed", false, "", item)
            }
            1 => {
                let item = format!(
                    "::ffff:{}.{}.{}.{}",
                    1 + rng.below(223),
                    rng.below(256),
                    rng.below(256),
                    1 + rng.below(254)
                );
                p("IPv4-mapped ::ffff:a.b.c.d", false, "", item)
            }
            2 => {
                let item = format!(
                    "::FFFF:{}.{}.{}.{}",
                    1 + rng.below(223),
                    rng.below(256),
                    rng.below(256),
                    1 + rng.below(254)
                );
                p("IPv4-mapped upper case", true, "", item)
            }
            4 => {
                let item = format!("2001:db8::{:x}", 1 + rng.below(65535));
                let mut pl = p("IPv6 [addr]:port", true, "[", item);
                pl.suffix = "]:8080".into();
                pl
            }
            5 => {
                let item = format!("fe80::{:x}", 1 + rng.below(65535));
                let mut pl = p("IPv6 link-local with %zone", true, "", item);
                pl.suffix = "%eth0".into();
                pl
            }
            3 => {
                let g: Vec<String> = (0..8)
                    .map(|_| format!("{:04x}", rng.below(65536)))
                    .collect();
                p("IPv6 full 8 groups", true, "", g.join(":"))
            }
            _ => {
                let item = format!(
                    "{}.{}.{}.{}",
                    1 + rng.below(223),
                    rng.below(256),
                    rng.below(256),
                    1 + rng.below(254)
                );
                p("IPv4", false, "", item)
            }
        },
        CreditCard => {
            let (pre, len) = [
                ("4", 16),
                ("51", 16),
                ("55", 16),
                ("34", 15),
                ("37", 15),
                ("6011", 16),
            ][rng.below(6) as usize];
            let n = luhn_complete(pre, len, rng);
            match rng.below(5) {
                0 => p("card plain", false, "", n),
                4 => p("card 4.4.4.4 dots", true, "", group(&n, &[4, 4, 4, 4], ".")),
                1 => p(
                    "card 4-4-4-4 spaces",
                    false,
                    "",
                    group(&n, &[4, 4, 4, 4], " "),
                ),
                2 => p(
                    "card 4-4-4-4 dashes",
                    false,
                    "",
                    group(&n, &[4, 4, 4, 4], "-"),
                ),
                _ => {
                    let sizes: &[usize] = if len == 15 { &[4, 6, 5] } else { &[4, 4, 4, 4] };
                    p(
                        "card as printed (Amex 4-6-5)",
                        true,
                        "",
                        group(&n, sizes, " "),
                    )
                }
            }
        }
        Iban => match rng.below(6) {
            0 => p("IBAN DE", false, "", iban("DE", &rng.digits(18))),
            1 => {
                let s = iban("GB", &format!("WEST{}", rng.digits(14)));
                p("IBAN GB grouped", false, "", group(&s, &[4; 7], " "))
            }
            2 => p(
                "IBAN NL",
                false,
                "",
                iban("NL", &format!("ABNA{}", rng.digits(10))),
            ),
            3 => {
                let s = iban("FR", &rng.digits(23));
                p("IBAN FR grouped", false, "", group(&s, &[4; 7], " "))
            }
            4 => {
                let s = iban("ES", &rng.digits(20));
                p("IBAN ES grouped", true, "", group(&s, &[4; 6], " "))
            }
            _ => {
                let s = iban("IT", &format!("X{}", rng.digits(22)));
                p("IBAN IT", true, "", s)
            }
        },
        Ssn => {
            let (a, g, s) = ssn(rng);
            match rng.below(7) {
                0 | 1 => p("SSN XXX-XX-XXXX", false, "", format!("{a}-{g}-{s}")),
                6 => p(
                    "SS No: XXX XX XXXX",
                    true,
                    "SS No: ",
                    format!("{a} {g} {s}"),
                ),
                2 => p("SSN: XXX XX XXXX", false, "SSN: ", format!("{a} {g} {s}")),
                3 => p(
                    "social security number XXXXXXXXX",
                    false,
                    "social security number ",
                    format!("{a}{g}{s}"),
                ),
                4 => p(
                    "Social Security No. XXX XX XXXX",
                    true,
                    "Social Security No. ",
                    format!("{a} {g} {s}"),
                ),
                _ => p("SSN#XXXXXXXXX", true, "SSN#", format!("{a}{g}{s}")),
            }
        }
    }
}

/// A look-alike: its name and text.
fn lookalike(rng: &mut Rng) -> (&'static str, String) {
    match rng.below(14) {
        0 => (
            "version number",
            format!(
                "version {}.{}.{}",
                rng.below(10),
                rng.below(30),
                rng.below(100)
            ),
        ),
        1 => (
            "ISO date",
            format!(
                "2{:03}-{:02}-{:02}",
                rng.below(100),
                1 + rng.below(12),
                1 + rng.below(28)
            ),
        ),
        2 => (
            "dotted date",
            format!(
                "{:02}.{:02}.20{:02}",
                1 + rng.below(28),
                1 + rng.below(12),
                rng.below(30)
            ),
        ),
        3 => ("ISBN-13", "ISBN 978-3-16-148410-0".to_string()),
        4 => (
            "clock time",
            format!(
                "{:02}:{:02}:{:02}",
                rng.below(24),
                rng.below(60),
                rng.below(60)
            ),
        ),
        5 => {
            let n = luhn_complete("4", 16, rng);
            let last = n.as_bytes()[15] - b'0';
            (
                "card failing Luhn",
                format!("{}{}", &n[..15], (last + 1) % 10),
            )
        }
        6 => {
            let good = iban("DE", &rng.digits(18));
            let check: u32 = good[2..4].parse().unwrap_or(0);
            (
                "IBAN with a wrong check",
                format!("DE{:02}{}", (check + 1) % 97 + 2, &good[4..]),
            )
        }
        7 => (
            "SSN with area 000",
            format!("000-{:02}-{:04}", 1 + rng.below(99), rng.below(10000)),
        ),
        8 => (
            "order number, 9 digits",
            format!("order {}{}", 1 + rng.below(9), rng.digits(8)),
        ),
        9 => (
            "reference XXX XX XXXX",
            format!("ref {} {} {}", rng.digits(3), rng.digits(2), rng.digits(4)),
        ),
        10 => ("ten digits from 0", format!("code 0{}", rng.digits(9))),
        11 => ("ISBN-10", "ISBN 0-306-40615-2".to_string()),
        12 => (
            "large count with spaces",
            format!(
                "{} {} {} units",
                1 + rng.below(99),
                rng.digits(3),
                rng.digits(3)
            ),
        ),
        _ => (
            "out-of-range dotted quad",
            format!(
                "{}.{}.{}.{}",
                256 + rng.below(700),
                rng.below(256),
                rng.below(256),
                rng.below(256)
            ),
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
    let mut natural: Vec<String> = Vec::new();
    'outer: for line in std::io::BufReader::new(std::fs::File::open(&corpus)?).lines() {
        let v: serde_json::Value = serde_json::from_str(&line?)?;
        if v["lang"] != "en" {
            continue;
        }
        for p in v["text"].as_str().unwrap_or_default().split("\n\n") {
            let p = p.trim();
            if p.len() > 200 && p.len() < 2000 {
                let found = pii.find(p);
                if found.is_empty() {
                    paras.push(p.to_string());
                    if paras.len() >= n {
                        break 'outer;
                    }
                } else {
                    // What the detector finds in the real text itself: printed for a person
                    // to judge (true PII, or a false positive the planted look-alikes miss).
                    for (a, b, k) in found {
                        natural.push(format!("{}: {}", name(k), &p[a..b]));
                    }
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
    // per (type, format, held out): planted, found; per type: redactions, correct
    let mut formats: BTreeMap<(&str, bool, &str), [usize; 2]> = BTreeMap::new();
    let mut stats: BTreeMap<&str, [usize; 4]> = BTreeMap::new();
    let mut looks: BTreeMap<&str, [usize; 2]> = BTreeMap::new();
    for para in &paras {
        let kind = kinds[rng.below(kinds.len() as u64) as usize];
        let pl = plant(kind, &mut rng);
        let (look_name, look) = lookalike(&mut rng);
        let cut = para.find(". ").map_or(para.len(), |i| i + 2);
        let head = format!("{} Contact: {}", &para[..cut], pl.context);
        let text = format!(
            "{head}{}{} today. Note {look} here. {}",
            pl.item,
            pl.suffix,
            &para[cut..]
        );
        let s = head.len();
        let e = s + pl.item.len();
        let ls = text[e..].find(&look).map_or(0, |i| e + i);
        let le = ls + look.len();
        let spans = pii.find(&text);
        let st = stats.entry(name(kind)).or_default();
        st[0] += 1;
        let found = spans
            .iter()
            .any(|(a, b, k)| *a <= s && *b >= e && *k == kind);
        if found {
            st[1] += 1;
        }
        let f = formats
            .entry((name(kind), pl.held_out, pl.format))
            .or_default();
        f[0] += 1;
        f[1] += usize::from(found);
        let l = looks.entry(look_name).or_default();
        l[0] += 1;
        if spans.iter().any(|(a, b, _)| *a < le && *b > ls) {
            l[1] += 1;
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
    for held_out in [false, true] {
        let (mut planted, mut found) = (0, 0);
        println!(
            "\n{} formats:\n\n| type | format | planted | recall |\n|---|---|---:|---:|",
            if held_out { "Held-out" } else { "Tuned" }
        );
        for ((k, h, f), [n, hit]) in &formats {
            if *h == held_out {
                planted += n;
                found += hit;
                let r = 100.0 * *hit as f64 / (*n).max(1) as f64;
                println!("| {k} | {f} | {n} | {r:.1}% |");
            }
        }
        let r = 100.0 * found as f64 / planted.max(1) as f64;
        println!("| all | | {planted} | {r:.1}% |");
    }
    println!("\n| look-alike | planted | left alone |\n|---|---:|---:|");
    let (mut n_all, mut hit_all) = (0, 0);
    for (k, [n, hit]) in &looks {
        n_all += n;
        hit_all += hit;
        println!("| {k} | {n} | {} |", n - hit);
    }
    println!(
        "\n{} redactions in the corpus's own paragraphs (skipped above), every one listed:",
        natural.len()
    );
    for d in &natural {
        println!("  {d}");
    }
    println!(
        "\nlook-alikes left alone: {}/{n_all} ({:.1}%)",
        n_all - hit_all,
        100.0 * (n_all - hit_all) as f64 / n_all.max(1) as f64
    );
    Ok(())
}
