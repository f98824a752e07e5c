//! NumPy `.npy` / `.npz` files of little-endian float32 arrays.
//!
//! Reading accepts what `numpy.save`, `numpy.savez` and
//! `numpy.savez_compressed` write for C-order `float32` arrays and turns
//! every other file into an [`Error`] naming the file, the `.npz` key and
//! what was expected versus found. Nothing a file says is trusted for
//! allocation: sizes are checked against the bytes really present (and
//! against [`MAX_ELEMENTS`]) first.
//!
//! Writing goes through [`Outputs`]: a temporary file beside the target is
//! filled, synced and renamed over it (with a command's other outputs), so
//! readers never see a half-written array and a failure changes nothing.
// Deny, not forbid: the one module allowed `unsafe` is `pending`, the
// registry a signal handler reads (raw C strings, `sigaction`).
#![deny(unsafe_code)]

mod header;
mod input;
mod npy;
mod npz;
mod output;
#[allow(unsafe_code)]
mod pending;

use std::fmt;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

pub use header::MAX_ELEMENTS;
pub use input::read_limited;
pub use npz::{
    read_npz, write_npz, write_npz_lazy, write_npz_to, Fill, LazyArray, Npz, NpzArchive,
};
pub use output::{OutputError, Outputs};
pub use pending::remove_pending_on_signals;

/// Writes `bytes` to `path` as a command's only output ([`Outputs`]).
pub fn write_atomic(path: impl AsRef<Path>, bytes: &[u8]) -> Result<(), Error> {
    write_one(path.as_ref(), |f| f.write_all(bytes))
}

/// `path` as the only output of a command that reads nothing it could
/// overwrite: made whole beside it, then put in place.
fn write_one(path: &Path, fill: impl FnOnce(&mut File) -> io::Result<()>) -> Result<(), Error> {
    let mut out = Outputs::new();
    let i = out.add("output", path, &[]).map_err(|e| match e {
        OutputError::Usage(m) => Error::new(path, None, format!("cannot write: {m}")),
        OutputError::Io { message, .. } => Error::new(path, None, message),
    })?;
    out.write(i, fill)?;
    out.commit()
}

/// A dense row-major f32 array.
#[derive(Clone, Debug, PartialEq)]
pub struct Array {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl Array {
    /// # Panics
    /// If `data.len()` is not the product of `shape` (1 for a 0-d shape `[]`).
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Array {
        let count = shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
        assert_eq!(
            count,
            Some(data.len()),
            "Array::new: shape {shape:?} does not match {} data values",
            data.len()
        );
        Array { shape, data }
    }

    /// Number of values.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

/// Why some bytes are not a float32 `.npy` image, without saying which file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormatError {
    message: String,
}

impl FormatError {
    pub(crate) fn new(message: String) -> Self {
        FormatError { message }
    }
}

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for FormatError {}

/// A failure reading or writing a file: `FILE: [key 'KEY': ]REASON`.
///
/// The reason already includes any underlying I/O error's text, so
/// `source()` is `None` to keep error-chain printers from repeating it.
#[derive(Debug)]
pub struct Error {
    path: PathBuf,
    key: Option<String>,
    message: String,
}

impl Error {
    pub(crate) fn new(path: &Path, key: Option<&str>, message: String) -> Self {
        Error {
            path: path.to_path_buf(),
            key: key.map(str::to_string),
            message,
        }
    }

    /// "cannot read: ..." / "cannot write: ..." for an I/O failure.
    pub(crate) fn io(path: &Path, key: Option<&str>, action: &str, err: &io::Error) -> Self {
        Error::new(path, key, format!("{action}: {}", io_message(err)))
    }

    /// Maps a decoding failure of the array stored at `path` (under `key` in an `.npz`).
    pub(crate) fn decode(path: &Path, key: Option<&str>, err: npy::DecodeError) -> Self {
        match err {
            npy::DecodeError::Format(e) => Error::new(path, key, e.message),
            npy::DecodeError::Io(e) => Error::io(path, key, "cannot read", &e),
        }
    }

    /// The file that could not be read or written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The `.npz` key (entry name without ".npy") the error is about, if any.
    pub fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.path.display())?;
        if let Some(key) = &self.key {
            write!(f, "key '{key}': ")?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

/// The OS's text for an I/O error, without `tempfile`'s "at path .tmpXYZ" suffix
/// (the temporary name means nothing to the user; the target path is in the `Error`).
pub(crate) fn io_message(err: &io::Error) -> String {
    let text = err.to_string();
    match text.split_once(" at path ") {
        Some((head, _)) if err.get_ref().is_some() => head.to_string(),
        _ => text,
    }
}

/// Parses a complete `.npy` image held in memory.
pub fn parse_npy(bytes: &[u8]) -> Result<Array, FormatError> {
    npy::decode(bytes, Some(bytes.len() as u64)).map_err(|e| match e {
        npy::DecodeError::Format(e) => e,
        // Reading a slice cannot fail, but stay total rather than panic.
        npy::DecodeError::Io(e) => FormatError::new(format!("cannot read: {e}")),
    })
}

/// Reads a float32 `.npy` file.
pub fn read_npy(path: impl AsRef<Path>) -> Result<Array, Error> {
    let path = path.as_ref();
    let cannot_read = |e: io::Error| Error::io(path, None, "cannot read", &e);
    let file = File::open(path).map_err(cannot_read)?;
    // Only a regular file's length is known up front (not a pipe's, say).
    let meta = file.metadata().map_err(cannot_read)?;
    let total_len = meta.is_file().then_some(meta.len());
    npy::decode(BufReader::new(file), total_len).map_err(|e| Error::decode(path, None, e))
}

/// A valid v1.0 `.npy` image, identical to what `numpy.save` writes.
///
/// # Panics
/// If `data.len()` is not the product of `shape`.
pub fn npy_bytes(shape: &[usize], data: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(128 + data.len() * 4);
    // Writing to a Vec cannot fail.
    let _ = npy::encode(&mut out, shape, data);
    out
}

/// Writes a `.npy` file as a command's only output ([`Outputs`]).
///
/// # Panics
/// If `data.len()` is not the product of `shape`.
pub fn write_npy(path: impl AsRef<Path>, shape: &[usize], data: &[f32]) -> Result<(), Error> {
    write_one(path.as_ref(), |file| write_npy_to(file, shape, data))
}

/// Writes a `.npy` image into `file` (e.g. an [`Outputs`] entry's).
///
/// # Panics
/// If `data.len()` is not the product of `shape`.
pub fn write_npy_to(file: &mut File, shape: &[usize], data: &[f32]) -> io::Result<()> {
    let mut w = BufWriter::new(file);
    npy::encode(&mut w, shape, data)?;
    w.flush()
}
