//! Error type of the crate.

/// Errors raised by configuration, weight I/O and the model itself.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An error from candle (shape mismatch, device error, ...).
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// A bad configuration (unknown preset, inconsistent sizes, ...).
    #[error("invalid model config: {0}")]
    Config(String),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A weights/optimizer file is malformed or does not match the config; names the file and tensor.
    #[error("{path}: tensor `{tensor}`: {msg}")]
    Tensor {
        path: std::path::PathBuf,
        tensor: String,
        msg: String,
    },
    /// A file is malformed as a whole (bad JSON, bad safetensors header, ...).
    #[error("{path}: {msg}")]
    File {
        path: std::path::PathBuf,
        msg: String,
    },
}

/// Result of the crate's fallible functions.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub(crate) fn io(path: impl Into<std::path::PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
    pub(crate) fn file(path: impl Into<std::path::PathBuf>, msg: impl std::fmt::Display) -> Self {
        Error::File {
            path: path.into(),
            msg: msg.to_string(),
        }
    }
    pub(crate) fn tensor(
        path: impl Into<std::path::PathBuf>,
        tensor: impl Into<String>,
        msg: impl std::fmt::Display,
    ) -> Self {
        Error::Tensor {
            path: path.into(),
            tensor: tensor.into(),
            msg: msg.to_string(),
        }
    }
}
