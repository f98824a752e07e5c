//! What an object says of itself, so that `convjit verify --object` can
//! refuse an object that does not fit the layer before linking and
//! running it (one built without weights took the batch size for the
//! weights pointer: SIGSEGV; one built for another shape read past its
//! buffers or compared garbage). [`build`](crate::build) writes a local
//! symbol `SYMBOL_facts`; [`read`] finds it in the ELF symbol table.
//!
//! The record, little-endian: the magic `CJF1`, then u32s: the input's
//! height, width and channels, the output's, whether the weights are
//! baked (1) or passed at run time (0), and the precision (0 f32, 1 bf16).

use convjit_ir::{Layer, Precision, Shape};
use std::fmt;
use std::path::Path;

const MAGIC: &[u8; 4] = b"CJF1";
const LEN: usize = 4 + 8 * 4;

/// An object's facts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Facts {
    pub input: Shape,
    pub output: Shape,
    pub baked: bool,
    pub precision: Precision,
}

impl Facts {
    pub fn of(layer: &Layer, baked: bool, precision: Precision) -> Facts {
        Facts {
            input: layer.input,
            output: layer.output(),
            baked,
            precision,
        }
    }

    /// The record [`build`](crate::build) writes.
    pub fn bytes(&self) -> Vec<u8> {
        let (i, o) = (self.input, self.output);
        let words = [
            i.h,
            i.w,
            i.c,
            o.h,
            o.w,
            o.c,
            usize::from(self.baked),
            usize::from(self.precision == Precision::Bf16),
        ];
        let mut b = MAGIC.to_vec();
        for w in words {
            // Shapes are at most `MAX_DIM` a side.
            b.extend_from_slice(&(w.min(u32::MAX as usize) as u32).to_le_bytes());
        }
        b
    }

    fn parse(b: &[u8]) -> Option<Facts> {
        if b.len() < LEN || &b[..4] != MAGIC {
            return None;
        }
        let w = |k: usize| u32::from_le_bytes(b[4 + 4 * k..8 + 4 * k].try_into().unwrap()) as usize;
        let shape = |k: usize| Shape {
            h: w(k),
            w: w(k + 1),
            c: w(k + 2),
        };
        Some(Facts {
            input: shape(0),
            output: shape(3),
            baked: w(6) == 1,
            precision: if w(7) == 1 {
                Precision::Bf16
            } else {
                Precision::F32
            },
        })
    }
}

impl fmt::Display for Facts {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "{} -> {}, {}, weights {}",
            self.input,
            self.output,
            self.precision,
            if self.baked {
                "baked in"
            } else {
                "passed at run time"
            }
        )
    }
}

/// What the object at `path` holds for `symbol` (`convjit_IDENT`): its
/// facts (`None` for an object of a convjit without them), or why it is
/// not such an object.
pub fn read(path: &Path, symbol: &str) -> Result<Option<Facts>, String> {
    use object::{Object, ObjectSection, ObjectSymbol};
    let file = std::fs::File::open(path).map_err(|e| format!("cannot read: {e}"))?;
    // Read on demand: an object of baked weights may be large.
    let cache = object::ReadCache::new(file);
    let obj = object::File::parse(&cache).map_err(|e| format!("not an object file ({e})"))?;
    if !obj.symbols().any(|s| s.name() == Ok(symbol)) {
        return Err(format!(
            "the object has no function {symbol}: it was built for another layer"
        ));
    }
    let facts_name = format!("{symbol}_facts");
    let Some(sym) = obj.symbols().find(|s| s.name() == Ok(facts_name.as_str())) else {
        return Ok(None);
    };
    let bytes = sym
        .section_index()
        .and_then(|i| obj.section_by_index(i).ok())
        .and_then(|s| {
            let start = sym.address().checked_sub(s.address())?;
            let data = s.data().ok()?;
            data.get(usize::try_from(start).ok()?..)?.get(..LEN)
        });
    match bytes.and_then(Facts::parse) {
        Some(f) => Ok(Some(f)),
        None => Err(format!("its {facts_name} record cannot be read")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facts_round_trip() {
        let l =
            &convjit_ir::compile_source("layer l { input 8x6x4\n c: conv 3x3 -> 5 }").unwrap()[0];
        for (baked, p) in [(true, Precision::F32), (false, Precision::Bf16)] {
            let f = Facts::of(l, baked, p);
            assert_eq!(Facts::parse(&f.bytes()), Some(f));
        }
        let f = Facts::of(l, true, Precision::F32);
        assert_eq!(f.to_string(), "8x6x4 -> 6x4x5, f32, weights baked in");
        assert_eq!(Facts::parse(b"CJF0"), None);
    }
}
