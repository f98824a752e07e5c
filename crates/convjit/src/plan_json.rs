//! A layer's plan as JSON (`convjit plan --json`, one object per layer):
//! its stages with their shapes and blocking, the fusion groups, the host
//! the planner saw, and with weights, which stages run separated. The
//! stages and groups are written one at a time as they are made: as one
//! `serde_json::Value`, a layer of 20,000 stages took 300 MB, and its page
//! faults most of the time.

use crate::StageReport;
use crate::{Group, Layer, LayerPlan, SeparationCost, SeparationNote, Shape, Split, Stage};
use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};
use serde_json::{json, Value};

/// A layer's plan, serialised (`serde_json::to_string`) as one object
/// whose keys are in the order of a `serde_json::Value` (sorted).
pub struct PlanJson<'a> {
    pub layer: &'a Layer,
    pub plan: &'a LayerPlan,
    /// With weights: what was found of each stage's rank (else empty).
    pub separation: &'a [SeparationNote],
    /// With weights where a stage could split: the cost model's estimates.
    pub separation_cost: Option<SeparationCost>,
    /// Asked for: per stage, Winograd's variant and bands, or why not (`null`
    /// unless asked).
    pub winograd: Option<&'a [crate::plan_text::StageWinograd]>,
    /// Why the compiler would refuse the layer (`refused`, only when it
    /// would).
    pub refused: Option<&'a str>,
}

/// How a group's threads share its work, in the JSON.
pub fn split_name(s: Split) -> &'static str {
    match s {
        Split::Rows => "rows",
        Split::Channels => "channels",
    }
}

/// The names of a group's stages.
pub fn group_names<'a>(l: &'a Layer, g: &Group) -> Vec<&'a str> {
    l.stages[g.first..=g.last]
        .iter()
        .map(|s| s.name.as_str())
        .collect()
}

fn shape(s: Shape) -> Value {
    json!([s.h, s.w, s.c])
}

/// One stage of a layer's JSON plan (the stage planned once).
pub fn stage_json(s: &Stage, p: &LayerPlan) -> Value {
    let StageReport {
        schedule: k,
        reason,
        packing,
        tiles,
        row_pairs,
        pairs: _,
        reduction_chunks,
    } = StageReport::new(s, p);
    json!({
        "name": s.name,
        "op": s.kind,
        "kernel": s.kernel,
        "stride": s.stride,
        "dilation": s.dilation,
        "padding": s.padding,
        "input": shape(s.input),
        "output": shape(s.output),
        "weight": {"key": s.weight_key, "shape": s.weight_shape()},
        "bias": s.bias_key,
        "activation": s.activation,
        "residual": s.residual,
        "macs": s.macs(),
        "blocking": {
            "pixels": k.px,
            "vectors": k.units,
            "lanes": k.lanes,
            "unroll": k.k_unroll,
            "reduction_passes": reduction_chunks,
            "why": reason,
        },
        "packed": packing,
        "row_pairs": row_pairs,
        "precision": p.options.precision.name(),
        "tiles": tiles.map(|t| match t {
            Ok(how) => json!({"amx": true, "how": how}),
            Err(why) => json!({"amx": false, "why": why}),
        }),
    })
}

/// A sequence made as it is written.
struct Lazy<F>(F);

impl<F, I> Serialize for Lazy<F>
where
    F: Fn() -> I,
    I: Iterator<Item = Value>,
{
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        ser.collect_seq((self.0)())
    }
}

impl Serialize for PlanJson<'_> {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        let (l, p) = (self.layer, self.plan);
        let mut m = ser.serialize_map(Some(10))?;
        // The keys in the order a `serde_json::Value` (a sorted map) has them.
        m.serialize_entry("backend", p.options.backend.name())?;
        m.serialize_entry(
            "groups",
            &Lazy(|| {
                p.groups.iter().map(|g| {
                    json!({
                        "stages": group_names(l, g),
                        "band_rows": g.band_rows,
                        "in_registers": p.in_registers(l, g),
                        "threads": g.threads,
                        "split": split_name(g.split),
                        "why": g.why,
                    })
                })
            }),
        )?;
        m.serialize_entry(
            "host",
            &json!({
                "lanes": p.host.lanes,
                "vector_registers": p.host.vector_registers,
                "l1d_bytes": p.host.l1d_bytes,
                "l2_bytes": p.host.l2_bytes,
                "cores": p.host.cores,
            }),
        )?;
        m.serialize_entry("input", &shape(l.input))?;
        m.serialize_entry("layer", &l.name)?;
        m.serialize_entry("macs", &l.macs())?;
        m.serialize_entry("output", &shape(l.output()))?;
        if let Some(why) = self.refused {
            m.serialize_entry("refused", why)?;
        }
        m.serialize_entry(
            "separation",
            &Lazy(|| {
                self.separation
                    .iter()
                    .map(|n| json!({"stage": n.stage, "separated": n.separated, "why": n.text}))
            }),
        )?;
        m.serialize_entry(
            "separation_cost",
            &self.separation_cost.map(|c| {
                json!({
                    "whole_cycles": c.whole.round(),
                    "separated_cycles": c.separated.round(),
                    "separated": c.runs_separated(),
                })
            }),
        )?;
        m.serialize_entry(
            "stages",
            &Lazy(|| l.stages.iter().map(|s| stage_json(s, p))),
        )?;
        m.serialize_entry(
            "winograd",
            &self.winograd.map(|stages| {
                let one = |r: &Result<crate::WinogradPlan, &str>| match r {
                    Ok(w) => json!({"used": true, "tile": w.variant.tile(), "band_tile_rows": w.band, "bands": w.bands, "tiles_w": w.tiles_w, "chunk_tiles": w.chunk}),
                    Err(why) => json!({"used": false, "why": why}),
                };
                // A lone stage is the layer; a longer layer lists its stages.
                match stages {
                    [(_, r)] => one(r),
                    _ => json!({
                        "used": stages.iter().any(|(_, r)| r.is_ok()),
                        "stages": stages.iter().map(|(name, r)| {
                            let mut v = one(r);
                            v["stage"] = json!(name);
                            v
                        }).collect::<Vec<_>>(),
                    }),
                }
            }),
        )?;
        m.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Options, StageReport};
    use convjit_ir::random_layer::{layer_case, Limits};
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Planning a stage once gives what the three separate questions
        /// give, and the JSON has every stage and group, for any layer.
        #[test]
        fn one_plan_per_stage_says_what_three_did(case in layer_case(Limits::PROPTEST)) {
            let parsed = crate::parse_layers("r.conv", &case.src);
            prop_assume!(parsed.is_ok());
            let l = parsed.unwrap().remove(0);
            for backend in crate::Backend::available() {
                let p = crate::plan_layer(&l, &Options { backend, ..Options::default() });
                for s in &l.stages {
                    let r = StageReport::new(s, &p);
                    prop_assert_eq!(r.schedule, crate::stage_schedule(s, &p));
                    prop_assert_eq!(&r.reason, &crate::stage_schedule_reason(s, &p));
                    prop_assert_eq!(&r.packing, &crate::stage_packing(s, &p));
                }
                let j = PlanJson { layer: &l, plan: &p, separation: &[], separation_cost: None, winograd: None, refused: None };
                let v: Value = serde_json::from_str(&serde_json::to_string(&j).unwrap()).unwrap();
                prop_assert_eq!(v["stages"].as_array().unwrap().len(), l.stages.len());
                prop_assert_eq!(v["groups"].as_array().unwrap().len(), p.groups.len());
                prop_assert_eq!(&v["layer"], &json!(l.name));
                prop_assert!(v["separation_cost"].is_null());
            }
        }
    }
}
