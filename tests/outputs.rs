//! Every command's outputs (`convjit_npy::Outputs`): a failing command
//! changes none of the user's files; an output that is one of the
//! command's inputs, or two outputs in one file, is a usage error before
//! anything is read; a device, a FIFO or a symbolic link is written
//! through or followed, never replaced by a regular file.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn convjit(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_convjit"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

const LAYER: &str = "layer s { input 6x6x4\n d: depthwise 3x3, pad same, bias, relu6\n}\n";

/// A directory with `s.conv` (one small layer) and its weights `w.npz`.
fn scratch() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("s.conv"), LAYER).unwrap();
    let layer = &convjit::parse_layers("s.conv", LAYER).unwrap()[0];
    let w = convjit::Weights::random(layer, 1);
    let arrays = w.to_arrays(layer);
    let refs: Vec<(&str, &convjit::npy::Array)> =
        arrays.iter().map(|(k, a)| (k.as_str(), a)).collect();
    convjit::npy::write_npz(dir.path().join("w.npz"), &refs).unwrap();
    dir
}

/// The names in `dir` with the content of each regular file (a FIFO's
/// would wait for a writer).
fn contents(dir: &Path) -> Vec<(String, Vec<u8>)> {
    files(dir)
        .into_iter()
        .map(|f| {
            let p = dir.join(&f);
            let regular = std::fs::symlink_metadata(&p).is_ok_and(|m| m.is_file());
            let bytes = if regular {
                std::fs::read(p).unwrap()
            } else {
                Vec::new()
            };
            (f, bytes)
        })
        .collect()
}

/// Exit status `status` with `words` on stderr, and every file of `dir`
/// as it was.
fn refused(dir: &Path, args: &[&str], status: i32, words: &[&str]) {
    let before = contents(dir);
    let o = convjit(dir, args);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(status), "{args:?}: {err}");
    for w in words {
        assert!(err.contains(w), "{args:?}: '{w}' not in: {err}");
    }
    let after = contents(dir);
    assert!(
        before == after,
        "{args:?} changed the directory: {:?}",
        files(dir)
    );
}

#[test]
fn an_output_that_is_an_input_is_a_usage_error() {
    let d = scratch();
    let p = d.path();
    refused(
        p,
        &["build", "s.conv", "-o", "s.conv", "--emit", "clif"],
        2,
        &["would overwrite the layer file"],
    );
    refused(
        p,
        &["run", "s.conv", "-o", "s.conv"],
        2,
        &["would overwrite the layer file"],
    );
    refused(
        p,
        &["run", "s.conv", "--weights", "w.npz", "-o", "w.npz"],
        2,
        &["would overwrite the weights"],
    );
    refused(
        p,
        &[
            "build",
            "s.conv",
            "--weights",
            "w.npz",
            "-o",
            "w.npz",
            "--emit",
            "asm",
        ],
        2,
        &["would overwrite the weights"],
    );
    // The header beside the object is an output too.
    std::fs::copy(p.join("s.conv"), p.join("k.h")).unwrap();
    refused(
        p,
        &["build", "k.h", "-o", "k.o"],
        2,
        &["the header", "would overwrite the layer file"],
    );
    std::fs::remove_file(p.join("k.h")).unwrap();
    // Another name for the same file: a hard link, a path through "..".
    std::fs::hard_link(p.join("s.conv"), p.join("same.conv")).unwrap();
    refused(
        p,
        &["run", "s.conv", "-o", "same.conv"],
        2,
        &["would overwrite"],
    );
    std::fs::create_dir(p.join("sub")).unwrap();
    refused(
        p,
        &["run", "s.conv", "-o", "sub/../s.conv"],
        2,
        &["would overwrite"],
    );
}

#[test]
fn a_build_that_fails_on_the_object_keeps_the_old_header() {
    let d = scratch();
    let p = d.path();
    std::fs::write(p.join("k.h"), "old header").unwrap();
    std::fs::create_dir(p.join("k.o")).unwrap();
    refused(
        p,
        &["build", "s.conv", "-o", "k.o"],
        1,
        &["k.o", "directory"],
    );
    assert_eq!(std::fs::read(p.join("k.h")).unwrap(), b"old header");
}

#[test]
fn a_failing_run_leaves_the_old_output() {
    let d = scratch();
    let p = d.path();
    std::fs::write(p.join("out.npy"), "old output").unwrap();
    // Weights for another layer: refused after the output was planned.
    std::fs::write(p.join("t.conv"), LAYER.replace("6x6x4", "6x6x5")).unwrap();
    refused(
        p,
        &["run", "t.conv", "--weights", "w.npz", "-o", "out.npy"],
        1,
        &["w.npz"],
    );
}

#[cfg(unix)]
#[test]
fn devices_fifos_and_links_are_written_through_or_followed() {
    use std::os::unix::fs::FileTypeExt;
    let d = scratch();
    let p = d.path();
    let o = convjit(p, &["run", "s.conv", "-o", "/dev/null"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(std::fs::metadata("/dev/null")
        .unwrap()
        .file_type()
        .is_char_device());

    // A FIFO: the output comes out of it, and it stays a FIFO.
    let fifo = p.join("pipe.npy");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path; mkfifo only creates a file.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::read(fifo).unwrap())
    };
    let o = convjit(p, &["run", "s.conv", "-o", "pipe.npy"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let bytes = reader.join().unwrap();
    assert_eq!(convjit::npy::parse_npy(&bytes).unwrap().shape, [1, 6, 6, 4]);
    assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo());

    // `/dev/stdout` into a pipe: the links end at `pipe:[N]`, not a path
    // ("No such file or directory" after the whole run); written through.
    let o = convjit(p, &["run", "s.conv", "-o", "/dev/stdout"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        convjit::npy::parse_npy(&o.stdout).unwrap().shape,
        [1, 6, 6, 4]
    );

    // A symbolic link: the file it names is replaced, the link stays.
    std::fs::create_dir(p.join("real")).unwrap();
    std::fs::write(p.join("real/out.npy"), "old").unwrap();
    std::os::unix::fs::symlink("real/out.npy", p.join("link.npy")).unwrap();
    let o = convjit(p, &["run", "s.conv", "-o", "link.npy"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(std::fs::symlink_metadata(p.join("link.npy"))
        .unwrap()
        .file_type()
        .is_symlink());
    let a = convjit::npy::read_npy(p.join("real/out.npy")).unwrap();
    assert_eq!(a.shape, [1, 6, 6, 4]);
    // A link to an input is that input.
    std::os::unix::fs::symlink("s.conv", p.join("s-link.conv")).unwrap();
    refused(
        p,
        &["run", "s.conv", "-o", "s-link.conv"],
        2,
        &["would overwrite"],
    );
}

/// A 64 KiB tmpfs, where a build's object does not fit: nothing of the
/// user's changes and no temporary file stays. Mounting needs root (CI
/// runs as root); elsewhere the test is ignored (`build.rs`).
#[cfg(target_os = "linux")]
#[test]
#[cfg_attr(no_mount, ignore = "mounting a tmpfs needs root (CAP_SYS_ADMIN)")]
fn a_full_file_system_changes_nothing() {
    let d = scratch();
    let mnt = d.path().join("full");
    std::fs::create_dir(&mnt).unwrap();
    let mount = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
        .arg(&mnt)
        .output()
        .expect("mount (util-linux) not found");
    assert!(
        mount.status.success(),
        "mount -t tmpfs {}: {}",
        mnt.display(),
        stderr(&mount)
    );
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(mnt.clone());
    std::fs::write(mnt.join("k.h"), "old header").unwrap();
    std::fs::write(mnt.join("k.o"), "old object").unwrap();
    // A layer whose object (its baked weights) is larger than the disk.
    let big = "layer b { input 8x8x64\n p: conv 3x3 -> 64, pad same\n}\n";
    std::fs::write(d.path().join("b.conv"), big).unwrap();
    let layer = &convjit::parse_layers("b.conv", big).unwrap()[0];
    let w = convjit::Weights::random(layer, 1);
    let arrays = w.to_arrays(layer);
    let refs: Vec<(&str, &convjit::npy::Array)> =
        arrays.iter().map(|(k, a)| (k.as_str(), a)).collect();
    convjit::npy::write_npz(d.path().join("b.npz"), &refs).unwrap();
    let k = mnt.join("k.o");
    let o = convjit(
        d.path(),
        &[
            "build",
            "b.conv",
            "--weights",
            "b.npz",
            "-o",
            k.to_str().unwrap(),
        ],
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("cannot write"), "{}", stderr(&o));
    assert_eq!(files(&mnt), ["k.h", "k.o"]);
    assert_eq!(std::fs::read(mnt.join("k.h")).unwrap(), b"old header");
    assert_eq!(std::fs::read(mnt.join("k.o")).unwrap(), b"old object");
}

/// Under a file-size limit (`ulimit -f`) smaller than the object, the
/// write fails (EFBIG, not a kill by SIGXFSZ): exit 1 with a message, the
/// old files as they were, no temporary file left.
#[cfg(unix)]
#[test]
fn a_file_size_limit_is_an_error_not_a_kill() {
    use std::os::unix::process::CommandExt;
    let d = scratch();
    let p = d.path();
    std::fs::write(p.join("k.h"), "old header").unwrap();
    let before = contents(p);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_convjit"));
    cmd.args(["build", "s.conv", "--weights", "w.npz", "-o", "k.o"])
        .current_dir(p);
    // SAFETY: between fork and exec the closure only calls setrlimit, a
    // system call that takes no lock and allocates nothing.
    unsafe {
        cmd.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: 1000,
                rlim_max: 1000,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    let o = cmd.output().unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{:?}: {err}", o.status);
    assert!(err.contains("k.o") && err.contains("cannot write"), "{err}");
    assert!(contents(p) == before, "changed: {:?}", files(p));
}

/// A build of `b.conv` (with baked weights, so that its object is larger
/// than a pipe's buffer) in `dir`, its object `k.o` a FIFO that the test
/// opens and never reads, `TMPDIR` set to `dir/tmp`: once bytes are in the
/// pipe, the build is writing the object through, blocked on the full
/// pipe, its files made and not yet all in place. Returns the build and
/// the reader, to hold while the build must stay blocked.
#[cfg(unix)]
fn build_into_a_full_fifo(dir: &Path) -> (std::process::Child, std::fs::File) {
    use std::os::unix::fs::OpenOptionsExt;
    use std::os::unix::io::AsRawFd;
    use std::os::unix::process::CommandExt;
    let big = "layer b { input 8x8x64\n p: conv 3x3 -> 64, pad same\n}\n";
    std::fs::write(dir.join("b.conv"), big).unwrap();
    let layer = &convjit::parse_layers("b.conv", big).unwrap()[0];
    let w = convjit::Weights::random(layer, 1);
    let arrays = w.to_arrays(layer);
    let refs: Vec<(&str, &convjit::npy::Array)> =
        arrays.iter().map(|(k, a)| (k.as_str(), a)).collect();
    convjit::npy::write_npz(dir.join("b.npz"), &refs).unwrap();
    std::fs::create_dir(dir.join("tmp")).unwrap();
    let fifo = std::ffi::CString::new(dir.join("k.o").to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path; mkfifo only creates a file.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    // Opened without waiting for a writer; the build's open then does not
    // wait either, and its writes stop when the pipe is full.
    let reader = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(dir.join("k.o"))
        .unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_convjit"));
    cmd.args(["build", "b.conv", "--weights", "b.npz", "-o", "k.o"])
        .current_dir(dir)
        .env("TMPDIR", dir.join("tmp"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    // SAFETY: between fork and exec the closure only calls `signal`, which
    // is async-signal-safe: the signals the tests send are not ignored even
    // if the test runs as a background job that ignores SIGINT.
    unsafe {
        cmd.pre_exec(|| {
            for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGPIPE] {
                libc::signal(sig, libc::SIG_DFL);
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    loop {
        let mut queued: libc::c_int = 0;
        // SAFETY: FIONREAD writes one int, the bytes in the pipe, to a
        // valid pointer; the descriptor is the open reader's.
        assert_eq!(
            unsafe { libc::ioctl(reader.as_raw_fd(), libc::FIONREAD, &mut queued) },
            0
        );
        if queued > 0 {
            return (child, reader);
        }
        if let Some(status) = child.try_wait().unwrap() {
            let o = child.wait_with_output().unwrap();
            panic!("the build ended ({status}) before writing: {}", stderr(&o));
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("the build wrote nothing to its FIFO in 300 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// The `.convjit-*` names in `dir` and `dir/tmp`.
#[cfg(unix)]
fn leftovers(dir: &Path) -> Vec<String> {
    let mut left = files(dir);
    left.extend(files(&dir.join("tmp")));
    left.retain(|f| f.starts_with(".convjit"));
    left
}

/// SIGINT, SIGTERM, SIGHUP or SIGPIPE while a build is writing: its temporary
/// files (the header's beside it, the object's in TMPDIR) and backups are
/// removed, and it dies of that signal.
#[cfg(unix)]
#[test]
fn a_signal_removes_the_temporary_files_and_kills() {
    use std::os::unix::process::ExitStatusExt;
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGPIPE] {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        std::fs::write(p.join("k.h"), "old header").unwrap();
        let (mut child, reader) = build_into_a_full_fifo(p);
        let pid = child.id() as libc::pid_t;
        // SAFETY: kill only sends a signal, to the child, not yet reaped.
        assert_eq!(unsafe { libc::kill(pid, sig) }, 0);
        let status = child.wait().unwrap();
        drop(reader);
        assert_eq!(status.signal(), Some(sig), "{status}");
        assert!(leftovers(p).is_empty(), "left behind: {:?}", leftovers(p));
    }
}

/// `build -o k.o` where `k.o` is a FIFO: the object is written through
/// before the header replaces the old one (opening a FIFO waits for a
/// reader; the old order replaced `k.h`, then waited). Interrupted there,
/// the old header stays and nothing is left behind.
#[cfg(unix)]
#[test]
fn a_fifo_object_is_written_before_the_header_is_replaced() {
    use std::os::unix::process::ExitStatusExt;
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    std::fs::write(p.join("k.h"), "old header").unwrap();
    let (mut child, reader) = build_into_a_full_fifo(p);
    assert_eq!(
        std::fs::read_to_string(p.join("k.h")).unwrap(),
        "old header"
    );
    // SAFETY: kill only sends a signal, to the child, not yet reaped.
    assert_eq!(
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) },
        0
    );
    let status = child.wait().unwrap();
    drop(reader);
    assert_eq!(status.signal(), Some(libc::SIGINT), "{status}");
    assert_eq!(
        std::fs::read_to_string(p.join("k.h")).unwrap(),
        "old header"
    );
    assert!(leftovers(p).is_empty(), "left behind: {:?}", leftovers(p));
}

/// Rebuilding over an object and header made private or group-readable
/// keeps their modes.
#[cfg(unix)]
#[test]
fn a_rebuild_keeps_the_files_modes() {
    use std::os::unix::fs::PermissionsExt;
    let d = scratch();
    let p = d.path();
    let mode = |f: &str| {
        let m = std::fs::metadata(p.join(f)).unwrap().permissions().mode();
        format!("{:o}", m & 0o777)
    };
    let o = convjit(p, &["build", "s.conv", "-o", "k.o"]);
    assert!(o.status.success(), "{}", stderr(&o));
    for (f, bits) in [("k.o", 0o640), ("k.h", 0o644)] {
        std::fs::set_permissions(p.join(f), std::fs::Permissions::from_mode(bits)).unwrap();
    }
    let o = convjit(p, &["build", "s.conv", "-o", "k.o"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!((mode("k.o"), mode("k.h")), ("640".into(), "644".into()));
    std::fs::set_permissions(p.join("k.h"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let o = convjit(p, &["build", "s.conv", "-o", "k.o"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!((mode("k.o"), mode("k.h")), ("640".into(), "600".into()));
}

/// `build -o /dev/null` would put its header at `/dev/null.h`, a regular
/// file among the devices: a usage error, nothing written; with `--emit
/// asm` (no header) a device is fine.
#[cfg(unix)]
#[test]
fn a_build_object_to_a_device_is_a_usage_error() {
    let d = scratch();
    let p = d.path();
    let existed = Path::new("/dev/null.h").exists();
    refused(
        p,
        &["build", "s.conv", "-o", "/dev/null"],
        2,
        &["/dev/null is a device", "/dev/null.h", "--emit asm"],
    );
    assert_eq!(Path::new("/dev/null.h").exists(), existed);
    let o = convjit(p, &["build", "s.conv", "-o", "/dev/null", "--emit", "asm"]);
    assert!(o.status.success(), "{}", stderr(&o));
}
