//! `sitesyncctl`: parse the command line, run the command, exit with its status.

use std::io;
use std::process::ExitCode;

use clap::Parser as _;
use sitesync_control_plane::cli::Cli;
use sitesync_control_plane::commands;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match commands::run(&cli) {
        Ok(code) => code,
        // The reader of our stdout went away (`sitesyncctl … | head`): not an error.
        Err(error) if is_broken_pipe(&error) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error
        .chain()
        .filter_map(|cause| cause.downcast_ref::<io::Error>())
        .any(|e| e.kind() == io::ErrorKind::BrokenPipe)
}
