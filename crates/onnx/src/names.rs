//! ONNX node names as `.conv` identifiers (`[A-Za-z_][A-Za-z0-9_]*`),
//! at most [`MAX_IDENTIFIER`] characters, made unique (a `_2`, `_3`, ...
//! after the cut where two come out the same).

use std::collections::HashSet;

/// The longest identifier made from a node's name: layer and stage names,
/// and from them `.npz` keys and archive names, stay short (a zip entry's
/// name must be under 64 KiB, a file name under 256 bytes). The `.conv`
/// comments keep the first 200 characters of the name.
pub const MAX_IDENTIFIER: usize = 64;

/// `/layer1/layer1.0/conv1/Conv` -> `layer1_layer1_0_conv1`: runs of other
/// characters become one `_`, a last part that only repeats the op type
/// (PyTorch's exporter adds it) is dropped, a leading digit gets an `n`
/// before it, and the result is cut to [`MAX_IDENTIFIER`] characters
/// (names cut alike are told apart by [`Unique`]: `_2`, `_3`). Empty when
/// nothing usable is left.
pub fn identifier(raw: &str, op_type: &str) -> String {
    let mut parts: Vec<&str> = raw
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .map(|p| p.trim_matches('_'))
        .filter(|p| !p.is_empty())
        .collect();
    if parts.len() > 1
        && parts
            .last()
            .is_some_and(|p| p.eq_ignore_ascii_case(op_type))
    {
        parts.pop();
    }
    let mut id = parts.join("_");
    if id.starts_with(|c: char| c.is_ascii_digit()) {
        id.insert(0, 'n');
    }
    // ASCII only: any byte is a character boundary.
    id.truncate(MAX_IDENTIFIER);
    id.truncate(id.trim_end_matches('_').len());
    id
}

/// `s` safe to print on a terminal: control characters (a line break, an
/// escape sequence's ESC) and the invisible ones that move or reorder
/// text (U+2028, U+202E, ...) as Rust writes them (`\n`, `\u{1b}`,
/// `\u{202e}`); the rest as it is. Every message and note of the crate
/// goes through it, so a model cannot write to the user's terminal.
pub fn shown(s: &str) -> String {
    let hidden = convjit_lang::acts_on_terminal;
    if !s.contains(hidden) {
        return s.to_string();
    }
    s.chars()
        .map(|c| {
            if hidden(c) {
                c.escape_debug().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// Hands out names not given before: `a`, then `a_2`, `a_3`, ...
#[derive(Default)]
pub struct Unique {
    used: HashSet<String>,
}

impl Unique {
    pub fn claim(&mut self, base: &str) -> String {
        let mut name = base.to_string();
        let mut n = 1;
        while !self.used.insert(name.clone()) {
            n += 1;
            name = format!("{base}_{n}");
        }
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_identifiers() {
        assert_eq!(
            identifier("/layer1/layer1.0/conv1/Conv", "Conv"),
            "layer1_layer1_0_conv1"
        );
        assert_eq!(identifier("Conv", "Conv"), "Conv");
        assert_eq!(identifier("123", "Conv"), "n123");
        assert_eq!(identifier("conv-1 (3x3)", "Conv"), "conv_1_3x3");
        assert_eq!(identifier("::", "Conv"), "");
        assert_eq!(identifier("é_a", "Conv"), "a");
        let long = "a".repeat(100_000);
        assert_eq!(identifier(&long, "Conv"), "a".repeat(MAX_IDENTIFIER));
        // No `_` left at the cut.
        let cut = format!("{}.b", "a".repeat(MAX_IDENTIFIER - 1));
        assert_eq!(identifier(&cut, "Conv"), "a".repeat(MAX_IDENTIFIER - 1));
    }

    #[test]
    fn control_characters_are_shown_escaped() {
        assert_eq!(shown("conv1/a b.é"), "conv1/a b.é");
        assert_eq!(shown("a\nb\r\x1b[31m"), "a\\nb\\r\\u{1b}[31m");
        assert_eq!(
            shown("c\u{2028}x\u{85}y\u{202e}"),
            "c\\u{2028}x\\u{85}y\\u{202e}"
        );
    }

    #[test]
    fn claims_are_unique() {
        let mut u = Unique::default();
        assert_eq!(u.claim("a"), "a");
        assert_eq!(u.claim("a"), "a_2");
        assert_eq!(u.claim("a_2"), "a_2_2");
        assert_eq!(u.claim("a"), "a_3");
    }
}
