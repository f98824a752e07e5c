//! Every code generator the host runs against the interpreter, layer by
//! layer over the stage kinds and their options (the property tests
//! cover random layers; these name the cases each generator must get
//! right: every tail and border class of 4, 8 and 16 lanes).

mod common;

use common::{check_with, input, layer};
use convjit_ir::Weights;
use convjit_plan::{Backend, Options, Split};

const LAYERS: &[&str] = &[
    "layer a { input 4x4x16\n p: pointwise 16 }",
    "layer a { input 5x7x7\n p: pointwise 5, bias, relu }",
    "layer a { input 5x7x3\n p: pointwise 3, relu, residual }",
    "layer a { input 6x5x1\n p: pointwise 1, bias }",
    "layer a { input 7x9x24\n p: pointwise 40, bias, relu6 }",
    "layer a { input 3x31x70\n p: pointwise 70, bias, residual }",
    "layer a { input 14x14x64\n p: pointwise 100, relu }",
    "layer a { input 6x7x3\n c: conv 3x3 -> 4, pad same, bias }",
    "layer a { input 9x10x6\n c: conv 4x3 -> 9, stride 2x1, dilation 1x2, pad same, relu }",
    "layer a { input 12x12x3\n c: conv 5x5 -> 256 }",
    "layer a { input 17x13x9\n c: conv 3x3 -> 33, stride 2, pad same, bias, relu6 }",
    // Weight blocks that crowd L2 (802 KiB of two vectors): the next
    // block's prefetched a slice after each pixel block
    // (`NextWeights::PerPass`, on a 2 MiB L2), a loop between blocks.
    "layer a { input 5x9x128\n c: conv 7x7 -> 40, pad same, bias, relu }",
    // Narrow conv rows two at a time (`RowPairs`, the direct
    // generators): pairs between border rows, odd and even counts of full
    // rows, per-pixel kernel columns, stride, dilation, pad valid (every
    // row full), asymmetric padding, groups, residual, channel blocks
    // outermost (614 KiB of weights), one full row only.
    "layer a { input 7x7x24\n c: conv 3x3 -> 40, pad same, bias, relu }",
    "layer a { input 14x14x16\n c: conv 3x3 -> 35, stride 2, pad 1 1 1 1, bias, relu6 }",
    "layer a { input 6x6x32\n c: conv 3x3 -> 32, pad same, residual }",
    "layer a { input 11x5x8\n c: conv 3x3 -> 20, dilation 2, pad same, bias }",
    "layer a { input 9x8x5\n c: conv 3x3 -> 17, pad valid, relu }",
    "layer a { input 9x17x8\n c: conv 7x7 -> 32, pad same, bias }",
    "layer a { input 8x6x4\n c: conv 3x2 -> 19, pad 2 0 1 0 }",
    "layer a { input 7x7x32\n c: conv 3x3 -> 48, groups 2, pad same, bias }",
    "layer a { input 6x7x128\n c: conv 5x5 -> 48, pad same, bias }",
    "layer a { input 4x5x8\n c: conv 3x3 -> 16, pad same }",
    "layer a { input 8x8x6\n c: conv 5x5 -> 7, separable spatial, pad same, bias, relu }",
    "layer a { input 9x8x5\n d: depthwise 3x3, stride 2, pad same, bias, relu6 }",
    "layer a { input 9x11x16\n d: depthwise 3x3, pad same, bias, relu6 }",
    "layer a { input 9x37x40\n d: depthwise 3x3, pad same, bias }",
    "layer a { input 11x19x33\n d: depthwise 5x5, stride 2, pad same, relu }",
    "layer a { input 7x6x3\n d: depthwise 5x3, pad same, multiplier 2 }",
    "layer a { input 7x9x16\n d: depthwise 3x3, pad same, multiplier 2, bias }",
    "layer a { input 7x9x20\n d: depthwise 3x3, pad same, multiplier 2\n p: pointwise 20, residual }",
    "layer a { input 7x6x2\n d: depthwise 3x3, pad 2 0 1 3, multiplier 3 }",
    "layer a { input 7x6x5\n d: depthwise 3x3, dilation 2, pad same, multiplier 6 }",
    "layer a { input 5x6x3\n d: depthwise 3x3, pad same, multiplier 37, bias }",
    "layer a { input 8x8x6\n e: pointwise 13, bias, relu6\n d: depthwise 3x3, pad same, bias, relu6\n p: pointwise 6, bias, residual }",
    "layer a { input 8x9x5\n s: conv 3x3 -> 10, separable depthwise, multiplier 2, stride 2, pad same, bias, relu6 }",
    "layer a { input 13x13x17\n d: depthwise 9x9, pad same, bias }",
    // One channel: vectors along the row (interior columns), per-pixel borders.
    "layer a { input 9x40x1\n d: depthwise 3x3, pad same, bias, relu6 }",
    "layer a { input 7x150x1\n d: depthwise 5x5, pad same }",
    "layer a { input 6x37x1\n d: depthwise 3x5, dilation 2, pad 1 2 3 0, bias, relu }",
    "layer a { input 5x19x1\n d: depthwise 1x3, pad valid }",
    "layer a { input 5x33x1\n d: depthwise 3x3, pad same, residual }",
    "layer a { input 9x33x1\n d: depthwise 3x3, stride 2x1, pad same, bias }",
    "layer a { input 8x300x1\n d: depthwise 7x7, pad same, bias }",
    "layer a { input 5x24x1\n d: depthwise 3x21, pad same, bias }",
    // Pairs of rows (every kernel row valid, stride 1): odd and even
    // counts of such rows, residual and relu6 in the second row's stores.
    "layer a { input 12x40x1\n d: depthwise 5x5, pad same, bias, relu6, residual }",
    "layer a { input 11x33x1\n d: depthwise 3x7, pad 1 2 3 3, relu }",
    "layer a { input 8x64x1\n d: depthwise 4x4, pad valid, bias }",
    "layer a { input 7x45x1\n d: depthwise 3x3, dilation 1x2, pad same, bias }",
    // A few channels: vectors along the row with per-phase weights.
    "layer a { input 9x40x3\n d: depthwise 3x3, pad same, bias, relu6 }",
    "layer a { input 6x101x3\n d: depthwise 5x5, pad same, residual }",
    "layer a { input 7x64x2\n d: depthwise 3x7, dilation 1x2, pad 1 1 6 3, bias }",
    "layer a { input 5x37x5\n d: depthwise 3x3, pad same, relu }",
    "layer a { input 5x29x7\n d: depthwise 1x3, pad valid, bias }",
    "layer a { input 6x50x6\n d: depthwise 3x3, pad same, bias }",
    "layer a { input 4x70x12\n d: depthwise 2x2, pad same }",
    "layer a { input 5x20x3\n d: depthwise 3x9, pad same, bias }",
    // Row vectors whose taps AVX-512 makes by `valignd` from whole
    // vectors loaded once per kernel row (1xK rows, the second pass of a
    // separated filter): the widest tap 1-40 floats along the row (the
    // last vector masked, or whole), widths that leave a partial block
    // and a last vector moved back, pad same and valid, dilation.
    "layer a { input 4x203x1\n d: depthwise 1x7, pad same, bias, relu6 }",
    "layer a { input 3x77x1\n d: depthwise 1x17, pad same, residual }",
    "layer a { input 3x61x1\n d: depthwise 1x20, pad valid, bias }",
    "layer a { input 3x50x1\n d: depthwise 1x2, pad valid }",
    "layer a { input 4x131x3\n d: depthwise 1x9, pad same, bias, relu }",
    "layer a { input 3x45x3\n d: depthwise 1x5, dilation 3, pad same, residual }",
    "layer a { input 3x70x4\n d: depthwise 1x9, pad same, bias }",
    "layer a { input 3x33x2\n d: depthwise 1x5, dilation 3, pad valid }",
    "layer a { input 6x97x3\n c: depthwise 7x1, pad same\n r: depthwise 1x7, pad same, bias }",
    // Kx1 rows all row vectors, in column strips of 256 floats or
    // more (x86) down each call's rows: two or three strips, the last one
    // longer by the rest, 1-4 channels, stride, dilation, pad valid, a
    // separated filter's two passes fused in bands.
    "layer a { input 9x700x1\n d: depthwise 5x1, pad same, bias, relu6 }",
    "layer a { input 7x203x3\n d: depthwise 7x1, pad same, residual }",
    "layer a { input 6x150x4\n d: depthwise 3x1, dilation 2x1, pad valid, bias }",
    "layer a { input 9x260x2\n d: depthwise 4x1, stride 2x1, pad same }",
    "layer a { input 12x300x3\n c: depthwise 9x1, pad same\n r: depthwise 1x9, pad same, bias, relu }",
    "layer a { input 11x530x1\n c: depthwise 7x1, pad same\n r: depthwise 1x7, pad same }",
    // One channel, 2 or 4 outputs (a conv is planned as a depthwise
    // multiplier): row vectors with a permutation spreading each pixel.
    "layer a { input 9x40x1\n f: conv 3x3 -> 2, pad same, bias, relu }",
    "layer a { input 7x70x1\n f: conv 3x5 -> 4, pad same }",
    "layer a { input 9x37x1\n f: conv 3x1 -> 2, pad same, bias }",
    "layer a { input 8x33x1\n f: depthwise 5x5, multiplier 2, dilation 2, pad same, relu6 }",
    "layer a { input 6x45x1\n f: depthwise 3x3, multiplier 4, pad 1 0 2 3, bias }",
    "layer a { input 5x8x1\n f: depthwise 3x3, multiplier 2, pad same }",
    "layer a { input 5x17x1\n f: depthwise 1x1, multiplier 4, bias }",
    // Multiplier 2 on AVX-512: whole pixels per vector, each output's
    // accumulators apart, interleaved before the stores (blocks of 8
    // vectors, a partial block, a last vector moved back).
    "layer a { input 6x300x1\n f: conv 3x3 -> 2, pad same, bias, relu }",
    "layer a { input 5x157x1\n f: conv 3x1 -> 2, pad 1 1 0 0, relu6 }",
    "layer a { input 4x99x1\n f: depthwise 2x7, multiplier 2, dilation 1x2, pad valid, bias }",
    // Its taps from inputs loaded once and shifted by `valignd`: the last
    // input vector masked to 12, 8, or no lanes past the block (a reach of
    // 16), and whole.
    "layer a { input 5x203x1\n f: conv 3x5 -> 2, dilation 1x3, pad same, bias }",
    "layer a { input 4x150x1\n f: depthwise 2x9, multiplier 2, pad valid, relu }",
    "layer a { input 3x181x1\n f: depthwise 3x9, multiplier 2, dilation 2, pad same }",
    "layer a { input 3x64x1\n f: depthwise 1x2, multiplier 2, pad valid, bias, relu6 }",
    // A 1x1 reduction in passes (`StagePlan::k_chunks`: a block's weights
    // past a quarter of L2, any L2 up to 4 MiB): first, middle and last
    // passes, bias, activations, a residual added once, a pixel range
    // that is not whole blocks (the rest one pixel at a time, never a
    // block moved back over pixels a pass has summed).
    "layer a { input 3x3x16384\n p: pointwise 32, bias, relu }",
    // (40 outputs: on 16 lanes the last vector moves back over channels
    // 24-31, so one pass; on 8 lanes five whole vectors, in passes.)
    "layer a { input 3x3x16384\n p: pointwise 40, bias }",
    "layer a { input 5x5x4096\n p: pointwise 64, bias, relu6 }",
    "layer a { input 1x29x6144\n p: pointwise 48, bias }",
    "layer a { input 2x3x3072\n p: pointwise 3072, bias, residual }",
    // A flat 1x1 conv on one channel stays a conv (pixel ranges).
    "layer a { input 6x6x1\n f: conv 1x1 -> 4, relu }",
    "layer a { input 5x40x1\n f: conv 1x1 -> 2, bias }",
    "layer a { input 6x6x1\n f: conv 1x1 -> 4, pad 1 0 0 1 }",
    // Groups: full vectors per group, tails, dilated taps, partial vectors
    // of a few outputs, a grouped 1x1 in a fused chain.
    "layer a { input 6x7x64\n p: pointwise 96, groups 2, bias, relu }",
    "layer a { input 5x9x12\n p: pointwise 60, groups 3 }",
    "layer a { input 9x10x12\n c: conv 3x3 -> 12, groups 4, pad same, bias }",
    "layer a { input 9x10x64\n c: conv 3x3 -> 64, groups 16, stride 2, pad same, relu6 }",
    "layer a { input 11x9x20\n c: conv 5x5 -> 50, groups 5, dilation 2, pad same }",
    "layer a { input 7x7x6\n c: conv 1x3 -> 6, groups 6, pad valid, bias }",
    "layer a { input 8x8x24\n e: pointwise 48, groups 3, bias, relu\n d: depthwise 3x3, stride 2, pad same\n p: pointwise 24, groups 3, bias }",
];

#[test]
fn every_generator_matches_the_interpreter() {
    let backends = Backend::available();
    for b in Backend::ALL {
        if !backends.contains(&b) {
            println!("note: this CPU does not run the {b} generator: skipped");
        }
    }
    for (i, src) in LAYERS.iter().enumerate() {
        let l = layer(src);
        let w = Weights::random(&l, i as u64);
        for &backend in &backends {
            for threads in [1, 2] {
                let o = Options {
                    backend,
                    threads,
                    min_thread_cycles: 0,
                    ..Options::default()
                };
                for batch in [1, 2] {
                    let x = input(&l, batch, 3 + i as u64);
                    if let Err(e) = check_with(&l, &w, &x, batch, &o) {
                        panic!("{backend}, {threads} threads, batch {batch}: {src}: {e}");
                    }
                }
            }
        }
    }
}

/// Threads sharing a stage's output channels (`Split::Channels`: rows
/// divide worse) on every generator: odd channel counts (a share's tail
/// vector, or fewer channels than lanes), bias, relu6, residual, stride
/// 2, and batches of 1 (threads share the image) and 3 (whole images per
/// thread, every share in turn, then a shared one on 2 threads).
#[test]
fn threads_sharing_channels_match_the_interpreter() {
    // (layer, threads that must split its channels on every generator)
    let cases: &[(&str, &[usize])] = &[
        (
            "layer a { input 3x5x16\n c: conv 3x3 -> 100, pad same, bias, relu6 }",
            &[2],
        ),
        (
            "layer a { input 2x5x16\n c: conv 3x3 -> 100, pad same, bias }",
            &[3],
        ),
        (
            "layer a { input 5x9x16\n c: conv 3x3 -> 100, stride 2, pad same, bias, relu6 }",
            &[2],
        ),
        (
            "layer a { input 1x9x8\n c: conv 1x3 -> 37, bias, relu }",
            &[2, 3],
        ),
        (
            "layer a { input 1x6x37\n c: conv 1x3 -> 37, pad same, bias, residual }",
            &[2, 3],
        ),
        (
            "layer a { input 1x5x24\n p: pointwise 37, bias, relu6 }",
            &[2, 3],
        ),
        (
            "layer a { input 1x7x100\n p: pointwise 100, bias, relu6, residual }",
            &[2, 3],
        ),
        (
            "layer a { input 2x3x100\n p: pointwise 100, residual }",
            &[2, 3],
        ),
        // Shares whose reduction runs in passes (`StagePlan::k_chunks`).
        (
            "layer a { input 1x5x8192\n p: pointwise 128, bias, relu }",
            &[2, 3],
        ),
        (
            "layer a { input 1x3x3072\n p: pointwise 3072, bias, residual }",
            &[2, 3],
        ),
        // MobileNet's and Inception's stages of the benchmark suite.
        (
            "layer a { input 17x17x128\n c: conv 7x1 -> 128, pad same, bias, relu }",
            &[2],
        ),
        (
            "layer a { input 7x7x1024\n p: pointwise 1024, bias, relu6 }",
            &[],
        ),
    ];
    let mut unsplit = Vec::new();
    for (i, &(src, must)) in cases.iter().enumerate() {
        let l = layer(src);
        let w = Weights::random(&l, 50 + i as u64);
        for &backend in &Backend::available() {
            for threads in [2, 3] {
                let o = Options {
                    backend,
                    threads,
                    min_thread_cycles: 0,
                    ..Options::default()
                };
                let k = convjit_jit::Kernel::compile_with(&l, &w, &o).unwrap();
                let g = &k.layer_plan().groups[0];
                if must.contains(&threads) && (g.split, g.threads) != (Split::Channels, threads) {
                    unsplit.push(format!("{backend}, {threads} threads: {src}: {}", g.why));
                }
                for batch in [1, 3] {
                    let x = input(&l, batch, 7 + i as u64);
                    if let Err(e) = check_with(&l, &w, &x, batch, &o) {
                        panic!(
                            "{backend}, {threads} threads ({:?}), batch {batch}: {src}: {e}",
                            g.split
                        );
                    }
                }
            }
        }
    }
    assert!(unsplit.is_empty(), "rows chosen:\n{}", unsplit.join("\n"));
}

/// Stages whose units would be mostly zero lanes (one channel, one
/// output per group, a few channels or outputs; large kernels) pack only
/// the floats they use ([`convjit_plan::stage_plan::StagePlan::compact`]): every
/// generator's whole-vector loads then read the next unit's floats into
/// unused lanes, and the last ends inside the buffer (the packed weights
/// end at a guard page). Bias, relu6, residual, odd channel counts,
/// stride 2, 2 threads; each compact on AVX-512, the first ones on every
/// generator.
#[test]
fn compact_packing_matches_the_interpreter() {
    use convjit_plan::stage_plan::{plan_for, Target};
    let cases: &[(&str, &[Target])] = &[
        (
            "layer a { input 152x160x1\n d: depthwise 150x150, bias, relu6 }",
            &[Target::CRANELIFT, Target::AVX2, Target::AVX512],
        ),
        (
            "layer a { input 24x30x1\n d: depthwise 150x150, pad same, bias, residual }",
            &[Target::CRANELIFT, Target::AVX2, Target::AVX512],
        ),
        (
            "layer a { input 151x157x1\n c: conv 150x150 -> 1, stride 2, bias, relu }",
            &[Target::CRANELIFT, Target::AVX2, Target::AVX512],
        ),
        (
            "layer a { input 3x5x30000\n p: pointwise 1, bias, relu }",
            &[Target::CRANELIFT, Target::AVX2, Target::AVX512],
        ),
        (
            "layer a { input 5x5x2200\n c: conv 3x3 -> 2200, groups 2200, stride 2, pad same, bias, relu6 }",
            &[Target::CRANELIFT, Target::AVX2, Target::AVX512],
        ),
        // Kernel rows narrow enough for the x86 generators' one-channel
        // row vectors (each tap's weight broadcast from its float), in
        // pairs of rows where every kernel row is valid.
        (
            "layer a { input 204x60x1\n d: depthwise 200x22, bias, relu6 }",
            &[Target::AVX512],
        ),
        (
            "layer a { input 30x61x1\n d: depthwise 200x22, pad same, residual }",
            &[Target::AVX512],
        ),
        (
            "layer a { input 74x80x1\n c: conv 72x72 -> 3, bias, relu6 }",
            &[Target::AVX512],
        ),
        (
            "layer a { input 62x72x1\n d: depthwise 60x60, multiplier 2, bias }",
            &[Target::AVX512],
        ),
        (
            "layer a { input 77x90x1\n d: depthwise 75x75, multiplier 4, stride 2, bias, relu }",
            &[Target::AVX512],
        ),
        (
            "layer a { input 74x90x3\n d: depthwise 72x72, bias, relu6 }",
            &[Target::AVX512],
        ),
        (
            "layer a { input 82x90x5\n d: depthwise 80x80, pad 1 0 2 1, relu }",
            &[Target::AVX512],
        ),
    ];
    for (i, &(src, compact)) in cases.iter().enumerate() {
        let l = layer(src);
        for t in compact {
            let p = plan_for(&l.stages[0], t);
            assert!(p.compact, "{src}: {t:?}");
            let rows = src.contains("200x22");
            assert!(!rows || p.row_vectors().is_some(), "{src}: no row vectors");
        }
        let w = Weights::random(&l, 90 + i as u64);
        for &backend in &Backend::available() {
            for threads in [1, 2] {
                let o = Options {
                    backend,
                    threads,
                    min_thread_cycles: 0,
                    ..Options::default()
                };
                for batch in [1, 2] {
                    let x = input(&l, batch, 9 + i as u64);
                    if let Err(e) = check_with(&l, &w, &x, batch, &o) {
                        panic!("{backend}, {threads} threads, batch {batch}: {src}: {e}");
                    }
                }
            }
        }
    }
}

/// A filter's separated pair in one function, its column sums in
/// registers (`stage_plan::column_pair`: AVX-512, f32), against the
/// interpreter with every stage fused (the pair) and apart: one and two
/// outputs a pixel (a depthwise multiplier or a conv), widths of a
/// vector's tail, whole vectors, one pixel, and column strips (wide
/// rows of many kernel rows), taps reaching 16 pixels left or right,
/// borders above and below in every class (rows fewer than kernel
/// rows), asymmetric and valid padding, bias and activations, one and
/// two threads, batches of 1 and 2. Each runs in registers where the
/// generator does (checked, so the cases cannot drift off the path).
#[test]
fn filter_pairs_in_registers_match_the_interpreter() {
    const PAIRS: &[&str] = &[
        "input 9x50x1\n c: conv 3x1 -> 2, pad 1 1 0 0\n r: depthwise 1x3, pad 0 0 1 1, bias",
        "input 5x33x1\n c: depthwise 3x1, multiplier 2, pad 2 0 0 0\n r: depthwise 1x3, pad 0 0 2 0, relu",
        "input 2x16x1\n c: conv 3x1 -> 2, pad 2 2 0 0\n r: depthwise 1x4, pad 0 0 2 1, bias, relu6",
        "input 6x1x1\n c: depthwise 3x1, pad 1 1 0 0\n r: depthwise 1x3, pad 0 0 1 1",
        "input 1x7x1\n c: depthwise 9x1, pad 4 4 0 0\n r: depthwise 1x5, pad 0 0 2 2, bias",
        "input 11x31x1\n c: depthwise 7x1, pad 3 3 0 0\n r: depthwise 1x5, pad 0 0 4 0, relu6",
        "input 7x40x1\n c: depthwise 3x1\n r: depthwise 1x3, pad 0 0 16 0, bias",
        "input 7x40x1\n c: depthwise 3x1, pad 1 1 0 0\n r: depthwise 1x5, pad 0 0 0 4",
        "input 7x21x1\n c: depthwise 3x1, pad 1 1 0 0\n r: depthwise 1x2, pad 0 0 0 15",
        "input 4x70x1\n c: conv 2x1 -> 1, pad 0 1 0 0\n r: depthwise 1x4, bias",
        // Two outputs of 5x5: the row weights as memory operands.
        "input 8x37x1\n c: conv 5x1 -> 2, pad 2 2 0 0\n r: depthwise 1x5, pad 0 0 2 2, bias, relu",
        // Strips: the kernel rows' input passes half of L1d up to 60 KiB
        // (7 x 1,100 x 4 bytes; 9 x 1,041; 3 x 2,600 up to 61 KiB).
        "input 9x1100x1\n c: depthwise 7x1, pad 3 3 0 0\n r: depthwise 1x5, pad 0 0 2 2, bias, relu",
        "input 5x1041x1\n c: depthwise 9x1, pad 4 4 0 0\n r: depthwise 1x3, pad 0 0 1 1",
        "input 4x2600x1\n c: conv 3x1 -> 2, pad 1 1 0 0\n r: depthwise 1x3, pad 0 0 1 1, relu6",
        // Wider than the input (a right pad of 1,000): whole rows, no
        // strips (whose middle ones would load past the input rows).
        "input 4x1100x1\n c: depthwise 7x1, pad 3 3 0 0\n r: depthwise 1x3, pad 0 0 1 1000, bias",
    ];
    if !Backend::available().contains(&Backend::Avx512) {
        println!("note: this CPU does not run the avx512 generator: skipped");
        return;
    }
    for (i, body) in PAIRS.iter().enumerate() {
        let l = layer(&format!("layer p {{ {body} }}"));
        let w = Weights::random(&l, 40 + i as u64);
        for fuse in [convjit_plan::Fusion::Always, convjit_plan::Fusion::Never] {
            for threads in [1, 2] {
                let o = Options {
                    backend: Backend::Avx512,
                    threads,
                    min_thread_cycles: 0,
                    fuse,
                    ..Options::default()
                };
                let k = convjit_jit::Kernel::compile_with(&l, &w, &o).unwrap();
                let plan = k.layer_plan();
                let pair = plan.in_registers(&l, &plan.groups[0]);
                assert_eq!(pair, fuse == convjit_plan::Fusion::Always, "{body}");
                for batch in [1, 2] {
                    let x = input(&l, batch, 7 + i as u64);
                    if let Err(e) = check_with(&l, &w, &x, batch, &o) {
                        panic!("{fuse:?}, {threads} threads, batch {batch}: {body}: {e}");
                    }
                }
            }
        }
    }
}
