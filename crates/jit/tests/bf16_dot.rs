//! bf16 stages on `vdpbf16ps` (`Bf16Units::Dot`: AVX512_BF16 without AMX
//! tiles, the default on AMD hosts, forced here so they run on any CPU
//! with AVX512_BF16), checked like the tile stages in `bf16.rs`: against
//! the bf16 interpreter with f32's tolerance and the f32 one within bf16's
//! bound ([`convjit_ir::Reference`]); random layers on it are in
//! `bf16.rs`'s property test. Skipped, saying so, on a CPU
//! without AVX512_BF16.

mod common;

use convjit_ir::Weights;
use convjit_jit::Kernel;
use convjit_plan::stage_plan::Bf16Units;
use convjit_plan::{Fusion, Options};

fn dot(fuse: Fusion, threads: usize) -> Options {
    common::bf16_options(fuse, threads, Bf16Units::Dot)
}

fn skip() -> bool {
    common::skip_without_bf16()
}

/// Every kind of stage the dot path takes, at its edges: pointwise flat
/// (pixel ranges not multiples of 32) and not (strided); conv KxK with
/// strides, dilations, explicit and same padding (the grid of stride 1
/// and rows of strides); input channels odd, below 16 (one chunk's first
/// pairs only: 3 channels, 2 pairs) and past a chunk (33: a tail of one
/// channel); output channels below 16 and not multiples of 16 (masked
/// stores of the last block, alone or in a pair); grouped stages (2 and 3
/// groups, channel blocks in pairs or alone, groups of 10 input channels
/// whose pairs start 20 bytes apart), and one the dot path leaves to f32
/// code (8 outputs a group) after a dot stage; bias,
/// both activations, the residual; rows wider than one conversion chunk;
/// fused groups with depthwise stages between (bands of rows).
const DOT_LAYERS: &str = "
layer a { input 14x14x64\n p: pointwise 64 }
layer b { input 7x9x40\n p: pointwise 50, bias, relu6 }
layer c { input 3x5x3\n p: pointwise 5 }
layer d { input 20x21x32\n c: conv 3x3 -> 32, pad same }
layer e { input 19x37x48\n c: conv 3x3 -> 40, stride 2x2, pad same, bias, relu }
layer f { input 9x23x48\n c: conv 3x3 -> 48, dilation 2x2, pad same, bias, relu, residual }
layer g { input 17x17x33\n c: conv 7x7 -> 96, pad same }
layer h { input 11x13x33\n c: conv 2x5 -> 17, stride 1x3, pad 1 0 2 3, bias }
layer i { input 8x40x5\n c: conv 1x7 -> 7, pad same, relu }
layer j { input 5x50x16\n c: conv 3x1 -> 80, stride 2x1, pad valid }
layer k { input 12x12x24\n e: pointwise 36, relu6\n d: depthwise 3x3, pad same\n p: pointwise 24, residual }
layer m { input 7x150x256\n c: conv 3x3 -> 16, pad same, bias }
layer n { input 23x29x3\n c: conv 3x3 -> 24, stride 2x2, pad same, bias, relu6 }
layer o { input 20x20x12\n c: conv 3x3 -> 12, pad same, relu\n d: depthwise 3x3, pad same\n q: conv 3x3 -> 9, dilation 1x2, pad same }
layer p { input 9x11x32\n c: conv 3x3 -> 32, groups 2, pad same, bias, relu }
layer q { input 13x10x20\n p: pointwise 64, groups 2, bias }
layer r { input 8x9x48\n c: conv 3x3 -> 48, groups 3, pad same, residual }
layer s { input 6x70x20\n c: conv 3x3 -> 4, stride 2x2, pad valid, relu6 }
layer t { input 10x12x36\n c: conv 3x3 -> 96, groups 3, stride 2x1, pad same, bias }
layer u { input 8x8x6\n c: conv 3x3 -> 32, pad same\n g: pointwise 32, groups 4 }
layer v { input 10x9x48\n d: depthwise 3x3, stride 2, pad same, bias, relu6\n p: pointwise 40 }
";

#[test]
fn dot_stages_match_at_their_edges() {
    if skip() {
        return;
    }
    // vdpbf16ps ran, and no tile.
    common::check_bf16_edges(DOT_LAYERS, &dot, &|l, asm| {
        assert!(asm.contains("vdpbf16ps"), "layer {}: no vdpbf16ps", l.name);
        assert!(!asm.contains("tdpbf16ps"), "layer {}: tiles", l.name);
    });
}

/// `fma` keeps every stage f32 code on bf16 values (no bf16 product),
/// whatever the host; both agree with the reference.
#[test]
fn fma_units_run_no_bf16_products() {
    if skip() {
        return;
    }
    let l = common::layer("layer f { input 9x11x32\n c: conv 3x3 -> 32, pad same, bias }");
    let w = Weights::random(&l, 3);
    let o = Options {
        bf16_units: Bf16Units::Fma,
        ..dot(Fusion::Auto, 1)
    };
    let asm = Kernel::compile_with(&l, &w, &o).unwrap().asm();
    assert!(!asm.contains("dpbf16ps"), "{asm}");
    let x = common::input(&l, 1, 4);
    common::check_with(&l, &w, &x, 1, &o).unwrap();
}

/// Direct stages that store bf16 for the next (`StagePlan::bf16_output`):
/// a pairs stage read by a depthwise one, a depthwise stage read by a
/// pairs one (which then reads its stores as pairs, no conversion), a
/// pairs stage read by another; and depthwise first stages that round
/// the image as they load it (`StagePlan::round_input`). Fused in bands
/// and as whole tensors between groups, stride 2, a dilation, a residual
/// on the stage after (of the unrounded input), channel counts that are
/// not multiples of 16 (40: overlapping vectors), an odd one (33: its
/// pairs reader converts, the depthwise stage stores f32), threads
/// splitting a 7-row stage's channels.
const DIRECT_BF16_INTERMEDIATES: &str = "
layer a { input 12x12x16\n e: pointwise 96, bias, relu6\n d: depthwise 3x3, pad same, bias, relu6\n p: pointwise 16, bias, residual }
layer b { input 15x13x32\n d: depthwise 3x3, stride 2, pad same, bias, relu6\n p: pointwise 48, bias }
layer c { input 9x9x33\n d: depthwise 3x3, pad same\n p: pointwise 20 }
layer d { input 10x10x32\n p: pointwise 64, relu\n q: pointwise 32 }
layer e { input 11x9x32\n c: conv 3x3 -> 48, pad same\n d: depthwise 3x3, dilation 2x2, pad same, bias\n p: pointwise 24 }
layer f { input 7x7x64\n e: pointwise 512, relu\n d: depthwise 3x3, pad same\n p: pointwise 32 }
layer g { input 12x12x40\n d: depthwise 3x3, pad same\n p: pointwise 40, residual }
";

/// [`DIRECT_BF16_INTERMEDIATES`]: bit for bit the output of the same
/// kernel keeping f32 intermediates (the values are the same bf16
/// numbers: `vcvtneps2bf16` rounds both), and within the interpreter's
/// bound; fused or not, one and two threads, batches of 1 and 3. The
/// depthwise first stages round what they load in both kernels.
#[test]
fn direct_bf16_intermediates_give_the_f32_stored_output_bit_for_bit() {
    if skip() {
        return;
    }
    for l in convjit_ir::compile_source(DIRECT_BF16_INTERMEDIATES).unwrap() {
        // The bf16 store: a ymm of 16 bf16.
        let stores = |asm: &str| asm.contains("vmovdqu16");
        let engaged = common::bf16_intermediates_match(&l, &dot, &stores);
        match l.name.as_str() {
            // 33 channels: pairs with a zero, converted by the runtime.
            "c" => assert_eq!(engaged, 0, "layer c stored bf16 for an odd pairs reader"),
            _ => assert!(
                engaged >= 4,
                "layer {}: bf16 intermediates in {engaged} of 5",
                l.name
            ),
        }
    }
}

/// A depthwise first stage in bf16 rounds each vector it loads, so the
/// runtime does not round the image: a value halfway between two bf16
/// numbers goes to the even one, NaN and infinities stay, a residual
/// adds the image unrounded.
#[test]
fn a_depthwise_first_stage_rounds_what_it_loads() {
    if skip() {
        return;
    }
    let l = common::layer(
        "layer g { input 6x7x32\n d: depthwise 3x3, pad same\n p: pointwise 32, residual }",
    );
    let w = Weights::random(&l, 5);
    let o = dot(Fusion::Auto, 1);
    let k = Kernel::compile_with(&l, &w, &o).unwrap();
    assert!(k.asm().contains("vcvtneps2bf16"), "no rounding in the code");
    let mut x = common::input(&l, 1, 6);
    // 1 + 2^-8: halfway between 1 and 1 + 2^-7, to 1 (even); 1 + 3 * 2^-8
    // to 1 + 2^-6.
    x[0] = 1.0 + 1.0 / 256.0;
    x[33] = 1.0 + 3.0 / 256.0;
    common::check_with(&l, &w, &x, 1, &o).unwrap();
    for (i, v) in [
        (70, f32::NAN),
        (100, f32::INFINITY),
        (140, f32::NEG_INFINITY),
    ] {
        x[i] = v;
    }
    common::check_with(&l, &w, &x, 1, &o).unwrap();
}
