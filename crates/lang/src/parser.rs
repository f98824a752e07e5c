//! Tokens to syntax tree, by recursive descent. An error inside a
//! statement skips to the end of that line, so one pass reports the
//! errors of every line.

use crate::ast::*;
use crate::diagnostic::{quoted, suggest, Diagnostic, Diagnostics};
use crate::lexer::{Lexer, Tok, Token};
use crate::span::Span;
use std::collections::VecDeque;

const OPS: &[&str] = &["conv", "depthwise", "pointwise"];
const OPTIONS: &[&str] = &[
    "stride",
    "dilation",
    "pad",
    "multiplier",
    "groups",
    "separable",
    "bias",
    "relu",
    "relu6",
    "residual",
];

/// Parses a whole `.conv` text. Any error (lexical or syntactic) makes the
/// result `Err`, with the errors found (the earliest kept), in source order.
pub fn parse(src: &str) -> Result<File, Diagnostics> {
    let mut p = Parser {
        lexer: Lexer::new(src),
        ahead: VecDeque::new(),
        prev: Span::new(0, 0),
        diags: Diagnostics::new(),
    };
    let file = p.file();
    if p.diags.is_empty() {
        Ok(file)
    } else {
        Err(p.diags.finish())
    }
}

/// The error has been recorded; the caller recovers.
struct Reported;
type PResult<T> = Result<T, Reported>;

struct Parser<'a> {
    lexer: Lexer<'a>,
    /// The tokens looked at but not taken (the first is the current one).
    ahead: VecDeque<Token>,
    /// The span of the token taken last.
    prev: Span,
    diags: Diagnostics,
}

impl Parser<'_> {
    /// Lexes until `n` tokens are ahead.
    fn fill(&mut self, n: usize) {
        while self.ahead.len() < n {
            let t = self.lexer.next_token(&mut self.diags);
            self.ahead.push_back(t);
        }
    }

    fn peek(&mut self) -> &Token {
        self.fill(1);
        &self.ahead[0]
    }

    fn peek_at(&mut self, n: usize) -> &Tok {
        self.fill(n + 1);
        &self.ahead[n].node
    }

    fn bump(&mut self) -> Token {
        self.fill(1);
        let t = match self.ahead[0].node {
            // Eof stays the current token.
            Tok::Eof => self.ahead[0].clone(),
            _ => self.ahead.pop_front().expect("filled"),
        };
        self.prev = t.span;
        t
    }

    fn is_word(&mut self, word: &str) -> bool {
        matches!(&self.peek().node, Tok::Ident(w) if w == word)
    }

    fn error<T>(&mut self, span: Span, message: impl Into<String>) -> PResult<T> {
        self.diags.push(Diagnostic::new(span, message));
        Err(Reported)
    }

    fn expected<T>(&mut self, what: &str) -> PResult<T> {
        let t = self.peek().clone();
        self.error(
            t.span,
            format!("expected {what}, found {}", t.node.describe()),
        )
    }

    fn expect(&mut self, tok: Tok, what: &str) -> PResult<Span> {
        if self.peek().node == tok {
            Ok(self.bump().span)
        } else {
            self.expected(what)
        }
    }

    fn skip_newlines(&mut self) {
        while self.peek().node == Tok::Newline {
            self.bump();
        }
    }

    /// Skips to the end of the current line, leaving `}` and EOF in place.
    fn recover_line(&mut self) {
        while !matches!(self.peek().node, Tok::Newline | Tok::RBrace | Tok::Eof) {
            self.bump();
        }
    }

    fn file(&mut self) -> File {
        let mut file = File::default();
        loop {
            self.skip_newlines();
            if self.peek().node == Tok::Eof {
                return file;
            }
            if self.is_word("layer") {
                if let Some(layer) = self.layer() {
                    file.layers.push(layer);
                }
            } else {
                let t = self.peek().clone();
                let mut d = Diagnostic::new(
                    t.span,
                    format!("expected 'layer', found {}", t.node.describe()),
                );
                if let Tok::Ident(w) = &t.node {
                    if suggest(w, &["layer"]).is_some() {
                        d = d.with_help("did you mean 'layer'?");
                    }
                }
                self.diags.push(d);
                // Skip to the next `layer` keyword that starts a line.
                loop {
                    let prev = self.bump().node;
                    if self.peek().node == Tok::Eof
                        || (prev == Tok::Newline && self.is_word("layer"))
                    {
                        break;
                    }
                }
            }
        }
    }

    /// `layer NAME { statements }`; `None` if the header is broken.
    fn layer(&mut self) -> Option<Layer> {
        let start = self.bump().span;
        let name = match self.ident("a layer name") {
            Ok(name) => name,
            Err(_) => {
                self.recover_line();
                return None;
            }
        };
        let open = self.expect(Tok::LBrace, "'{' after the layer name").ok()?;
        let mut layer = Layer {
            name,
            inputs: Vec::new(),
            stages: Vec::new(),
            span: start,
        };
        loop {
            self.skip_newlines();
            // A `layer` word that is not a stage name (`layer: ...`).
            let next_is_colon = self.peek_at(1) == &Tok::Colon;
            match &self.peek().node {
                Tok::RBrace => {
                    layer.span = start.to(self.bump().span);
                    return Some(layer);
                }
                Tok::Eof => {
                    self.diags.push(
                        Diagnostic::new(open, "this '{' is never closed")
                            .with_help("add '}' after the layer's last stage"),
                    );
                    return Some(layer);
                }
                Tok::Ident(w) if w == "layer" && !next_is_colon => {
                    let span = self.peek().span;
                    self.diags.push(
                        Diagnostic::new(
                            span,
                            "a new layer starts before the previous one is closed",
                        )
                        .with_help("add '}' to close the previous layer"),
                    );
                    return Some(layer);
                }
                _ => {}
            }
            if self.statement(&mut layer).is_ok() {
                self.end_of_statement();
            } else {
                self.recover_line();
            }
        }
    }

    /// After a statement: a line break, `}` (kept), or EOF.
    fn end_of_statement(&mut self) {
        match self.peek().node {
            Tok::Newline => {
                self.bump();
            }
            Tok::RBrace | Tok::Eof => {}
            _ => {
                let t = self.peek().clone();
                let mut d = Diagnostic::new(
                    t.span,
                    format!("expected ',' or end of line, found {}", t.node.describe()),
                );
                if matches!(&t.node, Tok::Ident(w) if OPTIONS.contains(&w.as_str())) {
                    d = d.with_help("options are separated by commas");
                }
                self.diags.push(d);
                self.recover_line();
            }
        }
    }

    /// `input HxWxC` or `NAME: OP, OPTION, ...`
    fn statement(&mut self, layer: &mut Layer) -> PResult<()> {
        if self.is_word("input") && self.peek_at(1) != &Tok::Colon {
            self.bump();
            let dims = self.dims(3, "the input shape HxWxC, e.g. 12x12x3")?;
            layer.inputs.push(dims);
            return Ok(());
        }
        let name = self.ident("a stage 'NAME: OP, options' or 'input HxWxC'")?;
        if self.peek().node != Tok::Colon {
            let mut d = Diagnostic::new(
                self.peek().span,
                format!(
                    "expected ':' after the stage name, found {}",
                    self.peek().node.describe()
                ),
            );
            if OPS.contains(&name.node.as_str()) {
                d = d.with_help(format!("a stage needs a name: 'NAME: {} ...'", name.node));
            } else if suggest(&name.node, &["input"]).is_some() {
                d = d.with_help("did you mean 'input'?");
            }
            self.diags.push(d);
            return Err(Reported);
        }
        self.bump();
        let op = self.op()?;
        let mut options = Vec::new();
        while self.peek().node == Tok::Comma {
            self.bump();
            options.push(self.option()?);
        }
        layer.stages.push(Stage { name, op, options });
        Ok(())
    }

    fn op(&mut self) -> PResult<Spanned<Op>> {
        let t = self.peek().clone();
        let Tok::Ident(word) = &t.node else {
            return self.expected("an operation (conv, depthwise or pointwise)");
        };
        self.bump();
        let op = match word.as_str() {
            "conv" => {
                let kernel = self.dims(2, "a kernel size KHxKW, e.g. 3x3")?;
                self.expect(Tok::Arrow, "'->' and the output channels, e.g. '-> 64'")?;
                let cout = self.number("the number of output channels")?;
                Op::Conv { kernel, cout }
            }
            "depthwise" => Op::Depthwise {
                kernel: self.dims(2, "a kernel size KHxKW, e.g. 3x3")?,
            },
            "pointwise" => Op::Pointwise {
                cout: self.number("the number of output channels")?,
            },
            other => return self.unknown(t.span, "operation", other, OPS),
        };
        let span = t.span.to(self.prev);
        Ok(Spanned::new(op, span))
    }

    fn option(&mut self) -> PResult<Spanned<Opt>> {
        let t = self.peek().clone();
        let Tok::Ident(word) = &t.node else {
            return self.expected("an option");
        };
        self.bump();
        let opt = match word.as_str() {
            "stride" => Opt::Stride(self.dims_1_or_2("a stride S or SHxSW")?),
            "dilation" => Opt::Dilation(self.dims_1_or_2("a dilation D or DHxDW")?),
            "multiplier" => Opt::Multiplier(self.number("the depth multiplier")?),
            "groups" => Opt::Groups(self.number("the number of groups")?),
            "bias" => Opt::Bias,
            "relu" => Opt::Activation(Activation::Relu),
            "relu6" => Opt::Activation(Activation::Relu6),
            "residual" => Opt::Residual,
            "pad" => Opt::Pad(self.pad()?),
            "separable" => {
                let t = self.peek().clone();
                let kind = match &t.node {
                    Tok::Ident(w) if w == "depthwise" => Separable::Depthwise,
                    Tok::Ident(w) if w == "spatial" => Separable::Spatial,
                    Tok::Ident(w) => {
                        return self.unknown(t.span, "separable form", w, &["depthwise", "spatial"])
                    }
                    _ => return self.expected("'depthwise' or 'spatial'"),
                };
                self.bump();
                Opt::Separable(kind)
            }
            other => return self.unknown(t.span, "option", other, OPTIONS),
        };
        let span = t.span.to(self.prev);
        Ok(Spanned::new(opt, span))
    }

    /// `same`, `valid` or four numbers `T B L R`.
    fn pad(&mut self) -> PResult<Pad> {
        let t = self.peek().clone();
        match &t.node {
            Tok::Ident(w) if w == "same" => {
                self.bump();
                Ok(Pad::Same)
            }
            Tok::Ident(w) if w == "valid" => {
                self.bump();
                Ok(Pad::Valid)
            }
            Tok::Ident(w) => self.unknown(t.span, "padding", w, &["same", "valid"]),
            Tok::Dims(_) => {
                let mut sides = Vec::with_capacity(4);
                for side in ["top", "bottom", "left", "right"] {
                    sides.push(self.number(&format!("four paddings 'T B L R' (missing {side})"))?);
                }
                Ok(Pad::Explicit(
                    sides.try_into().unwrap_or_else(|_| unreachable!()),
                ))
            }
            _ => self.expected("'same', 'valid' or four numbers 'T B L R'"),
        }
    }

    fn unknown<T>(&mut self, span: Span, what: &str, word: &str, valid: &[&str]) -> PResult<T> {
        let mut d = Diagnostic::new(span, format!("unknown {what} {}", quoted(word)));
        d = match suggest(word, valid) {
            Some(s) => d.with_help(format!("did you mean '{s}'?")),
            None => d.with_help(format!("expected one of: {}", valid.join(", "))),
        };
        self.diags.push(d);
        Err(Reported)
    }

    fn ident(&mut self, what: &str) -> PResult<Spanned<String>> {
        match &self.peek().node {
            Tok::Ident(w) => {
                let w = w.clone();
                Ok(Spanned::new(w, self.bump().span))
            }
            _ => self.expected(what),
        }
    }

    /// Numbers joined by `x`, exactly `n` of them.
    fn dims(&mut self, n: usize, what: &str) -> PResult<Dims> {
        self.dims_in(n..=n, what)
    }

    fn dims_1_or_2(&mut self, what: &str) -> PResult<Dims> {
        self.dims_in(1..=2, what)
    }

    fn dims_in(&mut self, n: std::ops::RangeInclusive<usize>, what: &str) -> PResult<Dims> {
        let t = self.peek().clone();
        match t.node {
            Tok::Dims(parts) if n.contains(&parts.len()) => {
                self.bump();
                Ok(Dims {
                    parts,
                    span: t.span,
                })
            }
            Tok::Dims(parts) => {
                let msg = format!("expected {what}, found {} numbers", parts.len());
                self.error(t.span, msg)
            }
            _ => self.expected(what),
        }
    }

    fn number(&mut self, what: &str) -> PResult<Spanned<u64>> {
        let d = self.dims(1, what)?;
        Ok(d.parts[0].clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn messages(src: &str) -> Vec<(String, Option<String>)> {
        parse(src)
            .expect_err("should fail")
            .into_iter()
            .map(|d| (d.message, d.help))
            .collect()
    }

    #[test]
    fn parses_the_contract_example() {
        let src = "# MobileNet v2\nlayer ir {\n  input 56x56x24   # HxWxC\n  expand: pointwise 144, bias, relu6\n  dw: depthwise 3x3, stride 2x1, pad 1 1 0 2, dilation 2, multiplier 3\n  sep: conv 5x5 -> 8, separable spatial, residual\n}\n";
        let f = parse(src).unwrap();
        let l = &f.layers[0];
        assert_eq!(l.name.node, "ir");
        assert_eq!(l.inputs[0].values(), [56, 56, 24]);
        assert_eq!(l.stages.len(), 3);
        assert_eq!(l.stages[0].options.len(), 2);
        let opts: Vec<&Opt> = l.stages[1].options.iter().map(|o| &o.node).collect();
        assert!(matches!(opts[0], Opt::Stride(d) if d.values() == [2, 1]));
        assert!(matches!(opts[1], Opt::Pad(Pad::Explicit(p)) if p[3].node == 2));
        assert!(matches!(opts[3], Opt::Multiplier(m) if m.node == 3));
        assert!(matches!(&l.stages[2].op.node, Op::Conv { cout, .. } if cout.node == 8));
        // The op's span covers 'conv 5x5 -> 8'.
        assert_eq!(
            &src[l.stages[2].op.span.start..l.stages[2].op.span.end],
            "conv 5x5 -> 8"
        );
    }

    #[test]
    fn one_line_layers_and_semicolons() {
        let f =
            parse("layer a { input 1x1x1; p: pointwise 2 } layer b {input 2x2x2\np: pointwise 1}")
                .unwrap();
        assert_eq!(f.layers.len(), 2);
        // A stage may be named 'input'.
        assert!(parse("layer a { input 1x1x1\n input: pointwise 2 }").is_ok());
    }

    #[test]
    fn reports_every_bad_line_with_suggestions() {
        let m = messages(
            "layer a {\n input 4x4\n d: depthwize 3x3\n p: pointwise 3, strid 2\n q: pointwise 3 bias\n}\n",
        );
        assert_eq!(
            m,
            [
                (
                    "expected the input shape HxWxC, e.g. 12x12x3, found 2 numbers".into(),
                    None
                ),
                (
                    "unknown operation 'depthwize'".into(),
                    Some("did you mean 'depthwise'?".into())
                ),
                (
                    "unknown option 'strid'".into(),
                    Some("did you mean 'stride'?".into())
                ),
                (
                    "expected ',' or end of line, found 'bias'".into(),
                    Some("options are separated by commas".into())
                ),
            ]
        );
    }

    #[test]
    fn unclosed_and_stray() {
        assert_eq!(
            messages("layer a {\n input 1x1x1\n"),
            [(
                "this '{' is never closed".into(),
                Some("add '}' after the layer's last stage".into())
            )]
        );
        assert_eq!(
            messages("lyer a {}"),
            [(
                "expected 'layer', found 'lyer'".into(),
                Some("did you mean 'layer'?".into())
            )]
        );
    }
}
