//! `sitesyncctl export inspect FILE [--verify] [--trust CA_PEM]...`: what an export file
//! holds, read without a node, and with `--verify` whether it is whole and signed by a site
//! of a trusted hierarchy.
//!
//! The file is printed even when it does not verify, with `verified: false` and the reason,
//! and the command then exits with status 1; a file that is not an export at all is refused
//! with nothing on stdout.

use std::collections::HashSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::SystemTime;

use anyhow::{Context as _, anyhow, bail};
use indicatif::{ProgressBar, ProgressDrawTarget};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer};
use sitesync_archive::{Archive, ArchiveError, Verified};

use super::view::ArchiveView;
use crate::cli::{ClientTlsArgs, DEFAULT_NODE_PKI_DIR, ExportInspectArgs};
use crate::commands::sync::bar_style;
use crate::output::{self, OutputFormat};

pub fn run(
    tls: &ClientTlsArgs,
    args: &ExportInspectArgs,
    output: OutputFormat,
) -> anyhow::Result<ExitCode> {
    let trust = if args.verify {
        Some(Trust::load(tls, &args.trust)?)
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

/// What `--verify` trusts: the `--trust` CAs and the hierarchy CA of the TLS flags, and the
/// revocation list of the PKI directory when there is one.
#[derive(Debug)]
struct Trust {
    cas: Vec<CertificateDer<'static>>,
    /// Serial numbers (DER bytes) the revocation list names.
    revoked: HashSet<Vec<u8>>,
}

impl Trust {
    fn load(tls: &ClientTlsArgs, extra: &[PathBuf]) -> anyhow::Result<Self> {
        let mut trust = Self {
            cas: Vec::new(),
            revoked: HashSet::new(),
        };
        for path in extra {
            trust.add_cas(path)?;
        }
        if let Some(ca) = &tls.ca {
            trust.add_cas(ca)?;
        }
        let pki_dir = match &tls.pki_dir {
            Some(dir) => {
                if !dir.join("ca.pem").exists() {
                    bail!(
                        "{} has no ca.pem: give the PKI directory of the hierarchy that signed \
                         the file, or its CA with --trust CA_PEM",
                        dir.display()
                    );
                }
                Some(dir.as_path())
            }
            // The CA a top site started on its defaults here made, as node commands use it.
            None if tls.ca.is_none() && Path::new(DEFAULT_NODE_PKI_DIR).join("ca.pem").exists() => {
                Some(Path::new(DEFAULT_NODE_PKI_DIR))
            }
            None => None,
        };
        if let Some(dir) = pki_dir {
            trust.add_cas(&dir.join("ca.pem"))?;
            let crl = dir.join("crl.pem");
            if crl.exists() {
                trust.add_crl(&crl)?;
            }
        }
        if trust.cas.is_empty() {
            bail!(
                "--verify needs the CA of the hierarchy that signed the file: pass --trust \
                 CA_PEM, or --pki-dir DIR holding its ca.pem"
            );
        }
        Ok(trust)
    }

    fn add_cas(&mut self, path: &Path) -> anyhow::Result<()> {
        let pem = std::fs::read(path)
            .with_context(|| format!("cannot read the CA certificate {}", path.display()))?;
        let before = self.cas.len();
        for certificate in CertificateDer::pem_slice_iter(&pem) {
            self.cas.push(
                certificate
                    .map_err(|e| anyhow!("{}: not a PEM certificate: {e}", path.display()))?,
            );
        }
        if self.cas.len() == before {
            bail!("{} holds no PEM certificate", path.display());
        }
        Ok(())
    }

    fn add_crl(&mut self, path: &Path) -> anyhow::Result<()> {
        let pem = std::fs::read(path)
            .with_context(|| format!("cannot read the revocation list {}", path.display()))?;
        for crl in CertificateRevocationListDer::pem_slice_iter(&pem) {
            let crl =
                crl.map_err(|e| anyhow!("{}: not a PEM revocation list: {e}", path.display()))?;
            let (_, parsed) = x509_parser::parse_x509_crl(&crl)
                .map_err(|e| anyhow!("{}: not a revocation list: {e}", path.display()))?;
            for entry in parsed.iter_revoked_certificates() {
                self.revoked.insert(entry.raw_serial().to_vec());
            }
        }
        Ok(())
    }

    /// Whether the revocation list names the certificate `der`; a certificate that does not
    /// parse counts as revoked, as the nodes count it.
    fn is_revoked(&self, der: &[u8]) -> bool {
        if self.revoked.is_empty() {
            return false;
        }
        x509_parser::parse_x509_certificate(der)
            .map(|(_, c)| self.revoked.contains(c.raw_serial()))
            .unwrap_or(true)
    }
}
