//! `aoai-blaster`: see `aoai-blaster --help` and the crate docs of `aoai_blaster_cli`.

use std::process::ExitCode;

/// mimalloc: each job makes many small allocations, and glibc's allocator cost about 15 % more
/// CPU per job in the overhead benchmark.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    aoai_blaster_cli::main()
}
