//! `sitesyncctl export inspect FILE [--verify] [--trust CA_PEM]...`: what an export file
//! holds, read without a node, and with `--verify` whether it is whole and signed by a site
//! of a trusted hierarchy.
//!
//! The file is printed even when it does not verify, with `verified: false` and the reason,
//! and the command then exits with status 1; a file that is not an export at all is refused
//! with nothing on stdout.

use std::fs::File;
use std::path::Path;
use std::process::ExitCode;
use std::time::SystemTime;

use anyhow::{Context as _, anyhow};
use indicatif::{ProgressBar, ProgressDrawTarget};
use sitesync_archive::{Archive, ArchiveError, Verified};

use super::view::ArchiveView;
use crate::cli::{ClientTlsArgs, ExportInspectArgs};
use crate::commands::sync::bar_style;
use crate::output::{self, OutputFormat};
use crate::trust::Trust;

pub fn run(
    tls: &ClientTlsArgs,
    args: &ExportInspectArgs,
    output: OutputFormat,
) -> anyhow::Result<ExitCode> {
    let trust = if args.verify {
        Some(Trust::load(tls, &args.trust, "--verify")?)
    } else {
        None
    };
    let (_, mut archive) = open(&args.file)?;
    let mut view = ArchiveView::new(&args.file, &archive);
    let failure = match &trust {
        None => None,
        Some(trust) => {
            let result = verify(&mut archive, trust, &args.file);
            view.set_verified(result.as_ref().map_err(ToString::to_string));
            result.err()
        }
    };
    match output {
        OutputFormat::Json => output::print_json(&view)?,
        OutputFormat::Table | OutputFormat::Dot => output::print_table(&view.table())?,
    }
    match failure {
        None => Ok(ExitCode::SUCCESS),
        Some(error) => {
            Err(anyhow!(error).context(format!("{} does not verify", args.file.display())))
        }
    }
}

/// Opens `path` read-only and reads its header and manifest. The file comes back too, for
/// a reader after the archive's (`import` sends the bytes it checked).
pub(crate) fn open(path: &Path) -> anyhow::Result<(File, Archive<File>)> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let reader = file
        .try_clone()
        .with_context(|| format!("cannot read {}", path.display()))?;
    let archive = Archive::open(reader).with_context(|| path.display().to_string())?;
    Ok((file, archive))
}

/// The signature against `trust`, then every chunk, with a bar over the chunks when stderr
/// is a terminal.
fn verify(
    archive: &mut Archive<File>,
    trust: &Trust,
    path: &Path,
) -> Result<Verified, ArchiveError> {
    archive.verify_signature(&trust.cas, |der| trust.is_revoked(der), SystemTime::now())?;
    let bar = ProgressBar::hidden()
        .with_style(bar_style(true))
        .with_prefix(format!("verifying {}", path.display()))
        .with_message("chunks");
    bar.set_draw_target(ProgressDrawTarget::stderr());
    bar.set_length(archive.chunk_count() as u64);
    let verified = archive.verify(|done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    });
    bar.finish_and_clear();
    verified
}
