//! bf16 precision at the runtime's seams (`Options::precision`): the
//! stage functions multiply exactly what they read, so rounding their
//! inputs makes every generator's f32 arithmetic the bf16 semantics
//! (a product of two bf16 values is exact in f32; sums stay f32). The
//! runtime rounds the layer's input once per run, every stage output that
//! another stage reads as the function writes it, and (`Packed::new`) the
//! weights when packed; the residual reads the layer's input unrounded,
//! and the last stage's output is never rounded (bias, activation and
//! residual are f32). A stage on AMX tiles converts its input to bf16
//! itself, and one on channel pairs has it converted before each call
//! (`pairs.rs`), rounding to nearest even as [`round_bf16`] does: what
//! either reads is not rounded first.

use convjit_ir::{round_bf16, Layer};
use convjit_plan::program::Program;

/// Where a function's output values lie in the rows it writes, for
/// rounding them in place: `pixels_per_row` pixels of `pixel_len` floats
/// a row (1 pixel a "row" for a flat stage, called with pixel ranges), of
/// which the function writes channels `c0..c1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RoundedOutput {
    pixels_per_row: usize,
    pixel_len: usize,
    c0: usize,
    c1: usize,
}

impl RoundedOutput {
    /// Per function of `program`: how to round what it writes, or `None`
    /// for the layer's last stage (its output is the layer's).
    pub(crate) fn of(
        layer: &Layer,
        program: &Program,
        converts: &[bool],
    ) -> Vec<Option<RoundedOutput>> {
        let last = layer.stages.len() - 1;
        program
            .functions
            .iter()
            .map(|f| {
                let out = f.stage.output;
                let read_converted = reads_only_converted(program, converts, f.index + 1);
                (f.index != last && !read_converted).then(|| RoundedOutput {
                    pixels_per_row: match convjit_plan::stage_plan::is_flat(&f.stage) {
                        true => 1,
                        false => out.w,
                    },
                    pixel_len: out.c,
                    c0: f.channels.0,
                    c1: f.channels.1,
                })
            })
            .collect()
    }

    /// Rounds to bf16 the values a call wrote: `rows` rows (pixels, for
    /// a flat stage) from `dst`, only the function's channels (threads
    /// sharing a row's channels round their own).
    ///
    /// # Safety
    /// `dst` points at `rows` whole output rows of the function's stage
    /// that this thread may write (the call's destination, just written by
    /// it).
    pub(crate) unsafe fn round(&self, dst: *mut f32, rows: usize) {
        let pixels = rows * self.pixels_per_row;
        let whole = self.c0 == 0 && self.c1 == self.pixel_len;
        if whole {
            // SAFETY: the caller's contract: those rows are this call's.
            let v = unsafe { std::slice::from_raw_parts_mut(dst, pixels * self.pixel_len) };
            round_slice(v);
            return;
        }
        for p in 0..pixels {
            // SAFETY: as above; channels `c0..c1 <= pixel_len` of pixel `p`.
            let v = unsafe {
                std::slice::from_raw_parts_mut(
                    dst.add(p * self.pixel_len + self.c0),
                    self.c1 - self.c0,
                )
            };
            round_slice(v);
        }
    }
}

/// Whether stage `index` converts what it reads to bf16 itself in every
/// function of it (`converts[f]`: function `f` runs on tiles, whose code
/// converts, or on channel pairs, whose call the runtime converts for,
/// `pairs.rs`), rounding as [`round_bf16`] does: then what it reads needs
/// no rounding first.
pub(crate) fn reads_only_converted(program: &Program, converts: &[bool], index: usize) -> bool {
    let mut of_stage = program
        .functions
        .iter()
        .zip(converts)
        .filter(|(f, _)| f.index == index)
        .peekable();
    of_stage.peek().is_some() && of_stage.all(|(_, &t)| t)
}

/// Each value of `v` rounded to bf16 in place ([`round_bf16`], the
/// interpreter's rounding: the same bits), 16 at a time where AVX-512 is
/// there (bf16 needs it: always, in practice).
pub(crate) fn round_slice(v: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512F, checked just above.
        return unsafe { round_slice_avx512(v) };
    }
    round_each(v)
}

/// [`round_each`] compiled for AVX-512 (the loop vectorizes to it).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn round_slice_avx512(v: &mut [f32]) {
    round_each(v)
}

/// `src` rounded to bf16 into `dst` (of the same length): one pass.
pub(crate) fn round_into(dst: &mut [f32], src: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512F, checked just above.
        return unsafe { round_into_avx512(dst, src) };
    }
    round_pairs(dst, src)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn round_into_avx512(dst: &mut [f32], src: &[f32]) {
    round_pairs(dst, src)
}

#[inline(always)]
fn round_pairs(dst: &mut [f32], src: &[f32]) {
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = round_bf16(s);
    }
}

#[inline(always)]
fn round_each(v: &mut [f32]) {
    for x in v {
        *x = round_bf16(*x);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_share_rounds_only_its_channels() {
        let r = RoundedOutput {
            pixels_per_row: 2,
            pixel_len: 3,
            c0: 1,
            c1: 2,
        };
        let odd = 1.0 + 3.0 / 256.0;
        let mut v = [odd; 7];
        // SAFETY: one row of 2 pixels of 3 floats: 6 floats of `v`.
        unsafe { r.round(v.as_mut_ptr(), 1) };
        let want = round_bf16(odd);
        assert_ne!(want, odd);
        assert_eq!(v, [odd, want, odd, odd, want, odd, odd]);
    }

    #[test]
    fn the_last_stage_is_not_rounded() {
        let l = &convjit_ir::compile_source(
            "layer l { input 4x4x8\n a: pointwise 8\n b: depthwise 3x3, pad same }",
        )
        .unwrap()[0];
        let p = convjit_plan::layer_plan::plan_layer(l, &Default::default(), &crate::host());
        let program = convjit_plan::program::program(l, &p);
        let r = RoundedOutput::of(l, &program, &vec![false; program.functions.len()]);
        let last: Vec<bool> = program.functions.iter().map(|f| f.index == 1).collect();
        for (r, last) in r.iter().zip(last) {
            assert_eq!(r.is_none(), last);
        }
    }
}
