//! `convjit plan FILE.conv [--layer NAME] [--json] [--no-fuse] [--threads N]`:
//! the plan as text, or as JSON (`convjit::plan_json`).

use super::{pad, thousands, Align, Failure};
use convjit::plan_json::{group_names, PlanJson};
use convjit::{Layer, LayerPlan, Options, Stage, StageReport};
use std::path::Path;

pub fn plan(
    file: &Path,
    layer: Option<&str>,
    weights: Option<&Path>,
    as_json: bool,
    options: &Options,
) -> Result<(), Failure> {
    // A code generator the CPU cannot run is the user's error.
    options
        .backend
        .resolve()
        .map_err(|m| Failure::Input(convjit::JitError::Unsupported(m).into()))?;
    let layers = match weights {
        // Weights belong to one layer: it must be named, or be the only one.
        Some(_) => vec![convjit::select_layer(convjit::load_layers(file)?, layer)?],
        None => super::layers(file, layer)?,
    };
    for (i, l) in layers.iter().enumerate() {
        // With weights, what the JIT compiles: the layer with its rank-1
        // stages separated where the cost model expects a gain (unless
        // --no-separate), and why.
        let (l, notes, cost) = match weights {
            Some(path) => {
                let w = convjit::load_weights(l, path)?;
                match convjit::separation(l, &w, options) {
                    Ok((s, cost)) if cost.runs_separated() => (s.layer, s.notes, Some(cost)),
                    Ok((s, cost)) => (l.clone(), s.notes, Some(cost)),
                    Err(notes) => (l.clone(), notes, None),
                }
            }
            None => (l.clone(), Vec::new(), None),
        };
        let decision = cost.map(|c| format!("{c}: runs {}", c.decision()));
        let p = convjit::plan_layer(&l, options);
        if as_json {
            let j = PlanJson {
                layer: &l,
                plan: &p,
                separation: &notes,
                separation_cost: cost,
            };
            println!(
                "{}",
                serde_json::to_string(&j).expect("a plan serialises to JSON")
            );
        } else {
            if i > 0 {
                println!();
            }
            print!("{}", to_text(&l, &p, &notes, decision.as_deref()));
        }
    }
    Ok(())
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
    if p != convjit::Padding::default() {
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

/// The plan as `convjit stage-plan` prints it: the layer and the notes on
/// separating it, the stage table, the host, the groups, each stage's
/// blocking.
fn to_text(
    l: &Layer,
    p: &LayerPlan,
    notes: &[convjit::SeparationNote],
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
        let bands = if g.band_rows >= out_h {
            "whole tensors".to_string()
        } else {
            format!("bands of {} rows", g.band_rows)
        };
        let threads = match (g.threads, g.split) {
            (1, _) => "1 thread".to_string(),
            (n, convjit::Split::Rows) => format!("{n} threads"),
            (n, convjit::Split::Channels) => format!("{n} threads on output channels"),
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
    for (i, s) in l.stages.iter().enumerate() {
        let StageReport {
            schedule: k,
            reason,
            packing,
            tiles,
        } = StageReport::new(s, p);
        let unroll = match s.kind {
            convjit::StageKind::Depthwise { .. } => "kernel-row taps unrolled".to_string(),
            _ => format!("reduction unrolled x{}", k.k_unroll),
        };
        out += &format!(
            "  blocking {}: {} pixels x {} vectors of {} lanes per step, {unroll}\n",
            s.name, k.px, k.units, k.lanes
        );
        out += &format!("    why: {reason}\n");
        out += &format!("    packed: {packing}\n");
        match tiles {
            Some(Ok(how)) => out += &format!("    tiles: {how}\n"),
            Some(Err(why)) => out += &format!("    tiles: none, {why}\n"),
            None => {}
        }
        for (t, ((c0, c1), k)) in convjit::share_schedules(l, i, p).iter().enumerate() {
            out += &format!(
                "    thread {t}: output channels {c0}..{c1}, {} pixels x {} vectors per step\n",
                k.px, k.units
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use convjit_ir::random_layer::{layer_case, Limits};
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// `check` and `plan` print any valid layer, however long its
        /// names and whatever the planner's flags allow (a name of 65,536
        /// characters once panicked in a `{:width$}`).
        #[test]
        fn printers_take_any_layer_and_flags(
            case in layer_case(Limits::PROPTEST),
            long in prop_oneof![Just(1usize), Just(100), Just(70_000)],
            threads in prop_oneof![Just(1usize), Just(2), Just(256)],
            band_rows in prop::option::of(prop_oneof![Just(1usize), Just(u32::MAX as usize)]),
            fuse in prop::sample::select(vec![convjit::Fusion::Auto, convjit::Fusion::Never, convjit::Fusion::Always]),
        ) {
            let parsed = convjit::parse_layers("r.conv", &case.src);
            prop_assume!(parsed.is_ok());
            let mut layers = parsed.unwrap();
            let mut l = layers.remove(0);
            l.name = "l".repeat(long);
            for (i, s) in l.stages.iter_mut().enumerate() {
                s.name = format!("{}{i}", "s".repeat(long));
            }
            let o = Options { threads, band_rows, fuse, ..Options::default() };
            let p = convjit::plan_layer(&l, &o);
            let text = to_text(&l, &p, &[], None);
            prop_assert!(text.contains(&l.name));
            let j = PlanJson {
                layer: &l,
                plan: &p,
                separation: &[],
                separation_cost: None,
            };
            let v: serde_json::Value = serde_json::from_str(&serde_json::to_string(&j).unwrap()).unwrap();
            prop_assert_eq!(v["stages"].as_array().unwrap().len(), l.stages.len());
            let summary = super::super::check::summary(&l);
            prop_assert!(summary.lines().count() == l.stages.len() + 1);
        }
    }
}
