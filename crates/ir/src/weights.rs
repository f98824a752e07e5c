//! Weights bound to a layer's stages, checked against the shapes the
//! stages need, in the contract's (TensorFlow) layouts.

use crate::error::{shape_str, DataError};
use crate::layer::{Layer, Stage, StageKind};
use crate::random::Rng;
use convjit_npy::{Array, Npz};
use std::collections::BTreeSet;

/// One stage's arrays, in the contract's layout (see [`Stage::weight_shape`]).
#[derive(Clone, Debug, PartialEq)]
pub struct StageWeights {
    pub weight: Vec<f32>,
    pub bias: Option<Vec<f32>>,
}

/// Arrays for every stage of one layer, in stage order. Constructed only
/// through checks, so every length fits the layer it was made for.
#[derive(Clone, Debug, PartialEq)]
pub struct Weights {
    stages: Vec<StageWeights>,
}

impl Weights {
    /// Checks each stage's arrays against `layer`.
    pub fn new(layer: &Layer, stages: Vec<StageWeights>) -> Result<Weights, DataError> {
        check_all(layer, &stages)?;
        Ok(Weights { stages })
    }

    pub fn stages(&self) -> &[StageWeights] {
        &self.stages
    }

    /// Checks that these weights fit `layer` (they may have been made for another).
    pub fn check(&self, layer: &Layer) -> Result<(), DataError> {
        check_all(layer, &self.stages)
    }

    /// Seeded random weights, scaled by 1/sqrt(fan-in) so that outputs keep
    /// a magnitude near that of the inputs, however deep the layer.
    pub fn random(layer: &Layer, seed: u64) -> Weights {
        let mut rng = Rng::new(seed);
        let stages = layer
            .stages
            .iter()
            .map(|s| {
                let fan_in = s.kernel[0]
                    * s.kernel[1]
                    * match s.kind {
                        StageKind::Depthwise { .. } => 1,
                        _ => s.input.c,
                    };
                let scale = 1.0 / (fan_in as f32).sqrt();
                StageWeights {
                    weight: rng.vec(s.weight_len(), scale),
                    bias: s.bias_key.as_ref().map(|_| rng.vec(s.output.c, 0.1)),
                }
            })
            .collect();
        Weights { stages }
    }

    /// Binds the arrays of a `.npz` archive to the layer's stages by key.
    /// Every missing, unexpected or mis-shaped array is an error naming
    /// the key, the expected shape and the shape found.
    pub fn from_npz(layer: &Layer, npz: &Npz) -> Result<Weights, DataError> {
        let path = npz.path();
        let mut used = BTreeSet::new();
        let mut stages = Vec::with_capacity(layer.stages.len());
        for s in &layer.stages {
            let weight = take(npz, s, &s.weight_key, &s.weight_shape(), layer)?;
            used.insert(s.weight_key.as_str());
            let bias = match &s.bias_key {
                Some(key) => {
                    used.insert(key.as_str());
                    Some(take(npz, s, key, &[s.output.c], layer)?)
                }
                None => None,
            };
            stages.push(StageWeights { weight, bias });
        }
        if let Some(extra) = npz.keys().find(|k| !used.contains(k)) {
            let mut message = format!(
                "unexpected array: layer '{}' uses only {}",
                layer.name,
                expected_keys(layer).join(", ")
            );
            if let Some(stage) = extra.strip_suffix(".bias") {
                message += &format!(" (does stage '{stage}' lack the 'bias' option?)");
            }
            return Err(DataError::weights(path, extra, message));
        }
        Ok(Weights { stages })
    }

    /// `(key, array)` pairs in the contract's layout, ready for `write_npz`.
    pub fn to_arrays(&self, layer: &Layer) -> Vec<(String, Array)> {
        let mut out = Vec::new();
        for (s, w) in layer.stages.iter().zip(&self.stages) {
            out.push((
                s.weight_key.clone(),
                Array::new(s.weight_shape(), w.weight.clone()),
            ));
            if let (Some(key), Some(b)) = (&s.bias_key, &w.bias) {
                out.push((key.clone(), Array::new(vec![b.len()], b.clone())));
            }
        }
        out
    }
}

/// Every stage's arrays have the lengths `layer` needs.
fn check_all(layer: &Layer, stages: &[StageWeights]) -> Result<(), DataError> {
    if stages.len() != layer.stages.len() {
        return Err(DataError::tensor(
            "weights",
            format!(
                "layer '{}' has {} primitive stages, {} were given",
                layer.name,
                layer.stages.len(),
                stages.len()
            ),
        ));
    }
    for (s, w) in layer.stages.iter().zip(stages) {
        check_len(s, w)?;
    }
    Ok(())
}

fn expected_keys(layer: &Layer) -> Vec<String> {
    layer
        .stages
        .iter()
        .flat_map(|s| std::iter::once(s.weight_key.clone()).chain(s.bias_key.clone()))
        .map(|k| format!("'{k}'"))
        .collect()
}

/// The array under `key`, which must have shape `want` (a pointwise
/// weight may also come as `[1, 1, Ci, Co]`, as Keras saves it).
fn take(
    npz: &Npz,
    stage: &Stage,
    key: &str,
    want: &[usize],
    layer: &Layer,
) -> Result<Vec<f32>, DataError> {
    let what = format!("stage '{}' ({})", stage.name, stage.describe_op());
    let Some(a) = npz.get(key) else {
        return Err(DataError::weights(
            npz.path(),
            key,
            format!(
                "missing: {what} needs float32 {}; layer '{}' uses {}",
                shape_str(want),
                layer.name,
                expected_keys(layer).join(", ")
            ),
        ));
    };
    let keras_1x1 = matches!(stage.kind, StageKind::Pointwise { .. })
        && a.shape.len() == 4
        && a.shape[..2] == [1, 1]
        && a.shape[2..] == *want;
    if a.shape != want && !keras_1x1 {
        return Err(DataError::weights(
            npz.path(),
            key,
            format!(
                "expected shape {} for {what}, found {}",
                shape_str(want),
                shape_str(&a.shape)
            ),
        ));
    }
    Ok(a.data.clone())
}

fn check_len(s: &Stage, w: &StageWeights) -> Result<(), DataError> {
    if w.weight.len() != s.weight_len() {
        return Err(DataError::tensor(
            format!("weights of stage '{}'", s.name),
            format!(
                "expected {} values (shape {}), found {}",
                s.weight_len(),
                shape_str(&s.weight_shape()),
                w.weight.len()
            ),
        ));
    }
    let want_bias = s.bias_key.as_ref().map(|_| s.output.c);
    let got_bias = w.bias.as_ref().map(Vec::len);
    if want_bias != got_bias {
        let say = |n: Option<usize>| n.map_or("no bias".to_string(), |n| format!("{n} values"));
        return Err(DataError::tensor(
            format!("bias of stage '{}'", s.name),
            format!("expected {}, found {}", say(want_bias), say(got_bias)),
        ));
    }
    Ok(())
}
