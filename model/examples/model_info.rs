//! Prints what `mamba model-info` prints: `cargo run -p mamba-model --example model_info -- small 50257`
fn main() {
    let mut args = std::env::args().skip(1);
    let size = args.next().unwrap_or_else(|| "small".into());
    let vocab = args.next().and_then(|v| v.parse().ok()).unwrap_or(50257);
    match mamba_model::Config::preset(&size, vocab) {
        Ok(cfg) => print!("{}", mamba_model::info::breakdown(&cfg)),
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2)
        }
    }
}
