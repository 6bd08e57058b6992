//! The `uringnotes` binary: parses the command line and runs a subcommand.

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use uringnotes::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        // The load generator prints its own report and errors; it logs nothing.
        Command::Bench(args) => uringnotes::bench::main(*args),
        Command::Serve(args) => {
            init_logging();
            let config = match args.to_config() {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("uringnotes: {e}");
                    return ExitCode::from(2);
                }
            };
            match uringnotes::server::run(config) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e}");
                    eprintln!("uringnotes: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// Logs go to stderr, one line per event, without colours when not a
/// terminal (journald-friendly); `RUST_LOG` overrides the default `info`.
fn init_logging() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let is_tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(is_tty)
        .with_target(false)
        .init();
}
