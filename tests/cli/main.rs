//! The `convjit` binary end to end, one module per command: outputs, exit
//! statuses, and that a failed run leaves no output file behind. (One test
//! binary: each would link the whole compiler again.)

#[path = "../common/oracle.rs"]
mod oracle;

mod bench;
mod build;
mod check;
mod fuzz;
mod plan;
mod precision;
mod run;
mod separate;
mod verify;
mod winograd;

pub use convjit::npy::{self, Array};
pub use std::path::{Path, PathBuf};
pub use std::process::{Command, Output};

pub fn convjit(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_convjit"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap()
}

/// [`convjit`] under an address-space limit of `bytes` (`ulimit -v`;
/// Linux only, elsewhere no limit).
pub fn convjit_limited(args: &[&str], bytes: u64) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_convjit"));
    c.args(args).current_dir(env!("CARGO_MANIFEST_DIR"));
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: between fork and exec the closure only calls setrlimit,
        // which is async-signal-safe, on a local struct.
        unsafe {
            c.pre_exec(move || {
                let lim = libc::rlimit {
                    rlim_cur: bytes,
                    rlim_max: bytes,
                };
                match libc::setrlimit(libc::RLIMIT_AS, &lim) {
                    0 => Ok(()),
                    _ => Err(std::io::Error::last_os_error()),
                }
            });
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = bytes;
    c.output().unwrap()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A small layer with files to break, one at a time.
pub struct Fixture {
    dir: tempfile::TempDir,
    conv: PathBuf,
    input: PathBuf,
    weights: PathBuf,
    out: PathBuf,
}

pub fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let conv = dir.path().join("l.conv");
    std::fs::write(
        &conv,
        "layer l {\n  input 5x4x3\n  dw: depthwise 3x3, pad same, bias\n  pw: pointwise 2\n}\n",
    )
    .unwrap();
    let input = dir.path().join("in.npy");
    npy::write_npy(&input, &[1, 5, 4, 3], &[0.5; 60]).unwrap();
    let weights = dir.path().join("w.npz");
    write_weights(
        &weights,
        &[
            ("dw.weight", vec![3, 3, 3, 1]),
            ("dw.bias", vec![3]),
            ("pw.weight", vec![3, 2]),
        ],
    );
    let out = dir.path().join("out.npy");
    Fixture {
        conv,
        input,
        weights,
        out,
        dir,
    }
}

pub fn write_weights(path: &Path, arrays: &[(&str, Vec<usize>)]) {
    let arrays: Vec<(&str, Array)> = arrays
        .iter()
        .map(|(k, shape)| {
            (
                *k,
                Array::new(shape.clone(), vec![0.25; shape.iter().product()]),
            )
        })
        .collect();
    let refs: Vec<(&str, &Array)> = arrays.iter().map(|(k, a)| (*k, a)).collect();
    npy::write_npz(path, &refs).unwrap();
}

impl Fixture {
    pub fn run(&self, extra: &[&str]) -> Output {
        let base = [
            "run",
            s(&self.conv),
            "--input",
            s(&self.input),
            "--weights",
            s(&self.weights),
            "--output",
            s(&self.out),
            "--engine",
            "interp",
        ];
        convjit(&[&base[..], extra].concat())
    }

    /// Runs, expects failure with `status`, a message containing every
    /// one of `needles`, and no output file.
    pub fn fails(&self, status: i32, needles: &[&str]) {
        let o = self.run(&[]);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(status), "{err}");
        for n in needles {
            assert!(err.contains(n), "{n:?} not in: {err}");
        }
        assert!(!err.contains("panicked"), "{err}");
        assert!(!self.out.exists(), "output left behind");
        let left: Vec<_> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| !["l.conv", "in.npy", "w.npz"].contains(&n.as_str()))
            .collect();
        assert!(left.is_empty(), "left behind: {left:?}");
    }
}
