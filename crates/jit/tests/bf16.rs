//! `Options::precision = Bf16`: every stage's inputs and weights rounded
//! to bf16, f32 sums (the contract, section 1), checked against the bf16
//! interpreter with f32's tolerance and against the f32 one with bf16's
//! bound ([`convjit_ir::Reference`]). Skipped, saying so, on a CPU without
//! AVX512_BF16.

mod common;

use convjit_ir::random_layer::{layer_case, Limits};
use convjit_ir::{compile_source, Precision, Weights};
use convjit_jit::{JitError, Kernel};
use convjit_plan::stage_plan::{tile_plan, Bf16Units};
use convjit_plan::{Backend, Fusion, Options};
use proptest::prelude::*;

fn bf16(fuse: Fusion, threads: usize) -> Options {
    common::bf16_options(fuse, threads, Bf16Units::Auto)
}

fn skip() -> bool {
    common::skip_without_bf16()
}

/// Whether a test of tile stages must skip (saying so): no AVX512_BF16,
/// or this process may not use the tile state.
fn skip_without_tiles() -> bool {
    if skip() {
        return true;
    }
    let refused = convjit_jit::tiles_refused();
    if let Some(why) = &refused {
        eprintln!("skipped: {why}");
    }
    refused.is_some()
}

/// `layers` on tiles at their edges (`common::check_bf16_edges`): a stage
/// of each takes tiles, not f32 code.
fn check_tile_edges(layers: &str) {
    if skip_without_tiles() {
        return;
    }
    common::check_bf16_edges(layers, &bf16, &|l, asm| {
        assert!(asm.contains("tdpbf16ps"), "layer {}: no tiles", l.name);
    });
}

#[test]
fn every_stage_input_is_rounded_and_the_residual_is_not() {
    if skip() {
        return;
    }
    // Three stages (the two intermediates rounded where they are written,
    // in bands and across threads) and a residual of the unrounded input.
    let l = common::layer(
        "layer r { input 9x11x16\n e: pointwise 32, bias, relu\n d: depthwise 3x3, pad same\n p: pointwise 16, residual }",
    );
    let w = Weights::random(&l, 5);
    let x: Vec<f32> = common::input(&l, 2, 6).iter().map(|v| v * 1.001).collect();
    for fuse in [Fusion::Auto, Fusion::Always, Fusion::Never] {
        for threads in [1, 2] {
            let o = bf16(fuse, threads);
            common::check_with(&l, &w, &x, 2, &o)
                .unwrap_or_else(|e| panic!("{fuse:?} {threads}: {e}"));
        }
    }
    // Not f32's answer: the roundings happened.
    let k = |p| {
        Kernel::compile_with(
            &l,
            &w,
            &Options {
                precision: p,
                ..bf16(Fusion::Auto, 1)
            },
        )
    };
    let f32_out = k(Precision::F32).unwrap().run_alloc(&x, 2).unwrap();
    let bf16_out = k(Precision::Bf16).unwrap().run_alloc(&x, 2).unwrap();
    assert_ne!(f32_out, bf16_out);
}

/// Stages that fill AMX tiles, at their edges: channel tails in both
/// tile dimensions (K: Ci not a multiple of 32; N: Co not of 16), rows
/// shorter and longer than a 16-pixel block and not a multiple of it,
/// odd block counts (the last channel block, or pixel block of a row,
/// computed alone: with one tile of the pair or both), strides, dilations, explicit and
/// same padding, bias, both activations, the residual, flat stages
/// called on pixel ranges that are not multiples of 32, and rows too wide
/// to convert all at once (chunks of 4 rows, then 3; of 512 pixels, then
/// 64), and tile stages in fused groups, called on bands of rows.
const TILE_LAYERS: &str = "
layer a { input 14x14x64\n p: pointwise 64 }
layer b { input 7x9x40\n p: pointwise 50, bias, relu6 }
layer c { input 3x5x16\n p: pointwise 16 }
layer d { input 20x21x32\n c: conv 3x3 -> 32, pad same }
layer e { input 19x37x48\n c: conv 3x3 -> 40, stride 2x2, pad same, bias, relu }
layer f { input 9x23x48\n c: conv 3x3 -> 48, dilation 2x2, pad same, bias, relu, residual }
layer g { input 17x17x128\n c: conv 7x7 -> 96, pad same }
layer h { input 11x13x33\n c: conv 2x5 -> 17, stride 1x3, pad 1 0 2 3, bias }
layer i { input 8x40x24\n c: conv 1x7 -> 24, pad same, relu }
layer j { input 5x50x16\n c: conv 3x1 -> 80, stride 2x1, pad valid }
layer k { input 12x12x64\n e: pointwise 96, relu6\n d: depthwise 3x3, pad same\n p: pointwise 64, residual }
layer m { input 7x150x256\n c: conv 3x3 -> 16, pad same, bias }
layer n { input 40x40x512\n p: pointwise 16, relu }
layer o { input 20x20x32\n c: conv 3x3 -> 32, pad same, relu\n d: depthwise 3x3, pad same\n q: conv 3x3 -> 48, dilation 1x2, pad same }
layer q { input 9x90x32\n c: conv 3x3 -> 16, stride 2x2, pad same, bias }
layer r { input 6x70x20\n c: conv 3x3 -> 32, stride 2x2, pad valid, relu6 }
";

#[test]
fn tile_stages_match_at_their_edges() {
    check_tile_edges(TILE_LAYERS);
}

/// Grouped stages on tiles, at their edges: 2 to 4 groups, blocks a
/// group even (pairs) and odd (pairs within a group, its last alone; one
/// a group: every block alone), groups of 16 to 192 input channels, not
/// multiples of 32 (20, 40, 48, 80: a group's last chunk padded with
/// zeros, never the next group's channels), flat and not, strides, a
/// dilation, explicit and same padding, bias, both activations, the
/// residual, rows too wide to convert at once, and fused groups with a
/// depthwise stage between (bands of rows).
const GROUPED_TILE_LAYERS: &str = "
layer a { input 9x11x64\n c: conv 3x3 -> 64, groups 2, pad same, bias, relu }
layer b { input 13x10x48\n p: pointwise 96, groups 3, bias }
layer c { input 8x9x48\n c: conv 3x3 -> 48, groups 3, pad same, residual }
layer d { input 10x12x80\n c: conv 3x3 -> 96, groups 2, stride 2x1, pad same, relu6 }
layer e { input 7x9x60\n p: pointwise 240, groups 3, bias, relu }
layer f { input 9x23x64\n c: conv 3x3 -> 64, groups 4, dilation 2x2, pad 1 2 0 3 }
layer g { input 19x17x96\n c: conv 5x5 -> 64, groups 2, stride 2x2, pad same, bias, relu }
layer h { input 12x12x64\n p: pointwise 96, groups 2, relu6\n d: depthwise 3x3, pad same\n q: pointwise 64, groups 4, residual }
layer i { input 7x150x128\n c: conv 3x3 -> 32, groups 2, pad same, bias }
layer j { input 6x7x384\n c: conv 3x3 -> 256, groups 2, pad same, bias, relu }
layer k { input 11x13x160\n c: conv 2x3 -> 64, groups 4, stride 1x2, pad valid }
";

#[test]
fn grouped_tile_stages_match_at_their_edges() {
    check_tile_edges(GROUPED_TILE_LAYERS);
}

/// An infinity or NaN in one group's input channels (its first, its last:
/// next to the padding of its last chunk, and the channel before the next
/// group's) reaches that group's outputs only: the interpreter's NaNs and
/// infinities exactly, on tiles, for groups of 20, 32 and 40 channels.
#[test]
fn nan_and_inf_in_one_group_stay_in_it() {
    if skip_without_tiles() {
        return;
    }
    for src in [
        "layer a { input 5x6x60\n c: conv 3x3 -> 48, groups 3, pad same }",
        "layer b { input 5x6x64\n p: pointwise 64, groups 2 }",
        "layer c { input 5x6x80\n c: conv 3x3 -> 32, groups 2, pad same, bias }",
    ] {
        let l = common::layer(src);
        let w = Weights::random(&l, 41);
        let x = common::input(&l, 1, 42);
        let (ci, groups) = (l.input.c, l.stages[0].groups());
        let o = bf16(Fusion::Auto, 1);
        let asm = Kernel::compile_with(&l, &w, &o).unwrap().asm();
        assert!(asm.contains("tdpbf16ps"), "{src}: no tiles");
        for g in 0..groups {
            let cig = ci / groups;
            for (c, v) in [
                (0, f32::INFINITY),
                (cig - 1, f32::NAN),
                (cig - 1, f32::NEG_INFINITY),
            ] {
                // At pixel (2, 3): every output pixel around it reads it.
                let mut special = x.clone();
                special[(2 * l.input.w + 3) * ci + g * cig + c] = v;
                common::check_with(&l, &w, &special, 1, &o)
                    .unwrap_or_else(|e| panic!("{src}: {v} in group {g} channel {c}: {e}"));
            }
        }
    }
}

/// Tile stages read by a many-channel depthwise stage, whose output the
/// kernel keeps in bf16 between them (`Options::bf16_intermediates`):
/// fused in bands and as whole tensors between groups, stride 2, a
/// dilation, a 5x5 kernel, a residual on the stage after, channel counts
/// that are not multiples of 16 (40, 20, 72: overlapping vectors), a
/// depthwise stage last, two such pairs in a row, and a tile stage whose
/// threads split its output channels (7 rows on 2 threads).
const BF16_INTERMEDIATES: &str = "
layer a { input 12x12x16\n e: pointwise 96, bias, relu6\n d: depthwise 3x3, pad same, bias, relu6\n p: pointwise 16, bias, residual }
layer b { input 15x13x24\n e: pointwise 144, bias, relu6\n d: depthwise 3x3, stride 2, pad same, bias, relu6\n p: pointwise 32, bias }
layer c { input 9x10x32\n e: pointwise 40, relu\n d: depthwise 5x5, pad same\n p: pointwise 24 }
layer d { input 11x9x32\n c: conv 3x3 -> 20, pad same\n d: depthwise 3x3, dilation 2x2, pad same, bias }
layer e { input 10x10x32\n e: pointwise 48\n d: depthwise 3x3, pad same\n f: pointwise 72\n g: depthwise 3x3, stride 2, pad same\n p: pointwise 16 }
layer f { input 7x7x64\n e: pointwise 512, relu\n d: depthwise 3x3, pad same\n p: pointwise 32 }
";

/// [`BF16_INTERMEDIATES`]: the tile stage stores bf16 (`vpmovdw`) and
/// the depthwise stage widens it (`vpmovzxwd`), bit for bit the output
/// of the same kernel keeping f32 intermediates (the values are the same
/// bf16 numbers), and within the interpreter's bound; fused or not, on
/// one and two threads, batches of 1 and 3.
#[test]
fn bf16_intermediates_give_the_f32_stored_output_bit_for_bit() {
    if skip_without_tiles() {
        return;
    }
    for l in compile_source(BF16_INTERMEDIATES).unwrap() {
        // (Not where threads split a tile stage's channels into a share
        // too narrow for tiles.)
        let stores = |asm: &str| asm.contains("vpmovdw") && asm.contains("vpmovzxwd");
        let engaged = common::bf16_intermediates_match(&l, &bf16, &stores);
        assert!(
            engaged >= 4,
            "layer {}: bf16 intermediates in {engaged} of 5",
            l.name
        );
    }
}

/// Layers whose input is rounded as their first calls read it, large
/// enough that one call is cut into several (`LazyRound::rows_per_call`:
/// about 256 KiB of input rows each): rows, a residual of the unrounded
/// input, a stride, and a flat stage on pixels; then fused and on two
/// threads (where the input is rounded before the run).
#[test]
fn an_input_rounded_as_it_is_read_is_rounded_everywhere() {
    if skip() {
        return;
    }
    let layers = compile_source(
        "layer a { input 40x300x64\n d: depthwise 3x3, pad same, bias }
         layer b { input 30x900x8\n c: conv 3x3 -> 8, pad same, bias, relu, residual }
         layer c { input 45x700x12\n c: conv 3x3 -> 20, stride 2, pad valid }
         layer f { input 128x160x8\n p: pointwise 12, relu\n d: depthwise 3x3, pad same }",
    )
    .unwrap();
    for l in layers {
        let w = Weights::random(&l, 21);
        let x: Vec<f32> = common::input(&l, 2, 22).iter().map(|v| v * 1.001).collect();
        for (fuse, threads) in [(Fusion::Never, 1), (Fusion::Auto, 1), (Fusion::Always, 2)] {
            common::check_with(&l, &w, &x, 2, &bf16(fuse, threads))
                .unwrap_or_else(|e| panic!("layer {} {fuse:?} {threads}: {e}", l.name));
        }
    }
}

#[test]
fn bf16_where_no_generator_computes_it_is_an_error() {
    let l = common::layer("layer p { input 4x4x8\n p: pointwise 8 }");
    let w = Weights::random(&l, 1);
    let o = Options {
        backend: Backend::Cranelift,
        precision: Precision::Bf16,
        ..Options::default()
    };
    match Kernel::compile_with(&l, &w, &o) {
        Err(JitError::Unsupported(m)) => assert!(m.contains("bf16"), "{m}"),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("compiled bf16 with Cranelift"),
    }
}

/// Keeps the two interpreters affordable.
const MAX_MACS: u64 = 2_000_000;

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 128,
        max_global_rejects: 100_000,
        ..ProptestConfig::default()
    })]

    /// Random layers (any kinds, fused or not, threads), their conv,
    /// pointwise and grouped stages on tiles where they fill them (the
    /// default here) or all on `vdpbf16ps`.
    #[test]
    fn bf16_kernels_match_the_bf16_interpreter(
        c in layer_case(Limits::PROPTEST),
        fuse in prop::sample::select(vec![Fusion::Auto, Fusion::Always, Fusion::Never]),
        threads in 1usize..4,
        bf16_units in prop::sample::select(vec![Bf16Units::Auto, Bf16Units::Dot]),
    ) {
        if skip() {
            return Ok(());
        }
        let data = common::case_data(&c, MAX_MACS);
        prop_assume!(data.is_some());
        let (l, w, x) = data.unwrap();
        let o = Options {
            bf16_units,
            ..bf16(fuse, threads)
        };
        let r = common::check_with(&l, &w, &x, c.batch, &o);
        prop_assert!(r.is_ok(), "{}\nbatch {}: {}", c.src, c.batch, r.unwrap_err());
    }
}

/// A random grouped layer whose grouped stage takes tiles: 2 to 4 groups
/// of 16 to 36 input channels and 1 or 2 blocks of 16 outputs, a 1x1
/// (flat) or up to 3x3 kernel with strides, dilations and padding, bias
/// and activations, sometimes a residual, sometimes after a pointwise
/// stage (fused or not); with its batch.
fn grouped_tile_case() -> impl Strategy<Value = (String, usize)> {
    (
        (2usize..5, 16usize..37, 1usize..3),
        (1usize..4, 1usize..4, 1usize..3, 1usize..3, 1usize..3),
        (1usize..8, 1usize..18, 0u8..3, 0u8..3),
        (any::<bool>(), any::<bool>(), any::<bool>(), 1usize..3),
    )
        .prop_map(|((g, cig, blocks), (kh, kw, s, d, pad), (h, w, act, first), (bias, res, before, batch))| {
            let (ci, co) = (g * cig, g * blocks * 16);
            let mut t = format!("layer r {{ input {h}x{w}x{ci}\n");
            if before {
                // A stage on tiles first: the grouped one reads its output.
                t += &format!(" e: pointwise {ci}, relu\n");
            }
            t += &match (kh, kw, first) {
                (1, 1, 0) => format!(" g: pointwise {co}, groups {g}"),
                _ => format!(
                    " g: conv {kh}x{kw} -> {co}, groups {g}, stride {s}x{}, dilation {d}x{}, pad {}",
                    3 - s,
                    3 - d,
                    ["same", "valid"][pad - 1]
                ),
            };
            if bias {
                t += ", bias";
            }
            t += ["", ", relu", ", relu6"][act as usize];
            if res && ci == co && (kh, kw, first) == (1, 1, 0) {
                t += ", residual";
            }
            t += "\n}";
            (t, batch)
        })
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 48,
        ..ProptestConfig::default()
    })]

    /// [`grouped_tile_case`]'s layers, fused or not, on 1 to 3 threads:
    /// the grouped stage on tiles (where the host has them) matches the
    /// bf16 interpreter.
    #[test]
    fn grouped_tile_stages_match_the_bf16_interpreter(
        (src, batch) in grouped_tile_case(),
        fuse in prop::sample::select(vec![Fusion::Auto, Fusion::Always, Fusion::Never]),
        threads in 1usize..4,
        seed in any::<u64>(),
    ) {
        if skip() {
            return Ok(());
        }
        let Ok(mut layers) = compile_source(&src) else {
            // An empty output (a valid kernel larger than its input).
            return Ok(());
        };
        let l = layers.remove(0);
        let w = Weights::random(&l, seed);
        let x: Vec<f32> = common::input(&l, batch, seed ^ 0x5555)
            .iter()
            .map(|v| v * 4.0)
            .collect();
        let o = bf16(fuse, threads);
        let grouped = l.stages.last().unwrap();
        prop_assert!(tile_plan(grouped).is_ok(), "{src}: no tile plan");
        if convjit_jit::tiles_refused().is_none() && l.stages.len() == 1 {
            let asm = Kernel::compile_with(&l, &w, &o).unwrap().asm();
            prop_assert!(asm.contains("tdpbf16ps"), "{src}: no tiles");
        }
        let r = common::check_with(&l, &w, &x, batch, &o);
        prop_assert!(r.is_ok(), "{src}\nbatch {batch}: {}", r.unwrap_err());
    }
}
