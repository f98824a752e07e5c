//! The CLIF the Cranelift generator compiles for small reference layers,
//! so that a reviewer sees every change of code generation (the x86
//! generators' disassembly has its own snapshots in `convjit-x86`).
//! Update with `INSTA_UPDATE=always` (or `cargo insta review`) after an
//! intended change.

mod common;

use convjit_ir::Weights;
use convjit_jit::Kernel;
use convjit_plan::{Backend, Options};

const POINTWISE: &str = "layer s { input 4x6x7\n p: pointwise 5, bias, relu }";
const DEPTHWISE: &str =
    "layer s { input 7x7x5\n d: depthwise 3x3, stride 2, pad same, bias, relu6 }";
const CONV: &str = "layer s { input 5x6x3\n c: conv 3x3 -> 4, pad same, bias }";

/// The schedules and CLIF of `src`'s kernel.
fn code(src: &str, backend: Backend) -> String {
    let l = common::layer(src);
    let o = Options {
        backend,
        ..Options::default()
    };
    let k = Kernel::compile_with(&l, &Weights::random(&l, 1), &o)
        .unwrap_or_else(|e| panic!("{backend}: {e}"));
    format!("{src}\n{:?}\n\n{}", k.schedules(), k.clif())
}

macro_rules! snapshots {
    ($($name:ident: $src:expr, $backend:expr;)*) => {$(
        #[test]
        fn $name() {
            insta::assert_snapshot!(code($src, $backend));
        }
    )*};
}

snapshots! {
    pointwise_7_to_5: POINTWISE, Backend::Cranelift;
    depthwise_3x3_stride_2_same_c5: DEPTHWISE, Backend::Cranelift;
    conv_3x3_c3_to_4: CONV, Backend::Cranelift;
}
