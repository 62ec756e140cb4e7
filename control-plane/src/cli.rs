//! The command line: clap's derive types, and nothing that does work.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use sitesync_metadata::generate::CatalogSpec;

use crate::output::OutputFormat;

/// Operate a sitesync hierarchy: software-update metadata kept in step from the top site
/// down to every child site.
#[derive(Debug, Parser)]
#[command(name = "sitesyncctl", version, propagate_version = true)]
pub struct Cli {
    /// How to print results on stdout: a table for people, or JSON for scripts.
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Work with update catalogs: directories of Microsoft update XML documents.
    #[command(subcommand)]
    Catalog(CatalogCommand),
}

#[derive(Debug, Subcommand)]
pub enum CatalogCommand {
    /// Write a deterministic, realistic catalog of update documents into a directory.
    Generate(GenerateArgs),
    /// Parse update documents and print what they say.
    Inspect(InspectArgs),
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// How many documents (revisions) to write, category updates included.
    #[arg(long, value_name = "N")]
    pub updates: usize,

    /// The directory to write into; created if missing.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,

    /// The seed: the same seed and N always give the same bytes.
    #[arg(long, value_name = "S", default_value_t = CatalogSpec::DEFAULT_SEED)]
    pub seed: u64,

    /// Write into a directory that is not empty: catalog documents already in it
    /// (`<update id>-r<revision>.xml`) are removed first, other files are left alone.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Update documents to inspect; a directory stands for every `*.xml` file in it.
    #[arg(value_name = "FILE", required = true)]
    pub paths: Vec<PathBuf>,
}
