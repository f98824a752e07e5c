//! Text to tokens. Newlines are tokens: a stage is one line.

use crate::ast::Spanned;
use crate::diagnostic::{Diagnostic, Diagnostics};
use crate::span::Span;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tok {
    /// A word: `layer`, `depthwise`, `relu6`, a stage name.
    Ident(String),
    /// `12`, `3x3` or `12x12x3`: numbers joined by `x`, each with its span.
    Dims(Vec<Spanned<u64>>),
    Arrow,
    Colon,
    Comma,
    LBrace,
    RBrace,
    /// A line break or `;`: both end a statement.
    Newline,
    Eof,
}

impl Tok {
    /// How the token is named in "expected X, found Y" messages.
    pub fn describe(&self) -> String {
        match self {
            Tok::Ident(w) => crate::diagnostic::quoted(w),
            Tok::Dims(_) => "a number".into(),
            Tok::Arrow => "'->'".into(),
            Tok::Colon => "':'".into(),
            Tok::Comma => "','".into(),
            Tok::LBrace => "'{'".into(),
            Tok::RBrace => "'}'".into(),
            Tok::Newline => "end of line".into(),
            Tok::Eof => "end of file".into(),
        }
    }
}

pub type Token = Spanned<Tok>;

/// Splits `src` into tokens on demand, ending with `Eof` (then `Eof`
/// again). Bad characters and numbers that overflow are reported and
/// skipped, so parsing goes on. On demand, not as a list: the parser holds
/// a token or two at a time, so a file of numbers at the size limit costs no more
/// than its text (a list of its tokens took 80 bytes a byte).
pub struct Lexer<'a> {
    src: &'a str,
    i: usize,
}

impl<'a> Lexer<'a> {
    pub fn new(src: &'a str) -> Lexer<'a> {
        // A byte-order mark (some editors write one) is not text.
        let i = if src.starts_with('\u{FEFF}') { 3 } else { 0 };
        Lexer { src, i }
    }

    /// The next token; `Eof` at the end, as often as asked.
    pub fn next_token(&mut self, diags: &mut Diagnostics) -> Token {
        let (src, bytes) = (self.src, self.src.as_bytes());
        let i = &mut self.i;
        while *i < bytes.len() {
            let start = *i;
            let c = bytes[*i];
            let tok = match c {
                b'\n' | b';' => {
                    *i += 1;
                    Tok::Newline
                }
                b' ' | b'\t' | b'\r' => {
                    *i += 1;
                    continue;
                }
                b'#' => {
                    while *i < bytes.len() && bytes[*i] != b'\n' {
                        *i += 1;
                    }
                    continue;
                }
                b'{' | b'}' | b':' | b',' => {
                    *i += 1;
                    match c {
                        b'{' => Tok::LBrace,
                        b'}' => Tok::RBrace,
                        b':' => Tok::Colon,
                        _ => Tok::Comma,
                    }
                }
                b'-' if bytes.get(*i + 1) == Some(&b'>') => {
                    *i += 2;
                    Tok::Arrow
                }
                b'0'..=b'9' => Tok::Dims(lex_dims(src, i, diags)),
                c if c.is_ascii_alphabetic() || c == b'_' => {
                    while *i < bytes.len()
                        && (bytes[*i].is_ascii_alphanumeric() || bytes[*i] == b'_')
                    {
                        *i += 1;
                    }
                    Tok::Ident(src[start..*i].to_string())
                }
                _ => {
                    let ch = src[*i..].chars().next().unwrap_or('?');
                    *i += ch.len_utf8();
                    let mut d = Diagnostic::new(
                        Span::new(start, *i),
                        format!("unexpected character '{}'", ch.escape_default()),
                    );
                    if ch == '-' {
                        d = d.with_help(
                            "numbers are never negative; '->' introduces the output channels",
                        );
                    }
                    diags.push(d);
                    continue;
                }
            };
            return Spanned::new(tok, Span::new(start, *i));
        }
        Spanned::new(Tok::Eof, Span::new(src.len(), src.len()))
    }
}

/// Every token of `src`, the last `Eof`.
#[cfg(test)]
pub fn lex(src: &str, diags: &mut Diagnostics) -> Vec<Token> {
    let mut lexer = Lexer::new(src);
    let mut toks = Vec::new();
    loop {
        let t = lexer.next_token(diags);
        let end = t.node == Tok::Eof;
        toks.push(t);
        if end {
            return toks;
        }
    }
}

/// `D ('x' D)*` where each `x` must be followed by a digit.
fn lex_dims(src: &str, i: &mut usize, diags: &mut Diagnostics) -> Vec<Spanned<u64>> {
    let bytes = src.as_bytes();
    let mut parts = Vec::new();
    loop {
        let start = *i;
        while *i < bytes.len() && bytes[*i].is_ascii_digit() {
            *i += 1;
        }
        let span = Span::new(start, *i);
        let value = src[start..*i].parse::<u64>().unwrap_or_else(|_| {
            diags.push(Diagnostic::new(span, "number is too large"));
            u64::MAX
        });
        parts.push(Spanned::new(value, span));
        let joined = matches!(bytes.get(*i), Some(b'x' | b'X'))
            && bytes.get(*i + 1).is_some_and(|b| b.is_ascii_digit());
        if !joined {
            return parts;
        }
        *i += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(src: &str) -> Vec<Tok> {
        let mut d = Diagnostics::new();
        let t = lex(src, &mut d);
        assert!(d.is_empty(), "{d:?}");
        t.into_iter().map(|t| t.node).collect()
    }

    #[test]
    fn dims_join_numbers_with_x() {
        let toks = kinds("12x12x3 -> 5");
        let Tok::Dims(parts) = &toks[0] else {
            panic!("{toks:?}")
        };
        let values: Vec<u64> = parts.iter().map(|p| p.node).collect();
        assert_eq!(values, [12, 12, 3]);
        assert_eq!(parts[1].span, Span::new(3, 5));
        assert_eq!(toks[1], Tok::Arrow);
    }

    #[test]
    fn a_byte_order_mark_is_skipped() {
        let toks = kinds("\u{FEFF}layer");
        assert_eq!(toks, [Tok::Ident("layer".into()), Tok::Eof]);
    }

    #[test]
    fn comments_and_semicolons() {
        assert_eq!(
            kinds("a: b # c, d\n;"),
            [
                Tok::Ident("a".into()),
                Tok::Colon,
                Tok::Ident("b".into()),
                Tok::Newline,
                Tok::Newline,
                Tok::Eof
            ]
        );
    }

    #[test]
    fn bad_characters_and_huge_numbers_are_reported() {
        let mut d = Diagnostics::new();
        lex("a @ 99999999999999999999999 -1", &mut d);
        let msgs: Vec<&str> = d.iter().map(|d| d.message.as_str()).collect();
        assert_eq!(
            msgs,
            [
                "unexpected character '@'",
                "number is too large",
                "unexpected character '-'"
            ]
        );
    }
}
