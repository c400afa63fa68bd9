//! PII precision and recall per type on real text with planted PII and look-alikes.
//!
//! Usage: `pii_eval CORPUS.jsonl [N]` — takes N (default 2000) English paragraphs of the
//! corpus in which the detector finds nothing, plants into each (fixed-seed generator) one
//! PII item of a random type and format and one look-alike (version numbers, dates, ISBNs,
//! times, Luhn-failing card numbers, IBANs with a wrong checksum, invalid SSNs, bare
//! nine- and ten-digit numbers, out-of-range dotted quads, UUIDs, MAC addresses, ZIP+4
//! codes, part numbers, coordinates), redacts, and prints per type: planted, found (recall),
//! redactions and how many were right (precision); recall per format, tuned formats apart
//! from each round's held-out ones; and per look-alike how many were left alone.

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

/// Which set a format belongs to. `Tuned`: the detector was built or fixed for it.
/// `HeldOut2`: written down before the second round (national phones, loose SSNs, mapped
/// IPv6) and never fixed after being measured; the three it missed (dotted cards, German
/// national numbers, `SS No:`) were fixed in the third round and count as tuned since. `HeldOut3`: written down before the third
/// round (dotted cards, German national numbers, `SS No:`), measured before any change of
/// that round, and never tuned on.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Set {
    Tuned,
    HeldOut2,
    HeldOut3,
}

impl Set {
    fn label(self) -> &'static str {
        match self {
            Set::Tuned => "Tuned",
            Set::HeldOut2 => "Held-out (round 2)",
            Set::HeldOut3 => "Held-out (round 3)",
        }
    }
}

/// One planted item: its type, the format's name, its [`Set`], context text put just before
/// it, and the item itself.
struct Planted {
    format: &'static str,
    set: Set,
    context: String,
    item: String,
    /// Text right after the item that is not part of it (a port after an address).
    suffix: String,
}

fn p(format: &'static str, set: Set, context: &str, item: String) -> Planted {
    Planted {
        format,
        set,
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

/// A routable-looking IPv4 address (first octet 1-223, last 1-254).
fn ipv4(rng: &mut Rng) -> String {
    format!(
        "{}.{}.{}.{}",
        1 + rng.below(223),
        rng.below(256),
        rng.below(256),
        1 + rng.below(254)
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
    use Set::*;
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
            if rng.below(5) == 0 {
                let first = rng.pick(&["anna", "jean", "li", "omar"]);
                let last = rng.pick(&["smith", "dupont", "wang", "rossi"]);
                match rng.below(3) {
                    0 => {
                        let item = format!("{first}_{last}@{host}");
                        p("first_last@domain", HeldOut3, "", item)
                    }
                    1 => {
                        let item = format!("{first}-{}@my-host.example.net", rng.digits(2));
                        p("name-NN@hyphen-host.example.net", HeldOut3, "", item)
                    }
                    _ => {
                        let item = format!("{first}.{last}@{host}");
                        p("mailto:first.last@domain", HeldOut3, "mailto:", item)
                    }
                }
            } else if rng.below(4) == 0 {
                let item = format!("{user}+news@lists.{host}");
                p("user+tag@sub.domain", HeldOut2, "", item)
            } else if rng.below(3) == 0 {
                let item = format!("{user}@{}", host.to_uppercase());
                p("user@UPPER.CASE", HeldOut2, "", item)
            } else {
                p("first.last@domain", Tuned, "", format!("{user}@{host}"))
            }
        }
        Phone => match rng.below(25) {
            0 => {
                let (a, b, c) = nanp(rng);
                p("+1 (NXX) NXX-XXXX", Tuned, "", format!("+1 ({a}) {b}-{c}"))
            }
            1 => {
                let item = format!("+44 20 {} {}", rng.digits(4), rng.digits(4));
                p("+44 20 XXXX XXXX", Tuned, "", item)
            }
            2 => p(
                "+49 30 XXXXXXXX",
                Tuned,
                "",
                format!("+49 30 {}", rng.digits(8)),
            ),
            3 => {
                let d: Vec<String> = (0..4).map(|_| rng.digits(2)).collect();
                let item = format!("+33 1 {}", d.join(" "));
                p("+33 1 XX XX XX XX", Tuned, "", item)
            }
            4 => {
                let item = format!("+81-3-{}-{}", rng.digits(4), rng.digits(4));
                p("+81-3-XXXX-XXXX", Tuned, "", item)
            }
            5 => {
                let item = format!("+91 {} {}", rng.digits(5), rng.digits(5));
                p("+91 XXXXX XXXXX", Tuned, "", item)
            }
            6 => {
                let (a, b, c) = nanp(rng);
                p("US (NXX) NXX-XXXX", Tuned, "", format!("({a}) {b}-{c}"))
            }
            7 => {
                let item = format!("020 {} {}", rng.digits(4), rng.digits(4));
                p("UK 020 XXXX XXXX", Tuned, "", item)
            }
            8 => {
                let item = format!("0161 {} {}", rng.digits(3), rng.digits(4));
                p("UK 0161 XXX XXXX", Tuned, "", item)
            }
            9 => {
                let item = format!("07{} {}", rng.digits(3), rng.digits(6));
                p("UK 07XXX XXXXXX", Tuned, "", item)
            }
            10 => {
                let d: Vec<String> = (0..4).map(|_| rng.digits(2)).collect();
                let item = format!("0{} {}", 1 + rng.below(9), d.join(" "));
                p("FR 0X XX XX XX XX", Tuned, "", item)
            }
            11 => {
                let item = format!("+44 (0)20 {} {}", rng.digits(4), rng.digits(4));
                p("+44 (0)20 XXXX XXXX", HeldOut2, "", item)
            }
            12 => {
                let item = format!("1-800-{}-{}", rng.digits(3), rng.digits(4));
                p("US 1-800-XXX-XXXX", Tuned, "", item)
            }
            13 => {
                let (a, b, c) = nanp(rng);
                p("US NXX.NXX.XXXX", HeldOut2, "", format!("{a}.{b}.{c}"))
            }
            14 => {
                let d: Vec<String> = (0..4).map(|_| rng.digits(2)).collect();
                let item = format!("0{}.{}", 1 + rng.below(9), d.join("."));
                p("FR 0X.XX.XX.XX.XX", HeldOut2, "", item)
            }
            15 => {
                let item = format!("(02) {} {}", rng.digits(4), rng.digits(4));
                p("AU (0X) XXXX XXXX", Tuned, "", item)
            }
            16 => {
                let (a, b, c) = nanp(rng);
                p("+1.NXX.NXX.XXXX", HeldOut2, "", format!("+1.{a}.{b}.{c}"))
            }
            19 => {
                let (a, b, c) = nanp(rng);
                p("US NXX-NXX-XXXX", HeldOut3, "", format!("{a}-{b}-{c}"))
            }
            20 => {
                let item = format!(
                    "+34 6{} {} {} {}",
                    rng.digits(2),
                    rng.digits(2),
                    rng.digits(2),
                    rng.digits(2)
                );
                p("ES +34 6XX XX XX XX", HeldOut3, "", item)
            }
            21 => {
                let item = format!("+39 06 {} {}", rng.digits(4), rng.digits(4));
                p("IT +39 06 XXXX XXXX", HeldOut3, "", item)
            }
            22 => {
                let item = format!("020-{} {}", rng.digits(3), rng.digits(4));
                p("NL 020-XXX XXXX", HeldOut3, "", item)
            }
            23 => {
                let item = format!("+49 (0)30 {}", rng.digits(8));
                p("+49 (0)30 XXXXXXXX", HeldOut3, "", item)
            }
            18 => {
                let (a, b, c) = nanp(rng);
                p(
                    "E.164 tel:+1NXXNXXXXXX",
                    HeldOut3,
                    "tel:",
                    format!("+1{a}{b}{c}"),
                )
            }
            17 => {
                let item = format!("030 {}", rng.digits(8));
                p("DE 030 XXXXXXXX", Tuned, "", item)
            }
            _ => {
                let (a, b, c) = nanp(rng);
                p("US (NXX)NXX-XXXX", HeldOut2, "", format!("({a}){b}-{c}"))
            }
        },
        Ip => match rng.below(11) {
            8 => {
                let item = ipv4(rng);
                let mut pl = p("IPv4 a.b.c.d:port", HeldOut3, "", item);
                pl.suffix = ":8443".into();
                pl
            }
            9 => {
                let item = format!("10.{}.{}.0", rng.below(256), rng.below(256));
                let mut pl = p("IPv4 CIDR a.b.c.0/24", HeldOut3, "", item);
                pl.suffix = "/24".into();
                pl
            }
            10 => {
                let item = format!(
                    "2001:DB8:{:X}::{:X}",
                    rng.below(65536),
                    1 + rng.below(65535)
                );
                p("IPv6 upper-case compressed", HeldOut3, "", item)
            }
            0 => {
                let item = format!("2001:db8:{:x}::{:x}", rng.below(65536), rng.below(65536));
                p("IPv6 compressed", Tuned, "", item)
            }
            1 => {
                let item = format!("::ffff:{}", ipv4(rng));
                p("IPv4-mapped ::ffff:a.b.c.d", Tuned, "", item)
            }
            2 => {
                let item = format!("::FFFF:{}", ipv4(rng));
                p("IPv4-mapped upper case", HeldOut2, "", item)
            }
            4 => {
                let item = format!("2001:db8::{:x}", 1 + rng.below(65535));
                let mut pl = p("IPv6 [addr]:port", HeldOut2, "[", item);
                pl.suffix = "]:8080".into();
                pl
            }
            5 => {
                let item = format!("fe80::{:x}", 1 + rng.below(65535));
                let mut pl = p("IPv6 link-local with %zone", HeldOut2, "", item);
                pl.suffix = "%eth0".into();
                pl
            }
            3 => {
                let g: Vec<String> = (0..8)
                    .map(|_| format!("{:04x}", rng.below(65536)))
                    .collect();
                p("IPv6 full 8 groups", HeldOut2, "", g.join(":"))
            }
            _ => {
                let item = ipv4(rng);
                p("IPv4", Tuned, "", item)
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
            if rng.below(6) == 0 {
                return match rng.below(3) {
                    0 => {
                        let pre = format!("22{}", 21 + rng.below(50));
                        p(
                            "card Mastercard 2-series plain",
                            HeldOut3,
                            "",
                            luhn_complete(&pre, 16, rng),
                        )
                    }
                    1 => {
                        // JCB is 3528-3589 (the first run drew any `35..`, and 4 of 18 were no card).
                        let pre = format!("35{}", 28 + rng.below(62));
                        let n = luhn_complete(&pre, 16, rng);
                        p(
                            "card JCB 4-4-4-4 spaces",
                            HeldOut3,
                            "",
                            group(&n, &[4, 4, 4, 4], " "),
                        )
                    }
                    _ => {
                        let n = luhn_complete("36", 14, rng);
                        p(
                            "card Diners 4-6-4",
                            HeldOut3,
                            "",
                            group(&n, &[4, 6, 4], " "),
                        )
                    }
                };
            }
            let n = luhn_complete(pre, len, rng);
            match rng.below(5) {
                0 => p("card plain", Tuned, "", n),
                4 => p(
                    "card 4.4.4.4 dots",
                    Tuned,
                    "",
                    group(&n, &[4, 4, 4, 4], "."),
                ),
                1 => p(
                    "card 4-4-4-4 spaces",
                    Tuned,
                    "",
                    group(&n, &[4, 4, 4, 4], " "),
                ),
                2 => p(
                    "card 4-4-4-4 dashes",
                    Tuned,
                    "",
                    group(&n, &[4, 4, 4, 4], "-"),
                ),
                _ => {
                    let sizes: &[usize] = if len == 15 { &[4, 6, 5] } else { &[4, 4, 4, 4] };
                    p(
                        "card as printed (Amex 4-6-5)",
                        HeldOut2,
                        "",
                        group(&n, sizes, " "),
                    )
                }
            }
        }
        Iban => match rng.below(9) {
            6 => {
                let s = iban("BE", &rng.digits(12));
                p("IBAN BE grouped", HeldOut3, "", group(&s, &[4; 4], " "))
            }
            7 => {
                let s = iban("CH", &rng.digits(17));
                p(
                    "IBAN CH grouped",
                    HeldOut3,
                    "",
                    group(&s, &[4, 4, 4, 4, 4, 1], " "),
                )
            }
            8 => {
                let s = iban("PL", &rng.digits(24));
                p("IBAN:PL no space after the colon", HeldOut3, "IBAN:", s)
            }
            0 => p("IBAN DE", Tuned, "", iban("DE", &rng.digits(18))),
            1 => {
                let s = iban("GB", &format!("WEST{}", rng.digits(14)));
                p("IBAN GB grouped", Tuned, "", group(&s, &[4; 7], " "))
            }
            2 => p(
                "IBAN NL",
                Tuned,
                "",
                iban("NL", &format!("ABNA{}", rng.digits(10))),
            ),
            3 => {
                let s = iban("FR", &rng.digits(23));
                p("IBAN FR grouped", Tuned, "", group(&s, &[4; 7], " "))
            }
            4 => {
                let s = iban("ES", &rng.digits(20));
                p("IBAN ES grouped", HeldOut2, "", group(&s, &[4; 6], " "))
            }
            _ => {
                let s = iban("IT", &format!("X{}", rng.digits(22)));
                p("IBAN IT", HeldOut2, "", s)
            }
        },
        Ssn => {
            let (a, g, s) = ssn(rng);
            match rng.below(10) {
                7 => p("SSN:XXXXXXXXX", HeldOut3, "SSN:", format!("{a}{g}{s}")),
                8 => p(
                    "S.S.N. XXX XX XXXX",
                    HeldOut3,
                    "S.S.N. ",
                    format!("{a} {g} {s}"),
                ),
                9 => p(
                    "Soc. Sec. No. XXX XX XXXX",
                    HeldOut3,
                    "Soc. Sec. No. ",
                    format!("{a} {g} {s}"),
                ),
                0 | 1 => p("SSN XXX-XX-XXXX", Tuned, "", format!("{a}-{g}-{s}")),
                6 => p(
                    "SS No: XXX XX XXXX",
                    Tuned,
                    "SS No: ",
                    format!("{a} {g} {s}"),
                ),
                2 => p("SSN: XXX XX XXXX", Tuned, "SSN: ", format!("{a} {g} {s}")),
                3 => p(
                    "social security number XXXXXXXXX",
                    Tuned,
                    "social security number ",
                    format!("{a}{g}{s}"),
                ),
                4 => p(
                    "Social Security No. XXX XX XXXX",
                    HeldOut2,
                    "Social Security No. ",
                    format!("{a} {g} {s}"),
                ),
                _ => p("SSN#XXXXXXXXX", HeldOut2, "SSN#", format!("{a}{g}{s}")),
            }
        }
    }
}

/// A look-alike: its name and text.
fn lookalike(rng: &mut Rng) -> (&'static str, String) {
    match rng.below(19) {
        14 => {
            let h = |rng: &mut Rng, n: usize| -> String {
                (0..n).map(|_| format!("{:x}", rng.below(16))).collect()
            };
            let u = format!(
                "{}-{}-4{}-a{}-{}",
                h(rng, 8),
                h(rng, 4),
                h(rng, 3),
                h(rng, 3),
                h(rng, 12)
            );
            ("UUID", format!("id {u}"))
        }
        15 => {
            let m: Vec<String> = (0..6).map(|_| format!("{:02x}", rng.below(256))).collect();
            ("MAC address", format!("MAC {}", m.join(":")))
        }
        16 => (
            "US ZIP+4",
            format!("CA {}{}-{}", 9, rng.digits(4), rng.digits(4)),
        ),
        17 => (
            "part number NNN-NNNN-NN",
            format!("part {}-{}-{}", rng.digits(3), rng.digits(4), rng.digits(2)),
        ),
        18 => (
            "coordinates",
            format!(
                "at {}.{}, {}.{}",
                10 + rng.below(70),
                rng.digits(4),
                rng.below(10),
                rng.digits(4)
            ),
        ),
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
    let mut formats: BTreeMap<(&str, Set, &str), [usize; 2]> = BTreeMap::new();
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
        let f = formats.entry((name(kind), pl.set, pl.format)).or_default();
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
    for set in [Set::Tuned, Set::HeldOut2, Set::HeldOut3] {
        let (mut planted, mut found) = (0, 0);
        println!(
            "\n{} formats:\n\n| type | format | planted | recall |\n|---|---|---:|---:|",
            set.label()
        );
        for ((k, h, f), [n, hit]) in &formats {
            if *h == set {
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
