//! Command-line definitions: every subcommand, its flags, and an example in its help.

use std::path::PathBuf;

use clap::builder::PossibleValuesParser;
use clap::{Args, Parser, Subcommand};
use mamba::train::config::TrainFlags;
use mamba_model::config::preset_names;
use mamba_model::LayerKind;

#[derive(Parser)]
#[command(
    name = "mamba",
    version,
    about = "Train Mamba language models on your own files"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Turn folders of PDFs, text, code, configs and datasets into a tokenizer and shards
    #[command(
        after_help = "Example:\n  mamba ingest data/ shards/\n  mamba ingest ~/papers ~/code shards/ --tokenizer tokenizer.json --threads 4\n  mamba ingest data/ part-2/ --tokenizer tokenizer.json --part 2/8\n  mamba ingest --merge shards/ part-1/ part-2/ ... part-8/"
    )]
    Ingest(IngestArgs),
    /// Make a tokenizer for `ingest --tokenizer` (shared by the parts of a partitioned run)
    #[command(subcommand)]
    Tokenizer(TokenizerCommand),
    /// Print a model preset's parameter count and breakdown
    #[command(
        after_help = "Example:\n  mamba model-info --size small\n  mamba model-info --size large --vocab 32768"
    )]
    ModelInfo(ModelInfoArgs),
    /// Report what a shard store holds, or verify every shard against its manifest
    #[command(
        after_help = "Example:\n  mamba inspect shards/\n  mamba inspect shards/ --sample 3 --html report.html\n  mamba inspect shards/ --verify"
    )]
    Inspect(InspectArgs),
    /// Train a Mamba model on a shard store (CPU; resumable, checkpointed)
    #[command(
        after_help = "Example:\n  mamba train --shards shards/ --model-size tiny --max-steps 200\n  mamba train --shards shards/ --vram 12gb --dry-run\n  mamba train --shards shards/ --config configs/example_8gb.json --resume"
    )]
    Train(Box<TrainArgs>),
    /// Continue prompts with a trained model (sampling, greedy or beam search)
    #[command(
        after_help = "Example:\n  mamba generate --checkpoint checkpoints/final --prompt \"Hello\"\n  mamba generate --checkpoint checkpoints/final --prompt-file p.txt --temperature 0.7 --top-p 0.9 --seed 1\n  echo \"def main\" | mamba generate --checkpoint checkpoints/final --num-beams 4"
    )]
    Generate(GenerateArgs),
    /// Draw a training run (loss, val loss, learning rate, tokens/s, grad norm) as an HTML page
    #[command(
        after_help = "Example:\n  mamba report checkpoints/\n  mamba report checkpoints/ --out runs/first.html"
    )]
    Report(ReportArgs),
    /// Write a pretrained checkpoint (mamba_ssm layout, sharded, f16/bf16) in transformers' layout
    #[command(
        after_help = "Example:\n  mamba convert state-spaces-mamba-130m/ mamba-130m-hf/\n\nReads what `train --init`, `generate` and `eval` read: transformers' MambaForCausalLM or\nMamba2ForCausalLM (model.safetensors or shards with an index, f32/f16/bf16) or mamba_ssm's\nconfig.json + pytorch_model.bin (Mamba1 or Mamba2 layers). Writes config.json, f32 model.safetensors (sharded past --max-shard-mb)\nand tokenizer.json when SRC has one."
    )]
    Convert(ConvertArgs),
    /// Write a checkpoint as one GGUF file for llama.cpp, ollama and LM Studio
    #[command(
        after_help = "Example:\n  mamba export checkpoints/final model.gguf\n  mamba export checkpoints/final model-q8.gguf --type q8_0\n\nThen: llama-cli -m model.gguf -p \"Hello\", or an ollama Modelfile with FROM ./model.gguf.\nThe tokenizer goes into the file: byte-level BPE tokenizers (GPT-2 and GPT-NeoX style,\nand those `mamba ingest` trains); others are refused with the reason."
    )]
    Export(ExportArgs),
    /// Merge a LoRA adapter (PEFT's format) into its base model: a plain checkpoint
    #[command(
        after_help = "Example:\n  mamba merge mamba-130m-hf/ adapter/ merged/\n\nWrites W + (alpha/r) B A for every adapted projection (PEFT's merge_and_unload), in the\nbase's transformers layout with its tokenizer; generate, eval, export and transformers\nthen read OUT as any checkpoint."
    )]
    Merge(MergeArgs),
    /// Loss and perplexity of a checkpoint on a shard store's val split or on text
    #[command(
        after_help = "Example:\n  mamba eval --checkpoint checkpoints/final --shards shards/\n  mamba eval --checkpoint checkpoints/final --text notes/ --json"
    )]
    Eval(EvalArgs),
    /// The whole product on the sample corpus: ingest, train (~2 min, CPU), eval, report, generate
    #[command(after_help = "Example:\n  mamba demo\n  mamba demo --seconds 30 --out /tmp/demo")]
    Demo(DemoArgs),
}

#[derive(Args)]
pub struct IngestArgs {
    /// Input files or folders, then the output folder (with --merge: the output folder, then
    /// the parts)
    #[arg(required = true, num_args = 2.., value_name = "INPUT... OUT_DIR")]
    pub paths: Vec<PathBuf>,
    /// A Hugging Face tokenizer.json (or a model directory holding one) to use instead of
    /// training one on the corpus
    #[arg(long, value_name = "FILE|DIR")]
    pub tokenizer: Option<PathBuf>,
    /// End-of-text token of --tokenizer, if it is none of the usual ones
    #[arg(long, value_name = "TOKEN", requires = "tokenizer")]
    pub eos_token: Option<String>,
    /// Vocabulary size of the trained byte-level BPE (with <|endoftext|>)
    #[arg(long, default_value_t = 32768, value_parser = clap::value_parser!(u32).range(260..=1_000_000))]
    pub vocab_size: u32,
    /// Share of documents held out for validation, chosen by a hash of the document
    #[arg(long, default_value_t = 0.01, value_parser = fraction)]
    pub val_fraction: f64,
    /// Tokens per shard before a new shard is started
    #[arg(long, default_value_t = 50_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub shard_tokens: u64,
    /// Tokens per Parquet row group (the unit the trainer streams)
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub row_group_tokens: u64,
    /// Read only part I of N of the files (chosen by a hash of each path) into a partial
    /// store, for `--merge` [default in a Slurm array job: its task's part]; needs --tokenizer
    #[arg(long, value_name = "I/N", value_parser = part)]
    pub part: Option<(u32, u32)>,
    /// Merge the parts of a partitioned run: `mamba ingest --merge OUT_DIR PART_DIR...` (the
    /// settings are the parts')
    #[arg(long, conflicts_with_all = ["tokenizer", "part"])]
    pub merge: bool,
    #[command(flatten)]
    pub read: ReadArgs,
    /// Exit with status 1 if any input failed
    #[arg(long)]
    pub strict: bool,
    /// No progress bar
    #[arg(long, short)]
    pub quiet: bool,
}

/// How files are read and cut into chunks (shared by `ingest` and `tokenizer train`).
#[derive(Args)]
pub struct ReadArgs {
    /// Worker threads per stage [default: the number of cores]
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub threads: Option<u16>,
    /// Largest chunk of text, in bytes; longer documents are cut (code at definitions)
    #[arg(long, default_value_t = 16384, value_parser = clap::value_parser!(u32).range(256..))]
    pub chunk_bytes: u32,
    /// Files larger than this are skipped; a dataset, streamed, fails on a row larger than
    /// this as read (after decompression)
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_file_mb: u64,
    /// Seconds allowed to read one file (a dataset: one batch of rows); a file past it is
    /// reported as failed and the run goes on
    #[arg(long, default_value_t = 60.0, value_name = "SECS", value_parser = seconds)]
    pub file_timeout: f64,
    /// Column holding the text in .parquet/.arrow/.jsonl datasets
    #[arg(long, default_value = "text")]
    pub text_column: String,
    /// Follow symbolic links (loops are detected and reported)
    #[arg(long)]
    pub follow_symlinks: bool,
    /// Keep credentials (API keys, tokens, private keys, passwords) as they are; by default
    /// each is replaced by <SECRET:kind>
    #[arg(long)]
    pub keep_secrets: bool,
    /// Personal data replaced by <PII:kind>: a list of email, ip, phone; `pii` for all of
    /// them, `none` for none
    #[arg(long, default_value = "email,ip", value_name = "KINDS", value_parser = pii_kinds)]
    pub redact: PiiKinds,
    /// Drop near-duplicates (MinHash, 5-word shingles, 14 bands of 8; the first in walk
    /// order is kept): on or off
    #[arg(long, default_value = "on", value_name = "on|off", value_parser = on_off, action = clap::ArgAction::Set)]
    pub near_dup: bool,
    /// Quality filter on prose (code and configs exempt): none, default or strict
    #[arg(long, default_value = "default", value_parser = filter)]
    pub filter: mamba_pipeline::clean::Filter,
    /// Identify the natural language of prose (text, PDF, dataset rows) into the `lang`
    /// column as an ISO 639-1 code: on or off (off keeps the markup name there)
    #[arg(long, default_value = "on", value_name = "on|off", value_parser = on_off, action = clap::ArgAction::Set)]
    pub lang_id: bool,
    /// Keep only prose in these languages, e.g. `en,de` (`und`: undetermined); code and
    /// configs are kept whatever the list [default: every language]
    #[arg(long, value_name = "CODES", value_delimiter = ',')]
    pub lang: Vec<String>,
}

#[derive(Subcommand)]
pub enum TokenizerCommand {
    /// Train a byte-level BPE on files (or a sample of them), to give every part of a
    /// partitioned ingest with --tokenizer
    #[command(
        after_help = "Example:\n  mamba tokenizer train data/ -o tokenizer.json\n  mamba tokenizer train ~/papers ~/code -o tokenizer.json --sample-mb 500"
    )]
    Train(TokenizerTrainArgs),
}

#[derive(Args)]
pub struct TokenizerTrainArgs {
    /// Input files or folders
    #[arg(required = true, value_name = "INPUT")]
    pub inputs: Vec<PathBuf>,
    /// Where the tokenizer.json goes
    #[arg(long, short, value_name = "FILE")]
    pub out: PathBuf,
    /// Vocabulary size (with <|endoftext|>)
    #[arg(long, default_value_t = 32768, value_parser = clap::value_parser!(u32).range(260..=1_000_000))]
    pub vocab_size: u32,
    /// Train on about this many MB of the files, chosen by a hash of each path [default: all]
    #[arg(long, value_name = "M", value_parser = clap::value_parser!(u64).range(1..))]
    pub sample_mb: Option<u64>,
    #[command(flatten)]
    pub read: ReadArgs,
}

#[derive(Args)]
pub struct InspectArgs {
    /// The shard store (the OUT_DIR of `mamba ingest`)
    #[arg(value_name = "SHARDS")]
    pub dir: PathBuf,
    /// Only what the manifest and Parquet footers tell (no pass over the data; instant)
    #[arg(long, conflicts_with = "sample")]
    pub summary: bool,
    /// Print the report (or with --verify, the problems) as JSON
    #[arg(long)]
    pub json: bool,
    /// Also write the report as a self-contained HTML page with charts
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Count documents and chunks longer than this many tokens
    #[arg(long, default_value_t = 2048, value_parser = clap::value_parser!(u64).range(1..))]
    pub seq_len: u64,
    /// Decode this many random train chunks for reading
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub sample: usize,
    /// Seed of --sample
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Rows in each top list (reasons, tokens, sources)
    #[arg(long, default_value_t = 10)]
    pub top: usize,
    /// Read every shard and check it against the manifest; exit 1 on any problem
    #[arg(long, conflicts_with_all = ["summary", "html", "sample"])]
    pub verify: bool,
    /// No progress bar
    #[arg(long, short)]
    pub quiet: bool,
}

#[derive(Args)]
pub struct ModelInfoArgs {
    /// Architecture: mamba1 (selective SSM), mamba2 (SSD) or mamba3 (trapezoidal, rotary)
    #[arg(long, default_value = "mamba1")]
    pub arch: LayerKind,
    /// Mamba-3's MIMO rank (0: SISO)
    #[arg(long, default_value_t = 0, value_name = "R")]
    pub mimo_rank: usize,
    /// Model preset (configs/models.json)
    #[arg(long, default_value = "small", value_parser = PossibleValuesParser::new(preset_names()))]
    pub size: String,
    /// Vocabulary size (before padding to a multiple of 8)
    #[arg(long, default_value_t = 50257, value_parser = clap::value_parser!(u32).range(1..))]
    pub vocab: u32,
}

/// Flags of `mamba train`: where the data and checkpoints are, and one flag per training
/// setting ([`TrainFlags`], declared with the settings). Unset flags leave the value to the
/// lower configuration layers (model preset < VRAM profile < training profile < --config file).
#[derive(Args)]
pub struct TrainArgs {
    /// The shard store (the OUT_DIR of `mamba ingest`)
    #[arg(long, value_name = "DIR", required_unless_present = "dry_run")]
    pub shards: Option<PathBuf>,
    /// Where checkpoints and metrics.jsonl go
    #[arg(long, default_value = "checkpoints", value_name = "DIR")]
    pub checkpoint_dir: PathBuf,
    /// A JSON file of settings (keys as in --dry-run's output), over the profiles
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub settings: TrainFlags,
    /// Continue from a checkpoint (default: the latest in --checkpoint-dir)
    #[arg(long, value_name = "DIR", num_args = 0..=1)]
    pub resume: Option<Option<PathBuf>>,
    /// Start from a transformers-format model directory (fine-tuning)
    #[arg(long, value_name = "DIR", conflicts_with = "resume")]
    pub init: Option<PathBuf>,
    /// Print the resolved configuration and a memory estimate, then exit
    #[arg(long)]
    pub dry_run: bool,
    /// No progress bar
    #[arg(long, short)]
    pub quiet: bool,
}

/// Flags of `mamba generate`.
#[derive(Args)]
pub struct GenerateArgs {
    /// A checkpoint or transformers model directory (config.json, model.safetensors, tokenizer.json)
    #[arg(long, value_name = "DIR")]
    pub checkpoint: PathBuf,
    /// A LoRA adapter (PEFT's adapter_config.json + adapter_model.safetensors) to merge into
    /// the checkpoint's weights
    #[arg(long, value_name = "DIR")]
    pub adapter: Option<PathBuf>,
    /// A prompt (repeat for several; they are generated as one batch)
    #[arg(long, value_name = "TEXT")]
    pub prompt: Vec<String>,
    /// A file whose text is one prompt (repeatable); with no prompt at all, stdin is read
    #[arg(long, value_name = "FILE")]
    pub prompt_file: Vec<PathBuf>,
    /// Tokens to generate per prompt at most
    #[arg(long, default_value_t = 100)]
    pub max_new_tokens: usize,
    /// Softmax temperature; 0 is greedy decoding
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    pub temperature: f32,
    /// Sample only among the K most likely tokens (0: all)
    #[arg(long, default_value_t = 0, value_name = "K")]
    pub top_k: usize,
    /// Sample only from the smallest set of tokens holding this much probability
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    pub top_p: f32,
    /// Divide seen tokens' logits by this (1: off; 1.1-1.3 discourages loops)
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    pub repetition_penalty: f32,
    /// Seed of the sampler: the same seed gives the same text
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// End a continuation where this text appears (repeatable; not printed)
    #[arg(long, value_name = "TEXT")]
    pub stop: Vec<String>,
    /// Beam search with N beams instead of sampling
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub num_beams: usize,
    /// Keep going past the end-of-text token
    #[arg(long)]
    pub ignore_eos: bool,
    /// Print only the continuation, not the prompt before it
    #[arg(long)]
    pub no_echo: bool,
    /// Line printed between the outputs of several prompts
    #[arg(long, default_value = "---")]
    pub separator: String,
    /// cpu (this build has no CUDA backend)
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// How the model's matrices are held: bf16 halves the bytes each token reads (faster
    /// decoding, half the memory) and moves logits by well under 1%; int8 decodes
    /// from 8-bit copies (blocks of 32 with a scale, as llama.cpp's q8_0; the prefill reads a
    /// bf16 copy, so ~3 bytes per parameter in all), logits within ~2%; the math stays f32
    #[arg(long, default_value = "f32", value_parser = ["f32", "bf16", "int8"])]
    pub weights: String,
}

/// Flags of `mamba report`.
#[derive(Args)]
pub struct ReportArgs {
    /// The checkpoint directory of a run (holding metrics.jsonl)
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// Where the page goes [default: DIR/report.html]; the charts go beside it as .svg
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

/// Flags of `mamba convert`.
#[derive(Args)]
pub struct ConvertArgs {
    /// The checkpoint to read
    #[arg(value_name = "SRC")]
    pub src: PathBuf,
    /// A new (or empty) directory for the transformers-layout checkpoint
    #[arg(value_name = "DST")]
    pub dst: PathBuf,
    /// Shard the weights past this many megabytes (10^6 bytes)
    #[arg(long, default_value_t = 5000.0, value_name = "MB")]
    pub max_shard_mb: f64,
    /// Write mamba_ssm's own layout (config.json + pytorch_model.bin, what its
    /// MambaLMHeadModel.from_pretrained reads) instead of transformers'
    #[arg(long)]
    pub mamba_ssm: bool,
}

/// Flags of `mamba merge`.
#[derive(Args)]
pub struct MergeArgs {
    /// The base model the adapter was trained on
    #[arg(value_name = "BASE")]
    pub base: PathBuf,
    /// The adapter: adapter_config.json + adapter_model.safetensors
    #[arg(value_name = "ADAPTER")]
    pub adapter: PathBuf,
    /// A new (or empty) directory for the merged model
    #[arg(value_name = "OUT")]
    pub out: PathBuf,
}

/// Flags of `mamba export`.
#[derive(Args)]
pub struct ExportArgs {
    /// The checkpoint (or transformers model directory) to read, with its tokenizer.json
    #[arg(value_name = "CHECKPOINT")]
    pub checkpoint: PathBuf,
    /// The GGUF file to write (through a temporary name)
    #[arg(value_name = "OUT.gguf")]
    pub out: PathBuf,
    /// Type of the matrices: f32, f16, bf16 or q8_0 (norms, biases, conv, A and D stay f32)
    #[arg(long = "type", default_value = "f16", value_name = "TYPE")]
    pub ty: mamba_model::io::gguf::GgufType,
}

/// Flags of `mamba eval`.
#[derive(Args)]
#[command(group(clap::ArgGroup::new("input").required(true).args(["shards", "text"])))]
pub struct EvalArgs {
    /// A checkpoint or transformers model directory
    #[arg(long, value_name = "DIR")]
    pub checkpoint: PathBuf,
    /// A LoRA adapter (PEFT's adapter_config.json + adapter_model.safetensors) to merge into
    /// the checkpoint's weights
    #[arg(long, value_name = "DIR")]
    pub adapter: Option<PathBuf>,
    /// A shard store made with the checkpoint's tokenizer
    #[arg(long, value_name = "DIR")]
    pub shards: Option<PathBuf>,
    /// Split of --shards to score
    #[arg(long, default_value = "val", value_parser = ["val", "train"], requires = "shards")]
    pub split: String,
    /// A text file or folder, tokenized with the checkpoint's tokenizer (a file a document)
    #[arg(long, value_name = "PATH")]
    pub text: Option<PathBuf>,
    /// Tokens per window [default: the checkpoint's training seq_len]
    #[arg(long, value_parser = positive)]
    pub seq_len: Option<usize>,
    /// Windows per forward [default: the checkpoint's training batch size]
    #[arg(long, value_parser = positive)]
    pub batch_size: Option<usize>,
    /// Stop after this many scored tokens (whole windows)
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_tokens: Option<u64>,
    /// Print the result as JSON
    #[arg(long)]
    pub json: bool,
    /// No progress bar
    #[arg(long, short)]
    pub quiet: bool,
}

/// Flags of `mamba demo`.
#[derive(Args)]
pub struct DemoArgs {
    /// The corpus to ingest [default: one the demo writes: Python helpers and weather records]
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Where the shards, checkpoints and report go (a previous demo's folder is replaced)
    #[arg(long, default_value = "checkpoints/demo", value_name = "DIR")]
    pub out: PathBuf,
    /// Training time budget; the steps are sized to it on this machine (and to at most four
    /// passes over the corpus)
    #[arg(long, default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..))]
    pub seconds: u64,
    /// Train exactly this many steps instead (overrides --seconds)
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_steps: Option<u64>,
    /// Architecture: mamba1 (selective SSM), mamba2 (SSD) or mamba3 (trapezoidal, rotary)
    #[arg(long, default_value = "mamba1")]
    pub arch: LayerKind,
    /// Mamba-3's MIMO rank (0: SISO)
    #[arg(long, default_value_t = 0, value_name = "R")]
    pub mimo_rank: usize,
    /// Prompt of the generated sample (no trailing space: the tokenizer joins a space to the
    /// word after it)
    #[arg(long, default_value = "def")]
    pub prompt: String,
    /// Length of the generated sample in tokens
    #[arg(long, default_value_t = 80)]
    pub max_new_tokens: usize,
    /// No progress bars
    #[arg(long, short)]
    pub quiet: bool,
}

/// The kinds of personal data `--redact` names.
#[derive(Clone, Debug)]
pub struct PiiKinds(pub Vec<mamba_pipeline::clean::Pii>);

fn pii_kinds(s: &str) -> Result<PiiKinds, String> {
    use mamba_pipeline::clean::Pii;
    let mut kinds = Vec::new();
    for name in s.split(',').map(str::trim) {
        match name {
            "none" => {}
            "pii" => kinds.extend(Pii::ALL),
            _ => kinds.push(
                Pii::parse(name)
                    .ok_or_else(|| format!("{name} is none of email, ip, phone, pii, none"))?,
            ),
        }
    }
    kinds.sort();
    kinds.dedup();
    Ok(PiiKinds(kinds))
}

fn on_off(s: &str) -> Result<bool, String> {
    match s {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(format!("{s} is neither on nor off")),
    }
}

fn filter(s: &str) -> Result<mamba_pipeline::clean::Filter, String> {
    mamba_pipeline::clean::Filter::parse(s)
        .ok_or_else(|| format!("{s} is none of none, default, strict"))
}

fn fraction(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..1.0).contains(&v) => Ok(v),
        _ => Err(format!("{s} is not a fraction in [0, 1)")),
    }
}

fn part(s: &str) -> Result<(u32, u32), String> {
    mamba_pipeline::ingest::parse_part(s)
        .ok_or_else(|| format!("{s} is not I/N with 1 <= I <= N (e.g. 2/8)"))
}

fn seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v <= 1e9 => Ok(v),
        _ => Err(format!("{s} is not a number of seconds above 0")),
    }
}

fn positive(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(v) if v > 0 => Ok(v),
        _ => Err(format!("{s} is not a positive whole number")),
    }
}
