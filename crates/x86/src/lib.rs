//! x86-64 machine code for one stage plan, at two levels: AVX2+FMA
//! (256-bit ymm, 16 registers) and AVX-512F (512-bit zmm, 32 registers,
//! masked tails). The same plans as the Cranelift generator
//! (`convjit_plan::stage_plan::plan_for` with [`Isa::target`]), our own register
//! allocation: `vfmadd231ps` accumulates in place and one broadcast feeds
//! a row of accumulators.
//!
//! The code is position-independent and needs no relocations: it
//! references nothing outside itself, and its constants are built in
//! registers.
#![forbid(unsafe_code)]

mod asm;
mod emit;
pub mod helpers;
pub mod peak;
mod tiles;

use convjit_plan::limits::{check_code_size, TooLarge};
use convjit_plan::stage_plan::{StagePlan, Target};
use convjit_plan::Backend;
use std::fmt;

/// The instruction set a function is written for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Isa {
    /// x86-64-v3: AVX2 and FMA.
    Avx2,
    /// x86-64-v4: AVX-512F (and v3).
    Avx512,
}

impl Isa {
    /// The level of a direct-x86 backend.
    pub fn of(backend: Backend) -> Option<Isa> {
        match backend {
            Backend::Avx2 => Some(Isa::Avx2),
            Backend::Avx512 => Some(Isa::Avx512),
            Backend::Auto | Backend::Cranelift => None,
        }
    }

    /// What plans for this level are made for.
    pub fn target(self) -> Target {
        match self {
            Isa::Avx2 => Target::AVX2,
            Isa::Avx512 => Target::AVX512,
        }
    }
}

/// The machine code of the stage function of `plan` (made with
/// `isa.target()`): `extern "C" fn(input, weights, output, residual,
/// row0, rows)` in the System V calling convention, as the Cranelift
/// generator's.
///
/// An error is a bug in this generator (an instruction it could not
/// encode), never a property of the layer.
pub fn emit(plan: &StagePlan, isa: Isa) -> Result<Vec<u8>, String> {
    if plan.tiles.is_some() {
        return tiles::emit_tiles(plan);
    }
    assert_eq!(
        plan.sched.lanes,
        isa.target().lanes,
        "a plan made for another vector width"
    );
    let nest = plan.nest();
    let mut g = emit::Gen::new(plan, &nest, isa);
    g.function();
    g.a.finish()
}

/// Alignment (bytes) of the x86 generators' stage functions: a cache line.
pub const X86_CODE_ALIGN: u64 = 64;

/// Why [`x86_stage_code`] made no code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Error {
    /// The layer would need too much code (`convjit_plan::limits`).
    TooLarge(String),
    /// An instruction could not be encoded: a bug in this generator.
    Encode(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Error::TooLarge(m) | Error::Encode(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for Error {}

impl From<TooLarge> for Error {
    fn from(e: TooLarge) -> Error {
        Error::TooLarge(e.0)
    }
}

/// The machine code of every stage function of `plans` (made with
/// `stage_plan::plan_for(stage, &isa.target())`), refused beyond the code-size
/// limit every generator shares (`convjit_plan::limits`). The bytes are
/// position-independent and need no relocations; the JIT and the AOT
/// builder install them with `define_function_bytes` (alignment
/// [`X86_CODE_ALIGN`]).
pub fn x86_stage_code(plans: &[StagePlan], isa: Isa) -> Result<Vec<Vec<u8>>, Error> {
    check_code_size(plans)?;
    // A stage may be planned for a narrower generator than the layer's
    // (`stage_plan::stage_target`): its plan says which.
    plans
        .iter()
        .map(|p| {
            let isa = Isa::of(p.target.backend).unwrap_or(isa);
            emit(p, isa).map_err(Error::Encode)
        })
        .collect()
}

/// Intel-syntax disassembly of `code`, one instruction a line with its
/// offset (for `convjit build --emit asm` and the snapshot tests).
pub fn disassemble(code: &[u8]) -> String {
    use iced_x86::{Decoder, DecoderOptions, Formatter, IntelFormatter};
    let mut decoder = Decoder::with_ip(64, code, 0, DecoderOptions::NONE);
    let mut fmt = IntelFormatter::new();
    let mut out = String::new();
    let mut text = String::new();
    for ins in &mut decoder {
        text.clear();
        fmt.format(&ins, &mut text);
        out.push_str(&format!("{:5x}  {text}\n", ins.ip()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use convjit_plan::stage_plan::plan_for;

    fn stage(body: &str) -> convjit_ir::Stage {
        convjit_ir::compile_source(&format!("layer l {{ {body} }}"))
            .unwrap()
            .remove(0)
            .stages
            .remove(0)
    }

    /// A grouped stage of 4 outputs per group is planned for AVX2 inside
    /// an AVX-512 layer: its code is written at the plan's level (emitting
    /// checks the plan's lanes), with no host needed.
    #[test]
    fn each_plan_is_emitted_at_its_own_level() {
        let grouped = stage("input 6x6x32\n c: conv 3x3 -> 32, groups 8, pad same");
        let plain = stage("input 6x6x32\n d: depthwise 3x3, pad same");
        let plans = [
            plan_for(&grouped, &Isa::Avx512.target()),
            plan_for(&plain, &Isa::Avx512.target()),
        ];
        assert_eq!(plans[0].target, Target::AVX2);
        let code = x86_stage_code(&plans, Isa::Avx512).unwrap();
        assert_eq!(code.len(), 2);
        assert!(!disassemble(&code[0]).contains("zmm"));
        assert!(disassemble(&code[1]).contains("zmm"));
    }

    /// Past the shared code-size limit nothing is emitted.
    #[test]
    fn too_much_code_is_refused_before_emitting() {
        let p = plan_for(&stage("input 1x1x1\n d: depthwise 1x1"), &Target::AVX2);
        let plans = vec![p; convjit_plan::limits::MAX_STAGES + 1];
        let Err(Error::TooLarge(m)) = x86_stage_code(&plans, Isa::Avx2) else {
            panic!("4001 functions emitted")
        };
        assert!(m.contains("instructions of specialised code"), "{m}");
    }
}
