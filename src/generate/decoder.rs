//! The recurrent decode step on plain `f32` slices, for the CPU. At batch 1 a step is a
//! chain of matrix-vector products that reads every weight once: memory-bound work that a
//! general matmul serves badly (it packs the whole weight matrix per call). Here each product
//! streams the weight rows once, dot products in eight lanes, split across threads by rows.
//! Same arithmetic as `MambaLM::step` (Gu & Dao 2023, Alg. 2 in recurrent form); tested
//! against it.

use candle_core::{Result, Tensor};
use mamba_model::{MambaLM, State};

/// Matrix-vector products above this many weights are split across threads.
const PARALLEL_WEIGHTS: usize = 1 << 20;

fn flat(t: &Tensor) -> Result<Vec<f32>> {
    t.flatten_all()?.to_vec1::<f32>()
}

/// One layer's weights, row-major as stored.
struct Layer {
    norm: Vec<f32>,
    /// (2 di, d)
    in_proj: Vec<f32>,
    /// (di, k)
    conv_w: Vec<f32>,
    conv_b: Vec<f32>,
    /// (r + 2n, di)
    x_proj: Vec<f32>,
    /// (di, r)
    dt_w: Vec<f32>,
    dt_b: Vec<f32>,
    /// A = -exp(A_log), (di, n)
    a: Vec<f32>,
    d_skip: Vec<f32>,
    /// (d, di)
    out_proj: Vec<f32>,
}

/// A copy of the model's weights laid out for the step.
pub struct Decoder {
    layers: Vec<Layer>,
    /// (padded_vocab, d): embedding and tied head.
    emb: Vec<f32>,
    norm_f: Vec<f32>,
    d: usize,
    di: usize,
    n: usize,
    r: usize,
    k: usize,
    vocab: usize,
    eps: f32,
    threads: usize,
}

/// Per sequence and layer: the conv window (di, k - 1) and the SSM state (di, n).
#[derive(Clone, Debug)]
pub struct DecodeState {
    pub conv: Vec<Vec<Vec<f32>>>,
    pub ssm: Vec<Vec<Vec<f32>>>,
}

/// y = W x for W (rows, cols) row-major.
fn matvec(w: &[f32], x: &[f32], y: &mut [f32], threads: usize) {
    let cols = x.len();
    let rows = y.len();
    let body = |w: &[f32], y: &mut [f32]| {
        for (o, row) in y.iter_mut().zip(w.chunks_exact(cols)) {
            *o = dot(row, x);
        }
    };
    if threads < 2 || rows * cols < PARALLEL_WEIGHTS {
        return body(w, y);
    }
    let per = rows.div_ceil(threads);
    std::thread::scope(|s| {
        for (wc, yc) in w.chunks(per * cols).zip(y.chunks_mut(per)) {
            s.spawn(move || body(wc, yc));
        }
    });
}

/// Dot product in eight independent lanes (so the compiler vectorises it).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ac
        .remainder()
        .iter()
        .zip(bc.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ac.zip(bc) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

fn rms_norm(x: &[f32], w: &[f32], eps: f32) -> Vec<f32> {
    let ms = x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32;
    let inv = 1.0 / (ms + eps).sqrt();
    x.iter().zip(w).map(|(v, g)| v * inv * g).collect()
}

fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

fn softplus(x: f32) -> f32 {
    x.max(0.0) + (-x.abs()).exp().ln_1p()
}

impl Decoder {
    pub fn new(model: &MambaLM) -> Result<Decoder> {
        let c = model.config();
        let layers = model
            .layers
            .iter()
            .map(|l| {
                let m = &l.mixer;
                Ok(Layer {
                    norm: flat(&l.norm)?,
                    in_proj: flat(&m.in_proj)?,
                    conv_w: flat(&m.conv_w)?,
                    conv_b: flat(&m.conv_b)?,
                    x_proj: flat(&m.x_proj)?,
                    dt_w: flat(&m.dt_proj_w)?,
                    dt_b: flat(&m.dt_proj_b)?,
                    a: flat(&m.a()?)?,
                    d_skip: flat(&m.d)?,
                    out_proj: flat(&m.out_proj)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Decoder {
            layers,
            emb: flat(&model.embedding)?,
            norm_f: flat(&model.norm_f)?,
            d: c.d_model,
            di: c.d_inner(),
            n: c.d_state,
            r: c.dt_rank(),
            k: c.d_conv,
            vocab: c.padded_vocab(),
            eps: c.norm_eps as f32,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        })
    }

    /// The model's state tensors as plain vectors, one entry per sequence.
    pub fn state_from(&self, st: &State) -> Result<DecodeState> {
        let rows = |ts: &[Tensor]| -> Result<Vec<Vec<Vec<f32>>>> {
            let per_layer: Vec<Vec<Vec<f32>>> = ts
                .iter()
                .map(|t| {
                    let b = t.dim(0)?;
                    (0..b).map(|i| flat(&t.get(i)?)).collect::<Result<Vec<_>>>()
                })
                .collect::<Result<_>>()?;
            let b = per_layer.first().map_or(0, |l| l.len());
            // (layer, seq) -> (seq, layer)
            Ok((0..b)
                .map(|i| per_layer.iter().map(|l| l[i].clone()).collect())
                .collect())
        };
        Ok(DecodeState {
            conv: rows(&st.conv)?,
            ssm: rows(&st.ssm)?,
        })
    }

    /// Feeds `ids[i]` to sequence `i`; returns each sequence's next-token logits over the
    /// padded vocabulary.
    pub fn step(&self, ids: &[u32], st: &mut DecodeState) -> Vec<Vec<f32>> {
        ids.iter()
            .enumerate()
            .map(|(i, &id)| self.step_one(id, &mut st.conv[i], &mut st.ssm[i]))
            .collect()
    }

    fn step_one(&self, id: u32, conv: &mut [Vec<f32>], ssm: &mut [Vec<f32>]) -> Vec<f32> {
        let (d, di, n, r, k) = (self.d, self.di, self.n, self.r, self.k);
        let id = (id as usize).min(self.vocab - 1);
        let mut res = self.emb[id * d..(id + 1) * d].to_vec();
        let mut xz = vec![0f32; 2 * di];
        let mut xdbl = vec![0f32; r + 2 * n];
        let mut delta = vec![0f32; di];
        let mut out = vec![0f32; d];
        let mut u = vec![0f32; di];
        for (li, l) in self.layers.iter().enumerate() {
            let h = rms_norm(&res, &l.norm, self.eps);
            matvec(&l.in_proj, &h, &mut xz, self.threads);
            let (x, z) = xz.split_at(di);
            // Conv over the window [state (k-1), x], then shift x into the state.
            let cw = &mut conv[li];
            for c in 0..di {
                let w = &l.conv_w[c * k..(c + 1) * k];
                let s = &mut cw[c * (k - 1)..(c + 1) * (k - 1)];
                let mut acc = l.conv_b[c] + w[k - 1] * x[c];
                for j in 0..k - 1 {
                    acc += w[j] * s[j];
                }
                s.copy_within(1.., 0);
                s[k - 2] = x[c];
                u[c] = silu(acc);
            }
            matvec(&l.x_proj, &u, &mut xdbl, 1);
            let (dt, bc) = xdbl.split_at(r);
            let (bm, cm) = bc.split_at(n);
            matvec(&l.dt_w, dt, &mut delta, 1);
            let hs = &mut ssm[li];
            let mut y = vec![0f32; di];
            for c in 0..di {
                let dtc = softplus(delta[c] + l.dt_b[c]);
                let du = dtc * u[c];
                let a = &l.a[c * n..(c + 1) * n];
                let hrow = &mut hs[c * n..(c + 1) * n];
                let mut acc = 0f32;
                for j in 0..n {
                    hrow[j] = (dtc * a[j]).exp() * hrow[j] + du * bm[j];
                    acc += hrow[j] * cm[j];
                }
                y[c] = (acc + l.d_skip[c] * u[c]) * silu(z[c]);
            }
            matvec(&l.out_proj, &y, &mut out, self.threads);
            for (a, b) in res.iter_mut().zip(&out) {
                *a += b;
            }
        }
        let h = rms_norm(&res, &self.norm_f, self.eps);
        let mut logits = vec![0f32; self.vocab];
        matvec(&self.emb, &h, &mut logits, self.threads);
        logits
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use mamba_model::Config;

    #[test]
    fn the_step_is_the_models_step() {
        let cfg = Config::preset("tiny", 70).unwrap();
        let (model, _) = MambaLM::init(&cfg, 11, &Device::Cpu).unwrap();
        let dec = Decoder::new(&model).unwrap();
        let (s1, _) = super::super::prefill::prefill(&model, &[3, 9, 27]).unwrap();
        let (s2, _) = super::super::prefill::prefill(&model, &[5]).unwrap();
        let mut theirs = model.new_state(2).unwrap();
        for i in 0..theirs.ssm.len() {
            theirs.ssm[i] = Tensor::cat(&[&s1.ssm[i], &s2.ssm[i]], 0).unwrap();
            theirs.conv[i] = Tensor::cat(&[&s1.conv[i], &s2.conv[i]], 0).unwrap();
        }
        let mut ours = dec.state_from(&theirs).unwrap();
        for t in 0..6u32 {
            let ids = [t * 5 % 70, t * 11 % 70];
            let want = model
                .step(
                    &Tensor::from_slice(&ids, 2, &Device::Cpu).unwrap(),
                    &mut theirs,
                )
                .unwrap()
                .to_vec2::<f32>()
                .unwrap();
            let got = dec.step(&ids, &mut ours);
            for (g, w) in got.iter().zip(&want) {
                let diff = g.iter().zip(w).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
                assert!(diff < 1e-4, "step {t}: {diff}");
            }
        }
    }

    #[test]
    fn threaded_matvec_equals_the_plain_one() {
        let (rows, cols) = (1500, 1000);
        let w: Vec<f32> = (0..rows * cols)
            .map(|i| ((i % 97) as f32 - 48.0) / 50.0)
            .collect();
        let x: Vec<f32> = (0..cols).map(|i| (i % 13) as f32 / 7.0).collect();
        let (mut a, mut b) = (vec![0f32; rows], vec![0f32; rows]);
        matvec(&w, &x, &mut a, 1);
        matvec(&w, &x, &mut b, 3);
        assert_eq!(a, b);
        let naive: f32 = w[..cols].iter().zip(&x).map(|(p, q)| p * q).sum();
        assert!((a[0] - naive).abs() < 1e-3 * naive.abs().max(1.0));
    }

    /// The transformers-made fixture of the model crate: its logits for two rows of 13 ids,
    /// computed by `MambaForCausalLM`, reproduced by prefill + our step from any split point.
    #[test]
    fn prefill_and_step_reproduce_transformers_logits() {
        let fx = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("model/tests/fixtures");
        let (model, _) = MambaLM::load(fx.join("hf_tiny"), &Device::Cpu).unwrap();
        let t = candle_core::safetensors::load(fx.join("hf_tiny_logits.safetensors"), &Device::Cpu)
            .unwrap();
        let ids = t["input_ids"].to_dtype(candle_core::DType::U32).unwrap();
        let ids = ids.to_vec2::<u32>().unwrap();
        let want = t["logits"].to_vec3::<f32>().unwrap();
        let vocab = model.config().vocab_size;
        let dec = Decoder::new(&model).unwrap();
        for (row, ids) in ids.iter().enumerate() {
            let split = 5;
            let (st, first) = super::super::prefill::prefill(&model, &ids[..split]).unwrap();
            let mut got = vec![first.to_vec1::<f32>().unwrap()];
            let mut st = dec.state_from(&st).unwrap();
            for &id in &ids[split..] {
                got.push(dec.step(&[id], &mut st).remove(0));
            }
            for (i, g) in got.iter().enumerate() {
                let w = &want[row][split - 1 + i];
                let diff = g[..vocab]
                    .iter()
                    .zip(&w[..vocab])
                    .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
                assert!(diff < 1e-4, "row {row}, position {}: {diff}", split - 1 + i);
            }
        }
    }
}
