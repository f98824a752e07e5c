//! What the tests against ONNX Runtime share: NCHW tensors as NHWC, and
//! the comparison with its tolerance.

/// NCHW `[N][C][H][W]` as NHWC.
pub fn nhwc(a: &convjit_npy::Array) -> (Vec<f32>, usize) {
    let [n, c, h, w] = a.shape[..] else {
        panic!("not 4-D: {:?}", a.shape)
    };
    let mut out = vec![0.0; a.data.len()];
    for b in 0..n {
        for ch in 0..c {
            for y in 0..h {
                for x in 0..w {
                    out[((b * h + y) * w + x) * c + ch] = a.data[((b * c + ch) * h + y) * w + x];
                }
            }
        }
    }
    (out, n)
}

/// Largest |got - want| and the tolerance: ONNX Runtime sums in float32 in
/// its own order and applies BatchNormalization after the conv, where
/// convjit folds it into the weights: rounding differs by a few ulps of
/// the values summed, far below 1e-4 of the largest output.
pub fn check(what: &str, got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(1f32, |m, v| m.max(v.abs()));
    let tol = 1e-4 * scale;
    let (mut worst, mut at) = (0f32, 0);
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let e = (g - w).abs();
        if e.is_nan() || e > worst {
            worst = e;
            at = i;
        }
    }
    assert!(
        worst <= tol,
        "{what}: |got - onnxruntime| = {worst} at {at} (got {}, want {}) > {tol}",
        got[at],
        want[at]
    );
    worst / scale
}
