//! Every layer of the benchmark suites and the examples (`benches/*.conv`,
//! `examples/*.conv`) emitted at both levels, AVX2 and AVX-512, on any
//! host: emitting needs no support from the CPU, only running does. Each
//! stage function the JIT may compile (the whole stage, and the channel
//! shares of 2, 3 and 4 threads) is emitted, decoded back with iced-x86
//! and checked for what must hold of any code the generator writes.

use convjit_ir::{Layer, Stage};
use convjit_plan::stage_plan::{channel_shares, code_size, plan_channels, plan_for, StagePlan};
use convjit_x86::{emit, Isa};
use iced_x86::{Code, CpuidFeature as F, Decoder, DecoderOptions, Instruction, Register};
use std::path::Path;

/// The suite's layers, each with the file it comes from.
fn layers() -> Vec<(String, Layer)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut files = Vec::new();
    for dir in ["benches", "examples"] {
        for entry in std::fs::read_dir(root.join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "conv") {
                files.push(path);
            }
        }
    }
    files.sort();
    let mut layers = Vec::new();
    for path in files {
        let src = std::fs::read_to_string(&path).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let parsed = convjit_ir::compile_source(&src).unwrap_or_else(|d| panic!("{name}: {d:?}"));
        layers.extend(parsed.into_iter().map(|l| (name.clone(), l)));
    }
    layers
}

/// The plans of every function the JIT may compile for `stage` at `isa`:
/// the whole stage, and each thread's channels where threads split them.
fn plans(stage: &Stage, isa: Isa) -> Vec<StagePlan> {
    let target = isa.target();
    let mut plans = vec![plan_for(stage, &target)];
    for threads in 2..=4 {
        for (c0, c1) in channel_shares(stage, &target, threads).unwrap_or_default() {
            plans.push(plan_channels(stage, &target, c0, c1));
        }
    }
    plans
}

/// What x86-64-v3 guarantees (AVX2, FMA and what came before).
const V3: &[F] = &[
    F::INTEL8086,
    F::INTEL186,
    F::INTEL286,
    F::INTEL386,
    F::X64,
    F::CMOV,
    F::SSE,
    F::SSE2,
    F::SSE3,
    F::SSSE3,
    F::SSE4_1,
    F::SSE4_2,
    F::POPCNT,
    F::AVX,
    F::AVX2,
    F::FMA,
    F::F16C,
    F::BMI1,
    F::BMI2,
    F::LZCNT,
    F::MOVBE,
];

/// What x86-64-v4 adds to [`V3`].
const V4: &[F] = &[
    F::AVX512F,
    F::AVX512BW,
    F::AVX512CD,
    F::AVX512DQ,
    F::AVX512VL,
];

/// The callee-saved registers every stage function saves, in push order.
const SAVED: [Register; 6] = [
    Register::RBX,
    Register::RBP,
    Register::R12,
    Register::R13,
    Register::R14,
    Register::R15,
];

/// What must hold of the code `isa` emitted for `p`; the error says what
/// does not.
fn check(code: &[u8], p: &StagePlan, isa: Isa) -> Result<(), String> {
    let ins: Vec<Instruction> = Decoder::with_ip(64, code, 0, DecoderOptions::NONE)
        .into_iter()
        .collect();
    let decoded: usize = ins.iter().map(|i| i.len()).sum();
    if decoded != code.len() || ins.iter().any(|i| i.code() == Code::INVALID) {
        return Err("bytes that do not decode".into());
    }
    // One entry, one exit: the prologue and epilogue of `emit`.
    let n = ins.len();
    if n < 2 * SAVED.len() + 4 {
        return Err(format!("{n} instructions: no room for a prologue"));
    }
    if ins[n - 2].code() != Code::VEX_Vzeroupper || ins[n - 1].code() != Code::Retnq {
        return Err("the code does not end in vzeroupper; ret".into());
    }
    for (k, &r) in SAVED.iter().enumerate() {
        let (push, pop) = (&ins[k], &ins[n - 3 - k]);
        if push.code() != Code::Push_r64 || push.op0_register() != r {
            return Err(format!("instruction {k} is not push {r:?}"));
        }
        if pop.code() != Code::Pop_r64 || pop.op0_register() != r {
            return Err(format!("the epilogue does not pop {r:?} in reverse order"));
        }
    }
    let (sub, add) = (&ins[SAVED.len()], &ins[n - 3 - SAVED.len()]);
    let frame = sub.immediate32() as u64;
    if sub.code() != Code::Sub_rm64_imm32 || sub.op0_register() != Register::RSP {
        return Err("no stack frame after the pushes".into());
    }
    if add.code() != Code::Add_rm64_imm32 || add.immediate32() as u64 != frame {
        return Err("the frame is not released before the pops".into());
    }
    if ins[..n - 1].iter().any(|i| i.code() == Code::Retnq) {
        return Err("a ret before the end".into());
    }
    // Branches land on instructions of this function; nothing else is
    // reached (no calls, no indirect jumps, no RIP-relative data).
    let starts: std::collections::HashSet<u64> = ins.iter().map(|i| i.ip()).collect();
    for i in &ins {
        if i.is_jcc_short_or_near() || i.is_jmp_short_or_near() {
            if !starts.contains(&i.near_branch_target()) {
                return Err(format!("{:x}: a branch into no instruction", i.ip()));
            }
        } else if i.is_call_near() || i.is_call_near_indirect() || i.is_jmp_near_indirect() {
            return Err(format!("{:x}: a call or an indirect jump", i.ip()));
        }
        if i.is_ip_rel_memory_operand() {
            return Err(format!("{:x}: RIP-relative data", i.ip()));
        }
        // The stack slots and masks stay inside the frame.
        if i.memory_base() == Register::RSP && i.memory_displacement64() >= frame {
            return Err(format!("{:x}: a stack access outside the frame", i.ip()));
        }
    }
    // The level's instructions only: no AVX-512 in AVX2 code.
    let allowed: Vec<F> = match isa {
        Isa::Avx2 => V3.to_vec(),
        Isa::Avx512 => [V3, V4].concat(),
    };
    for i in &ins {
        if let Some(f) = i.cpuid_features().iter().find(|f| !allowed.contains(f)) {
            return Err(format!("{:x}: {:?} needs {f:?}", i.ip(), i.code()));
        }
    }
    let fma = |i: &&Instruction| i.mnemonic() == iced_x86::Mnemonic::Vfmadd231ps;
    let width = match isa {
        Isa::Avx2 => Register::is_ymm,
        Isa::Avx512 => Register::is_zmm,
    };
    if !ins.iter().filter(fma).any(|i| width(i.op0_register())) {
        return Err(format!("no FMA on {isa:?} vectors"));
    }
    // `code_size` is the rough count the JIT limits a layer's code by
    // (`MAX_CODE_SIZE`): it undercounts unrolled taps (the row-vector
    // blocks of a one-channel 9x9 box filter on AVX-512: 3.5 times), but
    // not by more than this.
    if n > 4 * code_size(p) {
        return Err(format!(
            "{n} instructions, estimated {}: the code-size limit no longer bounds the code",
            code_size(p)
        ));
    }
    Ok(())
}

#[test]
fn every_suite_layer_emits_at_both_levels() {
    let layers = layers();
    assert!(
        layers.len() >= 50,
        "only {} suite layers found",
        layers.len()
    );
    let mut functions = 0;
    for (file, layer) in &layers {
        for stage in &layer.stages {
            for level in [Isa::Avx2, Isa::Avx512] {
                for p in plans(stage, level) {
                    // A stage may be planned for the narrower level
                    // (`stage_plan::stage_target`): its plan says which.
                    let isa = Isa::of(p.target.backend).unwrap_or(level);
                    let at = format!(
                        "{file}: layer {} stage {} at {level:?} ({isa:?} code), channels {:?}",
                        layer.name, stage.name, p.channels
                    );
                    let code = emit(&p, isa).unwrap_or_else(|e| panic!("{at}: {e}"));
                    check(&code, &p, isa).unwrap_or_else(|e| panic!("{at}: {e}"));
                    functions += 1;
                }
            }
        }
    }
    println!("{} layers, {functions} stage functions", layers.len());
}

/// [`check`] is not vacuous: it refuses AVX-512 code taken for AVX2,
/// code cut short, and a function whose last byte is not `ret`.
#[test]
fn the_check_refuses_what_it_must() {
    let layer = convjit_ir::compile_source("layer l { input 9x9x20\n p: pointwise 24, relu }")
        .unwrap()
        .remove(0);
    let p = plan_for(&layer.stages[0], &Isa::Avx512.target());
    let code = emit(&p, Isa::Avx512).unwrap();
    check(&code, &p, Isa::Avx512).unwrap();
    let err = check(&code, &p, Isa::Avx2).unwrap_err();
    assert!(err.contains("needs AVX512F"), "{err}");
    let err = check(&code[..code.len() - 1], &p, Isa::Avx512).unwrap_err();
    assert!(err.contains("vzeroupper; ret"), "{err}");
    let mut jump = code.clone();
    let ret = jump.len() - 1;
    jump[ret] = 0x90; // nop
    assert!(check(&jump, &p, Isa::Avx512).is_err());
}
