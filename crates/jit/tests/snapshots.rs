//! The generated code of small reference layers, per code generator: the
//! CLIF Cranelift compiles, and the disassembly of the AVX2 and AVX-512
//! generators' machine code, so that a reviewer sees every change of code
//! generation. Update with `INSTA_UPDATE=always` (or `cargo insta
//! review`) after an intended change.

mod common;

use convjit_ir::Weights;
use convjit_jit::Kernel;
use convjit_plan::{Backend, Options};

const POINTWISE: &str = "layer s { input 4x6x7\n p: pointwise 5, bias, relu }";
const DEPTHWISE: &str =
    "layer s { input 7x7x5\n d: depthwise 3x3, stride 2, pad same, bias, relu6 }";
const CONV: &str = "layer s { input 5x6x3\n c: conv 3x3 -> 4, pad same, bias }";

/// The code `backend` generates for `src` (the x86 generators' bytes do
/// not depend on the host, only on the level).
fn code(src: &str, backend: Backend) -> String {
    let l = common::layer(src);
    let o = Options {
        backend,
        ..Options::default()
    };
    // Compiling needs a host that runs the code; emitting does not.
    let text = match Kernel::compile_with(&l, &Weights::random(&l, 1), &o) {
        Ok(k) if backend == Backend::Cranelift => format!("{:?}\n\n{}", k.schedules(), k.clif()),
        Ok(k) => format!("{:?}\n\n{}", k.schedules(), k.asm()),
        Err(e) => panic!("{backend}: {e}"),
    };
    format!("{src}\n{text}")
}

fn runs(backend: Backend) -> bool {
    let ok = backend.host_has();
    if !ok {
        println!("note: this CPU does not run the {backend} generator: snapshot not checked");
    }
    ok
}

macro_rules! snapshots {
    ($($name:ident: $src:expr, $backend:expr;)*) => {$(
        #[test]
        fn $name() {
            if runs($backend) {
                insta::assert_snapshot!(code($src, $backend));
            }
        }
    )*};
}

snapshots! {
    pointwise_7_to_5: POINTWISE, Backend::Cranelift;
    depthwise_3x3_stride_2_same_c5: DEPTHWISE, Backend::Cranelift;
    conv_3x3_c3_to_4: CONV, Backend::Cranelift;
    avx2_pointwise_7_to_5: POINTWISE, Backend::Avx2;
    avx2_depthwise_3x3_stride_2_same_c5: DEPTHWISE, Backend::Avx2;
    avx2_conv_3x3_c3_to_4: CONV, Backend::Avx2;
    avx512_pointwise_7_to_5: POINTWISE, Backend::Avx512;
    avx512_depthwise_3x3_stride_2_same_c5: DEPTHWISE, Backend::Avx512;
    avx512_conv_3x3_c3_to_4: CONV, Backend::Avx512;
}
