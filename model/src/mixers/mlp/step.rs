//! The MLP in the CPU fast step ([`crate::decode`]): every token through the matrices
//! together; no state. Same arithmetic as [`Mlp::forward`](super::Mlp::forward).

use candle_core::Result;

use super::Mlp;
use crate::config::MlpKind;
use crate::kernels::rows::{fast_mixer, silu, RunArgs, Weights};

/// An MLP layer's weights for the step.
pub(crate) struct Step {
    w: Weights,
    kind: MlpKind,
    hidden: usize,
    names: Vec<&'static str>,
}

impl Step {
    pub(crate) fn new(m: &Mlp, int8: bool) -> Result<Step> {
        Ok(Step {
            w: Weights::new(m.w.named_with_init(), int8)?,
            kind: m.kind,
            hidden: m.hidden,
            names: m.w.named().into_iter().map(|(n, _)| n).collect(),
        })
    }

    #[inline(always)]
    fn run_body(&self, a: RunArgs) -> Result<()> {
        let (h, sc, out, threads) = (a.h, a.scratch, a.out, a.threads);
        let (f, tokens) = (self.hidden, h.len());
        self.w.with(|m| {
            let width = match self.kind {
                MlpKind::SwiGluFused => 2 * f,
                _ => f,
            };
            let [first, second] = sc.take([(tokens, width), (tokens, f)]);
            m.mat(self.names[0])?.matmul(h, first, threads);
            match self.kind {
                MlpKind::SwiGlu => {
                    m.mat(self.names[1])?.matmul(h, second, threads);
                    for (g, u) in first.iter_mut().zip(second.iter()) {
                        g.iter_mut().zip(u).for_each(|(g, u)| *g = silu(*g) * u);
                    }
                }
                MlpKind::SwiGluFused => {
                    for row in first.iter_mut() {
                        let (g, u) = row.split_at_mut(f);
                        g.iter_mut()
                            .zip(u.iter())
                            .for_each(|(g, u)| *g = silu(*g) * u);
                        row.truncate(f);
                    }
                }
                MlpKind::Relu2 => {
                    for row in first.iter_mut() {
                        row.iter_mut().for_each(|x| *x = x.max(0.0) * x.max(0.0));
                    }
                }
            }
            let down = self.names[self.names.len() - 1];
            m.mat(down)?.matmul(first, out, threads);
            Ok(())
        })
    }
}

fast_mixer!(Step);
