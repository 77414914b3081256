//! One module per subcommand: turns parsed flags into a configured job and runs it.

pub mod demo;
pub mod eval;
pub mod generate;
pub mod ingest;
pub mod inspect;
pub mod model_info;
pub mod report;
pub mod train;
