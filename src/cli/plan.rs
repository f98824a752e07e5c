//! `convjit plan FILE.conv [--layer NAME] [--json] [--no-fuse] [--threads N]`:
//! the plan as text, or as JSON (`convjit::plan_json`).

use super::Failure;
pub use convjit::plan_text::describe;
use convjit::plan_text::Planned;
use convjit::Options;
use std::path::Path;

pub fn plan(
    file: &Path,
    layer: Option<&str>,
    weights: Option<&Path>,
    as_json: bool,
    options: &Options,
) -> Result<(), Failure> {
    // A code generator the CPU cannot run, or one that cannot compute the
    // precision, is the user's error: what `run` would refuse.
    let unsupported = |m| Failure::Input(convjit::JitError::Unsupported(m).into());
    options
        .backend
        .resolve()
        .and_then(|b| b.check_precision(options.precision))
        .map_err(unsupported)?;
    if weights.is_none() && matches!(options.separate, convjit::Separation::Rank(_)) {
        eprintln!(
            "note: --separate-rank approximates the kernels the weights give: without \
             --weights the plan shows the layer as written (run and bench separate their \
             seeded random weights)"
        );
    }
    let layers = match weights {
        // Weights belong to one layer: it must be named, or be the only one.
        Some(_) => vec![convjit::select_layer(convjit::load_layers(file)?, layer)?],
        None => super::layers(file, layer)?,
    };
    let weights = match weights {
        Some(path) => Some(convjit::load_weights(&layers[0], path)?),
        None => None,
    };
    for (i, l) in layers.iter().enumerate() {
        // With weights, what the JIT compiles: the layer with its rank-1
        // stages separated where the cost model expects a gain (unless
        // --no-separate), and why.
        let planned = Planned::new(l, weights.as_ref(), options);
        if as_json {
            println!("{}", planned.json());
        } else {
            if i > 0 {
                println!();
            }
            print!("{}", planned.text());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use convjit::plan_json::PlanJson;
    use convjit::plan_text::plan_text;
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
            let text = plan_text(&l, &p, &[], None);
            prop_assert!(text.contains(&l.name));
            let stages: Vec<_> = l.stages.iter().map(|s| s.name.clone())
                .zip(convjit::winograd_stages(&l, threads, convjit::Winograd::Always, None))
                .collect();
            let j = PlanJson {
                layer: &l,
                plan: &p,
                separation: &[],
                separation_cost: None,
                winograd: Some(&stages),
                refused: None,
            };
            let v: serde_json::Value = serde_json::from_str(&serde_json::to_string(&j).unwrap()).unwrap();
            prop_assert_eq!(v["stages"].as_array().unwrap().len(), l.stages.len());
            prop_assert!(v["winograd"]["used"].is_boolean());
            let summary = super::super::check::summary(&l);
            prop_assert!(summary.lines().count() == l.stages.len() + 1);
        }
    }
}
