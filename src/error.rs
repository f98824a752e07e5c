use crate::{DataError, Diagnostics, SourceFile};
use std::fmt;
use std::path::PathBuf;

/// Everything that can go wrong between a file name and a result. All of
/// these are the user's input being wrong (exit status 1 in the CLI).
#[derive(Debug)]
pub enum Error {
    /// A file could not be read as text.
    Io { path: PathBuf, message: String },
    /// The `.conv` text is wrong; `Display` renders the diagnostics (the
    /// earliest [`convjit_lang::MAX_DIAGNOSTICS`], and how many more).
    Source {
        file: SourceFile,
        diagnostics: Diagnostics,
    },
    /// A data file or buffer does not fit the layer.
    Data(DataError),
    /// Code generation failed (a bug or an unsupported host, never the
    /// user's input: its `Display` says so).
    Jit(convjit_jit::JitError),
    /// `--layer` names no layer, or is needed and missing.
    NoSuchLayer { message: String },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Error::Io { path, message } => write!(f, "{}: {message}", path.display()),
            Error::Source { file, diagnostics } => f.write_str(diagnostics.render(file).trim_end()),
            Error::Data(e) => e.fmt(f),
            Error::Jit(e) => e.fmt(f),
            Error::NoSuchLayer { message } => f.write_str(message),
        }
    }
}

impl std::error::Error for Error {}

impl From<DataError> for Error {
    fn from(e: DataError) -> Error {
        Error::Data(e)
    }
}

impl From<convjit_jit::JitError> for Error {
    fn from(e: convjit_jit::JitError) -> Error {
        match e {
            convjit_jit::JitError::Data(d) => Error::Data(d),
            e => Error::Jit(e),
        }
    }
}
