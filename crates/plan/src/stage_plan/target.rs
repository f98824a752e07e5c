//! What a code generator offers a stage plan: its vector width and
//! registers ([`Target`]), and which generator writes a given stage
//! ([`stage_target`]).

use crate::backend::Backend;
use convjit_ir::{Precision, Stage};

/// f32 lanes of the Cranelift generator's vectors: its x64 backend lowers
/// only 128-bit vectors (and NEON has no wider ones).
pub const LANES: usize = 4;

/// The most f32 lanes of any target (AVX-512: 16).
pub const MAX_LANES: usize = 16;

/// What a code generator offers the plan: vector width and registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Target {
    /// A concrete generator (never `Auto`).
    pub backend: Backend,
    /// f32 lanes per vector.
    pub lanes: usize,
    /// Vector registers the generator may use.
    pub vector_registers: usize,
    /// bf16 conv and pointwise stages run on AMX tiles where they fill
    /// them ([`super::tile_plan`]): the AVX-512 generator, precision bf16,
    /// and a process granted the tile state.
    pub tiles: bool,
    /// bf16 conv, pointwise and grouped stages not on tiles run
    /// `vdpbf16ps` ([`super::dot_plan`]) instead of f32 FMAs on rounded
    /// values: the AVX-512 generator, precision bf16, and [`Bf16Units`]
    /// asking for it (or, by default, an AMD host: see there).
    pub dot: bool,
    /// With `dot`: every conv and pointwise stage runs `vdpbf16ps`, even
    /// one of fewer than [`super::MIN_DOT_CHANNELS`] input channels a group
    /// (`Bf16Units::Dot`, asked for); by default such a stage runs f32
    /// FMAs ([`super::dot_plan_on`]).
    pub dot_all: bool,
    /// With `dot`: an ungrouped conv stage runs `vdpbf16ps` on the
    /// direct generator's blocking, over channel pairs
    /// ([`super::paired_stage`]), rather than in the tile layout; the
    /// JIT's runtime converts its input rows to bf16 pairs before each
    /// call. (The AOT objects keep the tile layout: they have no runtime.)
    pub pairs: bool,
    /// The precision the stages compute in: f32 code only (a filter's
    /// pair in registers, [`super::column_pair`]) rounds nothing.
    pub precision: Precision,
}

/// Which arithmetic runs a bf16 conv, pointwise or grouped stage
/// (`Options::bf16_units`, `--bf16-units`). Depthwise stages always run
/// f32 FMAs on bf16 values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Bf16Units {
    /// AMX tiles where the stage fills them and the process may use them;
    /// else `vdpbf16ps` on an AMD host with AVX512_BF16 (Zen 4 issues it
    /// like an FMA, twice an FMA's products) and f32 FMAs on an Intel one
    /// (Sapphire Rapids issues it at a quarter of the FMA's rate, so half
    /// its products: measured, see `convjit_x86::peak::bf16_512_peak`).
    #[default]
    Auto,
    /// AMX tiles where they fill, f32 FMAs elsewhere (the Intel default).
    Tiles,
    /// `vdpbf16ps` for every conv, pointwise and grouped stage, never tiles.
    Dot,
    /// f32 FMAs on bf16 values for every stage.
    Fma,
}

impl Bf16Units {
    /// Every choice, in the order `--bf16-units` lists them.
    pub const ALL: [Bf16Units; 4] = [
        Bf16Units::Auto,
        Bf16Units::Tiles,
        Bf16Units::Dot,
        Bf16Units::Fma,
    ];

    /// Its spelling on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Bf16Units::Auto => "auto",
            Bf16Units::Tiles => "tiles",
            Bf16Units::Dot => "dot",
            Bf16Units::Fma => "fma",
        }
    }
}

impl Target {
    /// Cranelift: 128-bit vectors, 16 registers on x64 (32 on AArch64,
    /// which its register allocator uses on its own).
    pub const CRANELIFT: Target = Target {
        backend: Backend::Cranelift,
        lanes: LANES,
        vector_registers: 16,
        tiles: false,
        dot: false,
        dot_all: false,
        pairs: false,
        precision: Precision::F32,
    };
    /// `convjit-x86`'s AVX2 generator: 256-bit ymm vectors, 16 registers.
    pub const AVX2: Target = Target {
        backend: Backend::Avx2,
        lanes: 8,
        vector_registers: 16,
        tiles: false,
        dot: false,
        dot_all: false,
        pairs: false,
        precision: Precision::F32,
    };
    /// `convjit-x86`'s AVX-512 generator: 512-bit zmm vectors, 32
    /// registers.
    pub const AVX512: Target = Target {
        backend: Backend::Avx512,
        lanes: 16,
        vector_registers: 32,
        tiles: false,
        dot: false,
        dot_all: false,
        pairs: false,
        precision: Precision::F32,
    };

    /// The target of a concrete generator (`Auto` is Cranelift's).
    pub fn of(backend: Backend) -> Target {
        match backend {
            Backend::Avx2 => Target::AVX2,
            Backend::Avx512 => Target::AVX512,
            Backend::Auto | Backend::Cranelift => Target::CRANELIFT,
        }
    }

    /// The stage plans' target for a concrete generator in `precision`,
    /// with `units` asked for, where the process may run AMX tiles
    /// (`tiles`: the CPU has them and Linux granted their state): in bf16
    /// on the AVX-512 generator, tiles where `units` allows them and
    /// `vdpbf16ps` where it asks for it ([`Bf16Units`]). The layer planner
    /// prices stages for it (`layer_plan::LayerPlan::target`) and the
    /// runtime compiles for it.
    pub fn planned(
        backend: Backend,
        precision: Precision,
        units: Bf16Units,
        tiles: bool,
    ) -> Target {
        let bf16 = precision == Precision::Bf16 && backend == Backend::Avx512;
        Target {
            tiles: bf16 && tiles && matches!(units, Bf16Units::Auto | Bf16Units::Tiles),
            dot: bf16
                && (units == Bf16Units::Dot
                    || units == Bf16Units::Auto && crate::backend::is_amd()),
            dot_all: bf16 && units == Bf16Units::Dot,
            pairs: bf16
                && (units == Bf16Units::Dot
                    || units == Bf16Units::Auto && crate::backend::is_amd()),
            precision,
            ..Target::of(backend)
        }
    }

    /// The generator writes its own machine code (and allocates its own
    /// registers): `vfmadd231ps` accumulates in place, a broadcast is
    /// shared by a row of accumulators.
    pub fn direct(&self) -> bool {
        self.backend != Backend::Cranelift
    }

    /// Bytes per vector.
    pub fn vector_bytes(&self) -> usize {
        self.lanes * 4
    }
}

/// The generator that writes `stage` when `target` is the layer's: the
/// AVX-512 one hands grouped stages of at most 8 outputs per group to the
/// AVX2 one (its code runs on any AVX-512 host). Such a group fills a
/// 256-bit vector but only half a 512-bit one, and its padded weights
/// twice the cache: 3x3 56x56x128 with 16 groups ran 643 us on AVX2 and
/// 1466 on AVX-512, pointwise 28x28x256 with 32 groups 41 and 57 us (with
/// 8 groups of 32 outputs AVX-512 won, 806 against 1370 us). Depthwise
/// rows of 2 to 7 channels (an RGB image's filter) stay 512-bit, though
/// their taps shifted by C floats make most loads straddle cache lines:
/// an earlier hand-off to AVX2 rested on a `bench` that timed "jit" right
/// after its 512-bit FMA loop (slowed by it); called back to back,
/// 1920x1080x3, tenth percentiles of two or three runs each, 512-bit
/// against 256-bit: 5x5 separated 3.53-3.66 ms against 3.82-4.01, 7x7
/// 4.21-4.67 against 4.53-4.97, box 9x9 5.26-5.38 against 6.36-6.44, 5x5
/// whole 6.04-6.21 against 7.61-7.71.
///
/// A bf16 stage that runs `vdpbf16ps` ([`Target::dot`]) stays on AVX-512.
pub fn stage_target(stage: &Stage, target: &Target) -> Target {
    let groups = stage.groups();
    let grouped = groups > 1 && stage.output.c / groups <= Target::AVX2.lanes;
    let dot = super::dot_plan_on(stage, target).is_ok();
    if target.backend == Backend::Avx512 && grouped && !dot {
        Target::AVX2
    } else {
        *target
    }
}
