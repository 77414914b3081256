//! One module per subcommand: turns parsed flags into a configured job and runs it.

pub mod convert;
pub mod demo;
pub mod eval;
pub mod export;
pub mod generate;
pub mod ingest;
pub mod inspect;
pub mod merge;
pub mod model_info;
pub mod report;
pub mod tokenizer;
pub mod train;

/// A mistake in how a command was called (a flag's value, a path, a checkpoint or store that
/// does not fit): `main` exits with status 2 for it, and 1 for any other error.
#[derive(Debug)]
pub struct Usage(anyhow::Error);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for Usage {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

/// `e` as a bad-usage error.
pub fn usage(e: impl Into<anyhow::Error>) -> anyhow::Error {
    Usage(e.into()).into()
}

/// The exit status of a command's error: 2 for [`Usage`], 1 otherwise.
pub fn exit_code(err: &anyhow::Error) -> u8 {
    match err.downcast_ref::<Usage>() {
        Some(_) => 2,
        None => 1,
    }
}

/// The error and its causes on one line. A cause its message already shows (`path: reason`
/// with the io::Error kept as the source) is not repeated.
pub fn one_line(err: &anyhow::Error) -> String {
    let mut line = err.to_string();
    for cause in err.chain().skip(1) {
        let c = cause.to_string();
        if !line.contains(&c) {
            line = format!("{line}: {c}");
        }
    }
    line
}
