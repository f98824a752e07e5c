//! Weights packed for a kernel's functions, in storage that starts on a
//! cache line ([`Aligned`]; with the `testing` feature, ending at a guard
//! page instead): each function's stage as its plan lays it out, and a
//! filter's pair the column stage's too (`stage_plan::pack_column_pair`).

use convjit_ir::Precision;
use convjit_plan::stage_plan;

/// One cache line of f32s.
#[cfg(not(feature = "testing"))]
#[derive(Clone)]
#[repr(C, align(64))]
struct Line([f32; 16]);

/// `len` zeroed f32s starting on a cache line: the packed weights and the
/// run buffers. A 512-bit vector at a multiple of 16 floats then never
/// straddles two lines; a `Vec<f32>` of a megabyte starts 16 bytes past
/// one (malloc's mmap header), which split every vector access of a fused
/// RGB filter's band buffers.
#[cfg(not(feature = "testing"))]
pub(crate) struct Aligned {
    lines: Vec<Line>,
    len: usize,
}

#[cfg(not(feature = "testing"))]
impl Aligned {
    pub(crate) fn zeroed(len: usize) -> Aligned {
        Aligned {
            lines: vec![Line([0.0; 16]); len.div_ceil(16).max(1)],
            len,
        }
    }
}

#[cfg(not(feature = "testing"))]
impl std::ops::Deref for Aligned {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        // SAFETY: `Line` is `repr(C)` around `[f32; 16]` (64 bytes, the
        // same as its alignment, so no padding): the lines are at least
        // `len` initialised f32s.
        unsafe { std::slice::from_raw_parts(self.lines.as_ptr().cast::<f32>(), self.len) }
    }
}

#[cfg(not(feature = "testing"))]
impl std::ops::DerefMut for Aligned {
    fn deref_mut(&mut self) -> &mut [f32] {
        // SAFETY: as in `deref`, borrowed mutably through `&mut self`.
        unsafe { std::slice::from_raw_parts_mut(self.lines.as_mut_ptr().cast::<f32>(), self.len) }
    }
}

/// A stage's weights as `precision`'s multiplies see them (bf16: rounded,
/// the bias not: it is added in f32).
fn weights_in(w: &convjit_ir::StageWeights, precision: Precision) -> std::borrow::Cow<'_, [f32]> {
    match precision {
        Precision::F32 => std::borrow::Cow::Borrowed(&w.weight),
        Precision::Bf16 => w.weight.iter().map(|&x| precision.round(x)).collect(),
    }
}

/// A function's weights packed by `p` into `out`: its stage's `w`, and
/// where it computes the stage before in registers, that stage's `col`.
fn pack(
    p: &stage_plan::StagePlan,
    w: &convjit_ir::StageWeights,
    col: Option<&convjit_ir::StageWeights>,
    precision: Precision,
    out: &mut [f32],
) {
    stage_plan::pack_into(p, &weights_in(w, precision), w.bias.as_deref(), out);
    if let Some(c) = col {
        stage_plan::pack_column_pair(p, &c.weight, &w.weight, w.bias.as_deref(), out);
    }
}

/// A function's packed weights: aligned storage, or with the `testing`
/// feature exactly `packed_len` floats ending at a guard page (the run
/// buffers' kind, `scratch::Buf`).
pub(crate) struct Packed(pub(crate) crate::scratch::Buf);

impl Packed {
    /// A stage's weights packed by `p`, written straight into the storage.
    pub(crate) fn new(
        p: &stage_plan::StagePlan,
        w: &convjit_ir::StageWeights,
        col: Option<&convjit_ir::StageWeights>,
        precision: Precision,
    ) -> Packed {
        let mut buf = crate::scratch::zeroed(p.packed_len);
        pack(p, w, col, precision, &mut buf);
        Packed(buf)
    }

    pub(crate) fn ptr(&self) -> *const f32 {
        self.0.as_ptr()
    }
}
