mod common;
use common::check_src;

#[test]
fn pointwise() {
    check_src("layer a { input 3x5x7\n p: pointwise 5 }", 1, 1);
    check_src(
        "layer a { input 3x5x8\n p: pointwise 24, bias, relu6 }",
        2,
        1,
    );
}

#[test]
fn depthwise() {
    check_src(
        "layer a { input 6x7x5\n d: depthwise 3x3, stride 2, pad same }",
        1,
        1,
    );
    check_src(
        "layer a { input 6x7x16\n d: depthwise 3x3, pad same, bias, relu }",
        2,
        1,
    );
    check_src(
        "layer a { input 6x7x3\n d: depthwise 3x3, pad same, multiplier 2 }",
        1,
        1,
    );
    check_src(
        "layer a { input 6x7x5\n d: depthwise 3x3, pad same, multiplier 3 }",
        1,
        1,
    );
    check_src(
        "layer a { input 6x7x5\n d: depthwise 3x3, pad same, multiplier 4 }",
        1,
        1,
    );
    check_src(
        "layer a { input 6x7x5\n d: depthwise 3x3, pad same, multiplier 7 }",
        1,
        1,
    );
}

#[test]
fn conv() {
    check_src("layer a { input 6x7x3\n c: conv 3x3 -> 4, pad same }", 1, 1);
    check_src(
        "layer a { input 9x8x5\n c: conv 3x5 -> 13, stride 2, dilation 2, pad same, bias, relu }",
        2,
        1,
    );
}
