//! The arithmetic a kernel is compiled for (`Options::precision`): a
//! compile option, not a layer property. Inputs, outputs and given weights
//! are f32 either way (the contract, section 1).

use serde::Serialize;
use std::fmt;

/// How products are formed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
pub enum Precision {
    /// f32 products, f32 sums.
    #[default]
    F32,
    /// Weights and every stage's input values rounded to bf16 (nearest
    /// even) where they enter a multiply; products accumulated in f32;
    /// bias, activation and residual in f32. NaN propagates as in f32.
    Bf16,
}

impl Precision {
    /// `f32` or `bf16`, as the command line spells it.
    pub fn parse(s: &str) -> Option<Precision> {
        match s {
            "f32" => Some(Precision::F32),
            "bf16" => Some(Precision::Bf16),
            _ => None,
        }
    }

    /// `f32` or `bf16`.
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
        }
    }

    /// `x` as this precision's multiplies see it.
    pub fn round(self, x: f32) -> f32 {
        match self {
            Precision::F32 => x,
            Precision::Bf16 => round_bf16(x),
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// `x` rounded to the nearest bf16 (ties to even), as an f32: what
/// `vcvtne2ps2bf16` and the AMX tiles read. NaN stays NaN (quieted),
/// infinities stay, values past bf16's largest round to infinity.
///
/// Branch-free, so that a loop of it vectorizes (the runtime rounds whole
/// tensors with it).
#[inline(always)]
pub fn round_bf16(x: f32) -> f32 {
    let u = x.to_bits();
    let nan = u & 0x7fff_ffff > 0x7f80_0000;
    let rounded = u.wrapping_add(0x7fff + ((u >> 16) & 1));
    let quiet = u | 0x0040_0000;
    f32::from_bits(if nan { quiet } else { rounded } & 0xffff_0000)
}

/// The bf16 bits of `x` (rounded as [`round_bf16`]): the packed weights'
/// and the tiles' element.
pub fn bf16_bits(x: f32) -> u16 {
    (round_bf16(x).to_bits() >> 16) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_to_nearest_even() {
        assert_eq!(round_bf16(1.0), 1.0);
        // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties to even (1).
        assert_eq!(round_bf16(1.0 + 1.0 / 256.0), 1.0);
        assert_eq!(round_bf16(1.0 + 3.0 / 256.0), 1.0 + 4.0 / 256.0);
        assert_eq!(round_bf16(1.0 + 1.0 / 256.0 + 1e-6), 1.0 + 2.0 / 256.0);
        assert_eq!(round_bf16(-0.0).to_bits(), (-0.0f32).to_bits());
        assert!(round_bf16(f32::NAN).is_nan());
        assert_eq!(round_bf16(f32::INFINITY), f32::INFINITY);
        assert_eq!(round_bf16(f32::MAX), f32::INFINITY);
        assert_eq!(round_bf16(f32::NEG_INFINITY), f32::NEG_INFINITY);
        assert_eq!(bf16_bits(1.0), 0x3f80);
        // A NaN whose payload lies only in the low bits stays a NaN.
        assert!(round_bf16(f32::from_bits(0x7f80_0001)).is_nan());
    }
}
