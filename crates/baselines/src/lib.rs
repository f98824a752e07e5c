//! Hand-written convolution kernels that convjit's generated code is
//! benchmarked against. Four families run a whole [`Layer`] stage by stage
//! with the contract's semantics (NHWC f32, TensorFlow weight layouts,
//! convolution, `+ bias`, activation, then `+ residual` = the layer's input):
//!
//! | family | conv | depthwise | pointwise |
//! | --- | --- | --- | --- |
//! | [`Family::Naive`] (`"naive"`) | loops | loops | loops |
//! | [`Family::Sse`] (`"sse128"`) | SSE direct conv | SSE | SSE |
//! | [`Family::Avx2`] (`"avx256"`) | AVX2 direct conv | AVX2 | AVX2 |
//! | [`Family::Gemm`] (`"gemm"`) | im2col + `gemm` | SSE (naive off x86_64) | `gemm` |
//!
//! - **naive**: the plain loop nest a Rust programmer would write: f32
//!   accumulation, bounds checks inside the loops, no cleverness. What you
//!   get without convjit.
//! - **sse128**: hand-optimised kernels at the JIT's own vector width
//!   (128-bit `__m128`, FMA). Pointwise and standard conv share one
//!   register-blocked microkernel (4 pixels x 12 output channels = 12
//!   accumulators) over weights repacked once into `[Co/12][Kh*Kw][Ci][12]`;
//!   depthwise keeps the contract's `[Kh*Kw][C*M]` weights and blocks 4
//!   pixels x 4 channels (multiplier > 1: the input is first expanded to
//!   `C*M` channels, then the same kernel runs). Interior pixels run without
//!   bounds checks; border pixels one at a time over their in-bounds taps;
//!   channel tails (`C % 4`, `Co % 12`) are exact. Needs x86_64 with FMA:
//!   elsewhere [`Baseline::prepare`] returns `None`.
//! - **avx256**: the same kernels written for 256-bit `__m256` with AVX2 and
//!   FMA, as a library would hand-write them for x86-64-v3: conv and
//!   pointwise block 6 pixels x 16 output channels (12 accumulators, each
//!   broadcast input shared by two weight vectors, as XNNPACK's 6x16
//!   microkernel) over weights repacked to `[Co/16][Kh*Kw][Ci][16]`, the
//!   last block 8 wide when `Co % 16 <= 8`; depthwise blocks 6 pixels x 16
//!   channels, then 8. Channel tails are masked loads and stores
//!   (`_mm256_maskload_ps` / `_mm256_maskstore_ps`), never touching memory
//!   past the buffers. Needs x86_64 with AVX2 and FMA (detected at run
//!   time): elsewhere [`Baseline::prepare`] returns `None`.
//! - **gemm**: the `gemm` crate's tuned microkernels (AVX2/FMA 256-bit, or
//!   AVX-512 where that crate enables it; wider than the JIT's 128 bits),
//!   single-threaded (`Parallelism::None`). Pointwise is one GEMM
//!   `[N*H*W, Ci] x [Ci, Co]`; conv is im2col (`[Ho*Wo, Kh*Kw*Ci]` per image,
//!   zero padded) then a GEMM with the HWIO weights viewed as
//!   `[Kh*Kw*Ci, Co]`; then one pass for bias, activation and residual.
//!   A GEMM cannot express depthwise, so depthwise stages of a mixed layer
//!   (e.g. a separable conv) run the sse128 depthwise kernel (the naive one
//!   off x86_64/without FMA); a layer made only of depthwise stages gets
//!   `None`. [`Baseline::stage_kernels`] says what runs for each stage.
//!
//! Weight repacking and scratch allocation happen once in
//! [`Baseline::prepare`]; [`Baseline::run`] only computes (the first run
//! with a larger batch than before grows the inter-stage buffers once).

#[cfg(target_arch = "x86_64")]
mod avx2;
mod gemm_kernels;
#[cfg(target_arch = "x86_64")]
mod geometry;
mod naive;
mod peak;
#[cfg(target_arch = "x86_64")]
mod sse;

pub use peak::FmaPeak;

use convjit_ir::{Activation, Layer, Stage, StageKind, StageWeights, Weights};
use geometry::activate1;

/// Which hand-written implementation to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    Naive,
    Sse,
    Gemm,
    Avx2,
}

impl Family {
    pub const ALL: [Family; 4] = [Family::Naive, Family::Sse, Family::Gemm, Family::Avx2];

    /// `"naive"`, `"sse128"`, `"gemm"`, `"avx256"`.
    pub fn name(self) -> &'static str {
        match self {
            Family::Naive => "naive",
            Family::Sse => "sse128",
            Family::Gemm => "gemm",
            Family::Avx2 => "avx256",
        }
    }

    /// Whether this machine runs the family's kernels (naive and gemm run
    /// everywhere; sse128 needs x86_64 with FMA, avx256 AVX2 and FMA).
    pub fn available(self) -> bool {
        match self {
            Family::Naive | Family::Gemm => true,
            Family::Sse => sse_available(),
            Family::Avx2 => avx2_available(),
        }
    }

    /// What the family needs of the CPU, for messages when it is absent.
    pub fn needs(self) -> &'static str {
        match self {
            Family::Naive | Family::Gemm => "nothing",
            Family::Sse => "x86-64 with FMA",
            Family::Avx2 => "x86-64 with AVX2 and FMA",
        }
    }
}

/// One stage's prepared kernel.
enum Kernel {
    Naive,
    #[cfg(target_arch = "x86_64")]
    SseConv(sse::Conv),
    #[cfg(target_arch = "x86_64")]
    SseDepthwise(sse::Depthwise),
    #[cfg(target_arch = "x86_64")]
    Avx2Conv(avx2::Conv),
    #[cfg(target_arch = "x86_64")]
    Avx2Depthwise(avx2::Depthwise),
    Gemm(gemm_kernels::Gemm),
}

impl Kernel {
    fn name(&self) -> &'static str {
        match self {
            Kernel::Naive => "naive",
            #[cfg(target_arch = "x86_64")]
            Kernel::SseConv(_) => "sse128",
            #[cfg(target_arch = "x86_64")]
            Kernel::SseDepthwise(_) => "sse128",
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2Conv(_) | Kernel::Avx2Depthwise(_) => "avx256",
            Kernel::Gemm(_) => "gemm",
        }
    }
}

struct Prepared {
    stage: Stage,
    weights: StageWeights,
    kernel: Kernel,
}

/// A layer prepared for one family: weights packed, scratch allocated.
pub struct Baseline {
    family: Family,
    layer: Layer,
    stages: Vec<Prepared>,
    /// Ping-pong buffers between stages (grown to `batch` on demand).
    bufs: [Vec<f32>; 2],
}

/// Whether the sse128 kernels can run on this machine.
pub fn sse_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        sse::available()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether the avx256 kernels can run on this machine.
pub fn avx2_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        avx2::available()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

impl Baseline {
    /// Prepares `layer` for `family`, packing weights and allocating scratch.
    ///
    /// `None` when the family cannot run this layer: `Sse` off x86_64 or
    /// without FMA; `Avx2` off x86_64 or without AVX2 and FMA; `Gemm` for a layer made only of depthwise stages (a
    /// mixed layer runs its depthwise stages with the sse128 kernel); all
    /// but `Naive` for a layer with a grouped stage. Panics
    /// if `weights` were not made for `layer`.
    pub fn prepare(family: Family, layer: &Layer, weights: &Weights) -> Option<Baseline> {
        weights
            .check(layer)
            .expect("weights must belong to the layer");
        if family == Family::Gemm
            && layer
                .stages
                .iter()
                .all(|s| matches!(s.kind, StageKind::Depthwise { .. }))
        {
            return None;
        }
        let stages = layer
            .stages
            .iter()
            .zip(weights.stages())
            .map(|(s, w)| {
                Some(Prepared {
                    kernel: prepare_stage(family, s, w)?,
                    stage: s.clone(),
                    weights: w.clone(),
                })
            })
            .collect::<Option<Vec<_>>>()?;
        let mut b = Baseline {
            family,
            layer: layer.clone(),
            stages,
            bufs: [Vec::new(), Vec::new()],
        };
        b.grow(1);
        Some(b)
    }

    /// Prepares one stage of `layer` alone, as a one-stage layer whose input
    /// is the stage's input. Its `residual` (which in `layer` adds the
    /// layer's input) then adds the stage's own input, and is dropped when
    /// that shape differs from the stage's output. `None` as for
    /// [`Baseline::prepare`] (e.g. `Gemm` on a depthwise stage).
    pub fn prepare_stage(
        family: Family,
        layer: &Layer,
        weights: &Weights,
        index: usize,
    ) -> Option<Baseline> {
        weights
            .check(layer)
            .expect("weights must belong to the layer");
        let mut stage = layer.stages[index].clone();
        stage.residual &= stage.input == stage.output;
        let one = Layer {
            name: format!("{}.{}", layer.name, stage.name),
            input: stage.input,
            stages: vec![stage],
        };
        let w = Weights::new(&one, vec![weights.stages()[index].clone()]).ok()?;
        Baseline::prepare(family, &one, &w)
    }

    /// `"naive"`, `"sse128"`, `"gemm"`, `"avx256"`.
    pub fn name(&self) -> &'static str {
        self.family.name()
    }

    pub fn family(&self) -> Family {
        self.family
    }

    pub fn layer(&self) -> &Layer {
        &self.layer
    }

    /// The kernel that runs each stage, in order: `"naive"`, `"sse128"`,
    /// `"avx256"` or `"gemm"` (the gemm family's depthwise stages say
    /// `"sse128"`).
    pub fn stage_kernels(&self) -> Vec<&'static str> {
        self.stages.iter().map(|p| p.kernel.name()).collect()
    }

    fn grow(&mut self, batch: usize) {
        let n = self.stages.len();
        // Stage i (not the last) writes bufs[i % 2].
        for (i, p) in self.stages.iter().enumerate().take(n.saturating_sub(1)) {
            let need = batch * p.stage.output.len();
            let buf = &mut self.bufs[i % 2];
            if buf.len() < need {
                buf.resize(need, 0.0);
            }
        }
    }

    /// Runs the layer on `batch` NHWC images. Panics unless
    /// `input.len() == batch * layer.input.len()` and
    /// `output.len() == batch * layer.output().len()`.
    pub fn run(&mut self, input: &[f32], output: &mut [f32], batch: usize) {
        assert_eq!(
            Some(input.len()),
            batch.checked_mul(self.layer.input.len()),
            "input length"
        );
        assert_eq!(
            Some(output.len()),
            batch.checked_mul(self.layer.output().len()),
            "output length"
        );
        if self.stages.is_empty() {
            output.copy_from_slice(input);
            return;
        }
        self.grow(batch);
        let mut bufs = std::mem::take(&mut self.bufs);
        let last = self.stages.len() - 1;
        for (i, p) in self.stages.iter_mut().enumerate() {
            // Stage i reads bufs[(i - 1) % 2] (or the input) and writes
            // bufs[i % 2] (or the output).
            let [b0, b1] = &mut bufs;
            let (prev, next) = if i % 2 == 0 { (&*b1, b0) } else { (&*b0, b1) };
            let src = if i == 0 {
                input
            } else {
                &prev[..batch * p.stage.input.len()]
            };
            let dst = if i == last {
                &mut *output
            } else {
                &mut next[..batch * p.stage.output.len()]
            };
            let residual = p.stage.residual.then_some(input);
            run_stage(p, src, dst, batch, residual);
        }
        self.bufs = bufs;
    }
}

fn prepare_stage(family: Family, s: &Stage, w: &StageWeights) -> Option<Kernel> {
    let depthwise = matches!(s.kind, StageKind::Depthwise { .. });
    // The hand-written kernels and the gemm crate's calls are dense: a
    // grouped stage runs only in the naive one.
    if s.groups() > 1 && family != Family::Naive {
        return None;
    }
    Some(match family {
        Family::Naive => Kernel::Naive,
        Family::Sse => sse_kernel(s, w)?,
        Family::Avx2 => avx2_kernel(s, w)?,
        Family::Gemm if depthwise => sse_kernel(s, w).unwrap_or(Kernel::Naive),
        Family::Gemm => Kernel::Gemm(gemm_kernels::Gemm::new(s, w)),
    })
}

#[cfg(target_arch = "x86_64")]
fn sse_kernel(s: &Stage, w: &StageWeights) -> Option<Kernel> {
    if !sse::available() {
        return None;
    }
    Some(match s.kind {
        StageKind::Depthwise { .. } => Kernel::SseDepthwise(sse::Depthwise::new(s, w)),
        StageKind::Conv { .. } | StageKind::Pointwise { .. } => {
            Kernel::SseConv(sse::Conv::new(s, w))
        }
    })
}

#[cfg(not(target_arch = "x86_64"))]
fn sse_kernel(_: &Stage, _: &StageWeights) -> Option<Kernel> {
    None // sse128 kernels exist only on x86_64
}

#[cfg(target_arch = "x86_64")]
fn avx2_kernel(s: &Stage, w: &StageWeights) -> Option<Kernel> {
    if !avx2::available() {
        return None;
    }
    Some(match s.kind {
        StageKind::Depthwise { .. } => Kernel::Avx2Depthwise(avx2::Depthwise::new(s, w)),
        StageKind::Conv { .. } | StageKind::Pointwise { .. } => {
            Kernel::Avx2Conv(avx2::Conv::new(s, w))
        }
    })
}

#[cfg(not(target_arch = "x86_64"))]
fn avx2_kernel(_: &Stage, _: &StageWeights) -> Option<Kernel> {
    None // avx256 kernels exist only on x86_64
}

fn run_stage(
    p: &mut Prepared,
    input: &[f32],
    output: &mut [f32],
    batch: usize,
    residual: Option<&[f32]>,
) {
    match &mut p.kernel {
        Kernel::Naive => naive::run_stage(&p.stage, &p.weights, input, output, batch, residual),
        #[cfg(target_arch = "x86_64")]
        Kernel::SseConv(k) => k.run(input, output, batch, residual),
        #[cfg(target_arch = "x86_64")]
        Kernel::SseDepthwise(k) => k.run(input, output, batch, residual),
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx2Conv(k) => k.run(input, output, batch, residual),
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx2Depthwise(k) => k.run(input, output, batch, residual),
        Kernel::Gemm(k) => k.run(input, output, batch, residual),
    }
}

/// `act(x + bias) + residual` over NHWC `out` with `c` channels, in place.
fn epilogue(
    out: &mut [f32],
    c: usize,
    bias: Option<&[f32]>,
    act: Activation,
    residual: Option<&[f32]>,
) {
    if let Some(b) = bias {
        for px in out.chunks_exact_mut(c) {
            for (o, b) in px.iter_mut().zip(b) {
                *o += b;
            }
        }
    }
    match act {
        Activation::None => {}
        act => out.iter_mut().for_each(|o| *o = activate1(*o, act)),
    }
    if let Some(r) = residual {
        for (o, r) in out.iter_mut().zip(r) {
            *o += r;
        }
    }
}
