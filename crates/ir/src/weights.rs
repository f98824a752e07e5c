//! Weights bound to a layer's stages, checked against the shapes the
//! stages need, in the contract's (TensorFlow) layouts.

use crate::error::{shape_str, DataError};
use crate::layer::{Layer, Stage, StageKind};
use crate::random::Rng;
use convjit_npy::{Array, NpzArchive};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// One stage's arrays, in the contract's layout (see [`Stage::weight_shape`]).
#[derive(Clone, Debug, PartialEq)]
pub struct StageWeights {
    /// The weight array ([`Stage::weight_shape`]).
    pub weight: Vec<f32>,
    /// The bias, one per output channel, if the stage has one.
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

    /// Each stage's arrays, in stage order.
    pub fn stages(&self) -> &[StageWeights] {
        &self.stages
    }

    /// Checks that these weights fit `layer` (they may have been made for another).
    pub fn check(&self, layer: &Layer) -> Result<(), DataError> {
        check_all(layer, &self.stages)
    }

    /// [`Weights::random`], refused when the layer's weights would not fit
    /// in memory ([`crate::budget`]).
    pub fn try_random(layer: &Layer, seed: u64) -> Result<Weights, DataError> {
        crate::check_layer(layer)?;
        crate::budget::check(
            format_args!("the weights of layer '{}'", layer.name),
            layer.weight_values().and_then(|n| n.checked_mul(4)),
        )?;
        Ok(Weights::random(layer, seed))
    }

    /// Seeded random weights, scaled by 1/sqrt(fan-in) so that outputs keep
    /// a magnitude near that of the inputs, however deep the layer. (For
    /// weights whose size the caller has not bounded, [`Weights::try_random`].)
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
    /// the key, the expected shape and the shape found, found from the
    /// archive's directory and the arrays' headers before any array is
    /// inflated: memory is what the layer's weights need, whatever else
    /// the archive holds.
    pub fn from_npz(layer: &Layer, npz: &mut NpzArchive) -> Result<Weights, DataError> {
        bind(layer, npz)
    }

    /// Binds arrays already in memory (keyed as in a `.npz`: the Python
    /// package's dict of NumPy arrays) to the layer's stages, with the
    /// checks and messages of [`Weights::from_npz`]; `origin` stands where
    /// those name the archive.
    pub fn from_arrays(
        layer: &Layer,
        origin: impl AsRef<Path>,
        arrays: BTreeMap<String, Array>,
    ) -> Result<Weights, DataError> {
        bind(
            layer,
            &mut InMemory {
                origin: origin.as_ref().to_path_buf(),
                arrays,
            },
        )
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

/// Where [`bind`] finds arrays by key: an archive, read as needed, or
/// arrays in memory.
trait ArraySource {
    /// What messages name as the archive.
    fn origin(&self) -> &Path;
    /// The keys, sorted.
    fn keys(&self) -> Vec<&str>;
    fn contains(&self, key: &str) -> bool;
    /// The shape of `key` (`None`: no such key).
    fn shape(&mut self, key: &str) -> Result<Option<Vec<usize>>, DataError>;
    /// The values of `key` (present: [`ArraySource::contains`]).
    fn take(&mut self, key: &str) -> Result<Vec<f32>, DataError>;
}

impl ArraySource for NpzArchive {
    fn origin(&self) -> &Path {
        self.path()
    }
    fn keys(&self) -> Vec<&str> {
        NpzArchive::keys(self).collect()
    }
    fn contains(&self, key: &str) -> bool {
        NpzArchive::contains(self, key)
    }
    fn shape(&mut self, key: &str) -> Result<Option<Vec<usize>>, DataError> {
        Ok(NpzArchive::shape(self, key)?)
    }
    fn take(&mut self, key: &str) -> Result<Vec<f32>, DataError> {
        Ok(self.read(key)?.data)
    }
}

/// [`Weights::from_arrays`]' arrays.
struct InMemory {
    origin: PathBuf,
    arrays: BTreeMap<String, Array>,
}

impl ArraySource for InMemory {
    fn origin(&self) -> &Path {
        &self.origin
    }
    fn keys(&self) -> Vec<&str> {
        self.arrays.keys().map(String::as_str).collect()
    }
    fn contains(&self, key: &str) -> bool {
        self.arrays.contains_key(key)
    }
    fn shape(&mut self, key: &str) -> Result<Option<Vec<usize>>, DataError> {
        Ok(self.arrays.get(key).map(|a| a.shape.clone()))
    }
    fn take(&mut self, key: &str) -> Result<Vec<f32>, DataError> {
        // A key is taken once (weight and bias keys differ): no copy.
        Ok(self.arrays.remove(key).map(|a| a.data).unwrap_or_default())
    }
}

/// [`Weights::from_npz`] and [`Weights::from_arrays`]: every key checked
/// (missing, unexpected, shape) before any array is read.
fn bind(layer: &Layer, npz: &mut impl ArraySource) -> Result<Weights, DataError> {
    let path = npz.origin().to_path_buf();
    // (stage, key, shape wanted) of every array the layer reads.
    let mut wanted = Vec::with_capacity(2 * layer.stages.len());
    for s in &layer.stages {
        wanted.push((s, s.weight_key.as_str(), s.weight_shape()));
        if let Some(key) = &s.bias_key {
            wanted.push((s, key.as_str(), vec![s.output.c]));
        }
    }
    for &(s, key, ref want) in &wanted {
        if !npz.contains(key) {
            return Err(DataError::weights(
                &path,
                key,
                format!(
                    "missing: {} needs float32 {}; layer '{}' uses {}",
                    what(s),
                    shape_str(want),
                    layer.name,
                    expected_keys(layer).join(", ")
                ),
            ));
        }
    }
    let used: BTreeSet<&str> = wanted.iter().map(|w| w.1).collect();
    if let Some(extra) = npz.keys().into_iter().find(|k| !used.contains(k)) {
        let mut message = format!(
            "unexpected array: layer '{}' uses only {}",
            layer.name,
            expected_keys(layer).join(", ")
        );
        if let Some(stage) = extra.strip_suffix(".bias") {
            message += &format!(" (does stage '{stage}' lack the 'bias' option?)");
        }
        return Err(DataError::weights(&path, extra, message));
    }
    crate::budget::check(
        format_args!("the weights of layer '{}'", layer.name),
        layer.weight_values().and_then(|n| n.checked_mul(4)),
    )?;
    for &(s, key, ref want) in &wanted {
        let found = npz.shape(key)?.unwrap_or_default();
        if !shape_fits(s, &found, want) {
            return Err(DataError::weights(
                &path,
                key,
                format!(
                    "expected shape {} for {}, found {}",
                    shape_str(want),
                    what(s),
                    shape_str(&found)
                ),
            ));
        }
    }
    let mut stages: Vec<StageWeights> = Vec::with_capacity(layer.stages.len());
    for (s, key, _) in wanted {
        let data = npz.take(key)?;
        match stages.last_mut() {
            Some(last) if s.bias_key.as_deref() == Some(key) => last.bias = Some(data),
            _ => stages.push(StageWeights {
                weight: data,
                bias: None,
            }),
        }
    }
    Weights::new(layer, stages)
}

/// Every stage's arrays have the lengths `layer` needs.
fn check_all(layer: &Layer, stages: &[StageWeights]) -> Result<(), DataError> {
    // A hand-built layer (public fields) must be one `lower` could give.
    crate::check_layer(layer)?;
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

/// `stage 'NAME' (op)`, as messages name a stage.
fn what(stage: &Stage) -> String {
    format!("stage '{}' ({})", stage.name, stage.describe_op())
}

/// Whether an array of shape `found` is the `want` a stage reads (a
/// pointwise weight may also come as `[1, 1, Ci, Co]`, as Keras saves it).
fn shape_fits(stage: &Stage, found: &[usize], want: &[usize]) -> bool {
    let keras_1x1 = matches!(stage.kind, StageKind::Pointwise { .. })
        && found.len() == 4
        && found[..2] == [1, 1]
        && found[2..] == *want;
    found == want || keras_1x1
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A `.npy` header declaring float32 `shape`, followed by `body`.
    fn npy(shape: &str, body: &[u8]) -> Vec<u8> {
        let mut dict = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}");
        while (10 + dict.len() + 1) % 64 != 0 {
            dict.push(' ');
        }
        dict.push('\n');
        let mut out = b"\x93NUMPY\x01\x00".to_vec();
        out.extend_from_slice(&(dict.len() as u16).to_le_bytes());
        out.extend_from_slice(dict.as_bytes());
        out.extend_from_slice(body);
        out
    }

    /// An archive of `members` (name, bytes), deflated.
    fn archive(members: &[(&str, Vec<u8>)]) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        let mut zip = zip::ZipWriter::new(f.reopen().unwrap());
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        for (name, bytes) in members {
            zip.start_file(*name, opts).unwrap();
            zip.write_all(bytes).unwrap();
        }
        zip.finish().unwrap();
        f
    }

    fn layer() -> Layer {
        crate::compile_source("layer l { input 4x4x2\n d: depthwise 3x3, pad same, bias }")
            .unwrap()
            .remove(0)
    }

    fn load(f: &tempfile::NamedTempFile) -> Result<Weights, DataError> {
        Weights::from_npz(&layer(), &mut NpzArchive::open(f.path()).unwrap())
    }

    fn floats(n: usize) -> Vec<u8> {
        (0..n).flat_map(|i| (i as f32).to_le_bytes()).collect()
    }

    /// Arrays in memory are bound with the archive's checks and messages,
    /// `origin` standing for the archive's path.
    #[test]
    fn arrays_in_memory_bind_as_an_archive_does() {
        let array = |shape: Vec<usize>| {
            let n = shape.iter().product();
            Array::new(shape, (0..n).map(|i| i as f32).collect())
        };
        let arrays = |entries: &[(&str, Vec<usize>)]| -> BTreeMap<String, Array> {
            entries
                .iter()
                .map(|(k, s)| (k.to_string(), array(s.clone())))
                .collect()
        };
        let good = arrays(&[("d.weight", vec![3, 3, 2, 1]), ("d.bias", vec![2])]);
        let w = Weights::from_arrays(&layer(), "weights", good).unwrap();
        assert_eq!(w.stages()[0].weight[17], 17.0);
        assert_eq!(w.stages()[0].bias.as_deref(), Some(&[0.0, 1.0][..]));

        let f = archive(&[("d.weight.npy", npy("(3, 3, 2, 1)", &floats(18)))]);
        let from_file = load(&f).unwrap_err().to_string();
        let path = f.path().display().to_string();
        for (entries, message) in [
            (
                vec![("d.weight", vec![3, 3, 2, 1])],
                from_file.replace(&path, "weights"),
            ),
            (
                vec![("d.weight", vec![3, 3, 2]), ("d.bias", vec![2])],
                "weights: key 'd.weight': expected shape [3, 3, 2, 1] for stage 'd' \
                 (depthwise 3x3), found [3, 3, 2]"
                    .to_string(),
            ),
        ] {
            let e = Weights::from_arrays(&layer(), "weights", arrays(&entries)).unwrap_err();
            assert_eq!(e.to_string(), message);
        }
        let extra = arrays(&[
            ("d.weight", vec![3, 3, 2, 1]),
            ("d.bias", vec![2]),
            ("e.bias", vec![2]),
        ]);
        let e = Weights::from_arrays(&layer(), "weights", extra).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("weights: key 'e.bias': unexpected array"),
            "{e}"
        );
    }

    #[test]
    fn binds_arrays_by_key() {
        let f = archive(&[
            ("d.weight.npy", npy("(3, 3, 2, 1)", &floats(18))),
            ("d.bias.npy", npy("(2,)", &floats(2))),
        ]);
        let w = load(&f).unwrap();
        assert_eq!(w.stages()[0].weight[17], 17.0);
        assert_eq!(w.stages()[0].bias.as_deref(), Some(&[0.0, 1.0][..]));
    }

    /// Members that a read would fail on (bodies cut short of a shape of
    /// 2^28 floats) give the error about their name or shape: nothing
    /// was inflated past a header.
    #[test]
    fn names_and_shapes_are_checked_before_any_member_is_inflated() {
        let huge = || npy("(268435456,)", &[0; 100]);
        let good = || npy("(3, 3, 2, 1)", &floats(18));
        let bias = || npy("(2,)", &floats(2));
        let f = archive(&[
            ("d.weight.npy", good()),
            ("d.bias.npy", bias()),
            ("unused.npy", huge()),
        ]);
        let e = load(&f).unwrap_err().to_string();
        assert!(e.contains("key 'unused': unexpected array"), "{e}");
        let f = archive(&[("d.weight.npy", huge()), ("d.bias.npy", bias())]);
        let e = load(&f).unwrap_err().to_string();
        assert!(
            e.contains("key 'd.weight': expected shape [3, 3, 2, 1]"),
            "{e}"
        );
        assert!(e.contains("found [268435456]"), "{e}");
        let f = archive(&[("d.weight.npy", good())]);
        let e = load(&f).unwrap_err().to_string();
        assert!(e.contains("key 'd.bias': missing"), "{e}");
    }

    #[test]
    fn a_member_longer_than_its_shape_is_refused_without_inflating_the_rest() {
        let mut body = floats(18);
        body.extend(vec![0u8; 8 << 20]);
        let f = archive(&[
            ("d.weight.npy", npy("(3, 3, 2, 1)", &body)),
            ("d.bias.npy", npy("(2,)", &floats(2))),
        ]);
        let e = load(&f).unwrap_err().to_string();
        assert!(e.contains("too long"), "{e}");
    }
}
