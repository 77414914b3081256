//! Config files (JSON, YAML, TOML, XML): checked by parsing, ingested as written.

use crate::discover::ConfigFormat;

pub fn name(format: ConfigFormat) -> &'static str {
    match format {
        ConfigFormat::Json => "json",
        ConfigFormat::Yaml => "yaml",
        ConfigFormat::Toml => "toml",
        ConfigFormat::Xml => "xml",
    }
}

/// Parses `text` as `format`; the error says where it is not valid.
pub fn check(format: ConfigFormat, text: &str) -> Result<(), String> {
    match format {
        ConfigFormat::Json => serde_json::from_str::<serde::de::IgnoredAny>(text)
            .map(drop)
            .map_err(|e| e.to_string()),
        ConfigFormat::Yaml => yaml_rust2::YamlLoader::load_from_str(text)
            .map(drop)
            .map_err(|e| e.to_string()),
        ConfigFormat::Toml => text.parse::<toml::Table>().map(drop).map_err(|e| {
            e.to_string()
                .lines()
                .next()
                .unwrap_or("invalid")
                .to_string()
        }),
        ConfigFormat::Xml => roxmltree::Document::parse(text)
            .map(drop)
            .map_err(|e| e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ConfigFormat::*;

    #[test]
    fn valid_configs_pass() {
        assert_eq!(check(Json, r#"{"a": [1, 2, {"b": null}]}"#), Ok(()));
        assert_eq!(check(Yaml, "a: 1\nb:\n  - x\n  - y\n"), Ok(()));
        assert_eq!(check(Toml, "[package]\nname = \"x\"\n"), Ok(()));
        assert_eq!(check(Xml, "<a><b x=\"1\">t</b></a>"), Ok(()));
    }

    #[test]
    fn invalid_configs_say_why() {
        assert!(check(Json, "{\"a\": }").unwrap_err().contains("line 1"));
        assert!(check(Yaml, "a: [1, 2\n").is_err());
        assert!(check(Toml, "[package\nname = 1").is_err());
        assert!(check(Xml, "<a><b></a>").is_err());
    }
}
