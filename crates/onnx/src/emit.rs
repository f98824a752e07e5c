//! A chain as `.conv` text, and its weights in the contract's layouts.

use crate::chains::{Chain, Stage};
use crate::conv::Op;
use crate::model::Graph;
use crate::Error;
use convjit_ir::Activation;
use convjit_npy::Array;

/// The `layer NAME { ... }` block, with a comment saying where it came
/// from and, per stage, which nodes it computes.
pub fn layer_text(chain: &Chain) -> String {
    let first = &chain.stages[0].conv;
    let last = &chain.stages[chain.stages.len() - 1].conv;
    let mut out = format!(
        "# ONNX '{}' -> '{}' (NCHW [N, {}, {}, {}] -> [N, {}, {}, {}])\n",
        chain.input,
        chain.output,
        first.input.c,
        first.input.h,
        first.input.w,
        last.output.c,
        last.output.h,
        last.output.w
    );
    out += &format!("layer {} {{\n  input {}\n", chain.name, first.input);
    let lines: Vec<String> = chain.stages.iter().map(stage_text).collect();
    let width = lines.iter().map(String::len).max().unwrap_or(0);
    for (line, s) in lines.iter().zip(&chain.stages) {
        out += &format!("  {line:width$}  # {}\n", s.nodes.join(" + "));
    }
    out + "}\n"
}

/// `name: op, options`.
fn stage_text(s: &Stage) -> String {
    let c = &s.conv;
    let [kh, kw] = c.kernel;
    let mut parts = vec![match c.op {
        Op::Conv { .. } => format!("{}: conv {kh}x{kw} -> {}", s.name, c.cout()),
        Op::Depthwise { .. } => format!("{}: depthwise {kh}x{kw}", s.name),
        Op::Pointwise { .. } => format!("{}: pointwise {}", s.name, c.cout()),
    }];
    let pair = |v: [usize; 2]| {
        if v[0] == v[1] {
            v[0].to_string()
        } else {
            format!("{}x{}", v[0], v[1])
        }
    };
    if !matches!(c.op, Op::Pointwise { .. }) {
        if c.stride != [1, 1] {
            parts.push(format!("stride {}", pair(c.stride)));
        }
        // A 1x1 kernel reads one pixel whatever its dilation.
        if c.dilation != [1, 1] && c.kernel != [1, 1] {
            parts.push(format!("dilation {}", pair(c.dilation)));
        }
        let p = c.padding;
        if p != Default::default() {
            parts.push(if c.same {
                "pad same".to_string()
            } else {
                format!("pad {} {} {} {}", p.top, p.bottom, p.left, p.right)
            });
        }
    }
    match c.op {
        Op::Depthwise { multiplier } if multiplier > 1 => {
            parts.push(format!("multiplier {multiplier}"))
        }
        Op::Conv { groups } | Op::Pointwise { groups } if groups > 1 => {
            parts.push(format!("groups {groups}"))
        }
        _ => {}
    }
    if c.bias.is_some() || s.fold.is_some() {
        parts.push("bias".into());
    }
    match s.activation {
        Activation::None => {}
        Activation::Relu => parts.push("relu".into()),
        Activation::Relu6 => parts.push("relu6".into()),
    }
    if s.residual {
        parts.push("residual".into());
    }
    parts.join(", ")
}

/// `(key, array)` pairs for every stage of `chain`: ONNX's `[Co][Ci/G][Kh][Kw]`
/// weights as `[Kh][Kw][Ci/G][Co]` (for depthwise, with `Ci/G` = 1 and
/// `Co` = `C*M` ordered `c*M + m`, that is `[Kh][Kw][C][M]`; pointwise
/// drops the 1x1), scaled by a folded BatchNormalization, and the bias.
pub fn weights(g: &Graph, chain: &Chain) -> Result<Vec<(String, Array)>, Error> {
    let mut out = Vec::with_capacity(2 * chain.stages.len());
    for s in &chain.stages {
        let c = &s.conv;
        let constant = |name: &str| {
            g.constant(name)
                .ok_or_else(|| Error::new(format!("internal error: tensor '{name}' vanished")))
        };
        let w = constant(&c.weight)?.f32s()?;
        let (co, ci, [kh, kw]) = (c.cout(), c.input.c / c.groups, c.kernel);
        let scale = s.fold.as_ref().map(|f| f.scale.as_slice());
        let mut t = vec![0f32; w.len()];
        for o in 0..co {
            for i in 0..ci {
                for y in 0..kh {
                    for x in 0..kw {
                        let v = w[((o * ci + i) * kh + y) * kw + x];
                        t[((y * kw + x) * ci + i) * co + o] = match scale {
                            Some(sc) => (v as f64 * sc[o]) as f32,
                            None => v,
                        };
                    }
                }
            }
        }
        drop(w);
        out.push((
            format!("{}.weight", s.name),
            Array::new(c.weight_shape(), t),
        ));
        let bias = match &c.bias {
            Some(b) => Some(constant(b)?.f32s()?),
            None => None,
        };
        let bias = match (&s.fold, bias) {
            (Some(f), b) => Some(
                (0..co)
                    .map(|o| {
                        let b = b.as_ref().map_or(0.0, |b| b[o] as f64);
                        (b * f.scale[o] + f.shift[o]) as f32
                    })
                    .collect(),
            ),
            (None, b) => b,
        };
        if let Some(b) = bias {
            out.push((format!("{}.bias", s.name), Array::new(vec![co], b)));
        }
    }
    Ok(out)
}
