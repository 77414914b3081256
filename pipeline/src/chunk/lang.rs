//! The programming languages the code chunker parses, how a file's extension names one, and
//! the tree-sitter grammar for each.

use tree_sitter::Language;

/// A language with a tree-sitter grammar; its [`Lang::name`] is the shard `lang` column.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Lang {
    Python,
    Rust,
    JavaScript,
    TypeScript,
    Tsx,
    Java,
    C,
    Cpp,
    Go,
}

impl Lang {
    /// Every language, in a fixed order.
    pub const ALL: [Lang; 9] = [
        Lang::Python,
        Lang::Rust,
        Lang::JavaScript,
        Lang::TypeScript,
        Lang::Tsx,
        Lang::Java,
        Lang::C,
        Lang::Cpp,
        Lang::Go,
    ];

    /// The language of a file extension (without the dot, any case), if it is one we parse.
    /// `.h` counts as C: C headers are the common case and C++ headers usually use `.hpp`.
    pub fn from_extension(ext: &str) -> Option<Lang> {
        let lang = match ext.to_ascii_lowercase().as_str() {
            "py" | "pyi" => Lang::Python,
            "rs" => Lang::Rust,
            "js" | "mjs" | "cjs" | "jsx" => Lang::JavaScript,
            "ts" | "mts" | "cts" => Lang::TypeScript,
            "tsx" => Lang::Tsx,
            "java" => Lang::Java,
            "c" | "h" => Lang::C,
            "cc" | "cpp" | "cxx" | "hpp" | "hh" | "hxx" => Lang::Cpp,
            "go" => Lang::Go,
            _ => return None,
        };
        Some(lang)
    }

    /// Lowercase name, as stored in the shard `lang` column.
    pub fn name(self) -> &'static str {
        match self {
            Lang::Python => "python",
            Lang::Rust => "rust",
            Lang::JavaScript => "javascript",
            Lang::TypeScript => "typescript",
            Lang::Tsx => "tsx",
            Lang::Java => "java",
            Lang::C => "c",
            Lang::Cpp => "cpp",
            Lang::Go => "go",
        }
    }

    /// The tree-sitter grammar.
    pub(crate) fn grammar(self) -> Language {
        match self {
            Lang::Python => tree_sitter_python::LANGUAGE.into(),
            Lang::Rust => tree_sitter_rust::LANGUAGE.into(),
            Lang::JavaScript => tree_sitter_javascript::LANGUAGE.into(),
            Lang::TypeScript => tree_sitter_typescript::LANGUAGE_TYPESCRIPT.into(),
            Lang::Tsx => tree_sitter_typescript::LANGUAGE_TSX.into(),
            Lang::Java => tree_sitter_java::LANGUAGE.into(),
            Lang::C => tree_sitter_c::LANGUAGE.into(),
            Lang::Cpp => tree_sitter_cpp::LANGUAGE.into(),
            Lang::Go => tree_sitter_go::LANGUAGE.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extensions_map_to_languages() {
        let cases = [
            ("py", Lang::Python),
            ("pyi", Lang::Python),
            ("rs", Lang::Rust),
            ("mjs", Lang::JavaScript),
            ("jsx", Lang::JavaScript),
            ("cts", Lang::TypeScript),
            ("tsx", Lang::Tsx),
            ("java", Lang::Java),
            ("h", Lang::C),
            ("HPP", Lang::Cpp),
            ("cxx", Lang::Cpp),
            ("go", Lang::Go),
        ];
        for (ext, lang) in cases {
            assert_eq!(Lang::from_extension(ext), Some(lang), "{ext}");
        }
        for ext in ["", "txt", "md", "pyc", "rs.bak", "."] {
            assert_eq!(Lang::from_extension(ext), None, "{ext}");
        }
    }

    #[test]
    fn names_are_distinct_lowercase_and_grammars_load() {
        let mut names: Vec<&str> = Lang::ALL.iter().map(|l| l.name()).collect();
        assert!(names.iter().all(|n| *n == n.to_lowercase()));
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Lang::ALL.len());
        for lang in Lang::ALL {
            let mut parser = tree_sitter::Parser::new();
            assert!(parser.set_language(&lang.grammar()).is_ok(), "{lang:?}");
        }
    }
}
