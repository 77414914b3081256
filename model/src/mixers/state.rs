//! The recurrent state a Mamba mixer carries from one position to the next.

use candle_core::Tensor;

/// The recurrent state of one mixer after a prompt: the last `d_conv - 1` conv inputs
/// (b, conv channels, d_conv - 1) and the SSM state (Mamba-1: (b, di, d_state); Mamba-2:
/// (b, heads, head_dim, d_state)).
#[derive(Clone, Debug)]
pub struct MixerState {
    pub conv: Tensor,
    pub ssm: Tensor,
}

impl MixerState {
    /// A prefill's output and state, from a forward asked to keep the state.
    pub(crate) fn prefilled(
        run: (Tensor, Option<MixerState>),
    ) -> candle_core::Result<(Tensor, MixerState)> {
        let (out, state) = run;
        let state = state.ok_or_else(|| candle_core::Error::Msg("no state".into()))?;
        Ok((out, state))
    }
}
