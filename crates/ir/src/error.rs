//! Errors about data: weight archives and tensors that do not fit a layer.

use std::fmt;
use std::path::PathBuf;

/// Data that does not fit a layer: a file that cannot be read, weights or
/// a tensor of the wrong shape.
#[derive(Debug)]
pub enum DataError {
    /// A NumPy file could not be read or written.
    Npy(convjit_npy::Error),
    /// A weights archive does not fit the layer; `key` is `None` when the
    /// problem is the archive as a whole.
    Weights {
        /// The archive.
        path: PathBuf,
        /// The array at fault.
        key: Option<String>,
        /// What is wrong.
        message: String,
    },
    /// A tensor or buffer (`what`: "input", "output", ...) does not fit.
    Tensor {
        /// What does not fit.
        what: String,
        /// What is wrong.
        message: String,
    },
}

impl DataError {
    pub(crate) fn weights(path: &std::path::Path, key: &str, message: String) -> DataError {
        DataError::Weights {
            path: path.to_path_buf(),
            key: Some(key.to_string()),
            message,
        }
    }

    /// A [`DataError::Tensor`].
    pub fn tensor(what: impl Into<String>, message: impl Into<String>) -> DataError {
        DataError::Tensor {
            what: what.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for DataError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            DataError::Npy(e) => e.fmt(f),
            DataError::Weights {
                path,
                key: Some(key),
                message,
            } => write!(f, "{}: key '{key}': {message}", path.display()),
            DataError::Weights {
                path,
                key: None,
                message,
            } => write!(f, "{}: {message}", path.display()),
            DataError::Tensor { what, message } => write!(f, "{what}: {message}"),
        }
    }
}

impl std::error::Error for DataError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DataError::Npy(e) => Some(e),
            _ => None,
        }
    }
}

impl From<convjit_npy::Error> for DataError {
    fn from(e: convjit_npy::Error) -> DataError {
        DataError::Npy(e)
    }
}

/// `[3, 3, 32, 1]`
pub(crate) fn shape_str(shape: &[usize]) -> String {
    format!("{shape:?}")
}
