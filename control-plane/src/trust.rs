//! What a command that checks signatures offline trusts (`export inspect --verify`,
//! `catalog download`, `catalog verify`): the `--trust` CAs and the hierarchy CA of the TLS
//! flags, and the revocation list of the PKI directory when there is one.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, anyhow, bail};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer};

use crate::cli::{ClientTlsArgs, DEFAULT_NODE_PKI_DIR};

/// What `--verify` trusts: the `--trust` CAs and the hierarchy CA of the TLS flags, and the
/// revocation list of the PKI directory when there is one.
#[derive(Debug)]
pub struct Trust {
    pub cas: Vec<CertificateDer<'static>>,
    /// Serial numbers (DER bytes) the revocation list names.
    revoked: HashSet<Vec<u8>>,
}

impl Trust {
    /// `what` names the command or flag that needs it, for the error when nothing is given.
    pub fn load(tls: &ClientTlsArgs, extra: &[PathBuf], what: &str) -> anyhow::Result<Self> {
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
                         it, or its CA with --trust CA_PEM",
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
                "{what} needs the CA of the hierarchy that signed it: pass --trust CA_PEM, or \
                 --pki-dir DIR holding its ca.pem"
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
    pub fn is_revoked(&self, der: &[u8]) -> bool {
        if self.revoked.is_empty() {
            return false;
        }
        x509_parser::parse_x509_certificate(der)
            .map(|(_, c)| self.revoked.contains(c.raw_serial()))
            .unwrap_or(true)
    }
}
