//! Parameter names, shapes and the printable breakdown used by `mamba model-info`.

use crate::config::{Config, LayerKind};
use crate::model::MambaLM;

fn human(n: usize) -> String {
    if n >= 1_000_000_000 {
        format!("{:.2}B", n as f64 / 1e9)
    } else if n >= 1_000_000 {
        format!("{:.2}M", n as f64 / 1e6)
    } else if n >= 1_000 {
        format!("{:.1}K", n as f64 / 1e3)
    } else {
        n.to_string()
    }
}

/// The full printable text of `mamba model-info`: dimensions, total parameter count and a
/// breakdown per component (one layer's tensors, then totals).
pub fn breakdown(cfg: &Config) -> String {
    use std::fmt::Write;
    let shapes = MambaLM::shapes(cfg);
    let count = |s: &[usize]| s.iter().product::<usize>();
    let total: usize = shapes.iter().map(|(_, s)| count(s)).sum();
    let emb = cfg.padded_vocab() * cfg.d_model;
    // Each kind once, in the order of its first layer: (kind, that layer, how many layers).
    let mut kinds: Vec<(LayerKind, usize, usize)> = vec![];
    for (i, &k) in cfg.layers.iter().enumerate() {
        match kinds.iter_mut().find(|(kind, _, _)| *kind == k) {
            Some((_, _, n)) => *n += 1,
            None => kinds.push((k, i, 1)),
        }
    }
    let layer = |i: usize| {
        let prefix = format!("backbone.layers.{i}.");
        shapes
            .iter()
            .filter_map(move |(n, s)| Some((n.strip_prefix(&prefix)?.to_string(), s)))
            .collect::<Vec<_>>()
    };
    let mut o = String::new();
    let _ = writeln!(o, "{} language model", cfg.arch_name());
    let own: Vec<String> = kinds.iter().map(|(k, _, _)| k.describe(cfg)).collect();
    let own = own.join("  ");
    // Mamba-3 has no conv.
    let conv = match cfg.layers.iter().any(|k| k.has_conv()) {
        true => format!("  d_conv {}", cfg.d_conv),
        false => String::new(),
    };
    let _ = writeln!(
        o,
        "  d_model {}  n_layer {}  d_inner {}  d_state {}{conv}  {own}",
        cfg.d_model,
        cfg.n_layer(),
        cfg.d_inner(),
        cfg.d_state,
    );
    let _ = writeln!(
        o,
        "  vocab {} (padded to {}, multiple of {})",
        cfg.vocab_size,
        cfg.padded_vocab(),
        cfg.pad_vocab_size_multiple
    );
    let _ = writeln!(o, "  parameters: {} ({})", total, human(total));
    let _ = writeln!(o);
    let _ = writeln!(o, "  {:<34} {:>16} {:>14}", "tensor", "shape", "params");
    let mut line = |name: &str, shape: &[usize]| {
        let sh = shape
            .iter()
            .map(|x| x.to_string())
            .collect::<Vec<_>>()
            .join("x");
        let _ = writeln!(o, "  {:<34} {:>16} {:>14}", name, sh, count(shape));
    };
    let emb_name = match cfg.tie_embeddings {
        true => "embeddings (tied lm_head)",
        false => "embeddings",
    };
    line(emb_name, &[cfg.padded_vocab(), cfg.d_model]);
    for &(kind, first, _) in &kinds {
        // A model of several kinds names each kind's tensors.
        let what = match kinds.len() {
            1 => "layer".to_string(),
            _ => format!("{} layer", kind.key()),
        };
        for (name, shape) in layer(first) {
            line(&format!("{what}.{name}"), shape);
        }
    }
    line("norm_f.weight", &[cfg.d_model]);
    if !cfg.tie_embeddings {
        line("lm_head.weight", &[cfg.padded_vocab(), cfg.d_model]);
    }
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "  embeddings          {:>14} ({:>5.1}%)",
        emb,
        100.0 * emb as f64 / total as f64
    );
    for &(_, first, n) in &kinds {
        let per_layer: usize = layer(first).iter().map(|(_, s)| count(s)).sum();
        let _ = writeln!(
            o,
            "  {} layers x {:<9} {:>14} ({:>5.1}%)",
            n,
            per_layer,
            per_layer * n,
            100.0 * (per_layer * n) as f64 / total as f64
        );
    }
    let _ = writeln!(o, "  final norm          {:>14}", cfg.d_model);
    if !cfg.tie_embeddings {
        let _ = writeln!(o, "  lm_head             {:>14}", emb);
    }
    let _ = writeln!(o, "  total               {:>14}", total);
    let _ = writeln!(
        o,
        "  f32 weights: {:.1} MiB; training (weights + grads + AdamW m, v): {:.1} MiB",
        total as f64 * 4.0 / (1 << 20) as f64,
        total as f64 * 16.0 / (1 << 20) as f64
    );
    o
}
