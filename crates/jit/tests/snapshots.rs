//! The generated CLIF of small reference layers, so that a reviewer sees
//! every change of code generation. Update with `INSTA_UPDATE=always` (or
//! `cargo insta review`) after an intended change.

mod common;

use convjit_ir::Weights;
use convjit_jit::Kernel;

fn clif(src: &str) -> String {
    let l = common::layer(src);
    let k = Kernel::compile(&l, &Weights::random(&l, 1)).unwrap();
    format!("{src}\n{:?}\n\n{}", k.schedules(), k.clif())
}

#[test]
fn pointwise_7_to_5() {
    insta::assert_snapshot!(clif("layer s { input 4x6x7\n p: pointwise 5, bias, relu }"));
}

#[test]
fn depthwise_3x3_stride_2_same_c5() {
    insta::assert_snapshot!(clif(
        "layer s { input 7x7x5\n d: depthwise 3x3, stride 2, pad same, bias, relu6 }"
    ));
}

#[test]
fn conv_3x3_c3_to_4() {
    insta::assert_snapshot!(clif(
        "layer s { input 5x6x3\n c: conv 3x3 -> 4, pad same, bias }"
    ));
}
