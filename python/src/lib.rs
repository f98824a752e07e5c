//! `convjit._convjit`: the extension module under the Python package
//! `convjit` (`python/convjit/__init__.py` turns Python values into what
//! these functions take, and documents the API). Everything here goes
//! through the embedding library `convjit` (and `convjit-onnx` for
//! `import_onnx`), never the command line; error messages are the
//! library's, which the CLI prints after `error: `.
//!
//! A kernel runs with the GIL released, on the caller's buffers: the input
//! is read where NumPy holds it (C-contiguous float32, checked here) and
//! the output written in place.

use convjit::plan_text::Planned;
use convjit::{Backend, Layer, Options, Precision, Shape, Weights, Winograd};
use numpy::{
    PyArray1, PyArrayDyn, PyArrayMethods, PyReadonlyArrayDyn, PyUntypedArray, PyUntypedArrayMethods,
};
use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};
use std::collections::BTreeMap;

create_exception!(
    convjit,
    Error,
    PyException,
    "Base of every error convjit raises for wrong input."
);
create_exception!(
    convjit,
    LayerError,
    Error,
    "Bad .conv text (the FILE:LINE:COL diagnostic `convjit check` prints), or no such layer."
);
create_exception!(
    convjit,
    DataError,
    Error,
    "Weights, inputs or outputs that do not fit the layer (missing or unexpected keys, shapes), or a model file that cannot be read."
);
create_exception!(
    convjit,
    CompileError,
    Error,
    "The host cannot run the code generator or precision asked for, or the code would be too large."
);

/// The Python exception for a library error, with its message.
fn py_err(e: convjit::Error) -> PyErr {
    let message = e.to_string();
    match e {
        convjit::Error::Source { .. } | convjit::Error::NoSuchLayer { .. } => {
            LayerError::new_err(message)
        }
        convjit::Error::Io { .. } | convjit::Error::Data(_) => DataError::new_err(message),
        convjit::Error::Jit(_) => CompileError::new_err(message),
    }
}

fn data_err(what: &str, message: String) -> PyErr {
    py_err(convjit::DataError::tensor(what, message).into())
}

/// The layer of `source` (`.conv` text, or a path when `is_path`) called
/// `layer`, or its only one; a file is read with the GIL released (it may
/// be a FIFO or a slow mount: other Python threads run meanwhile).
fn load_layer(
    py: Python<'_>,
    source: &str,
    name: &str,
    is_path: bool,
    layer: Option<&str>,
) -> PyResult<Layer> {
    let layers = if is_path {
        py.detach(|| convjit::load_layers(source))
    } else {
        convjit::parse_layers(name, source)
    }
    .map_err(py_err)?;
    convjit::select_layer(layers, layer).map_err(py_err)
}

/// The shape `layer` reads under `key` (the stage reading it and the
/// shape), or `None` for a key no stage reads.
fn wanted_shape<'l>(layer: &'l Layer, key: &str) -> Option<(&'l convjit::Stage, Vec<usize>)> {
    layer.stages.iter().find_map(|s| {
        if s.weight_key == key {
            Some((s, s.weight_shape()))
        } else if s.bias_key.as_deref() == Some(key) {
            Some((s, vec![s.output.c]))
        } else {
            None
        }
    })
}

/// Whether `found` is the shape `want` that `stage` reads (a pointwise
/// weight may also come as `[1, 1, Ci, Co]`, as Keras saves it): the rule
/// of the library's `.npz` binding.
fn shape_fits(stage: &convjit::Stage, found: &[usize], want: &[usize]) -> bool {
    let keras_1x1 = matches!(stage.kind, convjit::StageKind::Pointwise { .. })
        && found.len() == 4
        && found[..2] == [1, 1]
        && found[2..] == *want;
    found == want || keras_1x1
}

/// The layer's weights: a dict of NumPy arrays of real numbers keyed as
/// in a `.npz`, a `.npz` path, or (neither) seeded random ones as
/// `convjit run` makes without `--weights` (seed 0).
///
/// A dict's arrays are checked against the layer by shape before any is
/// copied or converted (an array may be a view of far more values than
/// memory holds); a `.npz` is read with the GIL released.
fn load_weights(
    py: Python<'_>,
    layer: &Layer,
    arrays: Option<&Bound<'_, PyDict>>,
    path: Option<&str>,
) -> PyResult<Weights> {
    match (arrays, path) {
        (Some(dict), _) => {
            let mut given = Vec::with_capacity(dict.len());
            for (k, v) in dict.iter() {
                let key: String = k.extract()?;
                let a = v.cast_into::<PyUntypedArray>().map_err(|_| {
                    PyTypeError::new_err(format!("weights['{key}'] is not a NumPy array"))
                })?;
                let shape = a.shape().to_vec();
                if let Some((s, want)) = wanted_shape(layer, &key) {
                    if !shape_fits(s, &shape, &want) {
                        return Err(py_err(
                            convjit::DataError::Weights {
                                path: "weights".into(),
                                key: Some(key),
                                message: format!(
                                    "expected shape {want:?} for stage '{}' ({}), found {shape:?}",
                                    s.name,
                                    s.describe_op()
                                ),
                            }
                            .into(),
                        ));
                    }
                }
                given.push((key, shape, a));
            }
            // What the arrays the layer reads hold at most, as the
            // library's binding checks it.
            convjit::budget::check(
                format_args!("the weights of layer '{}'", layer.name),
                layer.weight_values().and_then(|n| n.checked_mul(4)),
            )
            .map_err(|e| py_err(e.into()))?;
            let mut map = BTreeMap::new();
            for (key, shape, a) in given {
                let array = if wanted_shape(layer, &key).is_some() {
                    // Its shape fits the layer: a bounded copy, in
                    // logical (C) order whatever the strides.
                    let a = match a.extract::<PyReadonlyArrayDyn<f32>>() {
                        Ok(f) if f.data().cast_const().is_aligned() => f,
                        _ => a.call_method1("astype", ("float32",))?.extract()?,
                    };
                    convjit::npy::Array::new(shape, a.as_array().iter().copied().collect())
                } else {
                    // A key no stage reads: the binding refuses it by
                    // name before reading any array, so its values are
                    // never copied (an empty stand-in).
                    convjit::npy::Array::new(vec![0], Vec::new())
                };
                map.insert(key, array);
            }
            Weights::from_arrays(layer, "weights", map).map_err(|e| py_err(e.into()))
        }
        (None, Some(p)) => py
            .detach(|| convjit::load_weights(layer, p))
            .map_err(py_err),
        (None, None) => Weights::try_random(layer, 0).map_err(|e| py_err(e.into())),
    }
}

fn parse_options(
    precision: &str,
    threads: Option<usize>,
    backend: &str,
    (winograd, winograd_tile): (&str, Option<usize>),
) -> PyResult<Options> {
    let precision = Precision::parse(precision).ok_or_else(|| {
        PyValueError::new_err(format!("'{precision}' is not a precision (f32, bf16)"))
    })?;
    let backend = Backend::parse(backend).ok_or_else(|| {
        PyValueError::new_err(format!(
            "'{backend}' is not a code generator (auto, cranelift, avx2, avx512)"
        ))
    })?;
    // The command line's range (`--threads`); `None`, every core.
    let threads = match threads {
        None => Options::default().threads,
        Some(t @ 1..=256) => t,
        Some(t) => {
            return Err(PyValueError::new_err(format!(
                "threads={t}: expected 1 to 256"
            )))
        }
    };
    let winograd = match winograd {
        "off" => Winograd::Off,
        "auto" => Winograd::Auto,
        "always" => Winograd::Always,
        w => {
            return Err(PyValueError::new_err(format!(
                "winograd='{w}': expected False, True, 'auto' or 'always'"
            )))
        }
    };
    match winograd_tile {
        Some(m) if m != 2 && m != 4 => {
            return Err(PyValueError::new_err(format!(
                "winograd_tile={m}: expected 2, 4 or None"
            )))
        }
        Some(_) if winograd == Winograd::Off => {
            return Err(PyValueError::new_err(
                "winograd_tile: needs winograd (True, 'auto' or 'always')",
            ))
        }
        _ => {}
    }
    Ok(Options {
        threads,
        backend,
        precision,
        winograd,
        winograd_tile,
        ..Options::default()
    })
}

/// The batch of an input of shape `found`, after checking that it is
/// `[N, H, W, C]` (N >= 1) or `[H, W, C]` (one image) of `s`, what `name`
/// reads.
fn batch_of_shape(s: Shape, name: &str, found: &[usize]) -> PyResult<usize> {
    match *found {
        [n, h, w, c] if n >= 1 && [h, w, c] == [s.h, s.w, s.c] => Ok(n),
        [h, w, c] if [h, w, c] == [s.h, s.w, s.c] => Ok(1),
        _ => Err(data_err(
            "x",
            format!(
                "expected float32 [N, {}, {}, {}] (NHWC, N >= 1) or [{}, {}, {}] for {name}, found {found:?}",
                s.h, s.w, s.c, s.h, s.w, s.c
            ),
        )),
    }
}

/// `x`'s batch, after checking that it is C-contiguous float32 of
/// `[N, H, W, C]` (N >= 1) or `[H, W, C]` (one image) of `s`, what
/// `name` reads.
fn batch_of(s: Shape, name: &str, x: &PyReadonlyArrayDyn<f32>) -> PyResult<usize> {
    let n = batch_of_shape(s, name, x.shape())?;
    if !x.is_c_contiguous() {
        return Err(data_err("x", "not C-contiguous".into()));
    }
    // A slice of f32 must be aligned (NumPy allows unaligned views).
    if !x.data().cast_const().is_aligned() {
        return Err(data_err("x", "not aligned to 4 bytes".into()));
    }
    Ok(n)
}

/// The output dims for `n` images of shape `o`, as `x` has them (3-D for
/// one image given as `[H, W, C]`).
fn out_dims(o: Shape, n: usize, x_ndim: usize) -> Vec<usize> {
    match x_ndim {
        3 => vec![o.h, o.w, o.c],
        _ => vec![n, o.h, o.w, o.c],
    }
}

/// Whether the bytes of `x` and `out` (both C-contiguous float32)
/// overlap.
fn overlap(x: &PyReadonlyArrayDyn<f32>, out: &Bound<'_, PyArrayDyn<f32>>) -> bool {
    let extent = |p: *mut f32, len: usize| {
        let start = p as usize;
        (
            start,
            start.saturating_add(len * std::mem::size_of::<f32>()),
        )
    };
    let (x0, x1) = extent(x.data(), x.len());
    let (o0, o1) = extent(out.data(), out.len());
    x0 < x1 && o0 < o1 && x0 < o1 && o0 < x1
}

/// Runs `run` (a kernel or a network from `input` to `output`, `name`
/// in messages) on `x` into `out` or a new array, with the GIL released:
/// both checked first (`Kernel.run` documents the rules).
fn run_checked<'py>(
    py: Python<'py>,
    (input, output, name): (Shape, Shape, &str),
    x: PyReadonlyArrayDyn<'py, f32>,
    out: Option<Bound<'py, PyArrayDyn<f32>>>,
    run: impl Fn(&[f32], &mut [f32], usize) -> Result<(), convjit::JitError> + Sync,
) -> PyResult<Bound<'py, PyArrayDyn<f32>>> {
    let n = batch_of(input, name, &x)?;
    let dims = out_dims(output, n, x.ndim());
    let out = match out {
        Some(out) => {
            if out.shape() != dims.as_slice() {
                return Err(data_err(
                    "out",
                    format!("expected float32 {dims:?}, found {:?}", out.shape()),
                ));
            }
            if !out.is_c_contiguous() {
                return Err(data_err("out", "not C-contiguous".into()));
            }
            if !out.data().cast_const().is_aligned() {
                return Err(data_err("out", "not aligned to 4 bytes".into()));
            }
            // By address: arrays over one buffer with different base
            // objects (two `np.frombuffer`s of one buffer, ctypes views)
            // escape NumPy's borrow flags below. Two mappings of one file
            // are at different addresses: `np.memmap`s are compared by
            // file in `convjit/__init__.py`; other mappings (two
            // `mmap.mmap`, `SharedMemory` attached twice) cannot be seen.
            if overlap(&x, &out) {
                return Err(data_err(
                    "out",
                    "memory shared with x (their bytes overlap): pass a separate array".into(),
                ));
            }
            out
        }
        // SAFETY: the kernel writes every value of its output before
        // the array is returned; on an error the array is dropped
        // unread.
        None => unsafe { PyArrayDyn::<f32>::new(py, dims, false) },
    };
    {
        let input = x.as_slice().map_err(|e| data_err("x", e.to_string()))?;
        // Refused when `out` shares memory with `x` (NumPy's borrow
        // flags see views of one base), is read-only, or is another
        // running call's output.
        let mut w = out.try_readwrite().map_err(|e| {
            data_err(
                "out",
                format!(
                    "cannot be written ({e}): it is read-only, shares memory with x, \
                     or another call is writing it"
                ),
            )
        })?;
        let output = w
            .as_slice_mut()
            .map_err(|e| data_err("out", e.to_string()))?;
        py.detach(|| run(input, output, n))
            .map_err(|e| py_err(e.into()))?;
    }
    Ok(out)
}

/// `(H, W, C)` of `s`.
fn hwc(py: Python<'_>, s: Shape) -> PyResult<Bound<'_, PyTuple>> {
    PyTuple::new(py, [s.h, s.w, s.c])
}

/// A compiled layer (`convjit.Kernel` wraps it). Immutable once made: any
/// number of Python threads may run it at once.
#[pyclass(frozen, module = "convjit._convjit")]
struct Kernel {
    kernel: convjit::Kernel,
    /// The layer as compiled (before any separation): its name, MACs.
    layer: Layer,
    /// What `convjit plan --weights` shows of it, made on request.
    planned: std::sync::OnceLock<Planned>,
    weights: Weights,
    options: Options,
}

#[pymethods]
impl Kernel {
    /// Runs the kernel on `x` (C-contiguous float32, `[N,H,W,C]` or
    /// `[H,W,C]`) into `out` (C-contiguous float32 of the output's shape)
    /// or a new array, with the GIL released.
    #[pyo3(signature = (x, out=None))]
    fn run<'py>(
        &self,
        py: Python<'py>,
        x: PyReadonlyArrayDyn<'py, f32>,
        out: Option<Bound<'py, PyArrayDyn<f32>>>,
    ) -> PyResult<Bound<'py, PyArrayDyn<f32>>> {
        let l = self.kernel.layer();
        let what = format!("layer '{}'", l.name);
        let k = &self.kernel;
        run_checked(py, (l.input, l.output(), &what), x, out, |i, o, n| {
            k.run(i, o, n)
        })
    }

    /// Checks the shape of an input (any dtype and layout) before it is
    /// converted, as `run` would check it.
    fn check_input(&self, x: &Bound<'_, PyUntypedArray>) -> PyResult<()> {
        let l = self.kernel.layer();
        batch_of_shape(l.input, &format!("layer '{}'", l.name), x.shape()).map(|_| ())
    }

    /// The text `convjit plan --weights` prints for this layer.
    fn plan_text(&self) -> String {
        self.planned().text()
    }

    /// The object `convjit plan --weights --json` prints, as JSON text.
    fn plan_json(&self) -> String {
        self.planned().json()
    }

    #[getter]
    fn input_shape<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        hwc(py, self.layer.input)
    }

    #[getter]
    fn output_shape<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        hwc(py, self.layer.output())
    }

    #[getter]
    fn macs(&self) -> u64 {
        self.layer.macs()
    }

    #[getter]
    fn backend(&self) -> String {
        self.kernel.backend().to_string()
    }

    #[getter]
    fn precision(&self) -> String {
        self.kernel.precision().to_string()
    }

    #[getter]
    fn threads(&self) -> usize {
        // The default (0) resolved: every core.
        self.options.resolved_threads(&convjit::Host::detect())
    }

    #[getter]
    fn name(&self) -> &str {
        &self.layer.name
    }

    /// Whether the layer runs as Winograd's (F(4x4, 3x3), F(2x2, 3x3) or F(2x2, 5x5)).
    #[getter]
    fn winograd(&self) -> bool {
        self.kernel.winograd().is_some()
    }
}

impl Kernel {
    fn planned(&self) -> &Planned {
        self.planned
            .get_or_init(|| Planned::new(&self.layer, Some(&self.weights), &self.options))
    }
}

/// Parses `source`, binds weights and compiles (the GIL released while
/// compiling).
#[pyfunction]
#[pyo3(signature = (source, name, is_path, layer, weights, weights_path, precision, threads, backend, winograd, winograd_tile))]
#[allow(clippy::too_many_arguments)]
fn compile(
    py: Python<'_>,
    source: &str,
    name: &str,
    is_path: bool,
    layer: Option<&str>,
    weights: Option<&Bound<'_, PyDict>>,
    weights_path: Option<&str>,
    precision: &str,
    threads: Option<usize>,
    backend: &str,
    winograd: &str,
    winograd_tile: Option<usize>,
) -> PyResult<Kernel> {
    let options = parse_options(precision, threads, backend, (winograd, winograd_tile))?;
    let layer = load_layer(py, source, name, is_path, layer)?;
    let weights = load_weights(py, &layer, weights, weights_path)?;
    let kernel = py
        .detach(|| convjit::Kernel::compile_with(&layer, &weights, &options))
        .map_err(|e| py_err(e.into()))?;
    Ok(Kernel {
        kernel,
        layer,
        planned: std::sync::OnceLock::new(),
        weights,
        options,
    })
}

/// Layers compiled together, run back to back with one call
/// (`convjit.Network` wraps it); immutable, like [`Kernel`].
#[pyclass(frozen, module = "convjit._convjit")]
struct Network {
    net: convjit::Network,
    /// The layers as compiled (before any separation): names, MACs.
    layers: Vec<Layer>,
    options: Options,
}

#[pymethods]
impl Network {
    /// Runs every layer on `x` into `out` or a new array, as `Kernel.run`.
    #[pyo3(signature = (x, out=None))]
    fn run<'py>(
        &self,
        py: Python<'py>,
        x: PyReadonlyArrayDyn<'py, f32>,
        out: Option<Bound<'py, PyArrayDyn<f32>>>,
    ) -> PyResult<Bound<'py, PyArrayDyn<f32>>> {
        let what = self.what();
        let net = &self.net;
        let shapes = (net.input(), net.output(), what.as_str());
        run_checked(py, shapes, x, out, |i, o, n| net.run(i, o, n))
    }

    /// Checks the shape of an input before it is converted, as `run`.
    fn check_input(&self, x: &Bound<'_, PyUntypedArray>) -> PyResult<()> {
        batch_of_shape(self.net.input(), &self.what(), x.shape()).map(|_| ())
    }

    #[getter]
    fn input_shape<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        hwc(py, self.net.input())
    }

    #[getter]
    fn output_shape<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        hwc(py, self.net.output())
    }

    #[getter]
    fn macs(&self) -> u64 {
        self.layers.iter().map(Layer::macs).sum()
    }

    #[getter]
    fn layers(&self) -> Vec<String> {
        self.layers.iter().map(|l| l.name.clone()).collect()
    }

    #[getter]
    fn backend(&self) -> String {
        self.net.kernels()[0].backend().to_string()
    }

    #[getter]
    fn precision(&self) -> String {
        self.net.kernels()[0].precision().to_string()
    }

    #[getter]
    fn threads(&self) -> usize {
        // The default (0) resolved: every core.
        self.options.resolved_threads(&convjit::Host::detect())
    }
}

impl Network {
    /// What messages call the network's input: its first layer's.
    fn what(&self) -> String {
        format!("layer '{}', the network's first", self.layers[0].name)
    }
}

/// The names of the layers of `source`, in order.
#[pyfunction]
fn layer_names(py: Python<'_>, source: &str, name: &str, is_path: bool) -> PyResult<Vec<String>> {
    let layers = match is_path {
        true => py.detach(|| convjit::load_layers(source)),
        false => convjit::parse_layers(name, source),
    }
    .map_err(py_err)?;
    Ok(layers.into_iter().map(|l| l.name).collect())
}

/// One layer of a network, as `compile` takes it: `(source, name,
/// is_path, layer, weights, weights_path)`.
type NetworkLayer<'py> = (
    String,
    String,
    bool,
    Option<String>,
    Option<Bound<'py, PyDict>>,
    Option<String>,
);

/// Compiles each layer as `compile` does and makes them one network
/// (each must read what the one before writes), the GIL released while
/// compiling.
#[pyfunction]
#[pyo3(signature = (layers, precision, threads, backend, winograd, winograd_tile))]
fn compile_network(
    py: Python<'_>,
    layers: Vec<NetworkLayer<'_>>,
    precision: &str,
    threads: Option<usize>,
    backend: &str,
    winograd: &str,
    winograd_tile: Option<usize>,
) -> PyResult<Network> {
    let options = parse_options(precision, threads, backend, (winograd, winograd_tile))?;
    let mut bound = Vec::with_capacity(layers.len());
    for (source, name, is_path, layer, weights, path) in &layers {
        let layer = load_layer(py, source, name, *is_path, layer.as_deref())?;
        let weights = load_weights(py, &layer, weights.as_ref(), path.as_deref())?;
        bound.push((layer, weights));
    }
    let net = py
        .detach(|| {
            let kernels = bound
                .iter()
                .map(|(l, w)| convjit::Kernel::compile_with(l, w, &options))
                .collect::<Result<Vec<_>, _>>()?;
            convjit::Network::new(kernels)
        })
        .map_err(|e| match e {
            // Layers that do not chain: the caller's data.
            convjit::JitError::Data(d) => py_err(d.into()),
            e => py_err(e.into()),
        })?;
    Ok(Network {
        net,
        layers: bound.into_iter().map(|(l, _)| l).collect(),
        options,
    })
}

/// The reference interpreter on `x` (f64 accumulation), as
/// `convjit run --engine interp`.
#[pyfunction]
///
/// `x` as given; `convert` (the package's `_input`) makes it the float32
/// array the interpreter reads, after its shape is checked against the
/// layer (a view of 10^10 values would be copied first). The source is
/// read once (a FIFO could not be read twice).
#[pyo3(signature = (source, name, is_path, layer, weights, weights_path, precision, x, convert))]
#[allow(clippy::too_many_arguments)]
fn interpret<'py>(
    py: Python<'py>,
    source: &str,
    name: &str,
    is_path: bool,
    layer: Option<&str>,
    weights: Option<&Bound<'py, PyDict>>,
    weights_path: Option<&str>,
    precision: &str,
    x: &Bound<'py, PyAny>,
    convert: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyArrayDyn<f32>>> {
    let precision = parse_options(precision, None, "auto", ("off", None))?.precision;
    let layer = load_layer(py, source, name, is_path, layer)?;
    let what = format!("layer '{}'", layer.name);
    let a = PyModule::import(py, "numpy")?
        .getattr("asarray")?
        .call1((x,))?
        .cast_into::<PyUntypedArray>()?;
    batch_of_shape(layer.input, &what, a.shape())?;
    let x: PyReadonlyArrayDyn<'py, f32> = convert.call1((a,))?.extract()?;
    let weights = load_weights(py, &layer, weights, weights_path)?;
    let n = batch_of(layer.input, &what, &x)?;
    let dims = out_dims(layer.output(), n, x.ndim());
    let input = x.as_slice().map_err(|e| data_err("x", e.to_string()))?;
    let out = py
        .detach(|| convjit::interpret_in(&layer, &weights, input, n, precision))
        .map_err(|e| py_err(e.into()))?;
    PyArray1::from_vec(py, out).reshape(dims)
}

/// The convolution chains of an ONNX model: per layer, `(name, .conv
/// text, weights dict, input shape, output shape, ONNX input, ONNX
/// output)`, and the importer's notes.
#[pyfunction]
#[pyo3(signature = (path, input_shape=None))]
fn import_onnx<'py>(
    py: Python<'py>,
    path: &str,
    input_shape: Option<[usize; 3]>,
) -> PyResult<(Bound<'py, PyList>, Vec<String>)> {
    let fail = |m: String| DataError::new_err(format!("{path}: {m}"));
    // Read with the GIL released: the path may be a FIFO or a slow mount.
    let bytes = py
        .detach(|| convjit_onnx::read_model(path))
        .map_err(|e| DataError::new_err(e.to_string()))?;
    let options = convjit_onnx::Options { input_shape };
    let imported = py
        .detach(|| convjit_onnx::import(bytes, &options))
        .map_err(|e| fail(e.to_string()))?;
    if imported.layers.is_empty() {
        return Err(fail(format!(
            "no convolution could be imported ({} Conv node{})",
            imported.conv_nodes,
            if imported.conv_nodes == 1 { "" } else { "s" }
        )));
    }
    let layers = PyList::empty(py);
    for (i, l) in imported.layers.iter().enumerate() {
        let weights = PyDict::new(py);
        for (key, a) in imported.arrays(i).map_err(|e| fail(e.to_string()))? {
            weights.set_item(key, PyArray1::from_vec(py, a.data).reshape(a.shape)?)?;
        }
        let (i_, o) = (l.layer.input, l.layer.output());
        layers.append((
            &l.layer.name,
            &l.text,
            weights,
            (i_.h, i_.w, i_.c),
            (o.h, o.w, o.c),
            &l.input,
            &l.output,
        ))?;
    }
    Ok((layers, imported.notes.clone()))
}

/// `(Ho, Wo, Co)` of the only layer of `.conv` text.
#[pyfunction]
fn output_shape(py: Python<'_>, text: &str) -> PyResult<(usize, usize, usize)> {
    let o = load_layer(py, text, "<string>", false, None)?.output();
    Ok((o.h, o.w, o.c))
}

#[pymodule]
fn _convjit(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("Error", py.get_type::<Error>())?;
    m.add("LayerError", py.get_type::<LayerError>())?;
    m.add("DataError", py.get_type::<DataError>())?;
    m.add("CompileError", py.get_type::<CompileError>())?;
    m.add_class::<Kernel>()?;
    m.add_class::<Network>()?;
    m.add_function(wrap_pyfunction!(compile_network, m)?)?;
    m.add_function(wrap_pyfunction!(layer_names, m)?)?;
    m.add_function(wrap_pyfunction!(compile, m)?)?;
    m.add_function(wrap_pyfunction!(interpret, m)?)?;
    m.add_function(wrap_pyfunction!(import_onnx, m)?)?;
    m.add_function(wrap_pyfunction!(output_shape, m)?)?;
    Ok(())
}
