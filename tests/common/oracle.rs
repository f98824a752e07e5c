//! The TensorFlow-checked reference vectors in `tests/oracle/` (copied from
//! the project's shared oracle; see its README.md), turned into `.conv`
//! text, weights and expected outputs. Shared by the library's, the JIT's
//! and the command line's tests (`#[path]`-included), so it depends only
//! on `convjit-ir`.
#![allow(dead_code)] // each including test uses a part

use convjit_ir::{Layer, Padding, StageWeights, Weights};
use serde_json::Value;
use std::path::{Path, PathBuf};

#[derive(Clone)]
pub struct Case {
    pub name: String,
    /// The layer as a user would write it.
    pub text: String,
    pub layer: Layer,
    pub weights: Weights,
    pub input: Vec<f32>,
    pub batch: usize,
    pub expected: Vec<f32>,
    pub atol: f32,
    /// `[[top, bottom], [left, right]]` per primitive stage, as TensorFlow resolved them.
    pub pads: Vec<Padding>,
}

pub fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(oracle_rel())
}

/// The oracle folder relative to the including crate's manifest.
fn oracle_rel() -> &'static str {
    if Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/oracle")
        .is_dir()
    {
        "tests/oracle"
    } else {
        "../../tests/oracle"
    }
}

pub fn cases() -> Vec<Case> {
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(dir().join("manifest.json")).unwrap())
            .unwrap();
    manifest["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(case)
        .collect()
}

fn floats(case: &str, file: &str) -> Vec<f32> {
    let bytes = std::fs::read(dir().join(case).join(file)).unwrap();
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

fn usizes(v: &Value) -> Vec<usize> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as usize)
        .collect()
}

fn case(c: &Value) -> Case {
    let name = c["name"].as_str().unwrap().to_string();
    let spec = &c["spec"];
    let kind = spec["kind"].as_str().unwrap();
    let stages = c["stages"].as_array().unwrap();
    let [n, h, w, ci] = usizes(&c["input_shape"])[..] else {
        panic!("input shape")
    };
    // Keras' SeparableConv2D has no bias or activation between its parts:
    // then the one-stage `separable depthwise` form says the same.
    let keras_separable =
        kind == "separable" && spec["mid_bias"] == false && spec["mid_activation"] == "none";
    let mut lines = vec![format!("  input {h}x{w}x{ci}")];
    if keras_separable {
        let (dw, pw) = (&stages[0], &stages[1]);
        let mut opts = vec![format!(
            "conv {} -> {}, separable depthwise, multiplier {}",
            kernel(dw),
            spec["C_out"],
            dw["depth_multiplier"]
        )];
        opts.extend(geometry(dw));
        opts.extend(epilogue(pw));
        lines.push(format!("  s: {}", opts.join(", ")));
    } else {
        for (i, s) in stages.iter().enumerate() {
            let wshape = usizes(&s["weights_shape"]);
            let pointwise = s["op"] == "conv"
                && kernel(s) == "1x1"
                && (kind == "pointwise" || kind == "separable");
            let mut opts = vec![if s["op"] == "dwconv" {
                format!(
                    "depthwise {}, multiplier {}",
                    kernel(s),
                    s["depth_multiplier"]
                )
            } else if pointwise {
                format!("pointwise {}", wshape[wshape.len() - 1])
            } else {
                format!("conv {} -> {}", kernel(s), wshape[3])
            }];
            if !pointwise {
                opts.extend(geometry(s));
            }
            opts.extend(epilogue(s));
            lines.push(format!("  s{i}: {}", opts.join(", ")));
        }
    }
    let text = format!("layer {name} {{\n{}\n}}\n", lines.join("\n"));
    let layer = convjit_ir::compile_source(&text)
        .unwrap_or_else(|d| panic!("{name}: {d:?}\n{text}"))
        .remove(0);
    let stage_weights = stages
        .iter()
        .map(|s| StageWeights {
            weight: floats(&name, s["weights"].as_str().unwrap()),
            bias: s["bias"].as_str().map(|b| floats(&name, b)),
        })
        .collect();
    let weights = Weights::new(&layer, stage_weights).unwrap_or_else(|e| panic!("{name}: {e}"));
    let pads = stages
        .iter()
        .map(|s| {
            let p = &s["pads"];
            let at = |i: usize, j: usize| p[i][j].as_u64().unwrap() as usize;
            Padding {
                top: at(0, 0),
                bottom: at(0, 1),
                left: at(1, 0),
                right: at(1, 1),
            }
        })
        .collect();
    Case {
        text,
        layer,
        weights,
        input: floats(&name, c["input"].as_str().unwrap()),
        batch: n,
        expected: floats(&name, c["expected"].as_str().unwrap()),
        atol: c["suggested_atol"].as_f64().unwrap() as f32,
        pads,
        name,
    }
}

fn kernel(s: &Value) -> String {
    let k = usizes(&s["kernel"]);
    format!("{}x{}", k[0], k[1])
}

fn geometry(s: &Value) -> Vec<String> {
    let st = usizes(&s["stride"]);
    let d = usizes(&s["dilation"]);
    let pad = match &s["padding"] {
        Value::String(p) => p.clone(),
        p => format!("{} {} {} {}", p[0][0], p[0][1], p[1][0], p[1][1]),
    };
    vec![
        format!("stride {}x{}", st[0], st[1]),
        format!("dilation {}x{}", d[0], d[1]),
        format!("pad {pad}"),
    ]
}

fn epilogue(s: &Value) -> Vec<String> {
    let mut v = Vec::new();
    if s["bias"].is_string() {
        v.push("bias".to_string());
    }
    match s["activation"].as_str().unwrap() {
        "none" => {}
        a => v.push(a.to_string()),
    }
    v
}

/// The largest `|got - want|`, and the index where it is, asserting the
/// lengths agree.
pub fn max_abs_diff(got: &[f32], want: &[f32]) -> (f32, usize) {
    assert_eq!(got.len(), want.len(), "lengths differ");
    got.iter()
        .zip(want)
        .enumerate()
        .map(|(i, (g, w))| ((g - w).abs(), i))
        .fold(
            (0.0, 0),
            |a, b| if b.0 > a.0 || b.0.is_nan() { b } else { a },
        )
}
