//! Row bands of a fused group: the tallest band whose intermediate rows
//! fit the caches ([`band_rows`], found by bisection: [`tallest`]), the
//! bytes of those rows ([`scratch_rows`]), each thread's bands
//! ([`chunks`]), and whether every band reads at least one row
//! ([`bands_ok`]).

use super::cost::{CALL_CYCLES, L2_BYTES_PER_CYCLE};
use super::{Group, Host, Split};
use crate::rows;
use convjit_ir::{Layer, Stage};

/// Bytes of one output row of a stage.
fn row_bytes(s: &Stage) -> usize {
    s.output.w * s.output.c * 4
}

/// The band height of stages `first..=last` fused: the largest band whose
/// intermediate rows fit in L1d, where there is one and its calls cost
/// less than streaming the intermediate tensors through L2 would; else the
/// largest whose rows fit in a quarter of L2 (the buffers hold two bands'
/// worth, to shift rows rarely). In L1 the next stage's loads hit: dw ->
/// 1x1 pairs ran 3-13% faster in bands of 1-3 rows than of 16-36; the
/// separated filters, in bands of 2-6 rows, within noise of 22-68.
pub(super) fn band_rows(layer: &Layer, first: usize, last: usize, host: &Host) -> usize {
    let out_h = layer.stages[last].output.h;
    // The L1 test takes a band from the middle: the top one reads fewer
    // rows (padding), so would let through bands that overflow L1.
    let in_l1 = |b: usize| scratch_rows_from(layer, first, last, out_h / 2, b) <= host.l1d_bytes;
    if let Some(b) = tallest(out_h, in_l1) {
        let calls = out_h.div_ceil(b) as f64 * (last - first + 1) as f64 * CALL_CYCLES;
        let streamed: usize = layer.stages[first..last]
            .iter()
            .map(|s| 2 * s.output.len() * 4)
            .sum();
        if calls < streamed as f64 / L2_BYTES_PER_CYCLE {
            return b;
        }
    }
    let budget = host.l2_bytes / 4;
    tallest(out_h, |b| scratch_rows(layer, first, last, b) <= budget).unwrap_or(1)
}

/// The largest band height in `1..=out_h` that `fits`, by bisection: a
/// band's intermediate rows ([`scratch_rows_from`]) never shrink as it
/// grows (each stage's input rows widen with its output rows), so `fits`
/// holds up to some height and not above.
pub(super) fn tallest(out_h: usize, fits: impl Fn(usize) -> bool) -> Option<usize> {
    // `fits(lo)` holds (or `lo` is 0), `fits(hi + 1)` does not (or `hi` is out_h).
    let (mut lo, mut hi) = (0, out_h);
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if fits(mid) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    (lo > 0).then_some(lo)
}

/// Bytes of intermediate rows one band of `b` rows of stages
/// `first..=last` needs.
pub(super) fn scratch_rows(layer: &Layer, first: usize, last: usize, b: usize) -> usize {
    scratch_rows_from(layer, first, last, 0, b)
}

/// [`scratch_rows`] of the band starting at output row `a` (the top band
/// reads fewer rows: padding).
pub(super) fn scratch_rows_from(
    layer: &Layer,
    first: usize,
    last: usize,
    a: usize,
    b: usize,
) -> usize {
    #[cfg(test)]
    tests::WALKED.with(|w| w.set(w.get() + last - first));
    let out_h = layer.stages[last].output.h;
    let mut rows = (a.min(out_h - 1), (a + b).min(out_h));
    let mut bytes = 0;
    for k in (first + 1..=last).rev() {
        let s = &layer.stages[k];
        let (lo, hi, _, _) = rows::input_rows(s, rows.0, rows.1);
        let prev = &layer.stages[k - 1];
        bytes += (hi - lo).max(1) * row_bytes(prev);
        // A band that reads only padding (a middle one, with strides and
        // padding at the limits) still gets a row, inside the stage.
        let lo = lo.min(prev.output.h - 1);
        rows = (lo, hi.max(lo + 1));
    }
    bytes
}

/// Output row ranges of a group's last stage, thread by thread: each
/// thread's contiguous share, cut into bands.
pub fn chunks(out_h: usize, band_rows: usize, threads: usize) -> Vec<Vec<(usize, usize)>> {
    (0..threads)
        .map(|t| {
            let (c0, c1) = (out_h * t / threads, out_h * (t + 1) / threads);
            (c0..c1)
                .step_by(band_rows.max(1))
                .map(|a| (a, (a + band_rows).min(c1)))
                .collect()
        })
        .collect()
}

/// Every band of every stage of the group reads at least one input row.
pub(super) fn bands_ok(layer: &Layer, g: &Group) -> bool {
    let out_h = layer.stages[g.last].output.h;
    // Threads sharing channels each compute every row.
    let threads = match g.split {
        Split::Rows => g.threads,
        Split::Channels => 1,
    };
    chunks(out_h, g.band_rows, threads)
        .iter()
        .flatten()
        .all(|&(a, b)| {
            let mut rows = (a, b);
            (g.first..=g.last).rev().all(|k| {
                let (lo, hi, _, _) = rows::input_rows(&layer.stages[k], rows.0, rows.1);
                rows = (lo, hi);
                hi > lo
            })
        })
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::layer_plan::cost::{CALL_CYCLES, L2_BYTES_PER_CYCLE};
    use crate::layer_plan::tests::host;
    use crate::layer_plan::{plan_layer, Options};
    use convjit_ir::random_layer::{layer_case, Limits};
    use proptest::prelude::*;

    thread_local! {
        /// Stages [`scratch_rows_from`] has walked on this thread: the
        /// planner's work, counted rather than timed.
        pub(in crate::layer_plan) static WALKED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    }

    #[test]
    fn chunks_cover_every_row_once() {
        for (h, b, t) in [(10, 3, 1), (10, 3, 2), (1, 4, 2), (7, 7, 3)] {
            let rows: Vec<usize> = chunks(h, b, t)
                .into_iter()
                .flatten()
                .flat_map(|(a, b)| a..b)
                .collect();
            assert_eq!(rows, (0..h).collect::<Vec<_>>());
        }
    }

    #[test]
    fn bands_keep_intermediates_in_l1_when_rows_fit_it() {
        let layer = |src: &str| convjit_ir::compile_source(src).unwrap().remove(0);
        // A 56x144 row is 31.5 KiB: one per band stays in a 32 KiB L1d.
        let l =
            layer("layer d { input 56x56x144\n dw: depthwise 3x3, pad same\n pw: pointwise 24 }");
        assert_eq!(band_rows(&l, 0, 1, &host()), 1);
        // Expanded rows for a 3x3 depthwise: three are needed, L2/4 it is.
        let l = layer(
            "layer r { input 56x56x24\n e: pointwise 144\n dw: depthwise 3x3, pad same\n p: pointwise 24 }",
        );
        let b = band_rows(&l, 0, 2, &host());
        assert!(b > 1 && scratch_rows(&l, 0, 2, b) <= (1 << 20) / 4, "{b}");
    }

    #[test]
    fn a_middle_band_reading_only_padding_is_planned() {
        // From the limits property test: the middle band of s1 reads only
        // s0's bottom padding rows.
        let l = convjit_ir::compile_source(
            "layer t { input 46x38x37\n s0: conv 1x1 -> 21, stride 3x341, dilation 27x408, pad 3 12 1023 7, multiplier 6, separable depthwise, bias, relu\n s1: conv 3x1 -> 45, stride 16x2, dilation 1x5666, pad 31 64 8 8, separable spatial, bias, relu }",
        )
        .unwrap()
        .remove(0);
        let host = Host {
            l1d_bytes: 48 << 10,
            ..host()
        };
        for last in 1..l.stages.len() {
            for first in 0..last {
                let b = band_rows(&l, first, last, &host);
                assert!(b >= 1 && b <= l.stages[last].output.h);
            }
        }
        plan_layer(&l, &Options::default(), &host);
    }

    #[test]
    fn the_tallest_band_is_found_by_bisection() {
        for h in 1..40 {
            for limit in 0..=h + 1 {
                let fits = |b: usize| b <= limit;
                let scan = (1..=h).rev().find(|&b| fits(b));
                assert_eq!(tallest(h, fits), scan, "{h} {limit}");
            }
        }
    }

    /// Random layers of up to 6 stages, shapes to 24x40x70.
    fn layers() -> impl Strategy<Value = Layer> {
        let limits = Limits {
            stages: 7,
            ..Limits::PROPTEST
        };
        layer_case(limits).prop_filter_map("the layer validates", |c| {
            convjit_ir::compile_source(&c.src)
                .ok()
                .map(|mut l| l.remove(0))
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// Bisection needs a band's rows never to shrink as it grows: the
        /// band heights are those a scan from the tallest down finds.
        #[test]
        fn band_rows_grow_with_the_band_and_bisection_finds_the_scans_height(
            l in layers(),
            l1d in 1usize..64,
            l2 in 1usize..512,
        ) {
            let host = Host { l1d_bytes: l1d << 8, l2_bytes: l2 << 10, ..host() };
            for last in 0..l.stages.len() {
                let out_h = l.stages[last].output.h;
                for first in 0..=last {
                    for a in [0, out_h / 2] {
                        let rows: Vec<usize> =
                            (1..=out_h).map(|b| scratch_rows_from(&l, first, last, a, b)).collect();
                        prop_assert!(rows.windows(2).all(|w| w[0] <= w[1]), "{first}..={last} from {a}: {rows:?}");
                    }
                    // The scan band_rows did before.
                    let scan = {
                        let in_l1 = |b: usize| scratch_rows_from(&l, first, last, out_h / 2, b) <= host.l1d_bytes;
                        let l1 = (1..=out_h).rev().find(|&b| in_l1(b)).filter(|&b| {
                            let calls = out_h.div_ceil(b) as f64 * (last - first + 1) as f64 * CALL_CYCLES;
                            let streamed: usize = l.stages[first..last].iter().map(|s| 2 * s.output.len() * 4).sum();
                            calls < streamed as f64 / L2_BYTES_PER_CYCLE
                        });
                        l1.unwrap_or_else(|| {
                            (1..=out_h).rev().find(|&b| scratch_rows(&l, first, last, b) <= host.l2_bytes / 4).unwrap_or(1)
                        })
                    };
                    prop_assert_eq!(band_rows(&l, first, last, &host), scan);
                }
            }
        }
    }
}
