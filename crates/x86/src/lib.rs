//! x86-64 machine code for one stage plan, at two levels: AVX2+FMA
//! (256-bit ymm, 16 registers) and AVX-512F (512-bit zmm, 32 registers,
//! masked tails). The same plans as the Cranelift generator
//! (`convjit_plan::plan::plan_for` with [`Isa::target`]), our own register
//! allocation: `vfmadd231ps` accumulates in place and one broadcast feeds
//! a row of accumulators.
//!
//! The code is position-independent and needs no relocations: it
//! references nothing outside itself, and its constants are built in
//! registers.

mod asm;
mod emit;

use convjit_plan::plan::{Plan, Target};
use convjit_plan::Backend;

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
pub fn emit(plan: &Plan, isa: Isa) -> Result<Vec<u8>, String> {
    assert_eq!(
        plan.sched.lanes,
        isa.target().lanes,
        "a plan made for another vector width"
    );
    let mut g = emit::Gen::new(plan, isa);
    g.function();
    g.a.finish()
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
