//! `sitesyncctl catalog …`: generating and inspecting directories of update documents, and
//! the legacy scan catalog (S13): building it at the host, downloading and verifying it.

use std::process::ExitCode;

use super::on_node;
use crate::cli::{CatalogCommand, Cli};
use crate::output::OutputFormat;

mod generate;
mod inspect;
mod legacy;
pub mod view;

pub fn run(cli: &Cli, command: &CatalogCommand, output: OutputFormat) -> anyhow::Result<ExitCode> {
    match command {
        CatalogCommand::Generate(args) => generate::run(args, output),
        CatalogCommand::Inspect(args) => inspect::run(args, output),
        CatalogCommand::BuildLegacy => on_node(cli, |node| legacy::build(node, output)),
        CatalogCommand::LegacyStatus => on_node(cli, |node| legacy::status(node, output)),
        CatalogCommand::Download(args) => on_node(cli, |node| {
            legacy::download(node, &cli.node.tls, args, output)
        }),
        CatalogCommand::Verify(args) => legacy::verify(&cli.node.tls, args, output),
    }
}
