//! A layer of several stages whose 3x3 or 5x5 stride-1 convs run as Winograd's
//! (an imported ResNet bottleneck: 1x1, 3x3, 1x1 and the residual): the
//! layer is cut into kernels of its own at each such conv, the conv alone
//! (Winograd's), the stages between them as one direct kernel each, run
//! one after another as a [`Network`] (one arena of buffers). The layer's
//! residual, on its last stage, is added after the last kernel: the same
//! f32 add of the same two values the fused epilogue would make.
//!
//! Each kernel runs its own threads, and a Winograd kernel runs an image
//! whose sums are not finite the direct way itself, so the chain's outputs
//! are its kernels' as each is checked alone.

use super::{winograd_plan, Mode, WinogradPlan};
use crate::{JitError, Kernel, Network};
use convjit_ir::{Layer, Stage, Weights};
use convjit_plan::layer_plan::Options;

/// For each stage of `layer`, how it runs as Winograd's in `mode` (with
/// output tiles of side `tile`, or the planner's), or why it does not. A
/// lone stage is [`winograd_plan`]'s; in a longer layer
/// each stage is judged as a layer of its own, and none runs that way
/// where a stage before the last adds the layer's input.
pub fn winograd_stages(
    layer: &Layer,
    threads: usize,
    mode: Mode,
    tile: Option<usize>,
) -> Vec<Result<WinogradPlan, &'static str>> {
    if layer.stages.len() == 1 {
        return vec![winograd_plan(layer, threads, mode, tile)];
    }
    let last = layer.stages.len() - 1;
    if layer.stages[..last].iter().any(|s| s.residual) {
        let why = "a stage before the last adds the layer's input";
        return vec![Err(why); layer.stages.len()];
    }
    (0..layer.stages.len())
        .map(|k| winograd_plan(&part(layer, k..k + 1), threads, mode, tile))
        .collect()
}

/// Stages `range` of `layer` as a layer (no residual: the chain adds it).
fn part(layer: &Layer, range: std::ops::Range<usize>) -> Layer {
    let stages: Vec<Stage> = layer.stages[range.clone()]
        .iter()
        .map(|s| Stage {
            residual: false,
            ..s.clone()
        })
        .collect();
    let names: Vec<&str> = stages.iter().map(|s| s.name.as_str()).collect();
    Layer {
        name: format!("{}.{}", layer.name, names.join("+")),
        input: layer.stages[range.start].input,
        stages,
    }
}

pub(crate) struct Chain {
    /// The parts, run back to back in one arena (`Network`'s).
    net: Network,
    /// The layer's last stage adds its input (after its activation).
    residual: bool,
}

impl Chain {
    /// `None` where no stage of a layer of several runs as Winograd's.
    pub(crate) fn new(
        layer: &Layer,
        weights: &Weights,
        options: &Options,
    ) -> Result<Option<Chain>, JitError> {
        if layer.stages.len() < 2 {
            return Ok(None);
        }
        let plans = winograd_stages(layer, 1, options.winograd, options.winograd_tile);
        if plans.iter().all(Result::is_err) {
            return Ok(None);
        }
        // Cuts before and after each Winograd stage.
        let n = layer.stages.len();
        let mut cuts = vec![0];
        for (k, p) in plans.iter().enumerate() {
            if p.is_ok() {
                cuts.extend([k, k + 1]);
            }
        }
        cuts.push(n);
        cuts.dedup();
        let parts = cuts
            .windows(2)
            .map(|c| {
                let l = part(layer, c[0]..c[1]);
                let w = Weights::new(&l, weights.stages()[c[0]..c[1]].to_vec())?;
                Kernel::compile_with(&l, &w, options)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some(Chain {
            net: Network::new(parts)?,
            residual: layer.stages[n - 1].residual,
        }))
    }

    /// Bytes of the parts' weights.
    pub(crate) fn weight_bytes(&self) -> usize {
        self.net.kernels().iter().map(Kernel::weight_bytes).sum()
    }

    /// The plans of the parts that run as Winograd's, with their stages'
    /// names.
    pub(crate) fn plans(&self) -> Vec<(String, WinogradPlan)> {
        self.net
            .kernels()
            .iter()
            .filter_map(|k| Some((k.layer.stages[0].name.clone(), k.winograd()?)))
            .collect()
    }

    /// `batch` images of `input` into `output` (lengths checked again by
    /// the network), then the residual.
    pub(crate) fn run(
        &self,
        input: &[f32],
        output: &mut [f32],
        batch: usize,
    ) -> Result<(), JitError> {
        self.net.run(input, output, batch)?;
        // The residual's shape is the output's (the layer was validated).
        if self.residual {
            for (y, x) in output.iter_mut().zip(input) {
                *y += *x;
            }
        }
        Ok(())
    }
}
