//! The simulator over real loopback HTTP (driven by awc), its config files and its binary.

mod accounting;
mod api;
mod binary;
mod common;
mod config_files;
mod edges;
mod faults;
mod operations;
mod quota;
mod streaming;
