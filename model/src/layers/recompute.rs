//! Recomputation in backward at the scale of a part of a layer (Chen et al. 2016, as mamba_ssm's
//! fused mixer recomputes its conv and dt): `y = f(x, params)` becomes one autograd node that
//! keeps only its inputs and output. The forward runs `f` with no graph; the backward runs it
//! again, with a graph, on leaves standing for the inputs, and backpropagates the incoming
//! gradient through it.
//!
//! This is what keeps a training step's memory near what the model's algorithm needs on a
//! device without the CPU's fused ops: there a graph of separate candle ops would hold every
//! intermediate of every layer (each op holds its inputs) until the end of backward. With it,
//! a layer keeps the few tensors between its parts, and one part's intermediates exist at a
//! time, while its backward runs.

use std::sync::{Arc, Mutex};

use candle_core::backprop::GradStore;
use candle_core::{
    CpuStorage, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Storage, Tensor, Var,
};

/// A part of a layer: its output from its input (rows `start..` of the whole input) and its
/// parameters, in the order given.
pub type Part = Arc<dyn Fn(&Tensor, usize, &[Tensor]) -> Result<Tensor> + Send + Sync>;

/// `f(x, params)`, kept for backward as its input and parameters only (see the module's
/// doc). With `rows`, `f` maps rows of `x` (its first dimension) to rows of its output one
/// block of `rows` at a time, forward and backward, so that only one block's intermediates
/// exist at once (the LM head over a large vocabulary). Without a gradient to track, `f` just
/// runs.
pub fn recompute(x: &Tensor, params: &[Tensor], rows: Option<usize>, f: Part) -> Result<Tensor> {
    let tracked = x.track_op() || params.iter().any(Tensor::track_op);
    let plain: Vec<Tensor> = params.iter().map(Tensor::detach).collect();
    let out = by_rows(&x.detach(), rows, |x, start| f(x, start, &plain))?;
    if !tracked {
        return Ok(out);
    }
    let shapes: Vec<Shape> = params.iter().map(|p| p.shape().clone()).collect();
    let op = Recompute {
        f,
        rows,
        shapes,
        out: Mutex::new(Some(out)),
    };
    match params {
        [] => candle_core::bail!("recompute: a part without parameters"),
        [p] => x.apply_op2(p, op),
        [p, q] => x.apply_op3(p, q, op),
        [p, rest @ ..] => {
            // The small parameters travel as one f32 vector (a custom op takes three tensors).
            let flat = rest
                .iter()
                .map(|t| t.to_dtype(DType::F32)?.flatten_all())
                .collect::<Result<Vec<_>>>()?;
            x.apply_op3(p, &Tensor::cat(&flat, 0)?, op)
        }
    }
}

/// Tokens a layer's part recomputes at once in backward (whole sequences, at least one):
/// bounds the intermediates that exist at a time, whatever the batch.
pub const PART_TOKENS: usize = 4096;

/// Sequences of `seq_len` tokens per block of a layer's part (see [`PART_TOKENS`]).
pub fn rows_per_part(seq_len: usize) -> usize {
    (PART_TOKENS / seq_len.max(1)).max(1)
}

/// Rows `start..start + len` of a (b, l) document-start mask, for a part that runs on a block
/// of sequences.
pub fn rows_of(resets: Option<&Tensor>, start: usize, len: usize) -> Result<Option<Tensor>> {
    resets.map(|r| r.narrow(0, start, len)).transpose()
}

/// (start, len) of each block of `rows` rows (all `n` at once without) of an input of `n`.
fn blocks(n: usize, rows: Option<usize>) -> impl Iterator<Item = (usize, usize)> {
    let rows = rows.unwrap_or(n).max(1);
    (0..n).step_by(rows).map(move |s| (s, rows.min(n - s)))
}

/// `f` over `x` whole, or over blocks of `rows` rows of it, concatenated.
fn by_rows(
    x: &Tensor,
    rows: Option<usize>,
    f: impl Fn(&Tensor, usize) -> Result<Tensor>,
) -> Result<Tensor> {
    let n = x.dim(0)?;
    match rows {
        Some(r) if r < n => {
            let parts = blocks(n, rows)
                .map(|(s, len)| f(&x.narrow(0, s, len)?, s))
                .collect::<Result<Vec<_>>>()?;
            Tensor::cat(&parts, 0)
        }
        _ => f(x, 0),
    }
}

/// The gradient that reached `leaf`; `what` names it in the error.
pub(crate) fn leaf_grad(grads: &GradStore, leaf: &Var, what: &str) -> Result<Tensor> {
    grads
        .get(leaf.as_tensor())
        .cloned()
        .ok_or_else(|| candle_core::Error::Msg(format!("no gradient reached {what}")))
}

/// Adds the gradients of `params` found in `from` into `into`.
pub(crate) fn add_grads(into: &mut GradStore, from: &GradStore, params: &[Tensor]) -> Result<()> {
    for p in params {
        let Some(g) = from.get(p) else { continue };
        let sum = match into.get(p) {
            Some(a) => (a + g)?,
            None => g.clone(),
        };
        into.insert(p, sum);
    }
    Ok(())
}

struct Recompute {
    f: Part,
    rows: Option<usize>,
    /// The parameters' shapes (those that travel packed are unpacked to them).
    shapes: Vec<Shape>,
    /// The forward's result, handed to candle once (the op itself lives as long as the graph).
    out: Mutex<Option<Tensor>>,
}

impl Recompute {
    /// The output computed before the op was applied, as the device's storage.
    fn take(&self) -> Result<(Storage, Shape)> {
        let out = self
            .out
            .lock()
            .map_err(|_| candle_core::Error::Msg("recompute: poisoned".into()))?
            .take()
            .ok_or_else(|| candle_core::Error::Msg("recompute: forward ran twice".into()))?;
        let out = out.contiguous()?;
        let (storage, layout) = out.storage_and_layout();
        let storage = match layout.start_offset() {
            0 => storage.try_clone(layout)?,
            _ => {
                drop(storage);
                let copy = out.copy()?;
                let (s, l) = copy.storage_and_layout();
                s.try_clone(l)?
            }
        };
        Ok((storage, out.shape().clone()))
    }

    fn cpu(&self) -> Result<(CpuStorage, Shape)> {
        match self.take()? {
            (Storage::Cpu(s), shape) => Ok((s, shape)),
            _ => candle_core::bail!("recompute: the part ran on another device"),
        }
    }

    #[cfg(feature = "cuda")]
    fn cuda(&self) -> Result<(candle_core::CudaStorage, Shape)> {
        match self.take()? {
            (Storage::Cuda(s), shape) => Ok((s, shape)),
            _ => candle_core::bail!("recompute: the part ran on another device"),
        }
    }

    /// Gradients of x and of each argument after it, `grad` flowing into the output: `f`
    /// again with a graph, block by block.
    fn grads(&self, x: &Tensor, args: &[&Tensor], grad: &Tensor) -> Result<Vec<Option<Tensor>>> {
        // A leaf stands for each argument: a parameter itself, anything else a copy.
        let leaves = args
            .iter()
            .map(|a| Var::from_tensor(a))
            .collect::<Result<Vec<Var>>>()?;
        let leaf_tensors: Vec<Tensor> = leaves.iter().map(|l| l.as_tensor().clone()).collect();
        let params = self.unpack(&leaves)?;
        let mut gx = Vec::new();
        let mut acc = GradStore::default();
        for (start, len) in blocks(x.dim(0)?, self.rows) {
            let xv = Var::from_tensor(&x.narrow(0, start, len)?.detach())?;
            let y = (self.f)(xv.as_tensor(), start, &params)?;
            let g = grad.narrow(0, start, len)?.to_dtype(y.dtype())?;
            let grads = (y * g)?.sum_all()?.backward()?;
            if x.track_op() {
                gx.push(leaf_grad(&grads, &xv, "a recomputed part's input")?);
            }
            add_grads(&mut acc, &grads, &leaf_tensors)?;
        }
        let mut out = vec![match x.track_op() {
            true => Some(Tensor::cat(&gx, 0)?.to_dtype(x.dtype())?),
            false => None,
        }];
        for (a, l) in args.iter().zip(&leaf_tensors) {
            out.push(match a.track_op() {
                true => acc.remove(l).map(|g| g.to_dtype(a.dtype())).transpose()?,
                false => None,
            });
        }
        Ok(out)
    }

    /// The parameters from the op's arguments: the first as it is, the others unpacked from
    /// the f32 vector they travel in (or the second as it is, when there are two).
    fn unpack(&self, leaves: &[Var]) -> Result<Vec<Tensor>> {
        let mut out = vec![leaves[0].as_tensor().clone()];
        match (self.shapes.len(), leaves.get(1)) {
            (1, _) => {}
            (2, Some(q)) => out.push(q.as_tensor().clone()),
            (_, Some(flat)) => {
                let mut at = 0;
                for s in &self.shapes[1..] {
                    out.push(flat.as_tensor().narrow(0, at, s.elem_count())?.reshape(s)?);
                    at += s.elem_count();
                }
            }
            _ => candle_core::bail!("recompute: parameters missing"),
        }
        Ok(out)
    }
}

impl CustomOp2 for Recompute {
    fn name(&self) -> &'static str {
        "recompute"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.cpu()
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        _: &candle_core::CudaStorage,
        _: &Layout,
        _: &candle_core::CudaStorage,
        _: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        self.cuda()
    }

    fn bwd(
        &self,
        x: &Tensor,
        p: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let mut g = self.grads(x, &[p], grad)?.into_iter();
        Ok((g.next().flatten(), g.next().flatten()))
    }
}

impl CustomOp3 for Recompute {
    fn name(&self) -> &'static str {
        "recompute"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.cpu()
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        _: &candle_core::CudaStorage,
        _: &Layout,
        _: &candle_core::CudaStorage,
        _: &Layout,
        _: &candle_core::CudaStorage,
        _: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        self.cuda()
    }

    fn bwd(
        &self,
        x: &Tensor,
        p: &Tensor,
        q: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let mut g = self.grads(x, &[p, q], grad)?.into_iter();
        Ok((g.next().flatten(), g.next().flatten(), g.next().flatten()))
    }
}
