//! The taps of one kernel row of a register block, as data: for conv and
//! pointwise the reductions over contiguous input floats
//! ([`StagePlan::reduction`]), for depthwise each kernel column's units and
//! pixels ([`StagePlan::dw_taps`]) or the same by input column
//! ([`StagePlan::dw_input_columns`]). The loops around them are `nest.rs`'s.

use super::nest::BlockCols;
use super::runs::{InSrc, Run};
use super::stage::StagePlan;

/// The reductions of one kernel row of a conv/pointwise register block
/// ([`StagePlan::reduction`]): each a run of contiguous input floats per
/// pixel (at `px * sw * ci` floats from the block's input), each float
/// one step of the run's weights ([`Run::tap_bytes`]`(1)` bytes apart,
/// unit `u` at [`Run::unit_bytes`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reduction {
    /// No valid kernel column: nothing to reduce.
    None,
    /// One run of `len` floats: the valid kernel columns are adjacent and
    /// each reads all input channels (no dilation, no groups), or one.
    Contiguous {
        /// Floats per pixel.
        len: usize,
    },
    /// A loop of `taps` runs of `len` floats (the reduction channels of a
    /// tap), the input `in_step` bytes and the weights `w_step` bytes
    /// apart.
    Taps {
        /// Kernel columns.
        taps: usize,
        /// Floats per tap.
        len: usize,
        /// Input bytes from one tap to the next.
        in_step: i64,
        /// Weight bytes from one tap to the next.
        w_step: i64,
    },
    /// Pixels with different kernel columns ([`BlockCols::PerPixel`]):
    /// per kernel column, a run of `len` floats for the pixels that read
    /// it.
    Columns {
        /// Floats per column (the reduction channels of a tap).
        len: usize,
        /// The kernel columns some pixel reads, left to right.
        columns: Vec<ColumnTaps>,
    },
}

/// One kernel column of a block whose pixels read different columns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ColumnTaps {
    /// The kernel column.
    pub kx: usize,
    /// The block's pixels that read it, in order.
    pub pixels: Vec<usize>,
    /// Bytes from the kernel row's input to the column's (of pixel 0).
    pub in_off: i64,
    /// Bytes from the kernel row's weights to the column's.
    pub w_off: i64,
}

/// The taps of one kernel row of a depthwise register block, kernel
/// column by kernel column ([`StagePlan::dw_taps`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DwTaps {
    /// The run's units grouped by the input they read (consecutive
    /// units: several outputs of a channel share its input), in order.
    pub inputs: Vec<TapInput>,
    /// The kernel columns some pixel of the block reads, left to right.
    pub columns: Vec<DwColumn>,
}

/// Units of a run that read the same input vector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TapInput {
    /// Where the vector comes from (channels from a tap's input).
    pub src: InSrc,
    /// The units reading it.
    pub units: std::ops::Range<usize>,
}

/// One kernel column of a depthwise block ([`DwTaps`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DwColumn {
    /// The kernel column.
    pub kx: usize,
    /// Bytes from the kernel row's weights to each unit's weight vector
    /// of this column.
    pub weights: Vec<i64>,
    /// The pixels reading it, each with the bytes from the kernel row's
    /// input to its tap.
    pub pixels: Vec<(usize, i64)>,
}

/// The taps of one kernel row of a depthwise block of one unit reading
/// channel vectors, input column by input column
/// ([`StagePlan::dw_input_columns`]): each input vector loaded once feeds
/// every (pixel, kernel column) that reads it (up to `kw` at stride 1),
/// the row's weight vectors held meanwhile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DwInputColumns {
    /// Bytes from the kernel row's weights to each kernel column's weight
    /// vector (all `kw`).
    pub weights: Vec<i64>,
    /// The input columns read, left to right.
    pub columns: Vec<InputColumn>,
}

/// One input column of [`DwInputColumns`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InputColumn {
    /// Bytes from the kernel row's input to the column.
    pub in_off: i64,
    /// The `(pixel, kernel column)` pairs that read it, in order.
    pub uses: Vec<(usize, usize)>,
}

impl StagePlan {
    /// The reductions of one kernel row of a conv/pointwise block of
    /// `run` whose pixels read `cols`.
    pub fn reduction(&self, run: &Run, cols: &BlockCols) -> Reduction {
        let tap_bytes = run.tap_bytes(self.ci_per_tap) as i64;
        let cpt = self.ci_per_tap;
        let column_bytes = (self.dil_w * self.ci * self.in_bytes()) as i64;
        match *cols {
            BlockCols::Same { nkx: 0, .. } => Reduction::None,
            BlockCols::Same { nkx, .. } if (self.dil_w == 1 && cpt == self.ci) || nkx == 1 => {
                // (A chunked 1x1 reduction: one chunk's, `k_chunks`.)
                Reduction::Contiguous {
                    len: nkx * cpt / self.k_chunks(),
                }
            }
            BlockCols::Same { nkx, .. } => Reduction::Taps {
                taps: nkx,
                len: cpt,
                in_step: column_bytes,
                w_step: tap_bytes,
            },
            BlockCols::PerPixel(ref cols) => Reduction::Columns {
                len: cpt,
                columns: (0..self.kw)
                    .filter_map(|kx| {
                        let pixels = pixels_reading(cols, kx);
                        (!pixels.is_empty()).then(|| ColumnTaps {
                            kx,
                            pixels,
                            in_off: kx as i64 * column_bytes,
                            w_off: kx as i64 * tap_bytes,
                        })
                    })
                    .collect(),
            },
        }
    }

    /// The taps of one kernel row of a depthwise block of `run` whose
    /// pixels read `cols`, kernel column by kernel column: per column,
    /// each unit's weight vector once, shared by the pixels reading it.
    pub fn dw_taps(&self, run: &Run, cols: &[(usize, usize)]) -> DwTaps {
        let mut inputs: Vec<TapInput> = Vec::new();
        for (u, unit) in run.units.iter().enumerate() {
            match inputs.last_mut() {
                Some(t) if t.src == unit.input => t.units.end = u + 1,
                _ => inputs.push(TapInput {
                    src: unit.input.clone(),
                    units: u..u + 1,
                }),
            }
        }
        let pixel = (self.sw * self.ci * self.in_bytes()) as i64;
        let columns = (0..self.kw)
            .filter_map(|kx| {
                let pixels = pixels_reading(cols, kx);
                if pixels.is_empty() {
                    return None;
                }
                let tap_in = (kx * self.dil_w * self.ci * self.in_bytes()) as i64;
                Some(DwColumn {
                    kx,
                    weights: (0..run.units.len())
                        .map(|u| (kx * run.w_step * 4 + run.unit_bytes(u)) as i64)
                        .collect(),
                    pixels: pixels
                        .into_iter()
                        .map(|px| (px, px as i64 * pixel + tap_in))
                        .collect(),
                })
            })
            .collect();
        DwTaps { inputs, columns }
    }

    /// [`StagePlan::dw_taps`] input column by input column, where `run`
    /// is one unit reading channel vectors (else `None`): half the loads
    /// or fewer, a register copy per extra use (6-27% faster on MobileNet
    /// depthwise layers, 3x3 and 5x5 at stride 1 and 2), where a
    /// generator has registers for the row's weights.
    pub fn dw_input_columns(&self, run: &Run, cols: &[(usize, usize)]) -> Option<DwInputColumns> {
        let vector_input = matches!(run.units[0].input, InSrc::Vector(_) | InSrc::Lanes(..));
        if run.units.len() != 1 || !vector_input {
            return None;
        }
        // Input column (in pixels of stride 1) of each valid (pixel, kx).
        let mut uses: Vec<(usize, usize, usize)> = Vec::new();
        for (px, &(kx0, nkx)) in cols.iter().enumerate() {
            for kx in kx0..kx0 + nkx {
                uses.push((px * self.sw + kx * self.dil_w, px, kx));
            }
        }
        uses.sort_unstable();
        let mut columns: Vec<InputColumn> = Vec::new();
        let mut last = None;
        for (c, px, kx) in uses {
            if last != Some(c) {
                columns.push(InputColumn {
                    in_off: (c * self.ci * self.in_bytes()) as i64,
                    uses: Vec::new(),
                });
                last = Some(c);
            }
            columns.last_mut().expect("pushed").uses.push((px, kx));
        }
        Some(DwInputColumns {
            weights: (0..self.kw)
                .map(|kx| (kx * run.w_step * 4 + run.unit_bytes(0)) as i64)
                .collect(),
            columns,
        })
    }
}

/// The pixels of a block whose kernel columns include `kx`.
fn pixels_reading(cols: &[(usize, usize)], kx: usize) -> Vec<usize> {
    (0..cols.len())
        .filter(|&px| (cols[px].0..cols[px].0 + cols[px].1).contains(&kx))
        .collect()
}
