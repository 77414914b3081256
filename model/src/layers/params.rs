//! A layer kind's parameters, declared once: [`param_table!`] turns one table of (field,
//! transformers name, shape, initialisation) into the struct that holds them and the functions
//! that list, read and transform them, so loading, saving, initialisation, dtype casts and the
//! CPU fast step all read the same table.

/// How a parameter is initialised (mamba_ssm's `_init_weights` and each mixer's own init, see
/// [`crate::init`]); it also tells the matrices apart, which generation may hold in bf16 or
/// 8 bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Init {
    /// The token embedding: N(0, initializer_range).
    Embedding,
    /// PyTorch `nn.Linear`'s default, U(+-1/sqrt(fan_in)).
    Linear,
    /// `nn.Linear`'s default divided by sqrt(n_layer) when `rescale_prenorm_residual`.
    OutProj,
    /// Mamba-1's dt projection: U(+-dt_scale / sqrt(dt_rank)).
    DtProj,
    /// softplus^-1(dt), dt log-uniform in [dt_min, dt_max] floored at dt_init_floor.
    DtBias,
    /// PyTorch `nn.Conv1d`'s default: U(+-1/sqrt(d_conv)) (fan_in = 1 * d_conv).
    Conv,
    /// 1: RMSNorm weights and the skip D.
    Ones,
    /// A_log[c, i] = log(i + 1) (Mamba-1, S4D-real): the last dimension is the state.
    ALogRange,
    /// A_log = log(U(1, 16)), one A per head (Mamba-2).
    ALogUniform,
    /// 1 / R, R the MIMO rank (Mamba-3's mimo_x and mimo_o).
    InvRank,
}

impl Init {
    /// A matrix the activations are multiplied with or looked up in (the projections and the
    /// embedding): the tensors generation may hold in another dtype and the fast step may read
    /// in 8 bits.
    pub fn is_matrix(self) -> bool {
        matches!(
            self,
            Init::Embedding | Init::Linear | Init::OutProj | Init::DtProj
        )
    }
}

/// One parameter of a table: its name below the layer's prefix, shape and initialisation.
#[derive(Clone, Debug, PartialEq)]
pub struct Param {
    pub name: &'static str,
    pub shape: Vec<usize>,
    pub init: Init,
}

/// Declares a struct of named parameters from one table:
///
/// ```ignore
/// param_table! {
///     pub struct Params for c {
///         in_proj: "in_proj.weight", [2 * c.d_inner(), c.d_model], Linear;
///     }
/// }
/// ```
///
/// gives `Params { in_proj: Tensor }` with `table(c)` (names, shapes, inits), `read(c, vb)`,
/// `named()`, `map(f)`, `select(names)` and `replaced(names, subs)`, all in the order of the
/// table. `c` names the `&Config` the shapes
/// are computed from.
macro_rules! param_table {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident for $cfg:ident {
            $( $field:ident : $key:literal, [$($dim:expr),* $(,)?], $init:ident; )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Debug)]
        $vis struct $name {
            $( pub(crate) $field: candle_core::Tensor, )*
        }

        impl $name {
            /// Every parameter: its transformers name (below `...mixer.`), shape and
            /// initialisation. The one table of them.
            pub fn table($cfg: &$crate::config::Config) -> Vec<$crate::layers::params::Param> {
                vec![$($crate::layers::params::Param {
                    name: $key,
                    shape: vec![$($dim),*],
                    init: $crate::layers::params::Init::$init,
                }),*]
            }

            /// Reads every parameter of the table from `vb`; errors name a missing tensor or a
            /// wrong shape.
            pub fn read(
                $cfg: &$crate::config::Config,
                vb: &candle_nn::VarBuilder,
            ) -> candle_core::Result<Self> {
                Ok(Self { $( $field: vb.get(vec![$($dim),*], $key)?, )* })
            }

            /// The parameters with their names, in the order of the table.
            pub fn named(&self) -> Vec<(&'static str, &candle_core::Tensor)> {
                vec![$(($key, &self.$field)),*]
            }

            /// The parameters with their names and initialisations, in the order of the table.
            pub fn named_with_init(
                &self,
            ) -> Vec<(&'static str, &candle_core::Tensor, $crate::layers::params::Init)> {
                vec![$(($key, &self.$field, $crate::layers::params::Init::$init)),*]
            }

            /// Every parameter through `f`, which is told how it is initialised (and so
            /// whether it is a matrix).
            pub fn map(
                &self,
                mut f: impl FnMut(
                    &candle_core::Tensor,
                    $crate::layers::params::Init,
                ) -> candle_core::Result<candle_core::Tensor>,
            ) -> candle_core::Result<Self> {
                Ok(Self {
                    $( $field: f(&self.$field, $crate::layers::params::Init::$init)?, )*
                })
            }

            /// The parameters named in `names`, in the order of the table.
            pub fn select(&self, names: &[&str]) -> Vec<candle_core::Tensor> {
                let mut out = Vec::new();
                $( if names.contains(&$key) { out.push(self.$field.clone()); } )*
                out
            }

            /// The same parameters with those named in `names` replaced by `subs`, in the
            /// order of the table (the order [`Self::select`] gives them).
            pub fn replaced(
                &self,
                names: &[&str],
                subs: &[candle_core::Tensor],
            ) -> candle_core::Result<Self> {
                let mut subs = subs.iter();
                let mut take = |key: &str, own: &candle_core::Tensor| match names.contains(&key) {
                    true => subs.next().cloned().ok_or_else(|| {
                        candle_core::Error::Msg(format!("no replacement for {key}"))
                    }),
                    false => Ok(own.clone()),
                };
                Ok(Self { $( $field: take($key, &self.$field)?, )* })
            }
        }
    };
}
pub(crate) use param_table;

/// The parameters of a kind whose table depends on its config (which of them it has, or
/// their names), in the table's order: what [`param_table!`] gives a fixed table.
#[derive(Clone, Debug)]
pub struct Params(pub(crate) Vec<(&'static str, candle_core::Tensor, Init)>);

impl Params {
    /// Reads every parameter of `table` from `vb`.
    pub fn read(table: Vec<Param>, vb: &candle_nn::VarBuilder) -> candle_core::Result<Params> {
        let w = table
            .into_iter()
            .map(|p| Ok((p.name, vb.get(p.shape, p.name)?, p.init)))
            .collect::<candle_core::Result<_>>()?;
        Ok(Params(w))
    }

    /// The parameters with their names, in the order of the table.
    pub fn named(&self) -> Vec<(&'static str, &candle_core::Tensor)> {
        self.0.iter().map(|(n, t, _)| (*n, t)).collect()
    }

    /// The parameters with their names and initialisations.
    pub fn named_with_init(&self) -> Vec<(&'static str, &candle_core::Tensor, Init)> {
        self.0.iter().map(|(n, t, i)| (*n, t, *i)).collect()
    }

    /// Every parameter through `f`, which is told how it is initialised.
    pub fn map(
        &self,
        mut f: impl FnMut(&candle_core::Tensor, Init) -> candle_core::Result<candle_core::Tensor>,
    ) -> candle_core::Result<Params> {
        let w = self
            .0
            .iter()
            .map(|(n, t, i)| Ok((*n, f(t, *i)?, *i)))
            .collect::<candle_core::Result<_>>()?;
        Ok(Params(w))
    }

    /// The parameter `name`.
    pub fn get(&self, name: &str) -> candle_core::Result<&candle_core::Tensor> {
        match self.0.iter().find(|(n, _, _)| *n == name) {
            Some((_, t, _)) => Ok(t),
            None => candle_core::bail!("no parameter {name}"),
        }
    }
}
