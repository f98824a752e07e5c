//! The `convjit` command line: a thin shell over the library.

mod cli;

fn main() -> std::process::ExitCode {
    quiet_broken_pipe();
    fail_on_file_size_limit();
    // Ctrl-C (SIGINT), SIGTERM, SIGHUP, SIGPIPE (after the default set
    // above): the temporary files of outputs not yet in place are removed,
    // then the process dies of the signal.
    convjit::npy::remove_pending_on_signals();
    cli::main()
}

/// `convjit plan ... | head`: when the reader leaves, end as other Unix
/// tools do, killed by SIGPIPE, instead of panicking in `println!` (Rust
/// ignores SIGPIPE so that a write fails with EPIPE, which `println!`
/// turns into a panic). Files are written whole or not at all either way
/// (`convjit-npy`'s atomic writes), and only pipes raise SIGPIPE.
fn quiet_broken_pipe() {
    #[cfg(unix)]
    // SAFETY: the first thing main does, before any other thread exists;
    // SIG_DFL is a valid disposition for SIGPIPE and no handler is involved.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Under a file-size limit (`ulimit -f`, RLIMIT_FSIZE), a write past it
/// raises SIGXFSZ, whose default action kills the process mid-write and
/// leaves the temporary file behind. Ignored, the write fails with EFBIG
/// instead: the usual error path removes the temporary file and exits 1
/// with a message ("File too large").
fn fail_on_file_size_limit() {
    #[cfg(unix)]
    // SAFETY: called at the start of main, before any other thread exists;
    // SIG_IGN is a valid disposition for SIGXFSZ and no handler is involved.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
}
