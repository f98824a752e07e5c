//! The threads of a group and its band height, with the reasons
//! ([`choose_bands_and_threads`]): as many threads as have enough work
//! ([`MIN_CYCLES_PER_THREAD`] by default), sharing rows or a lone stage's
//! output channels, whichever divides more evenly.

use super::bands::{band_rows, bands_ok, scratch_rows, scratch_rows_from};
use super::cost::group_cycles;
#[cfg(doc)]
use super::MIN_CYCLES_PER_THREAD;
use super::{Group, Host, Options, Split, MARGIN};
use crate::stage_plan::Target;
use convjit_ir::{Layer, Stage};

/// Chooses a group's band height and threads, with the reasons (`why`:
/// those of its fusion so far); a fused group whose bands would read
/// nothing but padding runs unfused instead.
pub(super) fn choose_bands_and_threads(
    layer: &Layer,
    mut g: Group,
    options: &Options,
    host: &Host,
    target: &Target,
    mut why: Vec<String>,
    threads: usize,
) -> Vec<Group> {
    let out_h = layer.stages[g.last].output.h;
    let fused = g.last > g.first;
    g.band_rows = band_height(layer, &g, options, host, target, &mut why);
    share_work(layer, &mut g, options, host, target, threads, &mut why);
    if !bands_ok(layer, &g) {
        if fused {
            return unfused(layer, &g, options, host, target, threads);
        }
        why.push("a band would read only padding: whole stage, one thread".into());
        g.band_rows = out_h;
        g.threads = 1;
        g.split = Split::Rows;
    }
    if !g.why.is_empty() {
        why.insert(0, std::mem::take(&mut g.why));
    }
    g.why = why.join("; ");
    vec![g]
}

/// Output rows of `g`'s last stage per band, its reason added to `why`:
/// forced, or for a fused group as many as keep its intermediate rows in
/// L1d or a quarter of L2 ([`band_rows`]); a stage alone, or a filter's
/// pair in registers (`stage_plan::column_pair`), runs in one band.
fn band_height(
    layer: &Layer,
    g: &Group,
    options: &Options,
    host: &Host,
    target: &Target,
    why: &mut Vec<String>,
) -> usize {
    let out_h = layer.stages[g.last].output.h;
    let fused = g.last > g.first;
    let (col, row) = (&layer.stages[g.first], &layer.stages[g.last]);
    if g.last == g.first + 1 && crate::stage_plan::column_pair(col, row, target).is_some() {
        why.push("in registers: one function computes both stages, no bands".into());
        return out_h;
    }
    match options.band_rows {
        Some(b) => {
            why.push(format!("band of {b} rows: forced"));
            b.clamp(1, out_h)
        }
        None if fused => {
            let b = band_rows(layer, g.first, g.last, host);
            why.push(format!(
                "band of {b} rows: its intermediate rows take {} KiB, within {}",
                scratch_rows(layer, g.first, g.last, b) >> 10,
                if scratch_rows_from(layer, g.first, g.last, out_h / 2, b) <= host.l1d_bytes {
                    "L1d"
                } else {
                    "L2/4"
                }
            ));
            b
        }
        None => out_h,
    }
}

/// Sets `g`'s threads (at most `threads`) and how they split its work,
/// its reasons added to `why`: as many as have enough estimated cycles
/// each, sharing rows, or the output channels of a conv/pointwise stage
/// alone where those divide more evenly by more than the model's noise.
fn share_work(
    layer: &Layer,
    g: &mut Group,
    options: &Options,
    host: &Host,
    target: &Target,
    threads: usize,
    why: &mut Vec<String>,
) {
    let out_h = layer.stages[g.last].output.h;
    let fused = g.last > g.first;
    // Each thread must get enough work to be worth its barrier: counted in
    // the cost model's cycles, memory stalls included (a depthwise stage
    // of few MACs may stream megabytes; a tile stage priced as tiles run
    // it).
    let cycles = group_cycles(layer, g.first, g.last, host, target);
    let worth = (cycles as u64)
        .checked_div(options.min_thread_cycles)
        .map_or(usize::MAX, |n| n.max(1) as usize);
    // Rows, or a lone conv/pointwise stage's output channels: as many
    // threads as either has shares.
    let stage = &layer.stages[g.last];
    let alone = !fused && g.band_rows >= out_h;
    let vectors = match alone && crate::stage_plan::channel_shares(stage, target, 2).is_some() {
        true => stage.output.c.div_ceil(target.lanes),
        false => 0,
    };
    let most = threads.min(out_h.max(vectors));
    let n = most.min(worth);
    g.threads = n.min(out_h);
    g.split = Split::Rows;
    let channels = alone
        .then(|| crate::stage_plan::channel_shares(stage, target, n))
        .flatten();
    match channels {
        Some(shares) => {
            let rows = row_balance(stage, g.threads, alone, target);
            let vecs: Vec<usize> = shares
                .iter()
                .map(|&(a, b)| (b - a).div_ceil(target.lanes))
                .collect();
            let busiest = vecs.iter().max().copied().unwrap_or(0);
            // The busiest thread's part of the work, rows against channels:
            // channels must win by more than the model's noise (every
            // thread then reads the whole input; rows read only theirs).
            let split_channels =
                ((busiest * rows.total) as f64) < MARGIN * (rows.busiest * vectors) as f64;
            let vecs = format!("{} of {vectors} vectors", counts(&vecs));
            if split_channels {
                g.threads = n;
                g.split = Split::Channels;
                why.push(format!(
                    "{n} threads share the output channels: {vecs} ({})",
                    rows.text
                ));
            } else if g.threads > 1 {
                why.push(format!(
                    "{} threads share the {} (output channels: {vecs})",
                    g.threads, rows.text
                ));
            }
        }
        None if g.threads > 1 => why.push(format!("{} threads share the rows", g.threads)),
        None => {}
    }
    if n < most {
        why.push(format!(
            "{n} thread{} rather than {threads}: {:.0} estimated cycles per image is too little work to share",
            if n == 1 { "" } else { "s" },
            cycles
        ));
    }
}

/// The stages of the fused group `g`, each a group of its own with its
/// band height and threads chosen again (a forced band height dropped):
/// a band of `g` would read only padding.
fn unfused(
    layer: &Layer,
    g: &Group,
    options: &Options,
    host: &Host,
    target: &Target,
    threads: usize,
) -> Vec<Group> {
    (g.first..=g.last)
        .flat_map(|i| {
            let single = Group {
                first: i,
                last: i,
                band_rows: layer.stages[i].output.h,
                threads,
                split: Split::Rows,
                why: "a band would read only padding: unfused".into(),
            };
            choose_bands_and_threads(
                layer,
                single,
                &Options {
                    band_rows: None,
                    ..options.clone()
                },
                host,
                target,
                Vec::new(),
                threads,
            )
        })
        .collect()
}

/// How evenly `threads` threads share a stage's rows: the busiest
/// thread's rows of all of them, or for a flat stage alone (whose threads
/// share pixels) its register blocks of the schedule's pixels against
/// those of the whole image; and the shares as text.
struct RowBalance {
    /// Rows (or blocks) of the busiest thread.
    busiest: usize,
    /// Rows (or blocks) of all threads.
    total: usize,
    /// The shares, for the plan's reasons.
    text: String,
}

/// [`RowBalance`] of `threads` threads sharing `stage`'s rows (its
/// pixels, for a flat stage `alone` on whole tensors).
fn row_balance(stage: &Stage, threads: usize, alone: bool, target: &Target) -> RowBalance {
    let threads = threads.max(1);
    let share = |n: usize, t: usize| n * (t + 1) / threads - n * t / threads;
    // "rows: 8 and 9 of 17 rows", "pixels: 4 and 4 of 7 blocks of 7 pixels".
    let text = |n: &[usize], of: usize, what: &str| match n {
        [_] => format!("all {of} {what} on one thread"),
        _ => format!("{} of {of} {what}", counts(n)),
    };
    if alone && crate::stage_plan::is_flat(stage) {
        let pixels = stage.output.h * stage.output.w;
        let px = crate::stage_plan::schedule_for(stage, target).px.max(1);
        let blocks: Vec<usize> = (0..threads)
            .map(|t| share(pixels, t).div_ceil(px))
            .collect();
        RowBalance {
            busiest: blocks.iter().max().copied().unwrap_or(0),
            total: pixels.div_ceil(px),
            text: format!(
                "pixels: {}",
                text(
                    &blocks,
                    pixels.div_ceil(px),
                    &format!("blocks of {px} pixels")
                )
            ),
        }
    } else {
        let h = stage.output.h;
        let rows: Vec<usize> = (0..threads).map(|t| share(h, t)).collect();
        RowBalance {
            busiest: rows.iter().max().copied().unwrap_or(0),
            total: h,
            text: format!("rows: {}", text(&rows, h, "rows")),
        }
    }
}

/// `4 and 3`, `3, 3 and 2`.
fn counts(n: &[usize]) -> String {
    let s: Vec<String> = n.iter().map(|n| n.to_string()).collect();
    match s.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
        _ => s.join(""),
    }
}

#[cfg(test)]
mod tests {
    use crate::layer_plan::tests::host;
    use crate::layer_plan::{plan_layer, Options, Split};
    use crate::Backend;

    #[test]
    fn a_stage_reading_only_padding_runs_on_one_thread_whatever_its_channels() {
        // From the limits property test: the column stage's rows read only
        // padding, so it runs whole on one thread, though its 150 output
        // channels would split.
        let l = convjit_ir::compile_source(
            "layer t { input 1x1x1\n s0: conv 3x1 -> 150, stride 3x1, dilation 2x1, pad 12 0 0 0, separable spatial\n s1: pointwise 1 }",
        )
        .unwrap()
        .remove(0);
        for backend in [Backend::Cranelift, Backend::Avx2, Backend::Avx512] {
            let options = Options {
                threads: 2,
                min_thread_cycles: 0,
                backend,
                ..Options::default()
            };
            let p = plan_layer(&l, &options, &host());
            assert_eq!((p.groups[0].split, p.groups[0].threads), (Split::Rows, 1));
            crate::program::program(&l, &p);
        }
    }
}
