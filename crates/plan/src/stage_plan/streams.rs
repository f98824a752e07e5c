//! Stores that stream past the caches: which plans prefetch their output
//! lines for writing before they store them ([`StagePlan::prefetch_stores`]).
//!
//! A store to a line not in the cache waits for the line to be read (a read
//! for ownership) in the store buffer; once that is full, the core stops
//! issuing, and the kernel's arithmetic no longer overlaps its memory
//! traffic. A `prefetchw` a few KiB ahead asks for the line early. Where
//! a call's input and output stay in the last-level cache from one call
//! to the next, the lines are there anyway and the prefetches only cost
//! instructions.

use super::StagePlan;
use crate::program::Program;
use convjit_ir::Shape;

/// Bytes ahead of each store that row-vector blocks prefetch for writing.
/// Zen 5, one thread, 1080x1920 images, median call:
/// Gaussian 7x7 RGB 2,904 us without, 2,548 at 4 KiB, 2,502 at 8 KiB;
/// box 9x9 RGB 3,299 / 2,854 / 2,830; Sobel dx+dy (unseparated, 2
/// outputs) 855-939 / 724-763 / 689-700; at 16 and 32 KiB 777-791.
pub const PREFETCH_STORES_AHEAD: i64 = 8 << 10;

/// A group whose input and output tensors (one image) take this share of
/// the last-level cache or more prefetches its stores (eighths; 20 MiB of
/// a 32 MiB L3): on a Zen 5 with 32 MiB, the grey filters' 16.6 MB
/// (1080x1920x1 in and out) stay in L3 between calls and ran 1-5% slower
/// with the prefetches; Sobel's 24.9 MB (one channel in, two out) and the
/// RGB filters' 49.8 MB ran 14-22% faster.
pub const PREFETCH_STORES_EIGHTHS_OF_L3: usize = 5;

/// Whether a group (or a stage run alone) reading `input` and writing
/// `output` (one image each) streams past the caches.
pub fn streams_past_caches(input: Shape, output: Shape) -> bool {
    let l3 = crate::layer_plan::host_l3_bytes();
    (input.len() + output.len()) * 4 >= l3 / 8 * PREFETCH_STORES_EIGHTHS_OF_L3
}

/// Marks the plans (one per function of `program`) that write their
/// group's output where the group's input and output tensors take
/// five eighths of the last-level cache or more
/// ([`PREFETCH_STORES_EIGHTHS_OF_L3`]).
pub fn mark_streamed_outputs(plans: &mut [StagePlan], program: &Program) {
    let mut first = 0;
    for g in &program.groups {
        // Stage `i`'s input and output where a function computes it (a
        // pair's column stage: the row stage's function).
        let shapes = |i: usize| {
            program.functions.iter().find_map(|f| match &f.column {
                _ if f.index == i => Some((f.stage.input, f.stage.output)),
                Some(c) if f.index == i + 1 => Some((c.input, c.output)),
                _ => None,
            })
        };
        let streams = match (shapes(first), shapes(g.last)) {
            (Some((a, _)), Some((_, b))) => streams_past_caches(a, b),
            _ => false,
        };
        if streams {
            for (p, f) in plans.iter_mut().zip(&program.functions) {
                if f.index == g.last {
                    p.prefetch_stores = true;
                }
            }
        }
        first = g.last + 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer_plan::{plan_layer, Fusion, Host, Options};
    use crate::program::program;
    use crate::stage_plan::{Target, LANES};
    use crate::Backend;

    /// Which functions of `src` (one thread) prefetch their stores.
    fn marked(src: &str, fuse: Fusion) -> Vec<bool> {
        let host = Host {
            lanes: LANES,
            vector_registers: 32,
            l1d_bytes: 48 << 10,
            l2_bytes: 2 << 20,
            cores: 1,
            tiles: false,
        };
        let options = Options {
            threads: 1,
            fuse,
            backend: Backend::Avx512,
            ..Options::default()
        };
        let l = convjit_ir::compile_source(src).unwrap().remove(0);
        let prog = program(&l, &plan_layer(&l, &options, &host));
        let target = Target::of(Backend::Avx512);
        let mut plans: Vec<StagePlan> = prog.functions.iter().map(|f| f.plan(&target)).collect();
        mark_streamed_outputs(&mut plans, &prog);
        plans.iter().map(|p| p.prefetch_stores).collect()
    }

    #[test]
    fn only_group_outputs_past_the_caches_prefetch_their_stores() {
        // Images whose input and output pass 5/8 of this machine's L3.
        let l3 = crate::layer_plan::host_l3_bytes();
        let rows = (l3 / 8 * 5).div_ceil(2 * 4 * 1920 * 3) + 1;
        let rgb = format!("layer a {{ input {rows}x1920x3\n f: depthwise 5x5, pad same }}");
        assert_eq!(marked(&rgb, Fusion::Auto), [true]);
        // Half of L3 stays there between calls.
        let rows = l3 / 2 / (2 * 4 * 1920);
        let grey = format!("layer a {{ input {rows}x1920x1\n f: depthwise 5x5, pad same }}");
        assert_eq!(marked(&grey, Fusion::Auto), [false]);
        // Two passes fused: the group's input and output decide, and only
        // the last stage writes the output (the first, band buffers):
        // 1 channel in, 2 out.
        let rows = (l3 / 8 * 5).div_ceil(3 * 4 * 1920) + 1;
        let two = format!(
            "layer a {{ input {rows}x1920x1\n c: conv 3x1 -> 2, pad same\n \
             r: depthwise 1x7, pad same }}"
        );
        let two = two.as_str();
        assert_eq!(marked(two, Fusion::Always), [false, true]);
        // Apart: each stage writes a whole tensor of its own group.
        assert_eq!(marked(two, Fusion::Never), [true, true]);
        // A pair in registers is one function, reading the column stage's
        // input (`column_pair`).
        let pair = two.replace("1x7", "1x3");
        assert_eq!(marked(&pair, Fusion::Always), [true]);
    }
}
