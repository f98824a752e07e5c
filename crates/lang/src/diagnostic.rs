//! Errors about a source text, rendered the way compilers do:
//! `FILE:LINE:COL: error: message`, the line, and a caret under the span.
//!
//! Our own ~100 lines rather than `ariadne`/`miette`/`codespan-reporting`:
//! the first line's format is fixed by the contract (gcc style, which editors
//! and CI logs already link), and those crates each impose their own layout.

use crate::span::{SourceFile, Span};
use std::fmt::Write;

/// One error, located in the source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub span: Span,
    pub message: String,
    /// An optional hint, e.g. "did you mean 'stride'?".
    pub help: Option<String>,
}

impl Diagnostic {
    pub fn new(span: Span, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            span,
            message: message.into(),
            help: None,
        }
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Diagnostic {
        self.help = Some(help.into());
        self
    }

    /// `FILE:LINE:COL: error: message`, the source line, a caret line and
    /// the help, each line ending in '\n'.
    pub fn render(&self, file: &SourceFile) -> String {
        let (line, col) = file.line_col(self.span.start);
        let mut out = format!("{}:{line}:{col}: error: {}\n", file.name, self.message);
        let text = file.line_text(line);
        let gutter = line.to_string().len();
        // The caret runs to the span's end or the end of the line, at least one wide.
        let (end_line, end_col) = file.line_col(self.span.end);
        let last_col = if end_line == line {
            end_col
        } else {
            text.chars().count() + 1
        };
        let width = last_col.saturating_sub(col).max(1);
        let _ = writeln!(out, "{:>gutter$} | {}", line, text.replace('\t', " "));
        let _ = writeln!(
            out,
            "{:>gutter$} | {}{}",
            "",
            " ".repeat(col - 1),
            "^".repeat(width)
        );
        if let Some(help) = &self.help {
            let _ = writeln!(out, "{:>gutter$} = help: {help}", "");
        }
        out
    }
}

/// The candidate nearest to `word` by edit distance, if it is near enough to
/// be a plausible typo (at most a third of the word's length, at least 1).
pub fn suggest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let limit = (word.chars().count() / 3).max(1);
    candidates
        .iter()
        .map(|c| (edit_distance(&word.to_lowercase(), c), *c))
        .filter(|&(d, _)| d <= limit)
        .min_by_key(|&(d, _)| d)
        .map(|(_, c)| c)
}

/// Edit distance over characters where swapping two neighbours counts as
/// one edit (optimal string alignment): `rleu6` is one typo from `relu6`.
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    // d[i][j]: distance between a[..i] and b[..j].
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_location_line_and_caret() {
        let f = SourceFile::new("a.conv", "layer x {\n  d: depthwise 3x3, strid 2\n}\n");
        let at = f.text.find("strid").unwrap();
        let d = Diagnostic::new(Span::new(at, at + 5), "unknown option 'strid'")
            .with_help("did you mean 'stride'?");
        assert_eq!(
            d.render(&f),
            "a.conv:2:21: error: unknown option 'strid'\n\
             2 |   d: depthwise 3x3, strid 2\n\
             \x20 |                     ^^^^^\n\
             \x20 = help: did you mean 'stride'?\n"
        );
    }

    #[test]
    fn suggests_only_near_words() {
        let words = ["stride", "dilation", "relu", "relu6"];
        assert_eq!(suggest("strid", &words), Some("stride"));
        assert_eq!(suggest("STRIDE", &words), Some("stride"));
        assert_eq!(suggest("dilatoin", &words), Some("dilation"));
        assert_eq!(suggest("banana", &words), None);
        assert_eq!(suggest("rleu6", &words), Some("relu6"));
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("ab", "ba"), 1);
    }
}
