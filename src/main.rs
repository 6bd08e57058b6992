//! The `uringnotes` binary: parses the command line and runs a subcommand.

use std::process::ExitCode;

use clap::Parser;

use uringnotes::cli::{Cli, Command};
use uringnotes::logging;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        // The load generator prints its own report and errors; it logs nothing.
        Command::Bench(args) => uringnotes::bench::main(*args),
        Command::Serve(args) => {
            let config = match args.to_config() {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("uringnotes: {e}");
                    return ExitCode::from(2);
                }
            };
            logging::init(&config.log_level, args.log_level.is_some());
            match uringnotes::node::run(config) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e}");
                    eprintln!("uringnotes: {e}");
                    ExitCode::from(e.exit_code())
                }
            }
        }
        Command::Doctor(args) => {
            let config = match args.to_config() {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("uringnotes doctor: {e}");
                    return ExitCode::from(2);
                }
            };
            // The report goes to stdout; only warnings from the libraries
            // it exercises (glommio) go to the log.
            logging::init("warn", false);
            if uringnotes::doctor::run(&config) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
