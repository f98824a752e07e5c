use crate::{DataError, Diagnostics, JitError, SourceFile};
use std::fmt;
use std::path::PathBuf;

/// Everything that can go wrong between a file name and a result. All of
/// these are the user's input being wrong (exit status 1 in the CLI).
///
/// `Debug` shows the rendered message, as `Display` does (and as
/// `anyhow::Error` does): `fn main() -> Result<(), Box<dyn Error>>`
/// prints a parse error as the `FILE:LINE:COL: error: ...` diagnostic,
/// not the value's fields. Match on the variants to inspect them.
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
    Jit(JitError),
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

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for Error {}

impl From<DataError> for Error {
    fn from(e: DataError) -> Error {
        Error::Data(e)
    }
}

impl From<JitError> for Error {
    fn from(e: JitError) -> Error {
        match e {
            JitError::Data(d) => Error::Data(d),
            e => Error::Jit(e),
        }
    }
}

#[cfg(test)]
mod tests {
    /// What `main() -> Result<(), Box<dyn Error>>` prints after `Error: `
    /// is the error's `Debug`: the diagnostic, as the CLI prints it.
    #[test]
    fn debug_is_the_rendered_diagnostic() {
        let e = crate::parse_layers(
            "bad.conv",
            "layer l {\n  input 4x4x3\n  d: depthwise 3x3, strid 2\n}\n",
        )
        .unwrap_err();
        let boxed: Box<dyn std::error::Error> = Box::new(e);
        let debug = format!("{boxed:?}");
        assert_eq!(debug, boxed.to_string());
        assert!(
            debug.starts_with("bad.conv:3:21: error: unknown option 'strid'"),
            "{debug}"
        );
        assert!(debug.contains("did you mean 'stride'?"), "{debug}");
        assert!(!debug.contains("Source {"), "{debug}");
    }

    #[test]
    fn debug_of_every_variant_is_its_message() {
        let data = crate::DataError::tensor("input", "expected 3 values, found 2");
        for e in [
            crate::Error::Io {
                path: "x.npz".into(),
                message: "no such file".into(),
            },
            crate::Error::Data(data),
            crate::Error::Jit(crate::JitError::TooLarge("too wide".into())),
            crate::Error::NoSuchLayer {
                message: "no layer 'a'".into(),
            },
        ] {
            assert_eq!(format!("{e:?}"), e.to_string());
        }
    }
}
