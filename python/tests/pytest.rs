//! Runs the Python package's tests (`python/tests/test_*.py`) with pytest
//! on the extension module cargo built beside this test (the workspace's
//! own build, same target dir and profile: nothing is compiled twice).
//! Ignored, saying why, where python3 with numpy and pytest is missing
//! (`build.rs`); tests needing onnx, onnxruntime or the `convjit` binary
//! skip with the reason (`pytest -rs`), and with `CONVJIT_REQUIRE_TOOLS=1`
//! (.ci/run) all of them fail instead.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The directory holding this test's executable: `target/PROFILE/deps`.
fn deps_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    exe.parent().expect("the deps directory").to_path_buf()
}

/// An importable `convjit` package: the Python sources, with the
/// extension cargo built as `_convjit.abi3.so`.
fn package(root: &Path) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("convjit");
    let dst = root.join("convjit");
    std::fs::create_dir_all(&dst).unwrap();
    for entry in std::fs::read_dir(&src).unwrap() {
        let p = entry.unwrap().path();
        if p.is_file() {
            std::fs::copy(&p, dst.join(p.file_name().unwrap())).unwrap();
        }
    }
    let lib = format!(
        "{}_convjit{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    );
    let built = deps_dir().join(&lib);
    assert!(
        built.is_file(),
        "{} not built (cargo builds the package's library before its tests)",
        built.display()
    );
    // Python imports `_convjit.abi3.so` on Unix, `_convjit.pyd` on Windows.
    let name = if cfg!(windows) {
        "_convjit.pyd"
    } else {
        "_convjit.abi3.so"
    };
    std::fs::copy(&built, dst.join(name)).unwrap();
    root.to_path_buf()
}

#[test]
#[cfg_attr(
    any(no_python, no_pytest),
    ignore = "needs python3 with numpy and pytest (pip install numpy pytest onnx onnxruntime); \
              ignored unless CONVJIT_REQUIRE_TOOLS=1"
)]
fn python_package_tests_pass() {
    let dir = tempfile::tempdir().unwrap();
    let root = package(dir.path());
    let tests = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let mut cmd = Command::new("python3");
    cmd.args(["-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider"])
        .arg(&tests)
        // `python -m` puts the working directory first on sys.path: not
        // python/, whose convjit/ has no extension module.
        .current_dir(&root)
        .env("PYTHONPATH", &root)
        .env("PYTHONDONTWRITEBYTECODE", "1");
    // The command line, for the tests comparing with it: the workspace's
    // `cargo test` builds it into the same profile directory.
    let cli = deps_dir()
        .parent()
        .unwrap()
        .join(format!("convjit{}", std::env::consts::EXE_SUFFIX));
    if cli.is_file() {
        cmd.env("CONVJIT_BIN", &cli);
    }
    let status = cmd.status().expect("python3 runs");
    assert!(status.success(), "pytest failed: {status}");
}
