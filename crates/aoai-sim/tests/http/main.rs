//! The simulator over real loopback HTTP, driven by awc.

mod api;
mod common;
mod faults;
mod quota;
mod streaming;
