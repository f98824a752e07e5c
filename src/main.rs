//! The `convjit` command line: a thin shell over the library.

mod cli;

fn main() -> std::process::ExitCode {
    quiet_broken_pipe();
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
