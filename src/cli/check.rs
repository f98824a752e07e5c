//! `convjit check FILE.conv`

use super::{pad, thousands, Align, Failure};
use convjit::Layer;
use std::path::Path;

pub fn check(file: &Path) -> Result<(), Failure> {
    let layers = convjit::load_layers(file)?;
    for l in &layers {
        print!("{}", summary(l));
    }
    Ok(())
}

/// The layer's name and shapes, then one line per stage.
pub fn summary(l: &Layer) -> String {
    let mut out = format!(
        "layer {}: {} -> {}, {} stage{}, {} MACs per image\n",
        l.name,
        l.input,
        l.output(),
        l.stages.len(),
        if l.stages.len() == 1 { "" } else { "s" },
        thousands(l.macs())
    );
    let width = l
        .stages
        .iter()
        .map(|s| s.name.chars().count())
        .max()
        .unwrap_or(0);
    for s in &l.stages {
        out += &format!(
            "  {}  {:>12} -> {:<12} {}\n",
            pad(&s.name, width, Align::Left),
            s.input.to_string(),
            s.output.to_string(),
            super::plan::describe(s)
        );
    }
    out
}
