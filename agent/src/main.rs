//! The `kubekuma` binary: parse arguments, set up logging, run the command.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    if let Err(e) = kubekuma_agent::cli::init_logging() {
        eprintln!("kubekuma: {e}");
        return ExitCode::from(2);
    }
    kubekuma_agent::cli::run(kubekuma_agent::cli::Cli::parse())
}
