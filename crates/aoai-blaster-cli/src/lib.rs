//! # aoai-blaster-cli
//!
//! The `aoai-blaster` command line: a demo against the embedded simulator, resumable batch runs
//! in the OpenAI / Azure Batch JSONL format, a config check and the simulator itself. The binary
//! (`src/main.rs`) is glue; the logic lives in these modules so that it can be tested.

#![forbid(unsafe_code)]

pub mod batch;
pub mod check;
pub mod cli;
pub mod console;
pub mod demo;
pub mod logging;
pub mod progress;
pub mod run;
pub mod run_loop;
pub mod sim;
pub mod summary;
