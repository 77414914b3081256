//! Each rule on a credential of its kind and on a near-miss it must leave alone. The keys
//! are made up, of the right shape.

use super::*;

fn redacted(text: &str) -> (String, Counts) {
    let mut counts = Counts::new();
    let out = redact(text, &mut counts).unwrap_or_else(|| text.to_string());
    (out, counts)
}

/// Each line: a text holding a secret, the rule that must fire, the secret itself.
const POSITIVES: &[(&str, &str, &str)] = &[
    ("aws_access_key_id = AKIAZ7Q2X4Y6W8V0U1T3", "secret:aws_access_key", "AKIAZ7Q2X4Y6W8V0U1T3"),
    (
        "aws_secret_access_key = wJa1rXUtnFEMI/K7MDENG/bPxRfiCY9q3Zk2Lm8N",
        "secret:aws_secret_key",
        "wJa1rXUtnFEMI/K7MDENG/bPxRfiCY9q3Zk2Lm8N",
    ),
    ("key: AIzaSyD3x9Q-7hT2kP0mN4vB8cL1zR6wE5yU2iO", "secret:gcp_api_key", "AIzaSyD3x9Q-7hT2kP0mN4vB8cL1zR6wE5yU2iO"),
    ("token = ghp_1a2B3c4D5e6F7g8H9i0J1k2L3m4N5o6P7q8R", "secret:github_token", "ghp_1a2B3c4D5e6F7g8H9i0J1k2L3m4N5o6P7q8R"),
    ("CI_TOKEN=glpat-x7Yq2Rk9Lm3Np5Tv8Wz1", "secret:gitlab_token", "glpat-x7Yq2Rk9Lm3Np5Tv8Wz1"),
    ("slack: xoxb-123456789012-9876543210-AbCdEfGhIjKlMnOp", "secret:slack_token", "xoxb-123456789012-9876543210-AbCdEfGhIjKlMnOp"),
    ("url: https://hooks.slack.com/services/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", "secret:slack_webhook", "x1Y2z3A4b5C6d7E8f9G0h1I2"),
    ("stripe.api_key = 'sk_live_4eC39HqLyjWDarjtT1zdp7dc'", "secret:stripe_key", "sk_live_4eC39HqLyjWDarjtT1zdp7dc"),
    ("OPENAI_API_KEY=sk-proj-Ab3De5Gh7Jk9Mn1Pq3St5Vw7Yz9Bc2Ef4", "secret:openai_key", "sk-proj-Ab3De5Gh7Jk9Mn1Pq3St5Vw7Yz9Bc2Ef4"),
    (
        "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dBjftJeZ4CVPmB92K27uhbUJU1p1r_wW1gFWFOEjXk",
        "secret:jwt",
        "dBjftJeZ4CVPmB92K27uhbUJU1p1r_wW1gFWFOEjXk",
    ),
    (
        "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA7yQ2\nq9Zb3kY8\n-----END RSA PRIVATE KEY-----\n",
        "secret:private_key",
        "MIIEowIBAAKCAQEA7yQ2",
    ),
    ("DATABASE_URL=postgres://app:Sup3rS3cret!@db.internal:5432/app", "secret:url_password", "Sup3rS3cret!"),
    ("db:\n  password: \"correct horse battery\"\n", "secret:password", "correct horse battery"),
    ("Server=tcp:db;User ID=sa;Password=P@ssw0rd2024;Encrypt=True", "secret:password", "P@ssw0rd2024"),
    ("DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=Zm9vYmFyYmF6cXV4Zm9vYmFyYmF6cXV4Zm9vYmFyYmF6cXV4Zm9vYmFyYmF6cXV4Zm9vYmFyYmF6cXV4Zm9vYm==;", "secret:azure_storage_key", "Zm9vYmFyYmF6cXV4Zm9vYmFyYmF6cXV4"),
    ("https://acct.blob.core.windows.net/c?sv=2022-11-02&sig=Xy7%2Bq9Lm3Np5Tv8Wz1Ab4Cd6Ef8Gh0Jk2Lm%3D", "secret:azure_sas_signature", "Xy7%2Bq9Lm3Np5Tv8Wz1"),
    ("SECRET_KEY = \"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b\"", "secret:generic", "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b"),
    ("client_secret: Qm9xN2hZ4tR8vL1pK6wZ3", "secret:generic", "Qm9xN2hZ4tR8vL1pK6wZ3"),
];

/// Texts that look like secrets and are not: every one must come out unchanged.
const NEAR_MISSES: &[&str] = &[
    "commit 3f786850e387550fdab836ed7e6dc881de23001b\nAuthor: builder",
    "request_id: 123e4567-e89b-12d3-a456-426614174000",
    "<img src=\"data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==\">",
    "pip install sk-learn-contrib-project-template",
    "see http://localhost:8080/admin and mailto:ops@example.org",
    "password: ${DB_PASSWORD}",
    "password = os.environ[\"DB_PASSWORD\"]",
    "Password: required",
    "max_tokens = 4096\ntokenizer: data/tokenizer.json",
    "checksum = \"sha256:5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8\"",
    "AKIA is the prefix of an AWS key id",
    "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END PUBLIC KEY-----",
    "token_refresh_interval_seconds: 3600",
];

#[test]
fn every_kind_is_found_and_named() {
    for (text, rule, secret) in POSITIVES {
        let (out, counts) = redacted(text);
        assert!(!out.contains(secret), "{rule}: {out}");
        let placeholder = format!("<SECRET:{}>", &rule["secret:".len()..]);
        assert!(out.contains(&placeholder), "{rule}: {out}");
        assert_eq!(counts.get(rule), Some(&1), "{rule}: {counts:?}");
    }
}

#[test]
fn near_misses_are_left_alone() {
    for text in NEAR_MISSES {
        let (out, counts) = redacted(text);
        assert_eq!(&out, text, "{counts:?}");
    }
}

#[test]
fn the_name_of_a_password_stays_and_only_the_value_goes() {
    let (out, _) = redacted("user=admin password=hunter2! host=db");
    assert_eq!(out, "user=admin password=<SECRET:password> host=db");
    let (out, _) = redacted("postgres://app:Sup3rS3cret!@db:5432/app");
    assert_eq!(out, "postgres://app:<SECRET:url_password>@db:5432/app");
}

#[test]
fn odd_input_does_not_panic() {
    for text in [
        "",
        "-----BEGIN PRIVATE KEY-----",
        "password=\u{1F600}\u{1F600}\u{1F600}é",
        "sk-",
        "\0\0=",
    ] {
        let _ = redacted(text);
    }
}
