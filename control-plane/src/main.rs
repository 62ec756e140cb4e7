//! `sitesyncctl`: parse the command line, run the command, exit with its status.
#![forbid(unsafe_code)]

use std::io;
use std::process::ExitCode;

use clap::Parser as _;
use sitesync_control_plane::cli::Cli;
use sitesync_control_plane::commands;

/// The exit status of a command line that does not parse (sysexits' EX_USAGE): not 2, which
/// clap would use and which here means "the node could not be reached".
const USAGE_ERROR: u8 = 64;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            // Help and version are "errors" to clap that print on stdout and succeed.
            let _ = error.print();
            return if error.use_stderr() {
                ExitCode::from(USAGE_ERROR)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match commands::run(&cli) {
        Ok(code) => code,
        // The reader of our stdout went away (`sitesyncctl … | head`): not an error.
        Err(error) if is_broken_pipe(&error) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            commands::exit_code(&error)
        }
    }
}

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error
        .chain()
        .filter_map(|cause| cause.downcast_ref::<io::Error>())
        .any(|e| e.kind() == io::ErrorKind::BrokenPipe)
}
