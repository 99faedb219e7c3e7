//! Workspace root of aoai-blaster.
//!
//! This package holds no code of its own: it owns the top-level `examples/` and `tests/`, which
//! exercise the `aoai-blaster` library and CLI end to end against the `aoai-sim` simulator over
//! loopback HTTP. See the workspace README for the crates themselves.
