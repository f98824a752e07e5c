//! A layer's plan as text, as `convjit plan` prints it (the JSON form is
//! [`crate::plan_json`]): the layer and the notes on separating it, the
//! stage table, the host, the groups, each stage's blocking. Here, not in
//! the command line, so that an embedder (the Python package's
//! `Kernel.plan()`) prints the same text.

use crate::plan_json::{group_names, PlanJson};
use crate::{
    Layer, LayerPlan, Options, SeparationCost, SeparationNote, Stage, StageReport, Weights,
};

/// What `convjit plan` shows of one layer: with weights, the layer the JIT
/// compiles (its rank-1 stages separated where the cost model expects a
/// gain, as [`crate::Kernel::compile_with`] decides) and what was found.
pub struct Planned {
    /// The layer planned: the one given, or its separated rewrite.
    pub layer: Layer,
    /// With weights: what was found of each stage's rank (else empty).
    pub notes: Vec<SeparationNote>,
    /// With weights where a stage could split: the cost model's estimates.
    pub cost: Option<SeparationCost>,
    pub plan: LayerPlan,
    /// Asked for (`Options::winograd`): per stage, by name, how it runs as
    /// Winograd's, or why it does not (`winograd_stages`).
    pub winograd: Option<Vec<StageWinograd>>,
    /// Without weights, why the compiler would refuse the layer shown
    /// (`Kernel::check_size`: too many stages, too much code), if it would.
    /// (Given weights may separate it into one that compiles: `run` says.)
    pub refused: Option<String>,
}

/// A stage's name and how it runs as Winograd's, or why it does not.
pub type StageWinograd = (String, Result<crate::WinogradPlan, &'static str>);

impl Planned {
    pub fn new(layer: &Layer, weights: Option<&Weights>, options: &Options) -> Planned {
        let (layer, notes, cost) = match weights {
            Some(w) => match crate::separation(layer, w, options) {
                Ok((s, cost)) if cost.runs_separated() => (s.layer, s.notes, Some(cost)),
                Ok((s, cost)) => (layer.clone(), s.notes, Some(cost)),
                Err(notes) => (layer.clone(), notes, None),
            },
            None => (layer.clone(), Vec::new(), None),
        };
        let plan = crate::plan_layer(&layer, options);
        // As `Kernel::compile_with` decides: f32, on the direct plan's threads.
        let threads = plan.groups.iter().map(|g| g.threads).max().unwrap_or(1);
        let asked = options.winograd != crate::Winograd::Off;
        let names = layer.stages.iter().map(|s| s.name.clone());
        let winograd = asked.then(|| match options.precision {
            crate::Precision::F32 => names
                .zip(crate::winograd_stages(
                    &layer,
                    threads,
                    options.winograd,
                    options.winograd_tile,
                ))
                .collect(),
            crate::Precision::Bf16 => names
                .map(|n| (n, Err("bf16 runs direct (Winograd is f32 only)")))
                .collect(),
        });
        let refused = match weights {
            None => crate::Kernel::check_size(&layer, options, Some(&plan))
                .err()
                .map(|e| e.to_string()),
            Some(_) => None,
        };
        Planned {
            layer,
            notes,
            cost,
            plan,
            winograd,
            refused,
        }
    }

    /// The text `convjit plan` prints for this layer.
    pub fn text(&self) -> String {
        let decision = self.cost.map(|c| format!("{c}: runs {}", c.decision()));
        let mut out = plan_text(&self.layer, &self.plan, &self.notes, decision.as_deref());
        let stages = self.winograd.as_deref().unwrap_or_default();
        for (name, r) in stages {
            // A lone stage is the layer; in a longer one, say which.
            let stage = match stages.len() {
                1 => String::new(),
                _ => format!("stage {name}: "),
            };
            match r {
                Ok(w) => {
                    let chunks = match w.tiles_w.div_ceil(w.chunk) {
                        1 => String::new(),
                        n => format!(" in {n} chunks of {} columns", w.chunk),
                    };
                    out += &format!(
                        "  winograd: {stage}{}, {} band(s) of {} tile rows x {} tiles{chunks}, {} pointwise products each (the direct code runs an image whose sums are not finite)\n",
                        w.variant.name(), w.bands, w.band, w.tiles_w, w.variant.points()
                    )
                }
                Err(why) => out += &format!("  winograd: {stage}not used: {why}\n"),
            }
        }
        if let Some(why) = &self.refused {
            out += &format!("  compile: refused: {why}\n");
        }
        out
    }

    /// The line `convjit plan --json` prints for this layer (one object).
    pub fn json(&self) -> String {
        let j = PlanJson {
            layer: &self.layer,
            plan: &self.plan,
            separation: &self.notes,
            separation_cost: self.cost,
            winograd: self.winograd.as_deref(),
            refused: self.refused.as_deref(),
        };
        serde_json::to_string(&j).expect("a plan serialises to JSON")
    }
}

/// The op and every option that differs from its default.
pub fn describe(s: &Stage) -> String {
    let mut parts = vec![s.describe_op()];
    if s.stride != [1, 1] {
        parts.push(format!("stride {}x{}", s.stride[0], s.stride[1]));
    }
    if s.dilation != [1, 1] {
        parts.push(format!("dilation {}x{}", s.dilation[0], s.dilation[1]));
    }
    let p = s.padding;
    if p != crate::Padding::default() {
        parts.push(format!("pad {} {} {} {}", p.top, p.bottom, p.left, p.right));
    }
    if s.bias_key.is_some() {
        parts.push("bias".into());
    }
    parts.extend(s.activation.keyword().map(String::from));
    if s.residual {
        parts.push("residual".into());
    }
    parts.join(", ")
}

/// The plan as `convjit plan` prints it: the layer and the notes on
/// separating it, the stage table, the host, the groups, each stage's
/// blocking.
pub fn plan_text(
    l: &Layer,
    p: &LayerPlan,
    notes: &[crate::SeparationNote],
    decision: Option<&str>,
) -> String {
    let mut out = format!(
        "layer {}: input {} -> output {}\n",
        l.name,
        l.input,
        l.output()
    );
    for n in notes {
        out += &format!("  {}: {}\n", n.stage, n.text);
    }
    if let Some(d) = decision {
        out += &format!("  separation: {d}\n");
    }
    out += &stage_table(l);
    let h = p.host;
    out += &format!(
        "  host: {} generator, {}, {} f32 lanes ({}-bit vectors), {} vector registers, L1d {} KiB, L2 {} KiB, {} cores\n",
        p.options.backend,
        p.options.precision,
        h.lanes,
        h.lanes * 32,
        h.vector_registers,
        h.l1d_bytes >> 10,
        h.l2_bytes >> 10,
        h.cores
    );
    out += &groups_text(l, p);
    out += &blocking_text(l, p);
    out
}

/// Each stage's op, shapes and MACs, and their total, in aligned columns.
fn stage_table(l: &Layer) -> String {
    let rows: Vec<[String; 5]> = l
        .stages
        .iter()
        .map(|s| {
            [
                s.name.clone(),
                describe(s),
                s.input.to_string(),
                s.output.to_string(),
                thousands(s.macs()),
            ]
        })
        .collect();
    let header = ["stage", "op", "input", "output", "macs"].map(String::from);
    let total = [
        "total".to_string(),
        String::new(),
        String::new(),
        String::new(),
        thousands(l.macs()),
    ];
    let all: Vec<&[String; 5]> = std::iter::once(&header)
        .chain(&rows)
        .chain(std::iter::once(&total))
        .collect();
    let w: Vec<usize> = (0..5)
        .map(|i| all.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in all {
        out += &format!(
            "  {}  {}  {}  {}  {}\n",
            pad(&r[0], w[0], Align::Left),
            pad(&r[1], w[1], Align::Left),
            pad(&r[2], w[2], Align::Right),
            pad(&r[3], w[3], Align::Right),
            pad(&r[4], w[4], Align::Right),
        );
    }
    out
}

/// Each fusion group: its stages, bands and threads, and why.
fn groups_text(l: &Layer, p: &LayerPlan) -> String {
    let mut out = String::new();
    for (i, g) in p.groups.iter().enumerate() {
        let names = group_names(l, g);
        let out_h = l.stages[g.last].output.h;
        let bands = if p.in_registers(l, g) {
            "in registers (one function, its column sums never stored)".to_string()
        } else if g.band_rows >= out_h {
            "whole tensors".to_string()
        } else {
            format!("bands of {} rows", g.band_rows)
        };
        let threads = match (g.threads, g.split) {
            (1, _) => "1 thread".to_string(),
            (n, crate::Split::Rows) => format!("{n} threads"),
            (n, crate::Split::Channels) => format!("{n} threads on output channels"),
        };
        out += &format!(
            "  group {}: [{}], {bands}, {threads}\n",
            i + 1,
            names.join(", ")
        );
        if !g.why.is_empty() {
            out += &format!("    why: {}\n", g.why);
        }
    }
    out
}

/// Each stage's register blocking, why, its packed weights, and the
/// blocking of each thread's share of its output channels.
fn blocking_text(l: &Layer, p: &LayerPlan) -> String {
    let mut out = String::new();
    let (bf16, rounds_input) = match p.options.precision {
        crate::Precision::Bf16 => convjit_jit::bf16_layout(l, p),
        crate::Precision::F32 => (vec![false; l.stages.len()], false),
    };
    for (i, s) in l.stages.iter().enumerate() {
        let StageReport {
            schedule: k,
            reason,
            packing,
            tiles,
            row_pairs,
            pairs,
            reduction_chunks,
        } = StageReport::new(s, p);
        let unroll = match (s.kind, reduction_chunks) {
            (crate::StageKind::Depthwise { .. }, _) => "kernel-row taps unrolled".to_string(),
            (_, 1) => format!("reduction unrolled x{}", k.k_unroll),
            (_, n) => format!(
                "reduction unrolled x{}, in {n} passes of {} input channels (a block's \
                 weights past a quarter of L2)",
                k.k_unroll,
                s.input.c / n
            ),
        };
        out += &format!(
            "  blocking {}: {} pixels x {} vectors of {} lanes per step, {unroll}\n",
            s.name, k.px, k.units, k.lanes
        );
        out += &format!("    why: {reason}\n");
        out += &format!("    packed: {packing}\n");
        if let Some(pairs) = row_pairs {
            out += &format!("    row pairs: {pairs}\n");
        }
        match tiles {
            Some(Ok(how)) => out += &format!("    tiles: {how}\n"),
            Some(Err(why)) => out += &format!("    tiles: none, {why}\n"),
            None => {}
        }
        if i == 0 && rounds_input {
            out += "    input: rounded to bf16 as it is loaded (no pass over the image)\n";
        }
        if pairs.is_some() && (i == 0 || !bf16[i - 1]) {
            out += "    input: converted to bf16 channel pairs before each call\n";
        }
        if bf16[i] {
            let next = &l.stages[i + 1];
            out += &match next.kind {
                crate::StageKind::Depthwise { .. } => format!(
                    "    output: stored as bf16 (half the bytes), widened to f32 by depthwise '{}'\n",
                    next.name
                ),
                _ => format!(
                    "    output: stored as bf16 (half the bytes), read by '{}' as its channel \
                     pairs (no conversion)\n",
                    next.name
                ),
            };
        }
        for (t, ((c0, c1), k)) in crate::share_schedules(l, i, p).iter().enumerate() {
            out += &format!(
                "    thread {t}: output channels {c0}..{c1}, {} pixels x {} vectors per step\n",
                k.px, k.units
            );
        }
    }
    out
}

/// `s` padded with spaces to `width` characters, on the right (`Left`
/// alignment) or the left. `format!("{:width$}")` panics for widths past
/// 65535, which a long stage or layer name reaches.
pub fn pad(s: &str, width: usize, align: Align) -> String {
    let fill = " ".repeat(width.saturating_sub(s.chars().count()));
    match align {
        Align::Left => format!("{s}{fill}"),
        Align::Right => format!("{fill}{s}"),
    }
}

#[derive(Clone, Copy)]
pub enum Align {
    Left,
    Right,
}

/// `1228800` -> `1,228,800`.
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn pads_past_formats_width_limit() {
        use super::{pad, Align};
        assert_eq!(pad("ab", 4, Align::Left), "ab  ");
        assert_eq!(pad("ab", 4, Align::Right), "  ab");
        assert_eq!(pad("abc", 2, Align::Left), "abc");
        assert_eq!(pad("\u{e9}", 2, Align::Left), "\u{e9} ");
        assert_eq!(pad("", 70_000, Align::Right).len(), 70_000);
    }

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(super::thousands(0), "0");
        assert_eq!(super::thousands(999), "999");
        assert_eq!(super::thousands(1000), "1,000");
        assert_eq!(super::thousands(1_228_800), "1,228,800");
    }
}
