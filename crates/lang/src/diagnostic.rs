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
    /// the help, each line ending in '\n'. A line longer than
    /// [`MAX_LINE_SHOWN`] characters is shown as an excerpt around the
    /// span, `...` marking what is cut.
    pub fn render(&self, file: &SourceFile) -> String {
        let (line, col) = file.line_col(self.span.start);
        let mut out = format!("{}:{line}:{col}: error: {}\n", file.name, self.message);
        let text = file.line_text(line);
        let gutter = line.to_string().len();
        // The caret runs to the span's end or the end of the line, at least one wide.
        let (end_line, end_col) = file.line_col(self.span.end);
        let chars = text.chars().count();
        let last_col = if end_line == line { end_col } else { chars + 1 };
        let width = last_col.saturating_sub(col).max(1);
        let (shown, caret_col, width) = excerpt(text, chars, col, width);
        let pad = " ".repeat(gutter);
        // Control characters (a terminal's escape sequences) and the
        // invisible ones that reorder or break text (U+202E, U+2028) are
        // shown as one replacement character each, so they neither act on
        // the terminal nor move the caret.
        let shown: String = shown
            .chars()
            .map(|c| match c {
                '\t' => ' ',
                c if acts_on_terminal(c) => '\u{FFFD}',
                c => c,
            })
            .collect();
        let _ = writeln!(out, "{line} | {shown}");
        let _ = writeln!(
            out,
            "{pad} | {}{}",
            " ".repeat(caret_col - 1),
            "^".repeat(width)
        );
        if let Some(help) = &self.help {
            let _ = writeln!(out, "{pad} = help: {help}");
        }
        out
    }
}

/// Whether echoing `c` to a terminal could act on it or hide what it
/// shows: control characters (an escape sequence's ESC, a line break) and
/// the invisible ones that break or reorder text (U+200B-U+200F,
/// U+2028-U+202E, U+2060-U+2069, U+FEFF). What prints a user's text (a
/// `.conv` line, an ONNX model's names) replaces or escapes them.
pub fn acts_on_terminal(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2060}'..='\u{2069}' | '\u{feff}')
}

/// The longest source line a diagnostic shows whole, in characters.
pub const MAX_LINE_SHOWN: usize = 160;

/// `text` (of `chars` characters), or the part of it around the caret at
/// 1-based column `col`, `width` wide, when it is too long to show: the
/// text shown, the caret's column in it and its width.
fn excerpt(text: &str, chars: usize, col: usize, width: usize) -> (String, usize, usize) {
    if chars <= MAX_LINE_SHOWN {
        return (text.to_string(), col, width);
    }
    // A third of the room before the caret, the rest after.
    let first = (col - 1).saturating_sub(MAX_LINE_SHOWN / 3).min(chars);
    let end = (first + MAX_LINE_SHOWN).min(chars);
    let mut shown = String::new();
    if first > 0 {
        shown.push_str("...");
    }
    shown.extend(text.chars().skip(first).take(end - first));
    if end < chars {
        shown.push_str("...");
    }
    let lead = if first > 0 { 3 } else { 0 };
    let caret_col = col - first + lead;
    // The caret stops where the shown text does (past its end by one at most).
    let width = width.min(end + 1 - (col - 1).min(end)).max(1);
    (shown, caret_col, width)
}

/// The most diagnostics a [`Diagnostics`] keeps and renders: the earliest
/// in the source. A file of garbage gives an error per character; each
/// rendered one repeats its line, so printing them all took memory
/// quadratic in the line's length.
pub const MAX_DIAGNOSTICS: usize = 20;

/// The errors found in one source text: the [`MAX_DIAGNOSTICS`] earliest
/// (by span start), in source order once [`Diagnostics::finish`]ed, and a
/// count of the others. Memory stays bounded however many are pushed; the
/// work is linear in their number.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Diagnostics {
    list: Vec<Diagnostic>,
    /// Pushed but not kept.
    omitted: usize,
}

impl Diagnostics {
    pub fn new() -> Diagnostics {
        Diagnostics::default()
    }

    /// Records `d`; it is the last element until the next push (so a
    /// caller may still add its help).
    pub fn push(&mut self, d: Diagnostic) {
        if self.list.len() >= 2 * MAX_DIAGNOSTICS {
            self.prune();
        }
        self.list.push(d);
    }

    /// The most recently pushed diagnostic.
    pub fn last_mut(&mut self) -> Option<&mut Diagnostic> {
        self.list.last_mut()
    }

    /// Sorts by position and keeps the earliest: call once all are pushed.
    pub fn finish(mut self) -> Diagnostics {
        self.prune();
        self
    }

    fn prune(&mut self) {
        // Stable: errors at one spot keep the order they were found in.
        self.list.sort_by_key(|d| d.span.start);
        let extra = self.list.len().saturating_sub(MAX_DIAGNOSTICS);
        self.list.truncate(MAX_DIAGNOSTICS);
        self.omitted += extra;
    }

    /// Errors found but not kept.
    pub fn omitted(&self) -> usize {
        self.omitted
    }

    /// Every error found, kept or not.
    pub fn total(&self) -> usize {
        self.list.len() + self.omitted
    }

    /// Every kept diagnostic rendered ([`Diagnostic::render`]), then
    /// `N more errors not shown` if some were not kept.
    pub fn render(&self, file: &SourceFile) -> String {
        let mut out = String::new();
        for d in &self.list {
            out += &d.render(file);
        }
        if self.omitted > 0 {
            let s = if self.omitted == 1 { "" } else { "s" };
            let _ = writeln!(out, "{} more error{s} not shown", self.omitted);
        }
        out
    }
}

impl std::ops::Deref for Diagnostics {
    type Target = [Diagnostic];
    fn deref(&self) -> &[Diagnostic] {
        &self.list
    }
}

impl IntoIterator for Diagnostics {
    type Item = Diagnostic;
    type IntoIter = std::vec::IntoIter<Diagnostic>;
    fn into_iter(self) -> Self::IntoIter {
        self.list.into_iter()
    }
}

impl<'a> IntoIterator for &'a Diagnostics {
    type Item = &'a Diagnostic;
    type IntoIter = std::slice::Iter<'a, Diagnostic>;
    fn into_iter(self) -> Self::IntoIter {
        self.list.iter()
    }
}

impl From<Vec<Diagnostic>> for Diagnostics {
    fn from(list: Vec<Diagnostic>) -> Diagnostics {
        let mut d = Diagnostics::new();
        for x in list {
            d.push(x);
        }
        d.finish()
    }
}

/// `'word'` for a message, cut to its first [`MAX_QUOTED`] characters
/// (`'aaaa...' (70000 characters)`): a message quotes what the user wrote,
/// which may be a whole line.
pub fn quoted(word: &str) -> String {
    match word.char_indices().nth(MAX_QUOTED) {
        None => format!("'{word}'"),
        Some((cut, _)) => format!(
            "'{}...' ({} characters)",
            &word[..cut],
            word.chars().count()
        ),
    }
}

/// The most characters of a user's word a message quotes.
pub const MAX_QUOTED: usize = 64;

/// The candidate nearest to `word` by edit distance, if it is near enough to
/// be a plausible typo (at most a third of the word's length, at least 1).
pub fn suggest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let len = word.chars().count();
    let limit = (len / 3).max(1);
    candidates
        .iter()
        // Lengths further apart than the limit are further apart in edits:
        // a long word costs nothing (the distance is quadratic).
        .filter(|c| c.chars().count().abs_diff(len) <= limit)
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
    fn control_characters_are_not_echoed() {
        let src = "a: b, c # \u{1b}[31mred\u{7}\u{9b}\u{202e}\n";
        let file = SourceFile::new("f.conv", src);
        let out = Diagnostic::new(Span::new(6, 7), "x").render(&file);
        assert_eq!(
            out,
            "f.conv:1:7: error: x\n1 | a: b, c # \u{FFFD}[31mred\u{FFFD}\u{FFFD}\u{FFFD}\n  |       ^\n"
        );
    }

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
    fn garbage_keeps_the_earliest_errors_and_counts_the_rest() {
        let text = "@".repeat(100_000);
        let diags = crate::parse(&text).unwrap_err();
        assert_eq!(diags.len(), MAX_DIAGNOSTICS);
        assert_eq!(diags.total(), 100_000);
        assert!(diags.windows(2).all(|w| w[0].span.start <= w[1].span.start));
        assert_eq!(diags[0].span.start, 0);
        let out = diags.render(&SourceFile::new("g.conv", text));
        assert!(
            out.ends_with("99980 more errors not shown\n"),
            "{}",
            &out[out.len() - 80..]
        );
        // Each shown line is an excerpt, not the 100,000-character line.
        assert!(
            out.len() < MAX_DIAGNOSTICS * 3 * (MAX_LINE_SHOWN + 80),
            "{}",
            out.len()
        );
    }

    #[test]
    fn the_earliest_are_kept_whatever_the_order_found() {
        let mut d = Diagnostics::new();
        for start in (0..1000).rev() {
            d.push(Diagnostic::new(Span::new(start, start + 1), "x"));
        }
        let d = d.finish();
        let starts: Vec<usize> = d.iter().map(|d| d.span.start).collect();
        assert_eq!(starts, (0..MAX_DIAGNOSTICS).collect::<Vec<_>>());
        assert_eq!(d.omitted(), 1000 - MAX_DIAGNOSTICS);
    }

    #[test]
    fn long_lines_show_an_excerpt_with_the_caret_under_the_span() {
        let line = format!("{}strid{}", "a ".repeat(500), " b".repeat(500));
        let f = SourceFile::new("a.conv", line.clone());
        let at = line.find("strid").unwrap();
        let out = Diagnostic::new(Span::new(at, at + 5), "unknown option 'strid'").render(&f);
        let lines: Vec<&str> = out.lines().collect();
        assert!(
            lines[1].starts_with("1 | ...") && lines[1].ends_with("..."),
            "{out}"
        );
        let caret = lines[2].find('^').unwrap();
        assert_eq!(&lines[1][caret..caret + 5], "strid", "{out}");
        assert_eq!(lines[2].trim_end().len() - caret, 5);
        // A span at the end of a long line.
        let f = SourceFile::new("a.conv", "x".repeat(1000));
        let out = Diagnostic::new(Span::new(1000, 1000), "end").render(&f);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[2].find('^'), Some(lines[1].len()), "{out}");
    }

    #[test]
    fn quotes_cut_long_words() {
        assert_eq!(quoted("abc"), "'abc'");
        let long = "x".repeat(70_000);
        let q = quoted(&long);
        assert!(
            q.starts_with("'xxx") && q.ends_with("...' (70000 characters)"),
            "{q}"
        );
        assert!(q.len() < MAX_QUOTED + 40);
        assert_eq!(suggest(&long, &["stride"]), None);
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
