//! convjit's measurements. [`harness`] times things: medians of calls,
//! variants sampled in interleaved rounds so that load falls on all of
//! them alike, the best of several rounds; `convjit bench` and `cargo bench
//! --bench kernels` both time with it. [`bench_layer`] is `convjit bench`'s
//! work per layer (the planned kernel, its variants, the hand-written
//! baselines of `convjit-baselines`, the interpreter and the FMA peaks, as
//! one JSON report), [`total`] and [`time_chain`] its work over a network.
//!
//! A crate of its own rather than part of `convjit-baselines`: the
//! baselines are hand-written kernels over the IR alone, while timing
//! the generated code needs the runtime (`convjit`'s `Kernel`); here both
//! meet, and neither the library nor the baselines gain an arrow.
#![forbid(unsafe_code)]

pub mod harness;
mod layer;
mod network;

pub use layer::{bench_layer, min_traffic_bytes};
pub use network::{time_chain, total};

/// A fixed yardstick, not this machine's ceiling: the nominal 128-bit FMA
/// peak of one AMD Zen 4 core (`vfmadd*ps xmm`: 58.7 GFLOP/s), the vector
/// width of Cranelift's x64 code, so that `pct_peak_128` compares across
/// machines and sessions. A 256- or 512-bit kernel, or one on several
/// threads, exceeds 100% of it. The ceilings of a run are the FMA loops
/// timed in its rounds (`measured_peak_*_gflops`, the `pct_measured_*`
/// figures), each one core's.
pub const PEAK_128_GFLOPS: f64 = 58.7;

/// Bytes copied per memcpy sample (the roofline's bandwidth roof): beyond
/// the L2 of the machines measured here, though within some L3s (then the
/// roof is a cache's bandwidth, higher than DRAM's).
pub const MEMCPY_MIB: usize = 64;

/// How a benchmark runs (`convjit bench`'s flags).
#[derive(Clone, Debug)]
pub struct Settings {
    /// Images per call.
    pub batch: usize,
    /// Time budget per variant, in seconds (each runs at least 3 samples).
    pub seconds: f64,
    /// Measure the variants this many times (each a share of the budget)
    /// and report each one's lowest median.
    pub rounds: u32,
    /// Time the (slow) interpreter and compare every variant with it.
    pub interpreter: bool,
    /// Time the hand-written baselines.
    pub baselines: bool,
    /// Also time a memcpy of [`MEMCPY_MIB`] (the roofline's bandwidth).
    pub memcpy: bool,
}

/// `x` rounded to `digits` decimals (the reports' figures).
pub fn round(x: f64, digits: i32) -> f64 {
    let p = 10f64.powi(digits);
    (x * p).round() / p
}
