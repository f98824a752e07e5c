//! Property tests: random layers (as `.conv` text) through the JIT and the
//! reference interpreter; every output within the magnitude-scaled tolerance.

mod common;

use convjit_ir::{compile_source, Weights};
use convjit_jit::{Fusion, Options};
use proptest::prelude::*;

#[derive(Debug, Clone)]
struct StageSpec {
    op: u8, // 0 conv, 1 depthwise, 2 pointwise, 3 separable depthwise, 4 separable spatial
    k: (usize, usize),
    cout: usize,
    stride: (usize, usize),
    dilation: (usize, usize),
    pad: u8, // 0 same, 1 valid, 2 explicit
    explicit: (usize, usize, usize, usize),
    multiplier: usize,
    bias: bool,
    act: u8,
}

fn stage_spec() -> impl Strategy<Value = StageSpec> {
    (
        (0u8..5, 1usize..8, 1usize..8, 1usize..41),
        (1usize..4, 1usize..4, 1usize..4, 1usize..4),
        (0u8..3, (0usize..4, 0usize..4, 0usize..4, 0usize..4)),
        (1usize..5, any::<bool>(), 0u8..3, any::<bool>()),
    )
        .prop_map(
            |((op, kh, kw, cout), (sh, sw, dh, dw), (pad, explicit), (m, bias, act, square))| {
                StageSpec {
                    op,
                    k: if square { (kh, kh) } else { (kh, kw) },
                    cout,
                    stride: if square { (sh, sh) } else { (sh, sw) },
                    dilation: if square { (dh, dh) } else { (dh, dw) },
                    pad,
                    explicit,
                    multiplier: m,
                    bias,
                    act,
                }
            },
        )
}

fn stage_text(i: usize, s: &StageSpec) -> String {
    let (kh, kw) = s.k;
    let mut t = match s.op {
        0 | 3 | 4 => format!("s{i}: conv {kh}x{kw} -> {}", s.cout),
        1 => format!("s{i}: depthwise {kh}x{kw}"),
        _ => format!("s{i}: pointwise {}", s.cout),
    };
    if s.op != 2 {
        t += &format!(", stride {}x{}", s.stride.0, s.stride.1);
        t += &format!(", dilation {}x{}", s.dilation.0, s.dilation.1);
        t += match s.pad {
            0 => ", pad same".to_string(),
            1 => ", pad valid".to_string(),
            _ => {
                let (a, b, c, d) = s.explicit;
                format!(", pad {a} {b} {c} {d}")
            }
        }
        .as_str();
    }
    if (s.op == 1 || s.op == 3) && s.multiplier > 1 {
        t += &format!(", multiplier {}", s.multiplier);
    }
    if s.op == 3 {
        t += ", separable depthwise";
    }
    if s.op == 4 {
        t += ", separable spatial";
    }
    if s.bias {
        t += ", bias";
    }
    t += ["", ", relu", ", relu6"][s.act as usize];
    t
}

#[derive(Debug, Clone)]
struct Case {
    src: String,
    batch: usize,
    seed: u64,
    /// Input scale: large values make relu6 clamp and relu cut.
    scale: f32,
    /// Planner overrides: fusion, threads and band heights vary too.
    options: Options,
}

fn options() -> impl Strategy<Value = Options> {
    (
        prop::sample::select(vec![Fusion::Auto, Fusion::Always, Fusion::Never]),
        1usize..4,
        prop::option::of(1usize..6),
    )
        .prop_map(|(fuse, threads, band_rows)| Options {
            fuse,
            threads,
            band_rows,
            // Small layers too: the threaded paths must be tested.
            min_thread_macs: 0,
            ..Options::default()
        })
}

fn case() -> impl Strategy<Value = Case> {
    (
        (1usize..25, 1usize..25, 1usize..41),
        prop::collection::vec(stage_spec(), 1..4),
        (0u8..3, 1usize..6),
        (
            1usize..4,
            any::<u64>(),
            prop::sample::select(vec![0.5f32, 4.0, 20.0]),
        ),
        options(),
    )
        .prop_map(
            |((h, w, c), stages, (res, rk), (batch, seed, scale), options)| {
                let mut lines: Vec<String> = stages
                    .iter()
                    .enumerate()
                    .map(|(i, s)| stage_text(i, s))
                    .collect();
                // A final stage that restores the input shape, with a residual.
                let n = lines.len();
                match res {
                    1 => lines.push(format!("r{n}: pointwise {c}, bias, residual")),
                    2 => lines.push(format!(
                        "r{n}: depthwise {rk}x{rk}, pad same, relu, residual"
                    )),
                    _ => {}
                }
                let src = format!(
                    "layer t {{\n  input {h}x{w}x{c}\n  {}\n}}\n",
                    lines.join("\n  ")
                );
                Case {
                    src,
                    batch,
                    seed,
                    scale,
                    options,
                }
            },
        )
}

/// Keeps the interpreter (the slow part) affordable.
const MAX_MACS: u64 = 4_000_000;

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 400,
        max_global_rejects: 100_000,
        ..ProptestConfig::default()
    })]

    #[test]
    fn jit_matches_interpreter(c in case()) {
        let layers = compile_source(&c.src);
        prop_assume!(layers.is_ok());
        let l = layers.unwrap().remove(0);
        prop_assume!(l.macs() * c.batch as u64 <= MAX_MACS);
        let w = Weights::random(&l, c.seed);
        let x: Vec<f32> = common::input(&l, c.batch, c.seed ^ 0x5555)
            .iter()
            .map(|v| v * c.scale)
            .collect();
        let r = common::check_with(&l, &w, &x, c.batch, &c.options);
        prop_assert!(
            r.is_ok(),
            "{}\nbatch {}, {:?}: {}",
            c.src,
            c.batch,
            c.options,
            r.unwrap_err()
        );
    }
}
