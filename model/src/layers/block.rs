//! One residual block, h + mixer(rms_norm(h)), whose mixer is the architecture's: the selective
//! SSM of Mamba-1 or the SSD of Mamba-2. Everything around the mixer is shared.

use candle_core::{DType, Result, Tensor};
use candle_nn::VarBuilder;

use crate::config::{Arch, Config};
use crate::layers::mixer::{Mixer, MixerState};
use crate::mamba2::Mixer2;

/// One residual block.
#[derive(Clone, Debug)]
pub(crate) struct Block {
    pub(crate) norm: Tensor,
    pub(crate) mixer: BlockMixer,
}

/// The mixer of a block, one per architecture, each with the same operations.
#[derive(Clone, Debug)]
pub(crate) enum BlockMixer {
    Mamba1(Mixer),
    Mamba2(Mixer2),
}

/// Calls the same method on whichever mixer it is.
macro_rules! each {
    ($m:expr, $x:ident => $e:expr) => {
        match $m {
            BlockMixer::Mamba1($x) => $e,
            BlockMixer::Mamba2($x) => $e,
        }
    };
}

impl BlockMixer {
    /// The mixer's parameter names (below `...mixer.`) and shapes for `cfg.arch`.
    pub(crate) fn shapes(cfg: &Config) -> Vec<(&'static str, Vec<usize>)> {
        match cfg.arch {
            Arch::Mamba1 => Mixer::shapes(cfg).to_vec(),
            Arch::Mamba2 => Mixer2::shapes(cfg).to_vec(),
        }
    }

    pub(crate) fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        Ok(match cfg.arch {
            Arch::Mamba1 => BlockMixer::Mamba1(Mixer::new(cfg, vb)?),
            Arch::Mamba2 => BlockMixer::Mamba2(Mixer2::new(cfg, vb)?),
        })
    }

    /// The parameters in the order of [`BlockMixer::shapes`].
    pub(crate) fn tensors(&self) -> Vec<&Tensor> {
        each!(self, m => m.tensors().to_vec())
    }

    pub(crate) fn detach(&self) -> BlockMixer {
        match self {
            BlockMixer::Mamba1(m) => BlockMixer::Mamba1(m.detach()),
            BlockMixer::Mamba2(m) => BlockMixer::Mamba2(m.detach()),
        }
    }

    pub(crate) fn into_weight_dtype(self, dtype: DType) -> Result<BlockMixer> {
        Ok(match self {
            BlockMixer::Mamba1(m) => BlockMixer::Mamba1(m.into_weight_dtype(dtype)?),
            BlockMixer::Mamba2(m) => BlockMixer::Mamba2(m.into_weight_dtype(dtype)?),
        })
    }

    pub(crate) fn forward(&self, h: &Tensor, resets: Option<&Tensor>, dt: DType) -> Result<Tensor> {
        each!(self, m => m.forward(h, resets, dt))
    }

    pub(crate) fn prefill(&self, h: &Tensor) -> Result<(Tensor, MixerState)> {
        each!(self, m => m.prefill(h))
    }

    pub(crate) fn step(&self, h: &Tensor, st: &mut MixerState) -> Result<Tensor> {
        each!(self, m => m.step(h, st))
    }
}
