//! Credentials in any text, code or config, replaced by a placeholder per kind
//! (`<SECRET:aws_access_key>`).
//!
//! Our own rules, in the spirit of gitleaks and trufflehog but kept to what a corpus of
//! repositories, wikis and PDFs holds: provider keys with a fixed shape (AWS, GCP, Azure,
//! GitHub, GitLab, Slack, Stripe, OpenAI-style), JWTs, private key blocks, passwords in URLs,
//! configs and connection strings, and high-entropy values assigned to secret-like names.
//! Shapes that look random but are not secret (a git hash, a UUID, a base64 image) are left
//! alone: they match no provider shape, and the name-based rules need a secret-like name.

use std::sync::OnceLock;

use super::rules::{entropy, Counts, Rule};

/// The rules, in the order they apply: the most specific shapes first, so a GitHub token in
/// `token = ghp_…` is named as one rather than as a generic secret.
pub fn rules() -> &'static [Rule] {
    static RULES: OnceLock<Vec<Rule>> = OnceLock::new();
    RULES.get_or_init(|| {
        vec![
            Rule::new(
                "secret:private_key",
                "<SECRET:private_key>",
                r"-----BEGIN[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----(?:[\s\S]*?-----END[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----|[A-Za-z0-9+/=\s\\]*)",
                None,
            ),
            Rule::new(
                "secret:aws_access_key",
                "<SECRET:aws_access_key>",
                r"(?-u:\b)(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AROA|AIPA|ANPA|ANVA|APKA)[0-9A-Z]{16}(?-u:\b)",
                None,
            ),
            Rule::new(
                "secret:aws_secret_key",
                "<SECRET:aws_secret_key>",
                r#"(?i)aws_?secret(?:_?access)?_?key["']?\s*[:=]\s*["']?([A-Za-z0-9/+]{40})(?:[^A-Za-z0-9/+]|$)"#,
                None,
            ),
            Rule::new(
                "secret:gcp_api_key",
                "<SECRET:gcp_api_key>",
                r"(?-u:\b)AIza[0-9A-Za-z_\-]{35}",
                None,
            ),
            Rule::new(
                "secret:azure_storage_key",
                "<SECRET:azure_storage_key>",
                r"(?i)AccountKey=([A-Za-z0-9+/]{86}==)",
                None,
            ),
            Rule::new(
                "secret:azure_sas_signature",
                "<SECRET:azure_sas_signature>",
                r"[?&]sig=([A-Za-z0-9%+/]{30,}=*)",
                None,
            ),
            Rule::new(
                "secret:github_token",
                "<SECRET:github_token>",
                r"(?-u:\b)(?:(?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{36}|github_pat_[A-Za-z0-9_]{82})(?-u:\b)",
                None,
            ),
            Rule::new(
                "secret:gitlab_token",
                "<SECRET:gitlab_token>",
                r"(?-u:\b)glpat-[A-Za-z0-9_\-]{20,}",
                None,
            ),
            Rule::new(
                "secret:slack_token",
                "<SECRET:slack_token>",
                r"(?-u:\b)xox[abposr]-[0-9]{6,}-[A-Za-z0-9-]{10,}",
                None,
            ),
            Rule::new(
                "secret:slack_webhook",
                "<SECRET:slack_webhook>",
                r"https://hooks\.slack\.com/services/T[A-Z0-9]+/B[A-Z0-9]+/[A-Za-z0-9]+",
                None,
            ),
            Rule::new(
                "secret:stripe_key",
                "<SECRET:stripe_key>",
                r"(?-u:\b)(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{24,}(?-u:\b)",
                None,
            ),
            Rule::new(
                "secret:openai_key",
                "<SECRET:openai_key>",
                r"(?-u:\b)sk-(?:proj-|svcacct-|admin-|ant-)?[A-Za-z0-9_\-]{20,}",
                Some(mixed_case_and_digits),
            ),
            Rule::new(
                "secret:jwt",
                "<SECRET:jwt>",
                r"(?-u:\b)eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}",
                None,
            ),
            Rule::new(
                "secret:url_password",
                "<SECRET:url_password>",
                r#"(?-u:\b)[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/@"'<>]+:([^\s/@"'<>]+)@"#,
                Some(not_a_placeholder),
            ),
            Rule::new(
                "secret:password",
                "<SECRET:password>",
                r#"(?i)(?-u:\b)(?:password|passwd|pwd|pass)(?-u:\b)["']?\s*(?::=|=>|[:=])\s*(?:"([^"\n]{4,})"|'([^'\n]{4,})'|([^\s"',;<>]{6,}))"#,
                Some(a_password),
            ),
            Rule::new(
                "secret:generic",
                "<SECRET:generic>",
                r#"(?i)(?-u:\b)[A-Za-z0-9_.\-]*(?:secret|token|api_?key|access_?key|private_?key|credential|auth_?key|client_?key)[A-Za-z0-9_.\-]*["']?\s*(?::=|=>|[:=])\s*["']?([A-Za-z0-9+/=_\-.~]{16,})"#,
                Some(high_entropy),
            ),
        ]
    })
}

/// Bits per character a value under a secret-like name needs: random hex scores about 3.7 to
/// 4, base64 5 and more; identifiers and version strings stay below.
const MIN_ENTROPY: f64 = 3.5;

/// Replaces the credentials in `text`, counting each by rule; `None` when there were none.
pub fn redact(text: &str, counts: &mut Counts) -> Option<String> {
    super::rules::apply(rules(), text, counts)
}

/// OpenAI-style keys are random: a word such as `sk-learn-contrib-project` is not one.
fn mixed_case_and_digits(value: &str, _: &str, _: usize, _: usize) -> bool {
    let has = |f: fn(&char) -> bool| value.chars().any(|c| f(&c));
    has(char::is_ascii_digit) && has(char::is_ascii_uppercase) && has(char::is_ascii_lowercase)
}

/// A value that stands for a secret kept elsewhere (`${DB_PASSWORD}`, `<password>`,
/// `%(pw)s`, `****`, `os.environ[...]`) is no secret.
fn not_a_placeholder(value: &str, _: &str, _: usize, _: usize) -> bool {
    let v = value.trim();
    let starts = ['$', '<', '{', '%', '(', '['];
    !(v.is_empty()
        || v.starts_with(starts)
        || v.chars()
            .all(|c| c == '*' || c == 'x' || c == 'X' || c == '.')
        || v.contains(['(', '['])
        || v.contains("{{"))
}

/// A password value: not a placeholder, not a word of prose (`Password: required`), nor
/// a boolean or a null.
fn a_password(value: &str, text: &str, start: usize, end: usize) -> bool {
    let lower = value.to_ascii_lowercase();
    let plain = [
        "true", "false", "null", "none", "required", "optional", "string",
    ];
    let quoted = start > 0 && matches!(text.as_bytes()[start - 1], b'"' | b'\'');
    not_a_placeholder(value, text, start, end)
        && !plain.contains(&lower.as_str())
        && (quoted || value.chars().any(|c| !c.is_ascii_alphabetic()))
}

/// A value under a secret-like name: long, mixing letters and digits, and random enough
/// (a word like `refresh_interval_seconds`, a path or a URL is not a key).
fn high_entropy(value: &str, text: &str, start: usize, end: usize) -> bool {
    let letters = value.chars().any(|c| c.is_ascii_alphabetic());
    let digits = value.chars().any(|c| c.is_ascii_digit());
    let path = value.starts_with(['/', '.']) || value.contains("//");
    letters
        && digits
        && !path
        && entropy(value) >= MIN_ENTROPY
        && not_a_placeholder(value, text, start, end)
}

#[cfg(test)]
mod tests;
