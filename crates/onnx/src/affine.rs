//! Per-channel scale and shift after a convolution, folded into its
//! weights and bias: `y = x * scale + shift` for each output channel. An
//! inference-mode `BatchNormalization` is one; so is a `Mul`, `Add`, `Sub`
//! (either side) or `Div` (by a constant) whose other input is a constant
//! that varies along channels only (a BatchNormalization written out as
//! `Unsqueeze`/`Mul`/`Add`, a scale layer). Steps compose: each one's
//! scale multiplies the fold's, and its shift is added after.

use crate::attrs::Attrs;
use crate::model::{describe, is_default_domain, Graph};
use crate::proto::NodeProto;
use crate::Error;

/// `y = x * scale + shift`, per channel.
#[derive(Clone, Debug)]
pub struct Fold {
    pub scale: Vec<f64>,
    pub shift: Vec<f64>,
}

impl Fold {
    /// The fold that changes nothing.
    pub fn identity(channels: usize) -> Fold {
        Fold {
            scale: vec![1.0; channels],
            shift: vec![0.0; channels],
        }
    }

    /// This fold followed by `step`.
    pub fn then(&mut self, step: &Fold) {
        for c in 0..self.scale.len() {
            self.scale[c] *= step.scale[c];
            self.shift[c] = self.shift[c] * step.scale[c] + step.shift[c];
        }
    }
}

/// Node `op` applied to `tensor` (an NCHW tensor of `channels` channels)
/// as a per-channel step, or `None` when it is not one: another op, the
/// other input not a float constant, a constant that varies along another
/// axis or would broadcast the tensor to a larger shape, a constant
/// divided by the tensor, or a step that is not finite.
pub fn channel_step(
    g: &Graph,
    op: &NodeProto,
    tensor: &str,
    channels: usize,
) -> Result<Option<Fold>, Error> {
    let kind = op.op_type();
    if !is_default_domain(op) || !["Mul", "Add", "Sub", "Div"].contains(&kind) {
        return Ok(None);
    }
    let [a, b] = op.input.as_slice() else {
        return Ok(None);
    };
    let (first, other) = match (a == tensor, b == tensor) {
        (true, false) => (true, b),
        (false, true) => (false, a),
        _ => return Ok(None),
    };
    let Some(c) = g.constant(other) else {
        return Ok(None);
    };
    if c.check_f32s().is_err() {
        return Ok(None);
    }
    // Right-aligned against [N, C, H, W]: 1 everywhere but along C.
    let dims = c.dims()?;
    if dims.len() > 4 {
        return Ok(None);
    }
    let mut per_channel = false;
    for k in 0..4 {
        let Some(i) = (k + dims.len()).checked_sub(4) else {
            continue;
        };
        match dims[i] {
            1 => {}
            d if k == 1 && d == channels => per_channel = true,
            _ => return Ok(None),
        }
    }
    // Every other dim is 1: the values are one per channel, or one.
    let values = c.f32s()?;
    let v = |ch: usize| values[if per_channel { ch } else { 0 }] as f64;
    let (scale, shift): (Vec<f64>, Vec<f64>) = (0..channels)
        .map(|ch| match (kind, first) {
            ("Mul", _) => (v(ch), 0.0),
            ("Add", _) => (1.0, v(ch)),
            ("Sub", true) => (1.0, -v(ch)),
            ("Sub", false) => (-1.0, v(ch)),
            ("Div", true) => (1.0 / v(ch), 0.0),
            _ => (f64::NAN, f64::NAN), // a constant divided by the tensor
        })
        .unzip();
    if scale.iter().chain(&shift).any(|x| !x.is_finite()) {
        return Ok(None);
    }
    Ok(Some(Fold { scale, shift }))
}

/// The fold of an inference-mode BatchNormalization over `channels`, or
/// `None` when it cannot be folded (parameters computed in the graph,
/// training mode, extra outputs in use).
pub fn batch_norm(g: &Graph, bn: &NodeProto, channels: usize) -> Result<Option<Fold>, Error> {
    let attrs = Attrs::new(bn);
    if attrs.int("training_mode")?.unwrap_or(0) != 0 {
        return Ok(None);
    }
    let extra_in_use = bn
        .output
        .iter()
        .skip(1)
        .any(|o| !o.is_empty() && (!g.consumers(o).is_empty() || g.is_output(o)));
    if extra_in_use || bn.input.len() != 5 {
        return Ok(None);
    }
    let mut params = Vec::with_capacity(4);
    for name in &bn.input[1..] {
        let Some(c) = g.constant(name) else {
            return Ok(None);
        };
        // Checked before the values are read: a folded constant may say
        // it is larger than it is stored.
        if c.len()? != channels {
            return Err(Error::new(format!(
                "{}: '{name}' has {} values for {channels} channels",
                describe(bn),
                c.len()?
            )));
        }
        let v = c.f32s()?;
        if v.len() != channels {
            return Err(Error::new(format!(
                "{}: '{name}' has {} values for {channels} channels",
                describe(bn),
                v.len()
            )));
        }
        params.push(v);
    }
    let epsilon = attrs.float("epsilon")?.unwrap_or(1e-5) as f64;
    let (gamma, beta, mean, var) = (&params[0], &params[1], &params[2], &params[3]);
    let scale: Vec<f64> = (0..channels)
        .map(|c| gamma[c] as f64 / (var[c] as f64 + epsilon).sqrt())
        .collect();
    let shift = (0..channels)
        .map(|c| beta[c] as f64 - mean[c] as f64 * scale[c])
        .collect();
    Ok(Some(Fold { scale, shift }))
}
