//! Reading a whole input file under a size limit: a file larger than the
//! limit is refused before it is read (a regular file, by its length) or
//! as soon as the limit is passed (a pipe or device, `/dev/zero` say),
//! so memory stays bounded whatever the path names.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use crate::Error;

/// How much of a file `first` sees before the rest is read.
const PREFIX_BYTES: usize = 64 * 1024;

/// The bytes of `path`, at most `limit` of them, else an error naming the
/// limit. `first` sees the first bytes (up to 64 KiB) before more are
/// read, and may refuse them: what cannot be the start of such a file is
/// refused without reading on.
pub fn read_limited(
    path: impl AsRef<Path>,
    limit: u64,
    first: impl FnOnce(&[u8]) -> Result<(), String>,
) -> Result<Vec<u8>, Error> {
    let path = path.as_ref();
    let cannot_read = |e: &io::Error| Error::io(path, None, "cannot read", e);
    let too_large = || {
        Error::new(
            path,
            None,
            format!("the file is larger than the limit of {limit} bytes"),
        )
    };
    let file = File::open(path).map_err(|e| cannot_read(&e))?;
    let meta = file.metadata().map_err(|e| cannot_read(&e))?;
    if meta.is_dir() {
        return Err(Error::new(
            path,
            None,
            "cannot read: it is a directory".into(),
        ));
    }
    if meta.is_file() && meta.len() > limit {
        return Err(too_large());
    }
    let mut reader = file.take(limit.saturating_add(1));
    let mut bytes = Vec::new();
    let prefix = usize::try_from(limit.min(PREFIX_BYTES as u64)).unwrap_or(PREFIX_BYTES);
    read_up_to(&mut reader, &mut bytes, prefix).map_err(|e| cannot_read(&e))?;
    first(&bytes).map_err(|m| Error::new(path, None, m))?;
    if bytes.len() == prefix {
        // A regular file's length sizes the buffer once; what a pipe brings
        // grows it (within `limit`, checked below).
        if meta.is_file() {
            let len = usize::try_from(meta.len()).unwrap_or(usize::MAX);
            bytes
                .try_reserve_exact(len.saturating_sub(bytes.len()))
                .map_err(|_| {
                    Error::new(
                        path,
                        None,
                        format!("not enough memory to read its {len} bytes"),
                    )
                })?;
        }
        reader
            .read_to_end(&mut bytes)
            .map_err(|e| cannot_read(&e))?;
    }
    if bytes.len() as u64 > limit {
        return Err(too_large());
    }
    Ok(bytes)
}

/// Reads until `out` holds `n` bytes or the input ends.
fn read_up_to(r: &mut impl Read, out: &mut Vec<u8>, n: usize) -> io::Result<()> {
    out.resize(n, 0);
    let mut filled = 0;
    while filled < n {
        match r.read(&mut out[filled..]) {
            Ok(0) => break,
            Ok(k) => filled += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    out.truncate(filled);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(bytes: &[u8]) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut f, bytes).unwrap();
        f
    }

    #[test]
    fn reads_files_within_the_limit() {
        let f = file(b"hello");
        assert_eq!(read_limited(f.path(), 5, |_| Ok(())).unwrap(), b"hello");
        let big = vec![7u8; 200_000];
        let f = file(&big);
        assert_eq!(read_limited(f.path(), 200_000, |_| Ok(())).unwrap(), big);
    }

    #[test]
    fn refuses_larger_files_by_their_length() {
        let f = file(b"hello!");
        let e = read_limited(f.path(), 5, |_| panic!("not read")).unwrap_err();
        assert!(
            e.to_string().contains("larger than the limit of 5 bytes"),
            "{e}"
        );
    }

    #[cfg(unix)]
    #[test]
    fn endless_devices_stop_at_the_limit() {
        let e = read_limited(Path::new("/dev/zero"), 1 << 20, |_| Ok(())).unwrap_err();
        assert!(e.to_string().contains("larger than the limit"), "{e}");
        let e = read_limited(Path::new("/dev/zero"), 1 << 40, |b| {
            Err(format!("refused after {} bytes", b.len()))
        })
        .unwrap_err();
        assert!(e.to_string().contains("refused after 65536 bytes"), "{e}");
    }

    #[test]
    fn directories_are_named() {
        let d = tempfile::tempdir().unwrap();
        let e = read_limited(d.path(), 5, |_| Ok(())).unwrap_err();
        assert!(e.to_string().contains("directory"), "{e}");
    }
}
