#![warn(missing_docs)]
//! convjit's layer IR: the validated meaning of a `.conv` layer, and the
//! plain reference interpreter that every generated kernel is checked against.
//!
//! Data flow: `convjit_lang::parse` gives a syntax tree; [`lower`] checks it
//! and infers every shape, giving [`Layer`]s whose stages are all primitive
//! (separable convolutions are expanded here); [`Weights`] binds arrays to
//! stages; [`interpret`] computes the output.
#![forbid(unsafe_code)]

pub mod budget;
mod checking;
mod compare;
mod error;
mod interp;
mod layer;
mod lowering;
mod precision;
mod random;
#[cfg(feature = "proptest")]
pub mod random_layer;
mod reference;
pub mod separate;
mod weights;
pub mod winograd;

pub use checking::check_layer;
pub use compare::{bf16_rel_tol, compare, compare_within, tolerance, Comparison, REL_TOL};
pub use error::DataError;
pub use interp::{
    check_work, interpret, interpret_in, interpret_stage, interpret_with_magnitude,
    interpret_with_magnitude_in, magnitude, MAX_INTERPRETED_MACS,
};
pub use layer::{Activation, Layer, Padding, Shape, Stage, StageKind, MAX_DIM, MAX_TENSOR_ELEMS};
pub use lowering::lower;
pub use precision::{bf16_bits, round_bf16, Precision};
pub use random::Rng;
pub use reference::Reference;
pub use separate::{separate, Separated, Separation};
pub use weights::{StageWeights, Weights};

/// Parses and validates a whole `.conv` text in one step.
pub fn compile_source(src: &str) -> Result<Vec<Layer>, convjit_lang::Diagnostics> {
    lower(&convjit_lang::parse(src)?)
}
