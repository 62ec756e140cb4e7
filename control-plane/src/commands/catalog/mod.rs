//! `sitesyncctl catalog …`: generating and inspecting directories of update documents.

use std::process::ExitCode;

use crate::cli::CatalogCommand;
use crate::output::OutputFormat;

mod generate;
mod inspect;
pub mod view;

pub fn run(command: &CatalogCommand, output: OutputFormat) -> anyhow::Result<ExitCode> {
    match command {
        CatalogCommand::Generate(args) => generate::run(args, output),
        CatalogCommand::Inspect(args) => inspect::run(args, output),
    }
}
