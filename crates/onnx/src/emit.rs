//! A chain as `.conv` text, and its weights in the contract's layouts.

use crate::chains::{Chain, Stage};
use crate::conv::Op;
use crate::model::Graph;
use crate::Error;
use convjit_npy::LazyArray;

/// The `layer NAME { ... }` block, with a comment saying where it came
/// from and, per stage, which nodes it computes.
pub fn layer_text(chain: &Chain) -> String {
    let first = &chain.stages[0].conv;
    let last = &chain.stages[chain.stages.len() - 1].conv;
    let mut out = format!(
        "# ONNX '{}' -> '{}' (NCHW [N, {}, {}, {}] -> [N, {}, {}, {}])\n",
        printable(&chain.input),
        printable(&chain.output),
        first.input.c,
        first.input.h,
        first.input.w,
        last.output.c,
        last.output.h,
        last.output.w
    );
    out += &format!("layer {} {{\n  input {}\n", chain.name, first.input);
    let lines: Vec<String> = chain.stages.iter().map(stage_text).collect();
    let width = lines.iter().map(|l| l.chars().count()).max().unwrap_or(0);
    for (line, s) in lines.iter().zip(&chain.stages) {
        // Padded by hand: `{:width$}` panics past 65535 (a long node name).
        let fill = " ".repeat(width - line.chars().count());
        let nodes: Vec<String> = s.nodes.iter().map(|n| printable(n)).collect();
        out += &format!("  {line}{fill}  # {}\n", nodes.join(" + "));
    }
    out + "}\n"
}

/// The most characters of ONNX names a comment keeps: names of megabytes
/// made a `.conv` past the size `check` reads.
const MAX_COMMENT_NAME: usize = 200;

/// ONNX names in comments: control characters (a line break would end the
/// comment) and the invisible ones that reorder text as `?`, cut at
/// [`MAX_COMMENT_NAME`] characters (`...` and the length after).
fn printable(s: &str) -> String {
    let mut out: String = s
        .chars()
        .take(MAX_COMMENT_NAME)
        .map(|c| {
            if convjit_lang::acts_on_terminal(c) {
                '?'
            } else {
                c
            }
        })
        .collect();
    let n = s.chars().count();
    if n > MAX_COMMENT_NAME {
        out += &format!("... ({n} characters)");
    }
    out
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
    parts.extend(s.activation.keyword().map(String::from));
    if s.residual {
        parts.push("residual".into());
    }
    parts.join(", ")
}

/// Every stage's arrays, made while they are written (a layer's weights
/// are never all in memory at once): ONNX's `[Co][Ci/G][Kh][Kw]` weights as
/// `[Kh][Kw][Ci/G][Co]` (for depthwise, with `Ci/G` = 1 and `Co` = `C*M`
/// ordered `c*M + m`, that is `[Kh][Kw][C][M]`; pointwise drops the 1x1),
/// scaled by a folded BatchNormalization; and the bias.
pub fn weights<'m>(g: &Graph<'m>, chain: &Chain) -> Result<Vec<LazyArray<'m>>, Error> {
    let mut out = Vec::with_capacity(2 * chain.stages.len());
    for s in &chain.stages {
        let c = &s.conv;
        let constant = |name: &str| {
            g.constant(name)
                .ok_or_else(|| Error::new(format!("internal error: tensor '{name}' vanished")))
        };
        let w = constant(&c.weight)?.f32_view()?;
        let (co, ci, [kh, kw]) = (c.cout(), c.input.c / c.groups, c.kernel);
        let scale = s.fold.as_ref().map(|f| f.scale.clone());
        out.push(LazyArray {
            key: format!("{}.weight", s.name),
            shape: c.weight_shape(),
            fill: Box::new(move |start, values: &mut [f32]| {
                for (j, v) in (start..).zip(values.iter_mut()) {
                    // Position j of [Kh][Kw][Ci/G][Co] reads [Co][Ci/G][Kh][Kw].
                    let (o, rest) = (j % co, j / co);
                    let (i, rest) = (rest % ci, rest / ci);
                    let (x, y) = (rest % kw, rest / kw);
                    let w = w.get(((o * ci + i) * kh + y) * kw + x);
                    *v = match &scale {
                        Some(sc) => (w as f64 * sc[o]) as f32,
                        None => w,
                    };
                }
            }),
        });
        let bias = match &c.bias {
            Some(b) => Some(constant(b)?.f32s()?),
            None => None,
        };
        let bias: Option<Vec<f32>> = match (&s.fold, bias) {
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
            out.push(LazyArray {
                key: format!("{}.bias", s.name),
                shape: vec![co],
                fill: Box::new(move |start, values: &mut [f32]| {
                    values.copy_from_slice(&b[start..start + values.len()])
                }),
            });
        }
    }
    Ok(out)
}
