//! The input of a stage on channel pairs (`StagePlan::pairs`: `vdpbf16ps`
//! on the direct generator's blocking) converted to bf16 pairs before each
//! call: the rows the call's output rows read (`rows::input_rows`), into
//! the thread's scratch, each pixel's channels rounded as
//! `convjit_ir::bf16_bits` does, two to a 32-bit value (a zero after an
//! odd count). The function then reads that scratch as the input of
//! `ceil(Ci / 2)` channels, addressed from where row 0 would be.

use crate::pieces::{row_pixels, rows_of};
use convjit_ir::Stage;

/// Bytes of one converted input row.
fn row_bytes(stage: &Stage) -> usize {
    row_pixels(stage) * stage.input.c.div_ceil(2) * 4
}

/// Output rows per call: as many as read a piece of converted rows
/// (`pieces::rows_per_call`).
pub(crate) fn rows_per_call(stage: &Stage) -> usize {
    crate::pieces::rows_per_call(stage, row_bytes(stage))
}

/// Scratch bytes a call of [`rows_per_call`] rows converts into.
pub(crate) fn scratch_bytes(stage: &Stage) -> usize {
    crate::pieces::scratch_bytes(stage, row_bytes(stage))
}

/// Converts the input rows that output rows `a..a + n` of `stage` read
/// (a flat stage's: pixels), from `src` (f32, row `iy` at `src + iy * W *
/// Ci`) to `scratch`, and returns the input pointer the function takes:
/// where converted row 0 would be (only the converted rows are read
/// through it).
///
/// # Safety
/// `src` holds those input rows, addressed as above; `scratch` holds
/// [`scratch_bytes`] bytes, this thread's, 4-byte aligned; `n <=`
/// [`rows_per_call`].
pub(crate) unsafe fn convert(
    stage: &Stage,
    src: *const f32,
    a: usize,
    n: usize,
    scratch: *mut u8,
) -> *mut f32 {
    let (w, ci) = (row_pixels(stage), stage.input.c);
    let pairs = ci.div_ceil(2);
    let (lo, hi) = rows_of(stage, a, a + n);
    debug_assert!((hi - lo) * row_bytes(stage) <= scratch_bytes(stage));
    // SAFETY: the caller's contract: rows lo..hi of `src` are there, and
    // the scratch holds at least those rows converted.
    let (from, to) = unsafe {
        (
            std::slice::from_raw_parts(src.add(lo * w * ci), (hi - lo) * w * ci),
            std::slice::from_raw_parts_mut(scratch.cast::<u32>(), (hi - lo) * w * pairs),
        )
    };
    convert_pixels(from, to, ci);
    scratch.cast::<u32>().wrapping_sub(lo * w * pairs).cast()
}

/// `from`'s pixels of `ci` floats as pixels of `ceil(ci / 2)` bf16 pairs.
fn convert_pixels(from: &[f32], to: &mut [u32], ci: usize) {
    #[cfg(target_arch = "x86_64")]
    if ci.is_multiple_of(2) && std::arch::is_x86_feature_detected!("avx512bf16") {
        // SAFETY: the CPU has AVX512_BF16 (and so AVX-512F), checked just
        // above.
        return unsafe { convert_bf16(from, to) };
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512F, checked just above.
        return unsafe { convert_avx512(from, to, ci) };
    }
    convert_each(from, to, ci)
}

/// An even count of channels: pixels end on whole pairs, so the floats
/// are one run of pairs, 32 converted by one `vcvtne2ps2bf16` rather
/// than the integer rounding's ~20 instructions (MobileNet v2's block 0
/// converts 400 K floats an image: 149-167 us with the integer rounding,
/// 139-141 with this, on Zen 5). Its rounding is [`convjit_ir::bf16_bits`]'s
/// but for denormals, which it makes zero; `vdpbf16ps` reads denormal
/// inputs as zero anyway.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
fn convert_bf16(from: &[f32], to: &mut [u32]) {
    use std::arch::x86_64::{
        __m512bh, __m512i, _mm512_cvtne2ps_pbh, _mm512_loadu_ps, _mm512_storeu_si512,
    };
    let n = (from.len() / 32).min(to.len() / 16);
    for i in 0..n {
        // SAFETY: floats 32i..32i + 32 of `from` and values 16i..16i + 16
        // of `to` exist (i < n); unaligned loads and stores; 32 bf16 are
        // 64 bytes as 16 32-bit values are.
        unsafe {
            let lo = _mm512_loadu_ps(from.as_ptr().add(32 * i));
            let hi = _mm512_loadu_ps(from.as_ptr().add(32 * i + 16));
            let pairs = _mm512_cvtne2ps_pbh(hi, lo);
            _mm512_storeu_si512(
                to.as_mut_ptr().add(16 * i).cast(),
                std::mem::transmute::<__m512bh, __m512i>(pairs),
            );
        }
    }
    convert_each(&from[32 * n..], &mut to[16 * n..], 2)
}

/// [`convert_each`] compiled for AVX-512 (its loops vectorize to it).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
fn convert_avx512(from: &[f32], to: &mut [u32], ci: usize) {
    convert_each(from, to, ci)
}

#[inline(always)]
fn convert_each(from: &[f32], to: &mut [u32], ci: usize) {
    let pair = |lo: f32, hi: u32| u32::from(convjit_ir::bf16_bits(lo)) | hi << 16;
    let bits = |x: f32| u32::from(convjit_ir::bf16_bits(x));
    if ci.is_multiple_of(2) {
        // Pixels end on whole pairs: one run of pairs.
        for (t, f) in to.iter_mut().zip(from.chunks_exact(2)) {
            *t = pair(f[0], bits(f[1]));
        }
        return;
    }
    let pairs = ci.div_ceil(2);
    for (t, f) in to.chunks_exact_mut(pairs).zip(from.chunks_exact(ci)) {
        for (tp, fp) in t.iter_mut().zip(f.chunks(2)) {
            *tp = pair(fp[0], fp.get(1).map_or(0, |&x| bits(x)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use convjit_ir::compile_source;

    fn stage(src: &str) -> Stage {
        compile_source(src).unwrap().remove(0).stages.remove(0)
    }

    /// Each pixel's channels two to a value, even channel low, rounded as
    /// the interpreter rounds, a zero after an odd count; NaN stays NaN.
    #[test]
    fn pixels_become_pairs_of_rounded_channels() {
        // 35 values: a vector's 32 and a tail (for even counts).
        let mut x: Vec<f32> = (0..35).map(|i| (i as f32 - 17.0) * 1.37).collect();
        x[3] = f32::NAN;
        x[40 % 35] = f32::INFINITY;
        x[33] = 3.0f32.sqrt();
        for ci in [2usize, 3, 5, 7] {
            let pairs = ci.div_ceil(2);
            let px = x.len() / ci;
            let mut to = vec![u32::MAX; px * pairs];
            convert_pixels(&x[..px * ci], &mut to, ci);
            let mut each = vec![0; to.len()];
            convert_each(&x[..px * ci], &mut each, ci);
            assert_eq!(to, each);
            for p in 0..px {
                for k in 0..pairs {
                    let half = |c: usize| match c < ci {
                        true => convjit_ir::bf16_bits(x[p * ci + c]),
                        false => 0,
                    };
                    let v = to[p * pairs + k];
                    assert_eq!(v as u16, half(2 * k), "ci {ci} pixel {p} pair {k}");
                    assert_eq!((v >> 16) as u16, half(2 * k + 1));
                }
            }
        }
        let nan = convjit_ir::bf16_bits(f32::NAN);
        assert!(f32::from_bits(u32::from(nan) << 16).is_nan());
    }

    /// A call converts exactly the rows its output rows read, within the
    /// scratch, and the pointer it returns puts row `lo` at the scratch.
    #[test]
    fn a_call_converts_the_rows_it_reads_within_its_scratch() {
        let s = stage("layer l { input 9x5x3\n c: conv 3x3 -> 16, stride 2x1, pad same }");
        let input: Vec<f32> = (0..9 * 5 * 3).map(|i| i as f32).collect();
        let bytes = scratch_bytes(&s);
        let mut scratch = vec![0u32; bytes / 4];
        let per = rows_per_call(&s);
        let mut a = 0;
        while a < s.output.h {
            let n = per.min(s.output.h - a);
            let base = scratch.as_mut_ptr().cast::<u8>();
            // SAFETY: the whole input, a scratch of `scratch_bytes`.
            let p = unsafe { convert(&s, input.as_ptr(), a, n, base) };
            let (lo, hi) = rows_of(&s, a, a + n);
            let first = p.cast::<u32>().wrapping_add(lo * 5 * 2);
            assert_eq!(first, scratch.as_mut_ptr());
            for i in 0..(hi - lo) * 5 {
                let px = (lo * 5 + i) * 3;
                assert_eq!(scratch[2 * i] as u16, convjit_ir::bf16_bits(input[px]));
                assert_eq!(scratch[2 * i + 1] >> 16, 0, "the pad after channel 2");
            }
            a += n;
        }
    }
}
