//! Atomic file replacement: write a temporary file beside the target, sync
//! it, then rename it over the target, so a reader sees the old file or the
//! complete new one and a failure leaves nothing behind.

use std::fs::File;
use std::io;
use std::path::Path;

use tempfile::{Builder, NamedTempFile};

use crate::Error;

/// Creates `path` (or replaces it) with whatever `fill` writes.
///
/// `fill` must flush any buffering it adds. On error the temporary file is
/// removed (by `NamedTempFile`'s drop) and `path` is untouched.
pub(crate) fn write(
    path: &Path,
    fill: impl FnOnce(&mut File) -> io::Result<()>,
) -> Result<(), Error> {
    let cannot_write = |e: &io::Error| Error::io(path, None, "cannot write", e);
    let mut tmp = temp_file_beside(path).map_err(|e| cannot_write(&e))?;
    fill(tmp.as_file_mut())
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(|e| cannot_write(&e))?;
    tmp.persist(path).map_err(|e| cannot_write(&e.error))?;
    Ok(())
}

/// A temporary file in the target's directory (so the rename cannot cross
/// file systems), created with the permissions `File::create` would give:
/// `NamedTempFile` defaults to 0600, which would make outputs private.
fn temp_file_beside(path: &Path) -> io::Result<NamedTempFile> {
    let mut builder = Builder::new();
    builder.prefix(".convjit-npy-");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(0o666));
    }
    builder.tempfile_in(parent_dir(path))
}

/// The directory holding `path`; a bare file name's parent is "" to `Path`, meaning ".".
fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_file_names_live_in_the_current_directory() {
        assert_eq!(parent_dir(Path::new("out.npy")), Path::new("."));
        assert_eq!(parent_dir(Path::new("runs/out.npy")), Path::new("runs"));
        assert_eq!(parent_dir(Path::new("/out.npy")), Path::new("/"));
    }
}
