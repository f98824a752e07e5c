#![warn(missing_docs)]
//! How a layer is computed, apart from what it computes and from the code
//! generator that writes the instructions: the layer plan ([`layer_plan`]:
//! fusion groups, row bands, threads), each stage's blocking, packed
//! weight layout and loop nest ([`stage_plan`]), the input rows a range of output rows reads
//! ([`rows`]), the functions to compile and the steps that run them
//! ([`program`]), the choice of generator ([`backend`]), and how much code
//! a layer may need ([`limits`]). Plain values with their reasons, printed
//! by `convjit plan`; shared by both generators (which emit a stage's
//! loop nest, [`stage_plan::LoopNest`], rather than walk it each), the JIT
//! and the AOT builder.
#![forbid(unsafe_code)]

pub mod backend;
pub mod layer_plan;
pub mod limits;
pub mod program;
pub mod rows;
pub mod stage_plan;

pub use backend::Backend;
pub use layer_plan::{Fusion, Group, Host, LayerPlan, Options, Split, Winograd};
pub use stage_plan::{Schedule, Strategy};
