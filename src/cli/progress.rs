//! A progress bar on stderr (`indicatif`), only when stderr is a terminal:
//! redirected runs, CI logs and `--json` output never see one.

use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;

/// A bar of `len` steps labelled `what`, or a hidden one (every call a
/// no-op) when stderr is not a terminal.
pub fn bar(len: u64, what: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    let template = format!("{what} {{bar:40}} {{pos}}/{{len}} {{msg}} [{{elapsed}}, eta {{eta}}]");
    if let Ok(style) = ProgressStyle::with_template(&template) {
        bar.set_style(style);
    }
    bar
}

#[cfg(test)]
mod tests {
    #[test]
    fn hidden_when_stderr_is_not_a_terminal() {
        // The test harness captures or pipes stderr under cargo test.
        use std::io::IsTerminal;
        if !std::io::stderr().is_terminal() {
            let b = super::bar(10, "x");
            assert!(b.is_hidden());
            b.inc(3);
            assert_eq!(b.position(), 3);
        }
    }
}
