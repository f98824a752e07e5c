//! A lone 3x3 or 5x5 stride-1 conv run as Winograd's F(4x4, 3x3), F(2x2,
//! 3x3) or F(2x2, 5x5) (`convjit_ir::winograd`), when asked for
//! (`Options::winograd`); a longer layer's such stages run as lone convs
//! of their own (`chain.rs`).
//!
//! Per band of tile rows, on whichever thread claims it: the input
//! transform writes `V[p][tile][ci]` (16 or 36 point slabs of `B^T d B`),
//! as many generated pointwise kernels (the code of one `band x tiles x Ci -> Co`
//! pointwise layer, cached as any other, with `U[p] = G g G^T` packed as
//! its weights) multiply each slab into `M[p][tile][co]`, and the output
//! transform adds `A^T M A`, the bias, the activation and the residual into
//! the output rows. A band's slabs fit the L2 cache beside a share of the
//! weights.
//!
//! Where a sum before the activation comes out NaN, infinite or huge
//! (`LIMIT`), the image is run again the direct way: an infinite input
//! makes `inf - inf` in a transform where the direct sum is an infinity,
//! and a transform can overflow where the direct sum does not. So
//! non-finite outputs are the direct kernel's, exactly.

use crate::program::{Loc, Step};
use crate::{check_len, pool, JitError, Kernel};
use convjit_ir::winograd::{self as wg, Variant};
use convjit_ir::{Activation, Layer, Shape, Stage, StageKind, StageWeights, Weights};
use convjit_plan::layer_plan::{Options, Winograd as Mode};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

/// A sum at or past this magnitude (or NaN) sends its image to the direct
/// kernel: far below where a transform of finite values could overflow
/// f32 (2^128) on its way.
const LIMIT: f32 = 1e30;

/// The bytes of transformed tiles (`V` and `M`) a band aims at: half the
/// smallest L2 of the machines we run on (1 MiB), or the transformed
/// weights' size, where larger (each band reads all of them).
const BAND_BYTES: usize = 512 << 10;

// Where F(2x2, 3x3) pays, measured (`BENCHMARKS.md`, Winograd: a sweep
// of 19 layers, one thread, Zen 5): below 16 channels a side the vector
// code has only tails (56x56x8: 3.5x the direct time); below ~2M
// multiply-accumulates the 16 calls cost more than the products save
// (14x14x16: 1.05x, 7x7x64: 1.10x); a 7x7 output pays for 8x8 (31% more
// tiles than outputs), which only 256 channels or more win back (7x7x128:
// 0.96x, 7x7x512: 0.73x). Elsewhere 0.62-0.86x. The same rules hold for
// F(4x4, 3x3) and F(2x2, 5x5) (a second sweep: 56x56x16 0.52-0.58x,
// 20x20x32 0.53-0.55x, Inception v1's 5x5 shapes 0.45-0.94x).

/// Channels a side below which F(2x2, 3x3) does not pay.
const MIN_CHANNELS: usize = 16;
/// Multiply-accumulates (direct) below which it does not pay.
const MIN_MACS: u64 = 2 << 20;
/// Tile outputs per output past which only [`WIDE_CHANNELS`] pay.
const MAX_WASTE: f64 = 1.25;
/// Channels a side that pay for more waste.
const WIDE_CHANNELS: usize = 256;

/// How a layer runs as Winograd's: the variant, its bands, and the column
/// chunks a band's tiles are transformed and multiplied in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WinogradPlan {
    /// F(2x2, 3x3), F(4x4, 3x3) or F(2x2, 5x5).
    pub variant: Variant,
    /// Tile rows (of `variant.tile()` output rows) per band.
    pub band: usize,
    /// Bands per image.
    pub bands: usize,
    /// Tiles per tile row.
    pub tiles_w: usize,
    /// Tiles per chunk of a band's columns (`tiles_w` unless one tile
    /// row's transformed tiles would not stay in L2).
    pub chunk: usize,
}

/// The plan for `layer` on `threads` threads, or why it does not run as
/// Winograd's in `mode`, a 3x3 conv with output tiles of side `tile`
/// (`None`: the side [`choose`] picks; a 5x5 conv has one form).
pub fn winograd_plan(
    layer: &Layer,
    threads: usize,
    mode: Mode,
    tile: Option<usize>,
) -> Result<WinogradPlan, &'static str> {
    if mode == Mode::Off {
        return Err("not asked for (--winograd)");
    }
    if let Some(why) = wg::refusal(layer) {
        return Err(why);
    }
    let s = &layer.stages[0];
    let v = match (tile, s.kernel[0]) {
        (Some(m), 3) => Variant::of(m, 3).ok_or("the Winograd tile is not 2 or 4")?,
        // F(2x2, 5x5) is a 5x5 conv's one form, whatever tile is asked.
        _ => choose(s),
    };
    let (ci, co) = (s.input.c, s.output.c);
    let (th, tw) = wg::tiles(s, v);
    if mode == Mode::Auto {
        if ci.min(co) < MIN_CHANNELS {
            return Err("fewer than 16 input or output channels: the transforms would cost more than the products save");
        }
        if s.macs() < MIN_MACS {
            return Err("fewer than 2M multiply-accumulates: the transforms would cost more than the products save");
        }
        if waste(s, v) > MAX_WASTE && ci.min(co) < WIDE_CHANNELS {
            return Err("the tiles cover over 25% more outputs than the layer has, and fewer than 256 channels a side would not win that back");
        }
    }
    let points = v.points();
    let tile_bytes = points * (ci + co) * 4;
    let weight_bytes = points * ci * co * 4;
    let budget = BAND_BYTES.max(weight_bytes);
    let rows = (budget / (tw * tile_bytes)).clamp(1, th);
    // The band height (at most `rows`) that gives the busiest thread the
    // fewest tile rows to compute, counting a last band's spare rows
    // (computed, not stored); of equals, the tallest (fewer passes over
    // the weights). 28 tile rows on two threads: 14 bands of 2, not 7 of 4.
    let busiest = |band: usize| th.div_ceil(band).div_ceil(threads.max(1)) * band;
    let band = (1..=rows).rev().min_by_key(|&b| busiest(b)).unwrap_or(1);
    // A tile row past the budget goes in chunks of equal width: with few
    // channels the point products do little work per byte of the slabs,
    // which must come from L2 (224x224x64: one tile row's slabs are
    // 0.9 MiB).
    let chunk = tw.div_ceil(tw.div_ceil((budget / tile_bytes).max(1)));
    Ok(WinogradPlan {
        variant: v,
        band,
        bands: th.div_ceil(band),
        tiles_w: tw,
        chunk,
    })
}

/// Outputs the tiles of `v` cover per output of stage `s`.
fn waste(s: &Stage, v: Variant) -> f64 {
    let (th, tw) = wg::tiles(s, v);
    (th * tw * v.tile() * v.tile()) as f64 / (s.output.h * s.output.w) as f64
}

/// The variant for stage `s` where none is asked for: for a 5x5 kernel
/// F(2x2, 5x5), the one there is; for a 3x3, F(4x4, 3x3) (a
/// quarter of the direct products, against 4/9) unless its tiles cover
/// over 10% more outputs than F(2x2, 3x3)'s (14x14: 256 against 196) or
/// an image has fewer than [`MIN_F4_TILES`] of them.
pub fn choose(s: &Stage) -> Variant {
    if s.kernel[0] == 5 {
        return Variant::F2K5;
    }
    let (th, tw) = wg::tiles(s, Variant::F4);
    match waste(s, Variant::F4) > waste(s, Variant::F2) * 1.1 || th * tw < MIN_F4_TILES {
        true => Variant::F2,
        false => Variant::F4,
    }
}

/// 4x4 tiles an image needs for F(4x4, 3x3): each of its 36 point
/// products reads all of its `Ci x Co` transformed weights for the
/// image's tiles (4x the direct weights' bytes in all), so with few tiles
/// it waits on them. 7x7x512 (4 tiles): 1,254 us against F(2x2, 3x3)'s
/// 624 and the direct 855 (`bench benches/winograd.conv`, Zen 5).
const MIN_F4_TILES: usize = 16;

/// A layer's Winograd runtime: the point products' kernels and the
/// transforms around them.
pub(crate) struct Winograd {
    stage: Stage,
    plan: WinogradPlan,
    threads: usize,
    /// One per point: `band * tiles_w` pixels of `Ci` -> `Co`, weights `U[p]`.
    points: Vec<Kernel>,
    /// The stage's bias, zeros without one.
    bias: Vec<f32>,
    /// Buffers of finished bands, for the next.
    bufs: Mutex<Vec<Bufs>>,
}

/// One thread's transformed tiles of a band.
struct Bufs {
    /// `V[p][tile][ci]`.
    v: Vec<f32>,
    /// `M[p][tile][co]`.
    m: Vec<f32>,
    /// Zeros for inputs outside the image, `points * ci`.
    window: Vec<f32>,
    /// Where the outputs of a tile past the image's edge go: `tile^2 * co`.
    spill: Vec<f32>,
    /// The residual of those outputs: `co` zeros.
    zeros: Vec<f32>,
}

impl Winograd {
    /// `None` when the layer does not run as Winograd's (see [`winograd_plan`]).
    pub(crate) fn new(
        layer: &Layer,
        weights: &Weights,
        options: &Options,
        threads: usize,
    ) -> Result<Option<Winograd>, JitError> {
        let Ok(plan) = winograd_plan(layer, threads, options.winograd, options.winograd_tile)
        else {
            return Ok(None);
        };
        let s = &layer.stages[0];
        let (ci, co) = (s.input.c, s.output.c);
        let pixels = Shape::new(plan.band, plan.chunk, ci);
        let product = Layer {
            name: format!("{}.winograd", layer.name),
            input: pixels,
            stages: vec![Stage {
                name: format!("{}.point", s.name),
                kind: StageKind::Pointwise {
                    cout: co,
                    groups: 1,
                },
                input: pixels,
                output: Shape::new(plan.band, plan.chunk, co),
                kernel: [1, 1],
                stride: [1, 1],
                dilation: [1, 1],
                padding: Default::default(),
                weight_key: s.weight_key.clone(),
                bias_key: None,
                activation: Activation::None,
                residual: false,
            }],
        };
        let one = Options {
            threads: 1,
            winograd: Mode::Off,
            ..options.clone()
        };
        let w = &weights.stages()[0];
        let points = wg::transform_weights(s, &w.weight, plan.variant)?
            .into_iter()
            .map(|u| {
                let u = Weights::new(
                    &product,
                    vec![StageWeights {
                        weight: u,
                        bias: None,
                    }],
                )?;
                Kernel::compile_with(&product, &u, &one)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some(Winograd {
            stage: s.clone(),
            plan,
            threads,
            points,
            bias: w.bias.clone().unwrap_or_else(|| vec![0.0; co]),
            bufs: Mutex::new(Vec::new()),
        }))
    }

    pub(crate) fn plan(&self) -> WinogradPlan {
        self.plan
    }

    /// Bytes of the point products' weights (the transformed `U[p]`).
    pub(crate) fn weight_bytes(&self) -> usize {
        self.points.iter().map(Kernel::weight_bytes).sum()
    }

    /// Runs one image; whether some sum was not finite (or huge), so the
    /// image must run the direct way.
    pub(crate) fn image(&self, x: &[f32], y: &mut [f32]) -> Result<bool, JitError> {
        let o = self.stage.output;
        let band_floats = self.plan.band * self.plan.variant.tile() * o.w * o.c;
        let outs: Vec<Mutex<&mut [f32]>> = y.chunks_mut(band_floats).map(Mutex::new).collect();
        let next = AtomicUsize::new(0);
        let bad = AtomicBool::new(false);
        let failed: Mutex<Option<JitError>> = Mutex::new(None);
        let fail = |e: JitError| {
            failed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get_or_insert(e);
        };
        let work = |_: usize| {
            let mut bufs = match self.take_bufs() {
                Ok(b) => b,
                Err(e) => return fail(e),
            };
            loop {
                let b = next.fetch_add(1, Ordering::Relaxed);
                let Some(out) = outs.get(b) else { break };
                let mut out = out.lock().unwrap_or_else(|e| e.into_inner());
                match self.band(x, b, &mut bufs, &mut out) {
                    Ok(true) => bad.store(true, Ordering::Relaxed),
                    Ok(false) => {}
                    Err(e) => fail(e),
                }
            }
            self.bufs
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(bufs);
        };
        // Bands are claimed, not dealt: a thread that lost its core holds
        // the others only while it holds a band.
        // A panic (a bug) in any thread is this run's error, as for the
        // direct code (`Pool::run` raises a worker's here).
        let ran = catch_unwind(AssertUnwindSafe(|| {
            match (self.threads > 1)
                .then(|| pool::shared(self.threads - 1))
                .flatten()
            {
                Some(workers) => workers.run(self.threads - 1, &work, true),
                None => work(0),
            }
        }));
        if let Err(p) = ran {
            return Err(JitError::Panicked(crate::exec::panic_message(&*p)));
        }
        if let Some(e) = failed.into_inner().unwrap_or_else(|e| e.into_inner()) {
            return Err(e);
        }
        Ok(bad.into_inner())
    }

    /// A thread's buffers: from an earlier band, or new (within the
    /// process's memory budget, `convjit_ir::budget`).
    fn take_bufs(&self) -> Result<Bufs, JitError> {
        if let Some(b) = self.bufs.lock().unwrap_or_else(|e| e.into_inner()).pop() {
            return Ok(b);
        }
        let (ci, co) = (self.stage.input.c, self.stage.output.c);
        let tiles = self.plan.band * self.plan.chunk;
        let (points, m) = (self.plan.variant.points(), self.plan.variant.tile());
        let slabs = |c: usize| {
            let what = format_args!("the Winograd tiles of '{}'", self.stage.name);
            convjit_ir::budget::zeroed(what, points * tiles * c)
        };
        Ok(Bufs {
            v: slabs(ci)?,
            m: slabs(co)?,
            window: vec![0.0; points * ci],
            spill: vec![0.0; m * m * co],
            zeros: vec![0.0; co],
        })
    }

    /// Band `b` of image `x` into `out` (its output rows); whether a sum
    /// was not finite.
    fn band(
        &self,
        x: &[f32],
        b: usize,
        bufs: &mut Bufs,
        out: &mut [f32],
    ) -> Result<bool, JitError> {
        let v = self.plan.variant;
        let (th, tw) = wg::tiles(&self.stage, v);
        let ty0 = b * self.plan.band;
        let rows = self.plan.band.min(th - ty0);
        let (ci, co) = (self.stage.input.c, self.stage.output.c);
        let tiles = self.plan.band * self.plan.chunk;
        let mut bad = false;
        for tx0 in (0..tw).step_by(self.plan.chunk) {
            let area = Area {
                ty0,
                rows,
                tx0,
                cols: self.plan.chunk.min(tw - tx0),
            };
            transform::input_band(&self.stage, v, x, area, bufs);
            for (p, k) in self.points.iter().enumerate() {
                // Tiles past the area's (the last band's or chunk's) hold
                // an earlier area's values: multiplied, never stored.
                k.run_one_call(
                    &bufs.v[p * tiles * ci..][..tiles * ci],
                    &mut bufs.m[p * tiles * co..][..tiles * co],
                )?;
            }
            bad |= transform::output_band(&self.stage, v, &self.bias, x, area, bufs, out);
        }
        Ok(bad)
    }
}

impl Kernel {
    /// One image of a kernel that is one call of one function on one
    /// thread, in f32 (Winograd's point products: a flat pointwise stage),
    /// without a run's bookkeeping (16 or 36 such runs a band); any other kernel
    /// runs as [`Kernel::run`].
    fn run_one_call(&self, input: &[f32], output: &mut [f32]) -> Result<(), JitError> {
        let l = &self.layer;
        check_len("input", input.len(), 1, l.input.len(), l.input)?;
        check_len("output", output.len(), 1, l.output().len(), l.output())?;
        let c = &self.compiled;
        let steps = match c.program.groups.as_slice() {
            [g] => g.threads.as_slice(),
            _ => &[],
        };
        let plain = c.tile_scratch == 0
            && !c.round_input
            && c.rounded.iter().all(Option::is_none)
            && c.plans.iter().all(|p| p.pairs.is_none())
            && c.program.bf16.iter().all(|b| !b);
        match steps {
            [one] if plain => match one.as_slice() {
                &[Step::Call {
                    f: 0,
                    src: Loc::GroupIn(0),
                    dst: Loc::GroupOut(0),
                    residual: 0,
                    row0,
                    rows,
                }] if c.program.functions.len() == 1 => {
                    // SAFETY: the lengths are the layer's (checked above);
                    // the call is the whole program of this one-stage layer,
                    // which reads only the input image and writes only the
                    // output image, with f32 values and no scratch
                    // (`plain`); no residual (offset 0 of a stage without
                    // one is never read: `residual` is null only then).
                    let residual = match l.stages.iter().any(|s| s.residual) {
                        true => input.as_ptr(),
                        false => std::ptr::null(),
                    };
                    unsafe {
                        (c.code.fns[0])(
                            input.as_ptr(),
                            self.packed[0].ptr(),
                            output.as_mut_ptr(),
                            residual,
                            row0,
                            rows,
                            std::ptr::null_mut(),
                        )
                    };
                    Ok(())
                }
                _ => self.run(input, output, 1),
            },
            _ => self.run(input, output, 1),
        }
    }
}

/// Tiles of a band transformed and multiplied at once: tile rows `ty0 ..
/// ty0 + rows`, columns `tx0 .. tx0 + cols`; tile `t` of the area is
/// `t / cols, t % cols` from its corner, and tile `t` of the slabs.
#[derive(Clone, Copy)]
struct Area {
    ty0: usize,
    rows: usize,
    tx0: usize,
    cols: usize,
}

impl Area {
    /// Tiles in the area.
    fn tiles(&self) -> usize {
        self.rows * self.cols
    }

    /// Tile `t`'s row and column in the image's tiles.
    fn tile(&self, t: usize) -> (usize, usize) {
        (self.ty0 + t / self.cols, self.tx0 + t % self.cols)
    }
}

mod chain;
mod transform;

pub use chain::winograd_stages;
pub(crate) use chain::Chain;

#[cfg(test)]
mod tests {
    use super::*;
    use convjit_ir::compile_source;

    #[test]
    fn bands_cover_the_tile_rows_and_give_each_thread_one() {
        for (h, w, ci, co) in [
            (56, 56, 64, 64),
            (7, 7, 512, 512),
            (224, 224, 64, 64),
            (13, 13, 192, 384),
            (9, 300, 64, 64),
        ] {
            let src = format!("layer l {{ input {h}x{w}x{ci}\n c: conv 3x3 -> {co}, pad same }}");
            let l = compile_source(&src).unwrap().remove(0);
            for threads in [1, 2, 8] {
                for tile in [None, Some(2), Some(4)] {
                    let mode = if tile.is_none() {
                        Mode::Auto
                    } else {
                        Mode::Always
                    };
                    let p = winograd_plan(&l, threads, mode, tile).unwrap();
                    let (th, tw) = wg::tiles(&l.stages[0], p.variant);
                    let points = p.variant.points();
                    assert_eq!(p.tiles_w, tw);
                    assert!(
                        p.band * p.bands >= th && p.band * (p.bands - 1) < th,
                        "{src}: {p:?}"
                    );
                    // No thread busier than with bands of one tile row.
                    let busiest = p.bands.div_ceil(threads) * p.band;
                    assert!(busiest <= th.div_ceil(threads), "{src}: {p:?}");
                    // Chunks of equal width cover the row; a band's slabs stay
                    // within the budget unless one tile row of one tile is past it.
                    let chunks = tw.div_ceil(p.chunk);
                    assert!(p.chunk * (chunks - 1) < tw && p.chunk <= tw, "{src}: {p:?}");
                    let budget = BAND_BYTES.max(points * ci * co * 4);
                    let bytes = p.band * p.chunk * points * (ci + co) * 4;
                    assert!(bytes <= budget || p.chunk == 1, "{src}: {p:?}");
                }
            }
        }
        // Each rule of Auto refuses, Always runs them all.
        for (src, why) in [
            ("input 56x56x8\n c: conv 3x3 -> 8", "fewer than 16"),
            ("input 14x14x16\n c: conv 3x3 -> 16", "2M"),
            ("input 7x7x128\n c: conv 3x3 -> 128", "25%"),
        ] {
            let l = compile_source(&format!("layer l {{ {src}, pad same }}"))
                .unwrap()
                .remove(0);
            assert!(
                winograd_plan(&l, 1, Mode::Auto, None).is_err_and(|e| e.contains(why)),
                "{src}"
            );
            assert!(winograd_plan(&l, 1, Mode::Always, None).is_ok());
        }
        let wide =
            compile_source("layer l { input 7x7x256\n c: conv 3x3 -> 256, pad same }").unwrap();
        assert!(winograd_plan(&wide[0], 1, Mode::Auto, None).is_ok());
        let small = compile_source("layer l { input 56x56x8\n c: conv 3x3 -> 8 }").unwrap();
        assert!(winograd_plan(&small[0], 1, Mode::Always, Some(4)).is_ok());
        assert!(winograd_plan(&small[0], 1, Mode::Off, None).is_err());
        assert!(winograd_plan(&small[0], 1, Mode::Always, Some(3)).is_err());
        // A 5x5 conv has one form, whatever tile is asked.
        let five = compile_source("layer l { input 9x9x8\n c: conv 5x5 -> 8 }").unwrap();
        for tile in [None, Some(2), Some(4)] {
            let p = winograd_plan(&five[0], 1, Mode::Always, tile).unwrap();
            assert_eq!(p.variant, Variant::F2K5);
        }
        // The variant: F(4x4, 3x3) unless its tiles waste more or are few.
        for (hw, tile) in [
            (56, 4),
            (28, 4),
            (16, 4),
            (7, 2),
            (12, 2),
            (14, 2),
            (13, 2),
            (17, 2),
            (224, 4),
        ] {
            let src = format!("layer l {{ input {hw}x{hw}x64\n c: conv 3x3 -> 64, pad same }}");
            let l = compile_source(&src).unwrap().remove(0);
            assert_eq!(choose(&l.stages[0]).tile(), tile, "{hw}");
        }
    }
}
