//! The demo's corpus, written by the demo itself: small Python functions and weather records,
//! drawn from templates with a seeded generator. Regular enough that the tiny model learns it
//! visibly within two minutes on two cores (the perplexity falls by orders of magnitude and
//! samples read like the corpus), varied enough that it cannot memorise it in that time.

use std::fmt::Write as _;
use std::path::Path;

use mamba::train::shuffle::SplitMix64;

/// Files of each kind, and functions or records per file: about 1 MB in all.
const CODE_FILES: usize = 120;
const FUNCTIONS_PER_FILE: usize = 24;
const RECORD_FILES: usize = 60;
const RECORDS_PER_FILE: usize = 120;

const NOUNS: [&str; 16] = [
    "area", "total", "price", "distance", "speed", "ratio", "weight", "volume", "cost", "score",
    "height", "width", "balance", "margin", "length", "average",
];
const NAMES: [&str; 16] = [
    "width", "height", "count", "rate", "length", "time", "amount", "size", "price", "weight",
    "depth", "radius", "total", "step", "limit", "factor",
];
const VERBS: [&str; 6] = ["compute", "get", "find", "measure", "estimate", "update"];
const OPS: [(&str, &str); 4] = [
    ("+", "sum"),
    ("-", "difference"),
    ("*", "product"),
    ("/", "ratio"),
];
const CITIES: [&str; 12] = [
    "Oslo", "Lisbon", "Nairobi", "Lima", "Osaka", "Denver", "Tunis", "Perth", "Quito", "Riga",
    "Hanoi", "Leeds",
];
const SKIES: [&str; 6] = ["sunny", "cloudy", "rain", "snow", "fog", "showers"];
const WINDS: [&str; 8] = ["N", "NE", "E", "SE", "S", "SW", "W", "NW"];

fn pick<'a>(rng: &mut SplitMix64, words: &[&'a str]) -> &'a str {
    words[rng.below(words.len())]
}

/// Two different names from [`NAMES`].
fn two_names(rng: &mut SplitMix64) -> (&'static str, &'static str) {
    let a = rng.below(NAMES.len());
    let b = (a + 1 + rng.below(NAMES.len() - 1)) % NAMES.len();
    (NAMES[a], NAMES[b])
}

/// One Python function from one of four templates.
fn function(rng: &mut SplitMix64, out: &mut String) {
    let (noun, verb) = (pick(rng, &NOUNS), pick(rng, &VERBS));
    let (a, b) = two_names(rng);
    let _ = match rng.below(4) {
        0 => {
            let (op, what) = OPS[rng.below(OPS.len())];
            write!(
                out,
                "def {verb}_{noun}({a}, {b}):\n    \"\"\"Return the {what} of {a} and {b}.\"\"\"\n    {noun} = {a} {op} {b}\n    return {noun}\n\n\n"
            )
        }
        1 => write!(
            out,
            "def clamp_{noun}(value, low, high):\n    \"\"\"Keep the {noun} between low and high.\"\"\"\n    if value < low:\n        return low\n    if value > high:\n        return high\n    return value\n\n\n"
        ),
        2 => write!(
            out,
            "def sum_of_{a}s({a}s):\n    \"\"\"Add up all the {a}s.\"\"\"\n    total = 0\n    for {a} in {a}s:\n        total += {a}\n    return total\n\n\n"
        ),
        _ => {
            let n = 2 + rng.below(9);
            write!(
                out,
                "def scale_{noun}({a}, {b}={n}):\n    \"\"\"Scale the {noun} by {b}.\"\"\"\n    if {b} == 0:\n        raise ValueError(\"{b} must not be zero\")\n    return {a} * {b}\n\n\n"
            )
        }
    };
}

/// One weather record: date, city, temperatures, sky, wind.
fn record(rng: &mut SplitMix64, day: usize, out: &mut String) {
    let (city, sky, wind) = (pick(rng, &CITIES), pick(rng, &SKIES), pick(rng, &WINDS));
    let low = rng.below(20) as i64 - 5;
    let high = low + 2 + rng.below(12) as i64;
    let speed = 3 + rng.below(40);
    let (month, date) = (1 + day / 28 % 12, 1 + day % 28);
    let _ = writeln!(
        out,
        "2024-{month:02}-{date:02} | {city} | high {high} C | low {low} C | {sky} | wind {speed} km/h {wind}"
    );
}

/// Writes the corpus under `dir` (`code/*.py`, `weather/*.txt`); the same every time.
pub fn write(dir: &Path) -> std::io::Result<()> {
    let mut rng = SplitMix64::new(2024);
    std::fs::create_dir_all(dir.join("code"))?;
    std::fs::create_dir_all(dir.join("weather"))?;
    for f in 0..CODE_FILES {
        let mut text = String::from("\"\"\"Small helpers for everyday numbers.\"\"\"\n\n\n");
        for _ in 0..FUNCTIONS_PER_FILE {
            function(&mut rng, &mut text);
        }
        std::fs::write(
            dir.join(format!("code/helpers_{f:03}.py")),
            text.trim_end().to_string() + "\n",
        )?;
    }
    for f in 0..RECORD_FILES {
        let mut text = String::from("date | city | high | low | sky | wind\n");
        for r in 0..RECORDS_PER_FILE {
            record(&mut rng, f * RECORDS_PER_FILE + r, &mut text);
        }
        std::fs::write(dir.join(format!("weather/station_{f:03}.txt")), text)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_corpus_is_deterministic_python_and_records() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        write(a.path()).unwrap();
        write(b.path()).unwrap();
        let read = |d: &Path, f: &str| std::fs::read_to_string(d.join(f)).unwrap();
        for f in ["code/helpers_007.py", "weather/station_042.txt"] {
            assert_eq!(read(a.path(), f), read(b.path(), f));
        }
        let code = read(a.path(), "code/helpers_000.py");
        assert_eq!(code.matches("\ndef ").count(), FUNCTIONS_PER_FILE);
        let weather = read(a.path(), "weather/station_000.txt");
        assert_eq!(weather.lines().count(), RECORDS_PER_FILE + 1);
        let bytes: usize = walkdir(a.path())
            .iter()
            .map(|p| std::fs::metadata(p).unwrap().len() as usize)
            .sum();
        assert!((600_000..2_000_000).contains(&bytes), "{bytes} bytes");
    }

    fn walkdir(dir: &Path) -> Vec<std::path::PathBuf> {
        let mut out = Vec::new();
        for sub in ["code", "weather"] {
            for e in std::fs::read_dir(dir.join(sub)).unwrap() {
                out.push(e.unwrap().path());
            }
        }
        out
    }
}
