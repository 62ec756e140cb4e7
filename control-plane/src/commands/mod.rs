//! Running parsed commands: one module per command group.

use std::process::ExitCode;

use crate::cli::{Cli, Command};

pub mod catalog;

/// Runs one command. `Ok` carries the exit code (a command may finish its output and still
/// report failure, as `catalog inspect` does for bad documents); `Err` is a failure the
/// binary prints as `error: …` on stderr.
pub fn run(cli: &Cli) -> anyhow::Result<ExitCode> {
    match &cli.command {
        Command::Catalog(command) => catalog::run(command, cli.output),
    }
}
