//! Random and mutated `.conv` text never panics the parser, the validator,
//! the diagnostic renderer, or (for small valid layers) the interpreter.

use convjit_ir::{compile_source, interpret, Weights};
use convjit_lang::SourceFile;
use proptest::prelude::*;

const WORDS: &[&str] = &[
    "layer",
    "input",
    "{",
    "}",
    ":",
    ",",
    "->",
    "\n",
    "\n",
    ";",
    "#",
    "conv",
    "depthwise",
    "pointwise",
    "stride",
    "dilation",
    "pad",
    "same",
    "valid",
    "multiplier",
    "separable",
    "spatial",
    "bias",
    "relu",
    "relu6",
    "residual",
    "0",
    "1",
    "2",
    "3",
    "7",
    "3x3",
    "1x7",
    "5x1",
    "2x3",
    "12x12x3",
    "4x5x6",
    "0x0x0",
    "65536",
    "65537",
    "99999999999999999999999",
    "a",
    "dw",
    "pw",
    "x",
    "-",
    "@",
    "é",
    "\t",
    "\r",
];

const VALID: &str = "layer m {\n  input 9x7x5\n  e: pointwise 12, bias, relu6\n  d: depthwise 3x3, stride 2, pad same, multiplier 2, dilation 1x2\n  s: conv 3x2 -> 6, separable depthwise, pad 1 0 2 1, relu\n  t: conv 3x3 -> 6, separable spatial, pad same, bias\n  p: conv 1x1 -> 5, stride 1x2\n}\n";

/// Everything downstream of the text must hold up too.
fn exercise(text: &str) {
    match compile_source(text) {
        Ok(layers) => {
            for l in &layers {
                assert!(!l.stages.is_empty());
                for pair in l.stages.windows(2) {
                    assert_eq!(pair[0].output, pair[1].input);
                }
                assert!(!l.output().is_empty());
                // What `lower` gives, the code generators' check accepts.
                if let Err(e) = convjit_ir::check_layer(l) {
                    panic!("{text}: {e}");
                }
                let _ = l.macs();
                // Small layers: the interpreter runs without panicking.
                if l.macs() < 200_000 && l.input.len() < 100_000 {
                    let w = Weights::random(l, 1);
                    let input = vec![1.0; l.input.len()];
                    let out = interpret(l, &w, &input, 1).unwrap();
                    assert_eq!(out.len(), l.output().len());
                }
            }
        }
        Err(diags) => {
            assert!(!diags.is_empty());
            let file = SourceFile::new("f.conv", text);
            for d in &diags {
                assert!(d.span.start <= d.span.end && d.span.end <= text.len());
                let r = d.render(&file);
                assert!(r.starts_with("f.conv:"), "{r}");
            }
            // However much is wrong, what is printed is bounded: at most
            // MAX_DIAGNOSTICS, each an excerpt of its line with quoted
            // words cut.
            let all = diags.render(&file);
            let each = 4 * (convjit_lang::MAX_LINE_SHOWN + 4 * convjit_lang::MAX_QUOTED + 100);
            assert!(
                all.len() <= (convjit_lang::MAX_DIAGNOSTICS + 1) * each,
                "{} bytes for {} diagnostics",
                all.len(),
                diags.total()
            );
        }
    }
}

fn token_soup() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(WORDS), 0..60).prop_map(|w| w.join(" "))
}

fn mutated() -> impl Strategy<Value = String> {
    let edit = (0..VALID.len(), 0..8usize, prop::sample::select(WORDS));
    prop::collection::vec(edit, 1..6).prop_map(|edits| {
        let mut s = VALID.to_string();
        for (at, len, word) in edits {
            let mut at = at.min(s.len());
            while !s.is_char_boundary(at) {
                at -= 1;
            }
            let mut end = (at + len).min(s.len());
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            s.replace_range(at..end, word);
        }
        s
    })
}

/// Text at the extremes: words and names of thousands of characters,
/// lines of thousands of errors, sizes at and past the limits.
fn extreme() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        prop::sample::select(WORDS).prop_map(str::to_string),
        (1usize..5000).prop_map(|n| "n".repeat(n)),
        (1usize..3000).prop_map(|n| "@ ".repeat(n)),
        (1usize..2000).prop_map(|n| "é".repeat(n)),
        Just("65536x65536x65536".to_string()),
        Just("4294967296".to_string()),
    ];
    prop::collection::vec(piece, 0..30).prop_map(|w| w.join(" "))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn extreme_text_never_panics_and_prints_little(text in extreme()) {
        exercise(&text);
    }

    #[test]
    fn token_soup_never_panics(text in token_soup()) {
        exercise(&text);
    }

    #[test]
    fn mutated_layers_never_panic(text in mutated()) {
        exercise(&text);
    }

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
        exercise(&text);
    }
}

#[test]
fn the_unmutated_layer_is_valid() {
    let layers = compile_source(VALID).unwrap();
    assert_eq!(layers[0].stages.len(), 7);
}
