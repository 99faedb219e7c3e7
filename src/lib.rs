//! Workspace root of aoai-blaster.
//!
//! This package holds no code of its own: it owns the top-level `examples/` and `tests/`, which
//! exercise the `aoai-blaster` library and CLI end to end against the `aoai-sim` simulator over
//! loopback HTTP, and it compiles the READMEs' library snippets as doctests. See the workspace
//! README for the crates themselves.

/// The workspace README's Rust snippets, compiled as doctests (and run, unless marked `no_run`)
/// so that they follow the library's API. Here because this package depends on every crate they
/// use.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

/// The `aoai-blaster` crate's README snippet, compiled the same way.
#[cfg(doctest)]
#[doc = include_str!("../crates/aoai-blaster/README.md")]
struct LibraryReadmeDoctests;
