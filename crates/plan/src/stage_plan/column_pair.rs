//! A filter's separated pair in registers ([`column_pair`]): the `Khx1`
//! stage on a one-channel image (M = 1 or 2 outputs a pixel: a depthwise
//! multiplier, or a conv to M) and the `1xKw` depthwise stage after it,
//! computed by one AVX-512 function whose column sums never leave the
//! registers. Per 16 pixels of a row it sums the next 16 columns, and
//! takes the row stage's taps from the column sums before, at and after
//! by `valignd`: the intermediate is neither stored nor loaded, and no
//! tap's load straddles a cache line. Run as two stages fused in bands,
//! Sobel's 3x1 and 1x3 passes spent as much on their loads, stores and
//! shuffles as on their FMAs (39-43% of the FMA peak, BENCHMARKS.md).
//!
//! The function is the row stage's ([`StagePlan::column`] says what it
//! computes first); its packed weights are the row stage's, then the
//! column weights `[M][Kh]`, the row weights `[M][Kw]` and the row
//! stage's bias `[M]` ([`pack_column_pair`]), each broadcast into a
//! register of its own once per call (the row weights where they fit:
//! [`ColumnPass::row_in_registers`]; else read by each FMA).

use super::{plan_for, StagePlan, Target};
use crate::Backend;
use convjit_ir::{Activation, Precision, Stage, StageKind};

/// The column stage a [`StagePlan`] of a row stage computes first, in
/// registers ([`column_pair`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ColumnPass {
    /// Kernel rows of the column stage.
    pub kh: usize,
    /// Its padding rows above the image.
    pub pt: usize,
    /// The one-channel image's height (its width is the row stage's
    /// input width, [`StagePlan::w`]).
    pub h: usize,
    /// Outputs per pixel: the column stage's, the row stage's channels.
    pub m: usize,
    /// Float offset in the packed weights of the column weights `[m][kh]`,
    /// then the row weights `[m][kw]`, then the bias `[m]`.
    pub w_off: usize,
    /// Pixels of the column strips the rows run in, each strip down every
    /// row of the call (0: whole rows): where the `kh` input rows an
    /// output row reads do not fit half of L1d, a strip's do, and the
    /// rows below reuse them from there ([`STRIP_PIXELS`]).
    pub strip: usize,
    /// The row weights fit registers beside the rest; else each FMA reads
    /// its weight as a broadcast memory operand (a 5x5 bank of 2 outputs).
    pub row_in_registers: bool,
}

/// Pixels of a column strip ([`ColumnPass::strip`]): 16 vectors, a KiB of
/// each input row; 9 rows of them take 9 KiB of L1d.
pub const STRIP_PIXELS: usize = 256;

/// The widest row kernel a pair computes in registers: each of its taps
/// but one is a `valignd`, on the ports the FMAs use, where the stages
/// fused in bands load their taps from the intermediate rows in L1 (the
/// load ports). At 1920x1080, one thread, against the bands (alternated,
/// two runs each): 5x5 grey 259 against 313 us, Sobel's 3x3 pair 419
/// against 709-762; but 7x7 381 against 366 and 9x9 530 against 441.
pub const MAX_ROW_TAPS: usize = 5;

/// Vector registers the pair's function uses beyond its weights: per
/// output its sum and its column sums before, at and after; then the
/// input, two shifted taps, zero and six, and the two interleaving
/// permutations.
const FIXED_REGISTERS: usize = 7;

/// The column pass `col` then `row` run as, one function for `row`, where
/// `target` is the AVX-512 generator in f32 and the pair is a filter's:
/// `col` a `Khx1` stage (`Kh` >= 2) on one channel to 1 or 2 outputs (stride and
/// dilation 1, no bias, activation or residual: the separation's first
/// part), `row` a `1xKw` depthwise stage on its output (stride and
/// dilation 1, padding left and right only, 2 to [`MAX_ROW_TAPS`]
/// taps reaching at most 16 pixels left and 15 right, no residual), and
/// the column weights and bias fit registers beside the function's own
/// (`FIXED_REGISTERS`). `None` otherwise: the two
/// stages run as two functions.
pub fn column_pair(col: &Stage, row: &Stage, target: &Target) -> Option<ColumnPass> {
    let f32_avx512 = target.backend == Backend::Avx512
        && target.lanes == 16
        && target.precision == Precision::F32
        && !(target.tiles || target.dot || target.pairs);
    let m = match col.kind {
        StageKind::Depthwise { multiplier } => multiplier,
        StageKind::Conv { cout, groups: 1 } => cout,
        _ => return None,
    };
    let [kh, ckw] = col.kernel;
    let [rkh, kw] = row.kernel;
    let unit = |s: &Stage| s.stride == [1, 1] && s.dilation == [1, 1];
    let col_ok = col.input.c == 1
        && kh >= 2
        && ckw == 1
        && (1..=2).contains(&m)
        && unit(col)
        && col.padding.left == 0
        && col.padding.right == 0
        && col.bias_key.is_none()
        && col.activation == Activation::None
        && !col.residual;
    let pl = row.padding.left;
    let row_ok = matches!(row.kind, StageKind::Depthwise { multiplier: 1 })
        && rkh == 1
        && kw >= 2
        && unit(row)
        && row.input == col.output
        && row.padding.top == 0
        && row.padding.bottom == 0
        && kw <= MAX_ROW_TAPS
        && pl <= 16
        && kw - 1 <= pl + 15
        && !row.residual;
    // The column weights and the bias in registers; the row weights too
    // where they fit.
    let registers = 4 * m + FIXED_REGISTERS + m * (kh + 1);
    let regs = target.vector_registers;
    (f32_avx512 && col_ok && row_ok && registers <= regs).then_some(ColumnPass {
        kh,
        pt: col.padding.top,
        h: col.input.h,
        m,
        w_off: 0,
        strip: 0,
        row_in_registers: registers + m * kw <= regs,
    })
}

/// The plan of `row`'s function computing `col` first in registers
/// ([`column_pair`] says it does): the row stage's, with the
/// [`ColumnPass`] and its weights after the row stage's own.
pub fn plan_pair(col: &Stage, row: &Stage, target: &Target) -> StagePlan {
    let mut c = column_pair(col, row, target).expect("a pair that runs in registers");
    let mut p = plan_for(row, target);
    c.w_off = p.packed_len;
    p.packed_len += c.m * (c.kh + p.kw + 1);
    // (Strips only where the output is no wider than the input: the
    // middle strips share one code, every load of it whole.)
    let rows_bytes = c.kh * p.w * 4;
    let fits = p.wo >= 2 * STRIP_PIXELS && p.wo <= p.w;
    if rows_bytes > crate::layer_plan::host_l1d_bytes() / 2 && fits {
        c.strip = STRIP_PIXELS;
    }
    p.column = Some(c);
    p
}

/// The pair's weights at [`ColumnPass::w_off`] of `out` (packed for the
/// row stage by `pack_into` before): `col` `[kh][1][m]` (or `[kh][1][1][m]`,
/// a conv's), `row` `[1][kw][m]`, `bias` `[m]`, as `[m][kh]`, `[m][kw]`,
/// `[m]`.
pub fn pack_column_pair(
    p: &StagePlan,
    col: &[f32],
    row: &[f32],
    bias: Option<&[f32]>,
    out: &mut [f32],
) {
    let c = p.column.expect("a pair's plan");
    let (m, kh, kw) = (c.m, c.kh, p.kw);
    let at = c.w_off;
    for o in 0..m {
        for i in 0..kh {
            out[at + o * kh + i] = col[i * m + o];
        }
        for j in 0..kw {
            out[at + m * kh + o * kw + j] = row[j * m + o];
        }
        out[at + m * (kh + kw) + o] = bias.map_or(0.0, |b| b[o]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stages(src: &str) -> Vec<Stage> {
        convjit_ir::compile_source(src)
            .unwrap_or_else(|d| panic!("{src}: {d:?}"))
            .remove(0)
            .stages
    }

    fn pair(src: &str, target: &Target) -> Option<ColumnPass> {
        let s = stages(src);
        column_pair(&s[0], &s[1], target)
    }

    /// A filter's separated pair runs in registers on AVX-512 in f32 only,
    /// and only where its stages are what the function computes.
    #[test]
    fn only_a_filters_pair_runs_in_registers() {
        let t = Target::AVX512;
        let sobel = "layer l { input 40x50x1\n c: conv 3x1 -> 2, pad 1 1 0 0\n r: depthwise 1x3, pad 0 0 1 1, bias, relu }";
        assert_eq!(
            pair(sobel, &t),
            Some(ColumnPass {
                kh: 3,
                pt: 1,
                h: 40,
                m: 2,
                w_off: 0,
                strip: 0,
                row_in_registers: true,
            })
        );
        let grey = "layer l { input 9x20x1\n c: depthwise 9x1, pad 4 4 0 0\n r: depthwise 1x5, pad 0 0 2 2 }";
        assert!(pair(grey, &t).is_some_and(|c| c.row_in_registers));
        // Two outputs of 5x5: the row weights as memory operands.
        let bank = "layer l { input 9x20x1\n c: conv 5x1 -> 2, pad 2 2 0 0\n r: depthwise 1x5, pad 0 0 2 2 }";
        assert!(pair(bank, &t).is_some_and(|c| !c.row_in_registers));
        for other in [Target::AVX2, Target::CRANELIFT] {
            assert_eq!(pair(sobel, &other), None);
        }
        let bf16 = Target {
            precision: Precision::Bf16,
            ..t
        };
        assert_eq!(pair(sobel, &bf16), None);
        for not in [
            // Three channels, a bias on the column stage, a stride, a
            // multiplier of 4, 7 row taps, a reach past 16, weights past
            // the registers.
            "layer l { input 9x20x3\n c: depthwise 3x1, pad 1 1 0 0\n r: depthwise 1x3, pad same }",
            "layer l { input 9x20x1\n c: depthwise 3x1, pad 1 1 0 0, bias\n r: depthwise 1x3, pad same }",
            "layer l { input 9x20x1\n c: depthwise 3x1, stride 2, pad 1 1 0 0\n r: depthwise 1x3, pad same }",
            "layer l { input 9x20x1\n c: depthwise 3x1, multiplier 4, pad 1 1 0 0\n r: depthwise 1x3, pad same }",
            "layer l { input 9x20x1\n c: depthwise 3x1, pad 1 1 0 0\n r: depthwise 1x7, pad same }",
            "layer l { input 9x40x1\n c: depthwise 3x1, pad 1 1 0 0\n r: depthwise 1x3, pad 0 0 17 0 }",
            "layer l { input 20x20x1\n c: depthwise 25x1, pad same\n r: depthwise 1x5, pad same }",
            "layer l { input 9x20x1\n c: depthwise 3x1, pad 1 1 0 0\n r: depthwise 1x3, pad same, residual }",
        ] {
            assert_eq!(pair(not, &t), None, "{not}");
        }
    }

    /// The pair's weights follow the row stage's, per output its column
    /// and row weights, then the bias.
    #[test]
    fn a_pairs_weights_follow_the_row_stages() {
        let s = stages("layer l { input 5x20x1\n c: conv 3x1 -> 2, pad 1 1 0 0\n r: depthwise 1x3, pad 0 0 1 1, bias }");
        let p = plan_pair(&s[0], &s[1], &Target::AVX512);
        let c = p.column.unwrap();
        assert_eq!(c.w_off, plan_for(&s[1], &Target::AVX512).packed_len);
        assert_eq!(p.packed_len, c.w_off + 2 * (3 + 3 + 1));
        let col: Vec<f32> = (0..6).map(|x| x as f32).collect();
        let row: Vec<f32> = (10..16).map(|x| x as f32).collect();
        let mut out = vec![0.0; p.packed_len];
        pack_column_pair(&p, &col, &row, Some(&[7.0, 8.0]), &mut out);
        assert_eq!(
            out[c.w_off..],
            [0., 2., 4., 1., 3., 5., 10., 12., 14., 11., 13., 15., 7., 8.]
        );
    }
}
