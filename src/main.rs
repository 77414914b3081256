//! `mamba`: train Mamba language models on your own files.
//!
//! A thin binary: parse the command line, run one subcommand, turn its result into an exit
//! code (0 ok, 1 failure, 2 bad usage).

mod cli;
mod commands;

use std::process::ExitCode;

use clap::Parser;
use mamba_model::memory::Counting;

/// The stages allocate many short strings on several threads at once, where the system
/// allocator spends a third of ingest time; mimalloc does not. `MapAware` lets a load keep a
/// checkpoint's weights in a map of its file; `Counting` gives each training step's peak of
/// tensor memory (`mem_peak_bytes` in metrics.jsonl).
#[global_allocator]
static GLOBAL: mamba_model::MapAware<Counting<mimalloc::MiMalloc>> =
    unsafe { mamba_model::MapAware::new(Counting::new(mimalloc::MiMalloc)) };

/// mimalloc's `mi_option_purge_delay` (index 15 of `mi_option_e` in its v2 and v3 headers).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// How long mimalloc keeps freed memory before handing it back to the OS.
fn set_purge_delay(ms: i64) {
    // Safety: sets a process-wide allocator option; any value is valid.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, ms as std::ffi::c_long) };
}

/// Training frees and allocates the same large buffers every step. By default mimalloc hands
/// freed memory back to the OS after a delay, so the kernel zeroes those pages again on every
/// step (~5% of a CPU training step); keeping them costs nothing, the next step needs them.
fn keep_freed_memory() {
    set_purge_delay(-1);
}

/// Ingest's peak is the tokenizer trainer, whose hash tables grow by doubling: each outgrown
/// table, kept for mimalloc's default second, adds to the peak (~25 MB on a 114 MB corpus).
const INGEST_PURGE_DELAY_MS: i64 = 10;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    if matches!(cli.command, cli::Command::Train(_) | cli::Command::Demo(_)) {
        keep_freed_memory();
    }
    if matches!(
        cli.command,
        cli::Command::Ingest(_) | cli::Command::Tokenizer(_)
    ) {
        set_purge_delay(INGEST_PURGE_DELAY_MS);
    }
    let result = match cli.command {
        cli::Command::Ingest(args) => commands::ingest::run(args),
        cli::Command::Tokenizer(command) => commands::tokenizer::run(command),
        cli::Command::ModelInfo(args) => commands::model_info::run(args),
        cli::Command::Inspect(args) => commands::inspect::run(args),
        cli::Command::Train(args) => commands::train::run(*args),
        cli::Command::Generate(args) => commands::generate::run(args),
        cli::Command::Report(args) => commands::report::run(args),
        cli::Command::Convert(args) => commands::convert::run(args),
        cli::Command::Export(args) => commands::export::run(args),
        cli::Command::Merge(args) => commands::merge::run(args),
        cli::Command::Eval(args) => commands::eval::run(args),
        cli::Command::Demo(args) => commands::demo::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {}", commands::one_line(&err));
            ExitCode::from(commands::exit_code(&err))
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn purge_delay_option_is_the_one_set() {
        // mimalloc v3's default purge delay is 1000 ms, which no neighbouring option has.
        let get = || unsafe { libmimalloc_sys::mi_option_get(super::MI_OPTION_PURGE_DELAY) };
        assert_eq!(get(), 1000);
        super::keep_freed_memory();
        assert_eq!(get(), -1);
        super::set_purge_delay(super::INGEST_PURGE_DELAY_MS);
        assert_eq!(get(), 10);
    }
}
