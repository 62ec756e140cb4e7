//! A node's or operator's TLS material — the hierarchy CA, its own certificate and key, and
//! optionally a revocation list — turned into rustls configurations for mutual TLS, and
//! reloaded when the files change or on request (SIGHUP) without a restart.
//!
//! New connections use the newest material at once. Calls on connections made earlier are
//! checked against the newest revocation list too (see [`TlsMaterial::is_revoked`]), so a
//! revoked peer is refused on its next call, not only on its next connection.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tracing::{info, warn};

use crate::identity::{Identity, IdentityError};

/// The protocol every sitesync connection speaks inside TLS.
const ALPN_H2: &[u8] = b"h2";

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("{path}: {source}")]
    Identity {
        path: PathBuf,
        source: IdentityError,
    },
    #[error("the TLS configuration is not usable: {0}")]
    Config(String),
}

/// Where the material is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The hierarchy CA's certificate (PEM): the only authority trusted for peers.
    pub ca: PathBuf,
    /// This node's or operator's certificate chain (PEM), leaf first.
    pub certificate: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
    /// A revocation list from the CA (PEM), if any.
    pub crl: Option<PathBuf>,
}

impl TlsFiles {
    /// The files of `identity` in a PKI directory laid out by [`crate::pki::Authority`].
    pub fn in_pki_dir(dir: &Path, identity: &Identity) -> Self {
        let (folder, stem) = match identity {
            Identity::Site(code) => ("sites", code.as_str()),
            Identity::Operator(name) => ("operators", name.as_str()),
            Identity::Publisher(name) => ("publishers", name.as_str()),
        };
        let crl = dir.join("crl.pem");
        Self {
            ca: dir.join("ca.pem"),
            certificate: dir.join(folder).join(format!("{stem}.pem")),
            key: dir.join(folder).join(format!("{stem}.key")),
            crl: crl.exists().then_some(crl),
        }
    }

    fn paths(&self) -> impl Iterator<Item = &PathBuf> {
        [&self.ca, &self.certificate, &self.key]
            .into_iter()
            .chain(self.crl.iter())
    }
}

/// One loaded generation of the material.
#[derive(Debug)]
pub struct TlsMaterial {
    /// The identity in this side's own certificate.
    pub identity: Identity,
    pub server: Arc<ServerConfig>,
    pub client: Arc<ClientConfig>,
    /// The hierarchy CA's certificates (DER): what signatures are checked against.
    pub ca: Vec<CertificateDer<'static>>,
    /// Serial numbers (DER bytes) the revocation list names.
    revoked: HashSet<Vec<u8>>,
}

impl TlsMaterial {
    /// Reads and checks every file; nothing is half-applied on error.
    pub fn load(files: &TlsFiles) -> Result<Self, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let ca = read_certificates(&files.ca)?;
        let mut roots = RootCertStore::empty();
        for certificate in &ca {
            roots.add(certificate.clone()).map_err(|e| TlsError::File {
                path: files.ca.clone(),
                reason: format!("not a usable CA certificate: {e}"),
            })?;
        }
        let chain = read_certificates(&files.certificate)?;
        let identity =
            Identity::from_certificate(&chain[0]).map_err(|source| TlsError::Identity {
                path: files.certificate.clone(),
                source,
            })?;
        let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| TlsError::File {
            path: files.key.clone(),
            reason: format!("cannot read a PEM private key: {e}"),
        })?;
        let crls = match &files.crl {
            Some(path) => read_crls(path)?,
            None => Vec::new(),
        };
        let mut revoked = HashSet::new();
        for crl in &crls {
            let (_, parsed) = x509_parser::parse_x509_crl(crl).map_err(|e| TlsError::File {
                path: files.crl.clone().unwrap_or_default(),
                reason: format!("not a revocation list: {e}"),
            })?;
            for entry in parsed.iter_revoked_certificates() {
                revoked.insert(entry.raw_serial().to_vec());
            }
        }
        let roots = Arc::new(roots);
        let server = server_config(&provider, &roots, &crls, chain.clone(), key.clone_key())?;
        let client = client_config(&provider, &roots, &crls, chain, key)?;
        Ok(Self {
            identity,
            server: Arc::new(server),
            client: Arc::new(client),
            ca,
            revoked,
        })
    }

    /// Whether the revocation list names the certificate `der`.
    pub fn is_revoked(&self, der: &[u8]) -> bool {
        if self.revoked.is_empty() {
            return false;
        }
        x509_parser::parse_x509_certificate(der)
            .map(|(_, c)| self.revoked.contains(c.raw_serial()))
            .unwrap_or(true)
    }
}

fn server_config(
    provider: &Arc<CryptoProvider>,
    roots: &Arc<RootCertStore>,
    crls: &[CertificateRevocationListDer<'static>],
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<ServerConfig, TlsError> {
    // A certificate, when presented, must be one of the hierarchy's CA and not revoked; a
    // client may present none, because some methods are open to anyone (machines reading
    // the client policy, health probes). Which calls need which identity is decided per
    // call by the node's access rules, which refuse a call without a certificate
    // (UNAUTHENTICATED) unless its method is open.
    let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
        .with_crls(crls.iter().cloned())
        .only_check_end_entity_revocation()
        .allow_unauthenticated()
        .build()
        .map_err(|e| TlsError::Config(format!("client certificate verifier: {e}")))?;
    let mut config = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Config(format!("this side's certificate and key: {e}")))?;
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(config)
}

fn client_config(
    provider: &Arc<CryptoProvider>,
    roots: &Arc<RootCertStore>,
    crls: &[CertificateRevocationListDer<'static>],
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<ClientConfig, TlsError> {
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
        roots.clone(),
        provider.clone(),
    )
    .with_crls(crls.iter().cloned())
    .only_check_end_entity_revocation()
    .build()
    .map_err(|e| TlsError::Config(format!("server certificate verifier: {e}")))?;
    let mut config = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_webpki_verifier(verifier)
        .with_client_auth_cert(chain, key)
        .map_err(|e| TlsError::Config(format!("this side's certificate and key: {e}")))?;
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(config)
}

fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let file_error = |reason: String| TlsError::File {
        path: path.to_owned(),
        reason,
    };
    let bytes = fs::read(path).map_err(|e| file_error(e.to_string()))?;
    let certificates = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(format!("cannot read PEM certificates: {e}")))?;
    if certificates.is_empty() {
        return Err(file_error("holds no PEM certificate".into()));
    }
    Ok(certificates)
}

fn read_crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsError> {
    let file_error = |reason: String| TlsError::File {
        path: path.to_owned(),
        reason,
    };
    let bytes = fs::read(path).map_err(|e| file_error(e.to_string()))?;
    let crls = CertificateRevocationListDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(format!("cannot read a PEM revocation list: {e}")))?;
    if crls.is_empty() {
        return Err(file_error("holds no PEM revocation list".into()));
    }
    Ok(crls)
}

/// The material in use, replaced as a whole when the files change.
#[derive(Debug)]
pub struct TlsContext {
    files: TlsFiles,
    current: RwLock<Arc<TlsMaterial>>,
    /// Modification time and length of each file at the last load.
    seen: Mutex<Vec<Option<(SystemTime, u64)>>>,
}

impl TlsContext {
    pub fn load(files: TlsFiles) -> Result<Arc<Self>, TlsError> {
        let seen = stamps(&files);
        let material = TlsMaterial::load(&files)?;
        Ok(Arc::new(Self {
            files,
            current: RwLock::new(Arc::new(material)),
            seen: Mutex::new(seen),
        }))
    }

    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// The material new connections and calls use.
    pub fn current(&self) -> Arc<TlsMaterial> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Loads the files again. On error the material in use stays, and the error says why.
    pub fn reload(&self) -> Result<(), TlsError> {
        let seen = stamps(&self.files);
        let material = TlsMaterial::load(&self.files)?;
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = seen;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(material);
        Ok(())
    }

    /// Reloads if any file changed since the last load; returns whether it did.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let now = stamps(&self.files);
        if *self.seen.lock().unwrap_or_else(|p| p.into_inner()) == now {
            return Ok(false);
        }
        self.reload().map(|()| true)
    }

    /// Watches the files (every `every`) and SIGHUP on the current runtime, reloading on
    /// change. A failed reload is logged and the material in use stays.
    pub fn spawn_watcher(self: &Arc<Self>, every: Duration) {
        let context = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut hangup =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
            loop {
                let forced = tokio::select! {
                    () = tokio::time::sleep(every) => false,
                    Some(()) = async {
                        match hangup.as_mut() {
                            Some(signal) => signal.recv().await,
                            None => std::future::pending().await,
                        }
                    } => true,
                };
                let Some(context) = context.upgrade() else {
                    return;
                };
                let outcome = if forced {
                    context.reload().map(|()| true)
                } else {
                    context.reload_if_changed()
                };
                match outcome {
                    Ok(true) => info!(
                        identity = %context.current().identity,
                        "TLS certificates, key and revocation list reloaded"
                    ),
                    Ok(false) => {}
                    Err(e) => warn!(
                        error = %e,
                        "cannot reload the TLS files; the ones loaded before stay in use"
                    ),
                }
            }
        });
    }
}

fn stamps(files: &TlsFiles) -> Vec<Option<(SystemTime, u64)>> {
    files
        .paths()
        .map(|path| {
            fs::metadata(path)
                .ok()
                .and_then(|m| Some((m.modified().ok()?, m.len())))
        })
        .collect()
}
