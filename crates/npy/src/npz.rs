//! `.npz` archives: a zip whose entries are `KEY.npy`, stored or deflated.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipArchive, ZipWriter};

use crate::header::MAX_ELEMENTS;
use crate::npy::{self, MAX_HEADER_LEN};
use crate::{Array, Error};

/// Largest uncompressed entry we will inflate: the biggest valid `.npy`.
/// Checked against the size the archive declares, and enforced while
/// reading, so a zip bomb stops here instead of exhausting memory.
const MAX_ENTRY_BYTES: u64 = MAX_ELEMENTS as u64 * 4 + MAX_HEADER_LEN as u64 + 12;

/// The arrays of one `.npz` file, by key (entry name without ".npy").
#[derive(Clone, Debug, PartialEq)]
pub struct Npz {
    path: PathBuf,
    arrays: BTreeMap<String, Array>,
}

impl Npz {
    /// The file the arrays were read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn get(&self, key: &str) -> Option<&Array> {
        self.arrays.get(key)
    }

    /// Keys in sorted order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.arrays.keys().map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.arrays.len()
    }

    pub fn is_empty(&self) -> bool {
        self.arrays.is_empty()
    }
}

/// Reads every array of a `.npz` archive; any bad entry fails the whole read.
pub fn read_npz(path: impl AsRef<Path>) -> Result<Npz, Error> {
    let path = path.as_ref();
    let mut archive = NpzArchive::open(path)?;
    let keys: Vec<String> = archive.keys().map(str::to_string).collect();
    let mut arrays = BTreeMap::new();
    for key in keys {
        let array = archive.read(&key)?;
        arrays.insert(key, array);
    }
    Ok(Npz {
        path: path.to_path_buf(),
        arrays,
    })
}

/// An opened `.npz` archive whose arrays are inflated only when asked
/// for: its keys come from the zip's directory, each array's shape from
/// its `.npy` header alone, so a caller can check names and shapes
/// before inflating anything (an archive of unused members that each
/// inflate to gigabytes then costs nothing).
pub struct NpzArchive {
    path: PathBuf,
    archive: ZipArchive<BufReader<File>>,
    /// Key (entry name without ".npy") to entry index.
    entries: BTreeMap<String, usize>,
}

impl NpzArchive {
    /// Opens `path` and reads its directory (not its entries).
    pub fn open(path: impl AsRef<Path>) -> Result<NpzArchive, Error> {
        let path = path.as_ref();
        let file = File::open(path).map_err(|e| Error::io(path, None, "cannot read", &e))?;
        // A zip is read by seeking to its directory at the end: a pipe
        // (`<(cat w.npz)`), FIFO or device cannot be one, and reading it
        // again for the error's hint could wait for a writer for ever.
        let meta = file
            .metadata()
            .map_err(|e| Error::io(path, None, "cannot read", &e))?;
        if !meta.is_file() {
            return Err(Error::new(
                path,
                None,
                "not a regular file: an .npz (a zip archive) is read by seeking, which a pipe, \
                 FIFO or device cannot do; save it to a file first"
                    .into(),
            ));
        }
        let again = file.try_clone().ok();
        let archive =
            ZipArchive::new(BufReader::new(file)).map_err(|e| not_a_zip(path, again, &e))?;
        if archive.has_duplicate_names() {
            return Err(duplicate_error(path, archive));
        }
        let mut entries = BTreeMap::new();
        for index in 0..archive.len() {
            let key = entry_key(path, &archive, index)?;
            if entries.insert(key.clone(), index).is_some() {
                return Err(Error::new(
                    path,
                    Some(&key),
                    "stored twice in the archive".into(),
                ));
            }
        }
        Ok(NpzArchive {
            path: path.to_path_buf(),
            archive,
            entries,
        })
    }

    /// The file the archive was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Keys in sorted order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    pub fn contains(&self, key: &str) -> bool {
        self.entries.contains_key(key)
    }

    /// The shape `key`'s header declares, inflating only the header
    /// (`None`: no such key).
    pub fn shape(&mut self, key: &str) -> Result<Option<Vec<usize>>, Error> {
        let Some(&index) = self.entries.get(key) else {
            return Ok(None);
        };
        let path = self.path.clone();
        let entry = open_entry(&path, &mut self.archive, key, index)?;
        npy::decode_shape(entry)
            .map(Some)
            .map_err(|e| Error::decode(&path, Some(key), e))
    }

    /// The array stored under `key`, inflated no further than its header
    /// and the zip's directory declare.
    pub fn read(&mut self, key: &str) -> Result<Array, Error> {
        let Some(&index) = self.entries.get(key) else {
            return Err(Error::new(&self.path, Some(key), "missing".into()));
        };
        let path = self.path.clone();
        let entry = open_entry(&path, &mut self.archive, key, index)?;
        npy::decode(entry, None).map_err(|e| Error::decode(&path, Some(key), e))
    }
}

/// The key of entry `index`: its name without ".npy".
fn entry_key<R: Read + Seek>(
    path: &Path,
    archive: &ZipArchive<R>,
    index: usize,
) -> Result<String, Error> {
    let name = match archive.name_for_index(index) {
        Some(Ok(name)) => name.into_owned(),
        Some(Err(e)) => return Err(not_a_zip(path, None, &e)),
        None => {
            return Err(Error::new(
                path,
                None,
                format!("archive entry {index} vanished"),
            ))
        }
    };
    match name.strip_suffix(".npy") {
        Some(key) => Ok(key.to_string()),
        None => Err(Error::new(
            path,
            None,
            format!(
                "entry '{}' is not a .npy array (every entry of a .npz must be named KEY.npy)",
                name.escape_debug()
            ),
        )),
    }
}

/// A reader of entry `index`'s uncompressed bytes, refusing one whose
/// declared size no `.npy` could have, and ending one byte past the
/// declared size (so the decoder sees an overlong entry, and a lying
/// entry inflates no further).
fn open_entry<'a, R: Read + Seek>(
    path: &Path,
    archive: &'a mut ZipArchive<R>,
    key: &str,
    index: usize,
) -> Result<io::Take<zip::read::ZipFile<'a, R>>, Error> {
    let keyed = |message: String| Error::new(path, Some(key), message);
    let entry = archive
        .by_index(index)
        .map_err(|e| keyed(format!("cannot read entry '{key}.npy': {e}")))?;
    let size = entry.size();
    if size > MAX_ENTRY_BYTES {
        return Err(keyed(format!(
            "entry declares {size} uncompressed bytes, more than the limit of {MAX_ENTRY_BYTES} \
             ({MAX_ELEMENTS} float32 values plus header)"
        )));
    }
    Ok(entry.take(size + 1))
}

fn not_a_zip(path: &Path, file: Option<File>, err: &zip::result::ZipError) -> Error {
    let hint = if file.is_some_and(starts_with_npy_magic) {
        " (this looks like a single .npy array, not an .npz)"
    } else {
        ""
    };
    Error::new(
        path,
        None,
        format!("not a valid .npz (zip) archive: {err}{hint}"),
    )
}

/// Whether the (regular, already open) file begins like an `.npy`, to
/// explain a common mix-up; read through the open handle, never by
/// opening the path again.
fn starts_with_npy_magic(mut f: File) -> bool {
    let mut start = [0u8; 6];
    f.seek(std::io::SeekFrom::Start(0)).is_ok()
        && f.read_exact(&mut start).is_ok()
        && &start == b"\x93NUMPY"
}

/// Names the repeated entry: the zip crate keeps only the last entry of each
/// name, so walk the central directory ourselves (only on this error path).
fn duplicate_error<R: Read + Seek>(path: &Path, archive: ZipArchive<R>) -> Error {
    let start = archive.central_directory_start();
    match repeated_name(archive.into_inner(), start) {
        Some(name) => {
            let key = name.strip_suffix(".npy").unwrap_or(&name);
            Error::new(
                path,
                Some(key),
                format!("entry '{name}' is stored twice in the archive"),
            )
        }
        None => Error::new(
            path,
            None,
            "the archive stores some entry name twice".into(),
        ),
    }
}

/// The first name that occurs twice in the central directory starting at `start`.
fn repeated_name<R: Read + Seek>(mut r: R, start: u64) -> Option<String> {
    const SIGNATURE: &[u8; 4] = b"PK\x01\x02";
    r.seek(SeekFrom::Start(start)).ok()?;
    let mut seen = BTreeSet::new();
    let mut fixed = [0u8; 46];
    loop {
        r.read_exact(&mut fixed).ok()?;
        if &fixed[..4] != SIGNATURE {
            return None;
        }
        let u16_at = |i: usize| u16::from_le_bytes([fixed[i], fixed[i + 1]]);
        let mut name = vec![0u8; usize::from(u16_at(28))];
        r.read_exact(&mut name).ok()?;
        let name = String::from_utf8_lossy(&name).into_owned();
        if !seen.insert(name.clone()) {
            return Some(name);
        }
        let skip = i64::from(u16_at(30)) + i64::from(u16_at(32));
        r.seek(SeekFrom::Current(skip)).ok()?;
    }
}

/// Writes an uncompressed `.npz` atomically, one `KEY.npy` entry per array,
/// readable by `numpy.load`.
///
/// # Panics
/// If an array's `data.len()` is not the product of its `shape`.
pub fn write_npz(path: impl AsRef<Path>, arrays: &[(&str, &Array)]) -> Result<(), Error> {
    let path = path.as_ref();
    for (key, a) in arrays {
        let count = a.shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
        assert_eq!(
            count,
            Some(a.data.len()),
            "npz: '{key}': shape {:?} does not match {} data values",
            a.shape,
            a.data.len()
        );
    }
    let lazy: Vec<LazyArray> = arrays
        .iter()
        .map(|(key, a)| LazyArray {
            key: key.to_string(),
            shape: a.shape.clone(),
            fill: Box::new(|start, out: &mut [f32]| {
                out.copy_from_slice(&a.data[start..start + out.len()])
            }),
        })
        .collect();
    write_npz_lazy(path, &lazy)
}

/// Puts the values at row-major positions `start..start + out.len()` of an
/// array in `out`: `fill(start, out)`.
pub type Fill<'a> = Box<dyn Fn(usize, &mut [f32]) + 'a>;

/// An array for [`write_npz_lazy`], made while it is written:
/// `fill(start, out)` puts the values at row-major positions
/// `start..start + out.len()` in `out` (a chunk of at most 16384).
pub struct LazyArray<'a> {
    pub key: String,
    pub shape: Vec<usize>,
    pub fill: Fill<'a>,
}

/// [`write_npz`] for arrays that need not all be in memory: each is made
/// chunk by chunk as it is written (e.g. transposed from another buffer).
///
/// # Panics
/// If a shape's element count overflows `usize`.
pub fn write_npz_lazy(path: impl AsRef<Path>, arrays: &[LazyArray]) -> Result<(), Error> {
    let path = path.as_ref();
    let mut seen = BTreeSet::new();
    if let Some(a) = arrays.iter().find(|a| !seen.insert(a.key.as_str())) {
        return Err(Error::new(
            path,
            Some(&a.key),
            "given twice; keys must be unique".into(),
        ));
    }
    crate::write_one(path, |file| write_npz_to(file, arrays))
}

/// [`write_npz_lazy`] into `file` (e.g. an [`crate::Outputs`] entry's); keys
/// must be unique.
pub fn write_npz_to(file: &mut File, arrays: &[LazyArray]) -> io::Result<()> {
    let mut zip = ZipWriter::new(BufWriter::new(file));
    for a in arrays {
        write_entry(&mut zip, a)?;
    }
    zip.finish().map_err(io::Error::other)?.flush()
}

fn write_entry<W: Write + Seek>(zip: &mut ZipWriter<W>, a: &LazyArray) -> io::Result<()> {
    let count = a
        .shape
        .iter()
        .fold(1u64, |n, &d| n.saturating_mul(d as u64));
    let options = SimpleFileOptions::default()
        .compression_method(CompressionMethod::Stored)
        .large_file(count.saturating_mul(4) + MAX_HEADER_LEN as u64 >= u64::from(u32::MAX));
    zip.start_file(format!("{}.npy", a.key), options)
        .map_err(io::Error::other)?;
    let mut w = BufWriter::new(zip);
    npy::encode_with(&mut w, &a.shape, &*a.fill)?;
    w.flush()
}
