//! The files a command writes, as one transaction: every output is made
//! complete in a temporary file beside its target, and only when all of
//! them are ready are they put in place, together; a failure at any point
//! (a full disk, a name the file system refuses) leaves every one of the
//! user's files as it was.
//!
//! Before anything is read or written, [`Outputs::add`] refuses an output
//! that is one of the command's inputs (the same device and inode, however
//! the paths are spelled) or that collides with another output, and one
//! that names a directory. A target that is not a regular file (a device
//! such as `/dev/null`, a FIFO) is written through, never replaced by a
//! regular file; a symbolic link is followed: the file it names is
//! replaced, the link stays. A file replaced keeps its permission bits
//! (as editors do: `chmod 640 k.o` survives a rebuild); a new file gets
//! what `File::create` would give it. The owner is the writer's.
//!
//! Two commands that write the same files at the same time (two builds
//! with the same `-o k.o`) do not interleave their renames: a commit holds
//! an exclusive lock on each directory it renames into (`DirLocks`), so
//! the files on disk are all one command's. No lock file is made; the
//! kernel drops the locks of a process that dies.
//!
//! Every temporary file and backup is registered (`pending.rs`) until it
//! is renamed or removed, so that a command killed by SIGINT, SIGTERM,
//! SIGHUP or SIGPIPE leaves none behind once the command line has installed the
//! handler ([`crate::remove_pending_on_signals`]).

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use tempfile::{Builder, NamedTempFile, TempPath};

use crate::pending::{self, Pending};
use crate::Error;

/// Why an output cannot be planned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputError {
    /// The command line asks for something impossible (an output that is
    /// an input, two outputs in one file, a directory): a usage error.
    Usage(String),
    /// The target's directory cannot be looked at.
    Io { path: PathBuf, message: String },
}

impl std::fmt::Display for OutputError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OutputError::Usage(m) => f.write_str(m),
            OutputError::Io { path, message } => write!(f, "{}: {message}", path.display()),
        }
    }
}

impl std::error::Error for OutputError {}

/// The outputs of one command; see the module docs.
#[derive(Default)]
pub struct Outputs {
    files: Vec<Output>,
}

struct Output {
    /// The flag or role that names it, for messages.
    what: String,
    /// As the user wrote it, for messages.
    shown: PathBuf,
    /// Where the bytes go: the target with symbolic links followed.
    target: PathBuf,
    /// The target as it was when added: a regular file (or nothing) is
    /// replaced by a rename, anything else written through.
    replace: bool,
    /// The complete content, once written.
    tmp: Option<Temp>,
}

/// A temporary file, registered for removal on a signal while it exists
/// (fields drop in order: the file is removed, then unregistered).
struct Temp {
    file: NamedTempFile,
    _pending: Option<Pending>,
}

/// A backup of a replaced file (a hard link), registered the same way.
struct Backup {
    path: TempPath,
    _pending: Option<Pending>,
}

/// A file's identity: device and inode on Unix, the canonical path elsewhere.
#[derive(PartialEq, Eq)]
enum Identity {
    #[cfg(unix)]
    Inode(u64, u64),
    #[allow(dead_code)]
    Path(PathBuf),
}

fn identity(meta: &fs::Metadata, path: &Path) -> Identity {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let _ = path;
        Identity::Inode(meta.dev(), meta.ino())
    }
    #[cfg(not(unix))]
    {
        let _ = meta;
        Identity::Path(fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf()))
    }
}

/// Where writing to `path` really lands: symbolic links followed (a link
/// to nothing is followed to where its target would be), and the parent
/// directory made absolute, so that two spellings of one new file compare
/// equal.
fn resolve(path: &Path) -> Result<PathBuf, OutputError> {
    // A pipe or device reached through links (`/dev/stdout` ->
    // `/proc/self/fd/1` -> `pipe:[N]`, not a path) is written through the
    // path as given: the kernel follows those links when it is opened.
    if fs::metadata(path).is_ok_and(|m| !m.is_file() && !m.is_dir()) {
        return Ok(path.to_path_buf());
    }
    let mut p = path.to_path_buf();
    for _ in 0..40 {
        match fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                let to = fs::read_link(&p).map_err(|e| OutputError::Io {
                    path: path.to_path_buf(),
                    message: format!("cannot follow the link: {e}"),
                })?;
                p = match p.parent() {
                    Some(dir) => dir.join(to),
                    None => to,
                };
            }
            _ => {
                let name = p.file_name().map(|n| n.to_os_string());
                let dir = parent_dir(&p);
                let dir = fs::canonicalize(dir).map_err(|e| OutputError::Io {
                    path: path.to_path_buf(),
                    message: format!("cannot write: {}", crate::io_message(&e)),
                })?;
                return Ok(match name {
                    Some(n) => dir.join(n),
                    None => dir,
                });
            }
        }
    }
    Err(OutputError::Usage(format!(
        "{}: too many levels of symbolic links",
        path.display()
    )))
}

/// The directory holding `path`; a bare file name's parent is "" to `Path`, meaning ".".
pub(crate) fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

impl Outputs {
    pub fn new() -> Outputs {
        Outputs::default()
    }

    /// Plans an output at `path` (`what` names it in messages, e.g. "-o")
    /// for a command that reads `inputs` (each with its role in messages,
    /// e.g. "the model"). Returns its index for [`Outputs::write`].
    /// Refused: an output that is one of `inputs` or an output added
    /// before (usage errors), or a directory.
    pub fn add(
        &mut self,
        what: &str,
        path: &Path,
        inputs: &[(&str, &Path)],
    ) -> Result<usize, OutputError> {
        let target = resolve(path)?;
        let meta = fs::metadata(&target).ok();
        if meta.as_ref().is_some_and(|m| m.is_dir()) {
            return Err(OutputError::Io {
                path: path.to_path_buf(),
                message: "cannot write: it is a directory".into(),
            });
        }
        if let Some(m) = &meta {
            let id = identity(m, &target);
            for (role, input) in inputs {
                if fs::metadata(input).is_ok_and(|im| identity(&im, input) == id) {
                    return Err(OutputError::Usage(format!(
                        "{what} {} would overwrite {role} {}",
                        path.display(),
                        input.display()
                    )));
                }
            }
        }
        if let Some(other) = self.files.iter().find(|o| o.target == target) {
            return Err(OutputError::Usage(format!(
                "{} {} and {what} {} name the same file",
                other.what,
                other.shown.display(),
                path.display(),
            )));
        }
        self.files.push(Output {
            what: what.to_string(),
            shown: path.to_path_buf(),
            target,
            replace: meta.as_ref().is_none_or(|m| m.is_file()),
            tmp: None,
        });
        Ok(self.files.len() - 1)
    }

    /// Makes output `i`'s content: `fill` writes it to a temporary file
    /// (and must flush any buffering it adds). Nothing of the user's
    /// changes until [`Outputs::commit`].
    pub fn write(
        &mut self,
        i: usize,
        fill: impl FnOnce(&mut File) -> io::Result<()>,
    ) -> Result<(), Error> {
        let o = &mut self.files[i];
        let cannot_write = |e: &io::Error| Error::io(&o.shown, None, "cannot write", e);
        // Beside the target, so the rename stays on one file system; a
        // target written through is copied from the system's temporary
        // directory instead (a device's directory may not be writable).
        let dir = if o.replace {
            parent_dir(&o.target).to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let file = temp_file_in(&dir).map_err(|e| cannot_write(&e))?;
        let _pending = pending::register(file.path());
        let mut tmp = Temp { file, _pending };
        if o.replace {
            keep_mode(&o.target, tmp.file.as_file()).map_err(|e| cannot_write(&e))?;
        }
        fill(tmp.file.as_file_mut())
            .and_then(|()| tmp.file.as_file().sync_all())
            .map_err(|e| cannot_write(&e))?;
        o.tmp = Some(tmp);
        Ok(())
    }

    /// Writes `bytes` as output `i`.
    pub fn write_bytes(&mut self, i: usize, bytes: &[u8]) -> Result<(), Error> {
        self.write(i, |f| f.write_all(bytes))
    }

    /// Puts every output in place. The outputs written through (a FIFO,
    /// a device) come first: they cannot be undone, and opening a FIFO
    /// waits for its reader, so nothing of the user's is replaced before
    /// they are done, and if one fails, nothing is. Then the renames, each
    /// over the old file (kept as a hard link until all are done, so that
    /// a failure puts back the ones before it), under the locks of
    /// `DirLocks` (taken after the outputs written through: a FIFO may
    /// wait long for its reader). An output never written is an error.
    pub fn commit(self) -> Result<(), Error> {
        if let Some(o) = self.files.iter().find(|o| o.tmp.is_none()) {
            return Err(Error::new(
                &o.shown,
                None,
                "internal error: never written".into(),
            ));
        }
        let (renamed, through): (Vec<Output>, Vec<Output>) =
            self.files.into_iter().partition(|o| o.replace);
        for o in &through {
            let Some(tmp) = &o.tmp else { continue };
            let copied = File::open(tmp.file.path()).and_then(|mut from| {
                let mut to = fs::OpenOptions::new().write(true).open(&o.target)?;
                io::copy(&mut from, &mut to)?;
                to.flush()
            });
            if let Err(e) = copied {
                return Err(Error::io(&o.shown, None, "cannot write", &e));
            }
        }
        // Held until the renames are done or undone (dropped after `done`).
        #[cfg(unix)]
        let _locks = DirLocks::take(renamed.iter().map(|o| parent_dir(&o.target)));
        // (target, backup of the file it replaced, if any) of each rename done.
        let mut done: Vec<(PathBuf, Option<Backup>)> = Vec::new();
        for o in &renamed {
            let Some(tmp) = &o.tmp else { continue };
            let moved = backup(&o.target).and_then(|old| {
                fs::rename(tmp.file.path(), &o.target)?;
                Ok(old)
            });
            match moved {
                Ok(old) => done.push((o.target.clone(), old)),
                Err(e) => {
                    undo(done);
                    return Err(Error::io(&o.shown, None, "cannot write", &e));
                }
            }
        }
        // Dropping `done` removes the backups; dropping the temporary
        // files removes the copied ones (the renamed ones are gone).
        Ok(())
    }
}

/// Exclusive advisory locks (`flock`) on the directories a commit renames
/// into, so that concurrent commits to the same files take turns: without
/// them, two builds with the same `-o k.o` could leave one's object beside
/// the other's header. Every commit takes them, even of one file, so that
/// the rule needs no exception.
///
/// - Each directory is locked through a descriptor opened on it (read-only,
///   `O_DIRECTORY`); no lock file is made beside the user's files.
/// - The locks are taken in one global order, by device and inode (after
///   merging two names of one directory, which would otherwise wait for
///   each other): two commits with overlapping sets of directories cannot
///   wait for each other in a cycle. The order is the directories'
///   identity rather than their canonical paths, which a bind mount can
///   make differ for one directory.
/// - A directory that cannot be opened for reading (mode `0300`: writable,
///   not listable) or locked (a file system without `flock`, NFS refusing
///   an exclusive lock on a read-only descriptor) is left unlocked, and the
///   commit goes on: the lock only guards against another command
///   committing the same files at the same moment, and refusing would make
///   a command that writes into such a directory fail every time, alone.
/// - Released when dropped, explicitly (a child forked meanwhile shares the
///   descriptor and would otherwise keep the lock), then closed.
#[cfg(unix)]
struct DirLocks(Vec<File>);

#[cfg(unix)]
impl DirLocks {
    fn take<'a>(dirs: impl Iterator<Item = &'a Path>) -> DirLocks {
        use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
        let mut open: Vec<((u64, u64), File)> = dirs
            .filter_map(|dir| {
                let f = fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_DIRECTORY)
                    .open(dir)
                    .ok()?;
                let m = f.metadata().ok()?;
                Some(((m.dev(), m.ino()), f))
            })
            .collect();
        open.sort_by_key(|(id, _)| *id);
        open.dedup_by_key(|(id, _)| *id);
        let locked = open
            .into_iter()
            .filter_map(|(_, f)| loop {
                match f.lock() {
                    Ok(()) => break Some(f),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => break None,
                }
            })
            .collect();
        DirLocks(locked)
    }
}

#[cfg(unix)]
impl Drop for DirLocks {
    fn drop(&mut self) {
        for f in &self.0 {
            let _ = f.unlock();
        }
    }
}

/// A hard link to the file at `target` (if there is one) under a fresh
/// name beside it, removed when dropped.
fn backup(target: &Path) -> io::Result<Option<Backup>> {
    match fs::symlink_metadata(target) {
        Ok(m) if m.is_file() => {}
        _ => return Ok(None),
    }
    let link = Builder::new()
        .prefix(".convjit-old-")
        .make_in(parent_dir(target), |p| fs::hard_link(target, p));
    match link {
        Ok(t) => {
            let path = t.into_temp_path();
            let _pending = pending::register(&path);
            Ok(Some(Backup { path, _pending }))
        }
        // A file system without hard links: no undo for this one.
        Err(_) => Ok(None),
    }
}

/// Puts back what the renames in `done` replaced, last first.
fn undo(done: Vec<(PathBuf, Option<Backup>)>) {
    for (target, old) in done.into_iter().rev() {
        match old {
            Some(old) => {
                // Kept if the rename fails: then it is the only copy.
                let _ = fs::rename(&old.path, &target);
                let _ = old.path.keep();
            }
            None => {
                let _ = fs::remove_file(&target);
            }
        }
    }
}

/// Gives `file` the permission bits of the regular file at `target`, if
/// there is one (on Unix; elsewhere nothing).
fn keep_mode(target: &Path, file: &File) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(old) = fs::metadata(target) {
            if old.is_file() {
                let bits = old.permissions().mode() & 0o777;
                file.set_permissions(fs::Permissions::from_mode(bits))?;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = (target, file);
    Ok(())
}

/// A temporary file in `dir`, created with the permissions `File::create`
/// would give: `NamedTempFile` defaults to 0600, which would make outputs
/// private.
fn temp_file_in(dir: &Path) -> io::Result<NamedTempFile> {
    let mut builder = Builder::new();
    builder.prefix(".convjit-");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(fs::Permissions::from_mode(0o666));
    }
    builder.tempfile_in(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn outputs_appear_together_and_replace_old_files() {
        let d = tempfile::tempdir().unwrap();
        let (a, b) = (d.path().join("k.o"), d.path().join("k.h"));
        fs::write(&a, "old").unwrap();
        let mut out = Outputs::new();
        let i = out.add("-o", &a, &[]).unwrap();
        let j = out.add("header", &b, &[]).unwrap();
        out.write_bytes(i, b"object").unwrap();
        out.write_bytes(j, b"header").unwrap();
        assert_eq!(
            fs::read(&a).unwrap(),
            b"old",
            "nothing changes before commit"
        );
        assert_eq!(files(d.path()).len(), 3); // k.o and two temporary files
        out.commit().unwrap();
        assert_eq!(fs::read(&a).unwrap(), b"object");
        assert_eq!(fs::read(&b).unwrap(), b"header");
        assert_eq!(files(d.path()), ["k.h", "k.o"]);
    }

    #[test]
    fn dropped_outputs_leave_nothing() {
        let d = tempfile::tempdir().unwrap();
        let a = d.path().join("out.npy");
        fs::write(&a, "old").unwrap();
        let mut out = Outputs::new();
        let i = out.add("-o", &a, &[]).unwrap();
        out.write_bytes(i, b"new").unwrap();
        drop(out);
        assert_eq!(fs::read(&a).unwrap(), b"old");
        assert_eq!(files(d.path()), ["out.npy"]);
    }

    #[test]
    fn a_failed_rename_puts_back_the_files_renamed_before_it() {
        let d = tempfile::tempdir().unwrap();
        let a = d.path().join("a.conv");
        let b = d.path().join("b.npz");
        // A name no file system takes: the second rename fails.
        let c = d.path().join("c".repeat(300));
        fs::write(&a, "old a").unwrap();
        let mut out = Outputs::new();
        for (k, p) in [&a, &b, &c].into_iter().enumerate() {
            let i = out.add("-o", p, &[]).unwrap();
            out.write_bytes(i, format!("new {k}").as_bytes()).unwrap();
        }
        let e = out.commit().unwrap_err();
        assert!(e.to_string().contains("cannot write"), "{e}");
        assert_eq!(fs::read(&a).unwrap(), b"old a");
        assert_eq!(files(d.path()), ["a.conv"]);
    }

    #[test]
    fn inputs_collisions_and_directories_are_usage_errors() {
        let d = tempfile::tempdir().unwrap();
        let input = d.path().join("s.conv");
        fs::write(&input, "layer").unwrap();
        let mut out = Outputs::new();
        let inputs = [("the layer file", input.as_path())];
        let e = out.add("-o", &input, &inputs).unwrap_err();
        assert!(
            matches!(e, OutputError::Usage(ref m) if m.contains("would overwrite the layer file")),
            "{e}"
        );
        // Another name for the same file.
        let link = d.path().join("hard.conv");
        fs::hard_link(&input, &link).unwrap();
        assert!(matches!(
            out.add("-o", &link, &inputs),
            Err(OutputError::Usage(_))
        ));
        let x = d.path().join("x.npz");
        out.add("--weights", &x, &inputs).unwrap();
        let again = d.path().join(".").join("x.npz");
        let e = out.add("-o", &again, &inputs).unwrap_err();
        assert!(
            matches!(e, OutputError::Usage(ref m) if m.contains("name the same file")),
            "{e}"
        );
        let e = out.add("-o", d.path(), &[]).unwrap_err();
        assert!(matches!(e, OutputError::Io { ref message, .. } if message.contains("directory")));
    }

    #[cfg(unix)]
    #[test]
    fn symbolic_links_are_followed_and_kept() {
        let d = tempfile::tempdir().unwrap();
        let real = d.path().join("real.npy");
        let link = d.path().join("link.npy");
        fs::write(&real, "old").unwrap();
        std::os::unix::fs::symlink("real.npy", &link).unwrap();
        let mut out = Outputs::new();
        let i = out.add("-o", &link, &[]).unwrap();
        out.write_bytes(i, b"new").unwrap();
        out.commit().unwrap();
        assert!(fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(fs::read(&real).unwrap(), b"new");
        // A link to the input is the input.
        let mut out = Outputs::new();
        assert!(out
            .add("-o", &link, &[("the input", real.as_path())])
            .is_err());
    }

    #[cfg(unix)]
    #[test]
    fn devices_are_written_through_not_replaced() {
        let mut out = Outputs::new();
        let i = out.add("-o", Path::new("/dev/null"), &[]).unwrap();
        out.write_bytes(i, b"gone").unwrap();
        out.commit().unwrap();
        let m = fs::metadata("/dev/null").unwrap();
        assert!(!m.is_file(), "/dev/null was replaced by a regular file");
    }

    /// A FIFO is written through before any regular file is replaced: when
    /// its reader opens it, the other output is still the old file (the
    /// FIFO's content is larger than a pipe's buffer, so the commit waits
    /// in the copy until it is read).
    #[cfg(unix)]
    #[test]
    fn outputs_written_through_come_before_any_replacement() {
        let d = tempfile::tempdir().unwrap();
        let (fifo, file) = (d.path().join("k.o"), d.path().join("k.h"));
        let status = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(status.success());
        fs::write(&file, "old").unwrap();
        let big = vec![7u8; 1 << 20];
        let mut out = Outputs::new();
        let i = out.add("-o", &fifo, &[]).unwrap();
        let j = out.add("header", &file, &[]).unwrap();
        out.write_bytes(i, &big).unwrap();
        out.write_bytes(j, b"new").unwrap();
        // Opened without waiting for the writer (so that a failing commit
        // cannot hang the test): reads return 0 until it opens the FIFO,
        // WouldBlock while the pipe is empty.
        let mut reader = {
            use std::os::unix::fs::OpenOptionsExt;
            fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(&fifo)
                .unwrap()
        };
        let commit = std::thread::spawn(move || out.commit());
        let mut got = Vec::new();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            match io::Read::read(&mut reader, &mut buf) {
                Ok(0) if got.is_empty() => assert!(!commit.is_finished(), "never opened"),
                Ok(0) => break,
                Ok(n) => {
                    if got.is_empty() {
                        // The commit is copying, and still has most of
                        // `big` to write.
                        assert_eq!(fs::read(&file).unwrap(), b"old", "replaced first");
                    }
                    got.extend_from_slice(&buf[..n]);
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("{e}"),
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        commit.join().unwrap().unwrap();
        assert_eq!(got, big);
        assert_eq!(fs::read(&file).unwrap(), b"new");
        assert_eq!(files(d.path()), ["k.h", "k.o"]);
    }

    /// A write-through that fails (`/dev/full`: ENOSPC) leaves the other
    /// outputs' files as they were, and no backup or temporary file.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_failed_write_through_replaces_nothing() {
        let d = tempfile::tempdir().unwrap();
        let file = d.path().join("k.h");
        fs::write(&file, "old").unwrap();
        let mut out = Outputs::new();
        let i = out.add("-o", Path::new("/dev/full"), &[]).unwrap();
        let j = out.add("header", &file, &[]).unwrap();
        out.write_bytes(i, b"object").unwrap();
        out.write_bytes(j, b"new").unwrap();
        let e = out.commit().unwrap_err();
        assert!(e.to_string().contains("cannot write"), "{e}");
        assert_eq!(fs::read(&file).unwrap(), b"old");
        assert_eq!(files(d.path()), ["k.h"]);
    }

    /// Two commits of the same sixteen files at the same moment, again and
    /// again (as two builds with the same `-o`): after each round, all the
    /// files are one writer's. The two add them in opposite orders, so that
    /// any overlap of their renames mixes them. Without the directory lock,
    /// each of 30 runs on a loaded two-core machine saw mixed rounds (5 to
    /// 194 of the 200); with it, none of 40.
    #[cfg(unix)]
    #[test]
    fn concurrent_commits_of_the_same_files_do_not_mix() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::{Arc, Barrier};
        const ROUNDS: usize = 200;
        const FILES: usize = 16;
        let d = tempfile::tempdir().unwrap();
        let names: Vec<String> = (0..FILES).map(|k| format!("k{k:02}")).collect();
        let targets: Vec<PathBuf> = names.iter().map(|n| d.path().join(n)).collect();
        let barrier = Arc::new(Barrier::new(2));
        let started = Arc::new(AtomicUsize::new(0));
        let writers: Vec<_> = ["alpha", "beta"]
            .into_iter()
            .enumerate()
            .map(|(me, name)| {
                let (targets, barrier) = (targets.clone(), Arc::clone(&barrier));
                let started = Arc::clone(&started);
                std::thread::spawn(move || {
                    // Failures are collected, not raised: a writer that
                    // panicked would leave the other waiting at the barrier.
                    let mut problems = Vec::new();
                    for round in 0..ROUNDS {
                        // In opposite orders: any overlap of the two
                        // commits' renames would leave a mixed set.
                        let mut order = targets.clone();
                        if me == 1 {
                            order.reverse();
                        }
                        let mut out = Outputs::new();
                        let written = order.iter().try_for_each(|t| {
                            let i = out.add("-o", t, &[]).map_err(|e| e.to_string())?;
                            out.write_bytes(i, name.as_bytes())
                                .map_err(|e| e.to_string())
                        });
                        // Both start at once: a spinning rendezvous, as a
                        // barrier's wake-up takes longer than a commit.
                        started.fetch_add(1, Ordering::AcqRel);
                        while started.load(Ordering::Acquire) < 2 * (round + 1) {
                            std::thread::yield_now();
                        }
                        let committed =
                            written.and_then(|()| out.commit().map_err(|e| e.to_string()));
                        barrier.wait();
                        if let Err(e) = committed {
                            problems.push(format!("round {round}: {name}: {e}"));
                        }
                        if me == 0 {
                            let got: Vec<_> = targets.iter().map(|t| fs::read(t).ok()).collect();
                            if got.iter().any(|g| g.is_none() || *g != got[0]) {
                                problems.push(format!("round {round}: mixed"));
                            }
                        }
                    }
                    problems
                })
            })
            .collect();
        let problems: Vec<String> = writers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect();
        assert!(
            problems.is_empty(),
            "{} problems in {ROUNDS} rounds, the first {:?}",
            problems.len(),
            &problems[..problems.len().min(5)]
        );
        assert_eq!(files(d.path()), names, "no lock file, no temporary file");
    }

    /// A replaced file keeps its permission bits; a new one gets the
    /// default (0666 less the umask).
    #[cfg(unix)]
    #[test]
    fn a_replaced_file_keeps_its_mode() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        for bits in [0o640, 0o604, 0o600, 0o755] {
            let (a, b) = (d.path().join("k.o"), d.path().join("k.h"));
            fs::write(&a, "old").unwrap();
            fs::set_permissions(&a, fs::Permissions::from_mode(bits)).unwrap();
            let _ = fs::remove_file(&b);
            let mut out = Outputs::new();
            let i = out.add("-o", &a, &[]).unwrap();
            let j = out.add("header", &b, &[]).unwrap();
            out.write_bytes(i, b"new").unwrap();
            out.write_bytes(j, b"new").unwrap();
            out.commit().unwrap();
            assert_eq!(format!("{:o}", mode(&a)), format!("{bits:o}"));
            let created = File::create(d.path().join("plain")).unwrap();
            drop(created);
            assert_eq!(mode(&b), mode(&d.path().join("plain")));
        }
    }
}
