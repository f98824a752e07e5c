//! The disassembly of the AVX2 and AVX-512 generators' machine code for
//! three small reference layers, so that a reviewer sees every change of
//! code generation (the Cranelift generator's CLIF has its own snapshots
//! in `convjit-jit`). Emitting needs no host support, so every snapshot
//! is checked on every host. Update with `INSTA_UPDATE=always` (or
//! `cargo insta review`) after an intended change.

use convjit_plan::stage_plan::{plan_for, schedule_for};
use convjit_x86::{disassemble, emit, Isa};

const POINTWISE: &str = "layer s { input 4x6x7\n p: pointwise 5, bias, relu }";
const DEPTHWISE: &str =
    "layer s { input 7x7x5\n d: depthwise 3x3, stride 2, pad same, bias, relu6 }";
const CONV: &str = "layer s { input 5x6x3\n c: conv 3x3 -> 4, pad same, bias }";

/// The schedules and the code of every stage function of `src` at `isa`,
/// as `convjit build --emit asm` lists them (`Kernel::asm`): these
/// layers are one stage each, run whole on one thread.
fn code(src: &str, isa: Isa) -> String {
    let layer = convjit_ir::compile_source(src)
        .unwrap_or_else(|d| panic!("{src}: {d:?}"))
        .remove(0);
    let target = isa.target();
    let schedules: Vec<_> = layer
        .stages
        .iter()
        .map(|s| schedule_for(s, &target))
        .collect();
    let mut text = format!("{src}\n{schedules:?}\n\n");
    for (i, stage) in layer.stages.iter().enumerate() {
        let plan = plan_for(stage, &target);
        let code = emit(&plan, isa).unwrap_or_else(|e| panic!("{isa:?}: {e}"));
        text.push_str(&format!("function {i}:\n{}", disassemble(&code)));
    }
    text
}

macro_rules! snapshots {
    ($($name:ident: $src:expr, $isa:expr;)*) => {$(
        #[test]
        fn $name() {
            insta::assert_snapshot!(code($src, $isa));
        }
    )*};
}

snapshots! {
    avx2_pointwise_7_to_5: POINTWISE, Isa::Avx2;
    avx2_depthwise_3x3_stride_2_same_c5: DEPTHWISE, Isa::Avx2;
    avx2_conv_3x3_c3_to_4: CONV, Isa::Avx2;
    avx512_pointwise_7_to_5: POINTWISE, Isa::Avx512;
    avx512_depthwise_3x3_stride_2_same_c5: DEPTHWISE, Isa::Avx512;
    avx512_conv_3x3_c3_to_4: CONV, Isa::Avx512;
}
