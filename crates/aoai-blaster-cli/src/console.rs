//! Writing results to stdout, where a closed pipe (`aoai-blaster check ... | head -1`) is not an
//! error: Rust ignores SIGPIPE, so `print!` would panic on it.

use std::io::Write;

/// Writes `text` to stdout and flushes; a failed write (a closed pipe) is ignored.
pub(crate) fn print(text: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(text.as_bytes());
    let _ = stdout.flush();
}

/// [`print()`] with a newline.
pub(crate) fn print_line(text: &str) {
    print(&format!("{text}\n"));
}
