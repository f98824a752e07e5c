//! The convjit layer language: text in, a syntax tree with spans out.
//!
//! This crate knows nothing of shapes, weights or code generation: it only
//! says whether a `.conv` file is well formed and, if not, where and why
//! (see [`Diagnostic`]). Meaning (shape inference, option checks) belongs to
//! `convjit-ir`, which reports through the same [`Diagnostic`] type.
#![forbid(unsafe_code)]

pub mod ast;
mod diagnostic;
mod lexer;
mod parser;
mod span;

pub use diagnostic::{
    acts_on_terminal, quoted, suggest, Diagnostic, Diagnostics, MAX_DIAGNOSTICS, MAX_LINE_SHOWN,
    MAX_QUOTED,
};
pub use parser::parse;
pub use span::{SourceFile, Span};
