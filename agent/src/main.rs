//! The `kubekuma` binary: parse arguments, set up logging, run the command.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    kubekuma_agent::cli::init_logging();
    kubekuma_agent::cli::run(kubekuma_agent::cli::Cli::parse())
}
