//! `aoai-blaster`: see `aoai-blaster --help`.

use std::process::ExitCode;

fn main() -> ExitCode {
    ExitCode::from(aoai_blaster_cli::summary::EXIT_USAGE)
}
