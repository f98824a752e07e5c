//! `convjit plan FILE.conv [--layer NAME] [--json]`

use super::{thousands, Failure};
use convjit::{Activation, Layer, Stage};
use serde_json::json;
use std::path::Path;

pub fn plan(file: &Path, layer: Option<&str>, as_json: bool) -> Result<(), Failure> {
    for (i, l) in super::layers(file, layer)?.iter().enumerate() {
        if as_json {
            println!("{}", to_json(l));
        } else {
            if i > 0 {
                println!();
            }
            print!("{}", to_text(l));
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

fn to_text(l: &Layer) -> String {
    let mut out = format!(
        "layer {}: input {} -> output {}\n",
        l.name,
        l.input,
        l.output()
    );
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
        .map(|i| all.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    for r in all {
        out += &format!(
            "  {:w0$}  {:w1$}  {:>w2$}  {:>w3$}  {:>w4$}\n",
            r[0],
            r[1],
            r[2],
            r[3],
            r[4],
            w0 = w[0],
            w1 = w[1],
            w2 = w[2],
            w3 = w[3],
            w4 = w[4]
        );
    }
    out += &format!(
        "  fusion groups: {} (unfused: each stage reads and writes a full tensor)\n",
        groups(l)
            .iter()
            .map(|g| format!("[{}]", g.join(", ")))
            .collect::<Vec<_>>()
            .join(" ")
    );
    out += "  engine: reference interpreter (plain loop nest, no tiling)\n";
    out
}

/// One group per stage until the planner fuses stages.
fn groups(l: &Layer) -> Vec<Vec<&str>> {
    l.stages.iter().map(|s| vec![s.name.as_str()]).collect()
}

fn shape(s: convjit::Shape) -> serde_json::Value {
    json!([s.h, s.w, s.c])
}

pub fn to_json(l: &Layer) -> serde_json::Value {
    let stages: Vec<_> = l
        .stages
        .iter()
        .map(|s| {
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
            })
        })
        .collect();
    json!({
        "layer": l.name,
        "input": shape(l.input),
        "output": shape(l.output()),
        "macs": l.macs(),
        "stages": stages,
        "groups": groups(l),
        "engine": "interpreter",
    })
}
