//! Personal data: e-mail addresses, IP addresses and phone numbers, each replaced by a
//! placeholder (`<PII:email>`, `<PII:ip_address>`, `<PII:phone>`), chosen per kind.
//!
//! As datatrove's PII formatter: only public IPv4 addresses are personal (a private,
//! loopback or reserved one is configuration, and leaving it keeps configs readable).
//! Phone numbers are off by default: a digit pattern loose enough to catch the world's
//! formats also catches ids, dates and numbers in code.

use std::net::Ipv4Addr;
use std::sync::OnceLock;

use super::rules::{Counts, Rule};

/// A kind of personal data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Pii {
    Email,
    Ip,
    Phone,
}

impl Pii {
    pub const ALL: [Pii; 3] = [Pii::Email, Pii::Ip, Pii::Phone];
    /// What `--redact` redacts when not told.
    pub const DEFAULT: [Pii; 2] = [Pii::Email, Pii::Ip];

    pub fn name(self) -> &'static str {
        match self {
            Pii::Email => "email",
            Pii::Ip => "ip",
            Pii::Phone => "phone",
        }
    }

    pub fn parse(name: &str) -> Option<Pii> {
        Pii::ALL.into_iter().find(|p| p.name() == name)
    }

    fn rules(self) -> &'static [Rule] {
        static EMAIL: OnceLock<Vec<Rule>> = OnceLock::new();
        static IP: OnceLock<Vec<Rule>> = OnceLock::new();
        static PHONE: OnceLock<Vec<Rule>> = OnceLock::new();
        match self {
            Pii::Email => EMAIL.get_or_init(|| {
                vec![Rule::new(
                    "pii:email",
                    "<PII:email>",
                    r"(?-u:\b)[A-Za-z0-9][A-Za-z0-9._%+\-]*@[A-Za-z0-9][A-Za-z0-9\-]*(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}(?-u:\b)",
                    None,
                )]
            }),
            Pii::Ip => IP.get_or_init(|| {
                vec![
                    Rule::new(
                        "pii:ip_address",
                        "<PII:ip_address>",
                        r"(?-u:\b)(?:(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])(?-u:\b)",
                        Some(public_ipv4),
                    ),
                    Rule::new(
                        "pii:ip_address",
                        "<PII:ip_address>",
                        r"(?-u:\b)(?:[0-9A-Fa-f]{1,4}:){7}[0-9A-Fa-f]{1,4}(?-u:\b)",
                        None,
                    ),
                ]
            }),
            Pii::Phone => PHONE.get_or_init(|| {
                vec![Rule::new(
                    "pii:phone",
                    "<PII:phone>",
                    r"(?:\+[1-9][0-9]{0,2}[ .\-]?)?\(?[0-9]{2,4}\)?[ .\-][0-9]{3,4}[ .\-][0-9]{3,4}(?-u:\b)",
                    Some(a_phone_number),
                )]
            }),
        }
    }
}

/// Replaces the personal data of the `kinds` asked for in `text`, counting each.
pub fn redact(kinds: &[Pii], text: &str, counts: &mut Counts) -> Option<String> {
    let mut current: Option<String> = None;
    for kind in kinds {
        let input = current.as_deref().unwrap_or(text);
        if let Some(out) = super::rules::apply(kind.rules(), input, counts) {
            current = Some(out);
        }
    }
    current
}

/// A public IPv4 address standing on its own: not part of a longer dotted number (an OID,
/// a version `1.2.3.4.5`), not named a version (`v1.2.3.4`, `version 2.14.1.3`), nor
/// private, loopback, link-local or reserved.
fn public_ipv4(value: &str, text: &str, start: usize, end: usize) -> bool {
    let bytes = text.as_bytes();
    let dotted = |i: usize| {
        bytes
            .get(i)
            .is_some_and(|b| *b == b'.' || b.is_ascii_digit())
    };
    let longer = dotted(end) && bytes.get(end + 1).is_some_and(u8::is_ascii_digit);
    if (start > 0 && dotted(start - 1)) || longer {
        return false;
    }
    // The word before, from a short window (a copy of the whole prefix would be quadratic).
    let mut from = start.saturating_sub(16);
    while !text.is_char_boundary(from) {
        from -= 1;
    }
    let before = text[from..start].trim_end().to_ascii_lowercase();
    let versions = ["version", "release", "firmware", "build", "v"];
    let word = before.rsplit(|c: char| !c.is_ascii_alphabetic()).next();
    if word.is_some_and(|w| versions.contains(&w)) {
        return false;
    }
    let Ok(ip) = value.parse::<Ipv4Addr>() else {
        return false;
    };
    let o = ip.octets();
    !(ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || o[0] == 0
        || o[0] >= 240
        || (o[0] == 100 && (64..128).contains(&o[1])))
}

/// Ten to fifteen digits, not glued to more digits (a longer number is an id, not a phone).
fn a_phone_number(value: &str, text: &str, start: usize, end: usize) -> bool {
    let digits = value.chars().filter(char::is_ascii_digit).count();
    let bytes = text.as_bytes();
    let glued = |i: usize| {
        bytes
            .get(i)
            .is_some_and(|b| b.is_ascii_digit() || *b == b'-')
    };
    (10..=15).contains(&digits) && !(start > 0 && glued(start - 1)) && !glued(end)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redacted(kinds: &[Pii], text: &str) -> String {
        redact(kinds, text, &mut Counts::new()).unwrap_or_else(|| text.to_string())
    }

    #[test]
    fn emails_and_public_ips_go_by_default() {
        let text = "Write to jane.doe+ml@mail.example.co.uk or ping 93.184.216.34 (see 8.8.8.8).";
        let mut counts = Counts::new();
        let out = redact(&Pii::DEFAULT, text, &mut counts).unwrap();
        assert_eq!(
            out,
            "Write to <PII:email> or ping <PII:ip_address> (see <PII:ip_address>)."
        );
        assert_eq!((counts["pii:email"], counts["pii:ip_address"]), (1, 2));
        let v6 = "host 2001:0db8:85a3:0000:0000:8a2e:0370:7334 up";
        assert_eq!(redacted(&[Pii::Ip], v6), "host <PII:ip_address> up");
    }

    #[test]
    fn near_misses_are_left_alone() {
        for text in [
            "listen 127.0.0.1:8080 and 10.0.0.12, gateway 192.168.1.1",
            "version 1.2.3.4.5 and OID 1.3.6.1.4.1.311",
            "the @decorator and user@localhost and pkg@1.2.3",
            "an example host 192.0.2.10 from the docs",
            "we run version 2.14.1.3 and v4.1.0.2 of the firmware",
        ] {
            assert_eq!(redacted(&Pii::DEFAULT, text), text);
        }
    }

    #[test]
    fn phones_only_when_asked() {
        let text =
            "Call +1 415-555-0132 or (030) 1234 5678; order 2024-05-01, id 12345678901234567.";
        assert_eq!(redacted(&Pii::DEFAULT, text), text);
        assert_eq!(
            redacted(&[Pii::Phone], text),
            "Call <PII:phone> or <PII:phone>; order 2024-05-01, id 12345678901234567."
        );
    }
}
