//! The sliding-window attributes Conv and the pooling ops share (kernel,
//! strides, dilations, pads, auto_pad), checked against the spec, and the
//! output length and padding they give along each axis.

use crate::attrs::Attrs;
use crate::model::describe;
use crate::proto::NodeProto;
use crate::Error;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AutoPad {
    /// Explicit `pads` (zero by default).
    NotSet,
    /// Output `ceil(in / stride)`, the odd pixel of padding at the end.
    SameUpper,
    /// The same output, the odd pixel at the beginning.
    SameLower,
    Valid,
}

/// A window over `kernel.len()` spatial axes.
#[derive(Clone, Debug)]
pub struct Window {
    pub kernel: Vec<u64>,
    pub strides: Vec<u64>,
    pub dilations: Vec<u64>,
    pub auto_pad: AutoPad,
    /// ONNX order: every axis' beginning, then every axis' end.
    pub pads: Vec<u64>,
}

/// Along one axis: output length and padding before and after.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Axis {
    pub out: u64,
    pub before: u64,
    pub after: u64,
}

impl Window {
    /// Reads strides, dilations, pads and auto_pad for a window of size
    /// `kernel` (from the weights, or the `kernel_shape` attribute).
    pub fn parse(node: &NodeProto, kernel: Vec<u64>) -> Result<Window, Error> {
        let attrs = Attrs::new(node);
        let rank = kernel.len();
        let bad = |what: String| Error::new(format!("{}: {what}", describe(node)));
        let list = |name: &str, len: usize, min: i64| -> Result<Option<Vec<u64>>, Error> {
            let Some(v) = attrs.ints(name)? else {
                return Ok(None);
            };
            if v.len() != len {
                return Err(bad(format!(
                    "'{name}' has {} values, the window has {rank} axes (need {len})",
                    v.len()
                )));
            }
            if let Some(x) = v.iter().find(|&&x| x < min) {
                return Err(bad(format!(
                    "'{name}' value {x} is not supported (minimum {min})"
                )));
            }
            Ok(Some(v.iter().map(|&x| x as u64).collect()))
        };
        if let Some(&k) = kernel.iter().find(|&&k| k == 0) {
            return Err(bad(format!("kernel size {k} is not supported")));
        }
        let strides = list("strides", rank, 1)?.unwrap_or(vec![1; rank]);
        let dilations = list("dilations", rank, 1)?.unwrap_or(vec![1; rank]);
        let auto_pad = match attrs.string("auto_pad")?.as_deref() {
            None | Some("NOTSET") | Some("") => AutoPad::NotSet,
            Some("SAME_UPPER") => AutoPad::SameUpper,
            Some("SAME_LOWER") => AutoPad::SameLower,
            Some("VALID") => AutoPad::Valid,
            Some(other) => {
                return Err(bad(format!(
                    "auto_pad '{other}' is not supported (NOTSET, SAME_UPPER, SAME_LOWER or VALID)"
                )))
            }
        };
        let pads = list("pads", 2 * rank, 0)?.unwrap_or(vec![0; 2 * rank]);
        Ok(Window {
            kernel,
            strides,
            dilations,
            auto_pad,
            pads,
        })
    }

    /// Output length and padding along axis `i` for an input of `len`.
    /// `ceil` is pooling's `ceil_mode`. `None` when the output would be
    /// empty, or the numbers overflow.
    pub fn axis(&self, i: usize, len: u64, ceil: bool) -> Option<Axis> {
        let (k, s, d) = (self.kernel[i], self.strides[i], self.dilations[i]);
        let extent = (k - 1).checked_mul(d)?.checked_add(1)?;
        let (before, after) = match self.auto_pad {
            AutoPad::Valid => (0, 0),
            AutoPad::NotSet => (self.pads[i], self.pads[self.kernel.len() + i]),
            AutoPad::SameUpper | AutoPad::SameLower => {
                let out = len.div_ceil(s);
                let total = (out.max(1) - 1)
                    .checked_mul(s)?
                    .checked_add(extent)?
                    .saturating_sub(len);
                let small = total / 2;
                if self.auto_pad == AutoPad::SameUpper {
                    (small, total - small)
                } else {
                    (total - small, small)
                }
            }
        };
        let padded = len.checked_add(before)?.checked_add(after)?;
        let span = padded.checked_sub(extent)?;
        let mut out = if ceil { span.div_ceil(s) } else { span / s }.checked_add(1)?;
        // With ceil_mode, a last window that would start in the end padding
        // is dropped (PyTorch's rule, which ONNX adopted in opset 19).
        if ceil && (out - 1).saturating_mul(s) >= len + before {
            out -= 1;
        }
        Some(Axis { out, before, after })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(k: u64, s: u64, d: u64, auto_pad: AutoPad, pads: [u64; 2]) -> Window {
        Window {
            kernel: vec![k],
            strides: vec![s],
            dilations: vec![d],
            auto_pad,
            pads: pads.to_vec(),
        }
    }

    fn axis(w: &Window, len: u64, ceil: bool) -> (u64, u64, u64) {
        let a = w.axis(0, len, ceil).unwrap();
        (a.out, a.before, a.after)
    }

    #[test]
    fn same_padding_puts_the_odd_pixel_where_asked() {
        // in 9, k 4, s 2: out 5, 3 pixels of padding.
        assert_eq!(
            axis(&window(4, 2, 1, AutoPad::SameUpper, [0, 0]), 9, false),
            (5, 1, 2)
        );
        assert_eq!(
            axis(&window(4, 2, 1, AutoPad::SameLower, [0, 0]), 9, false),
            (5, 2, 1)
        );
        // The spec's output ceil(in / s) holds with dilations too (ONNX
        // Runtime refuses that combination; the spec defines it).
        assert_eq!(
            axis(&window(3, 1, 2, AutoPad::SameUpper, [0, 0]), 10, false),
            (10, 2, 2)
        );
        // A 1x1 stride 2 on an even length needs no padding, not -1.
        assert_eq!(
            axis(&window(1, 2, 1, AutoPad::SameUpper, [0, 0]), 10, false),
            (5, 0, 0)
        );
        assert_eq!(
            axis(&window(3, 2, 1, AutoPad::Valid, [5, 5]), 10, false),
            (4, 0, 0)
        );
        assert_eq!(
            axis(&window(3, 2, 1, AutoPad::NotSet, [0, 2]), 10, false),
            (5, 0, 2)
        );
    }

    #[test]
    fn ceil_mode_drops_a_window_starting_in_the_end_padding() {
        assert_eq!(
            axis(&window(3, 2, 1, AutoPad::NotSet, [0, 0]), 10, true),
            (5, 0, 0)
        );
        assert_eq!(
            axis(&window(3, 2, 1, AutoPad::NotSet, [0, 0]), 10, false),
            (4, 0, 0)
        );
        // in 3 padded 1 + 1, k 2, s 2: a third window would start at the
        // end padding.
        assert_eq!(
            axis(&window(2, 2, 1, AutoPad::NotSet, [1, 1]), 3, true),
            (2, 1, 1)
        );
    }

    #[test]
    fn empty_outputs_and_overflow_are_none() {
        assert!(window(5, 1, 1, AutoPad::NotSet, [0, 0])
            .axis(0, 4, false)
            .is_none());
        let huge = window(u64::MAX / 2, 1, 3, AutoPad::NotSet, [0, 0]);
        assert!(huge.axis(0, 4, false).is_none());
    }
}
