//! Signatures over catalog versions (beyond WSUS): the top site signs with the key of its
//! own site certificate, and anyone holding the hierarchy CA's certificate can verify —
//! the signer's certificate travels with the signature, so no other key needs handing out.
//!
//! [`Signer::sign`] signs bytes; [`verify`] checks that the signer certificate chains to
//! the CA, is valid now and not revoked, carries a site identity, and that the signature
//! over the bytes is its key's. What the bytes mean is the caller's business (the node
//! signs `CATALOG_VERSION_SIGNATURE_CONTEXT ‖ encoded CatalogVersion`).
//!
//! Publishers of custom updates sign the same way with their own certificates (code
//! signing only); [`verify_publisher`] checks such a signature at a given time — the time
//! of the catalog version that accepted it, not the wall clock — and returns what the
//! certificate says of the publisher and its vendor.

use std::path::Path;

use rcgen::{KeyPair, SigningKey};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, SignatureVerificationAlgorithm, UnixTime};

use crate::identity::Identity;
use crate::publisher::PublisherCertificate;
use crate::tls::TlsFiles;

/// The one signature scheme signers use: ECDSA P-256 with SHA-256, DER signature (the
/// key type `sitesyncctl pki` issues).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    EcdsaP256Sha256,
}

#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    #[error("{path}: {reason}")]
    File { path: String, reason: String },
    #[error("cannot sign: {0}")]
    Sign(String),
    #[error(
        "the signer's key is not ECDSA P-256; issue the certificate with `sitesyncctl pki issue`"
    )]
    KeyType,
}

/// Why a signature is not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("the signer certificate is not valid: {0}")]
    Certificate(String),
    #[error("the signer certificate does not chain to this hierarchy's CA: {0}")]
    Chain(String),
    #[error("the signer certificate is revoked")]
    Revoked,
    #[error("the signer is {0}, not a site")]
    NotASite(Identity),
    #[error("the signer is not a publisher: {0}")]
    NotAPublisher(String),
    #[error(
        "the signature does not match the signed bytes: they were altered, or signed by another key"
    )]
    BadSignature,
}

/// The top site's signing key and the certificate that vouches for it.
#[derive(Debug)]
pub struct Signer {
    key: KeyPair,
    certificate: CertificateDer<'static>,
    identity: Identity,
}

impl Signer {
    /// The key and leaf certificate of `files`.
    pub fn load(files: &TlsFiles) -> Result<Self, SigningError> {
        Self::from_files(&files.certificate, &files.key)
    }

    /// The leaf certificate in `certificate` (PEM) and the key in `key` (PEM): a site's, or
    /// a publisher's signing custom updates.
    pub fn from_files(certificate: &Path, key: &Path) -> Result<Self, SigningError> {
        let file_error = |path: &Path, reason: String| SigningError::File {
            path: path.display().to_string(),
            reason,
        };
        let pem = std::fs::read_to_string(key).map_err(|e| file_error(key, e.to_string()))?;
        let key_pair = KeyPair::from_pem(&pem)
            .map_err(|e| file_error(key, format!("not a private key: {e}")))?;
        if key_pair.algorithm() != &rcgen::PKCS_ECDSA_P256_SHA256 {
            return Err(SigningError::KeyType);
        }
        let key = key_pair;
        let certificate_path = certificate;
        let certificate = CertificateDer::pem_file_iter(certificate_path)
            .map_err(|e| file_error(certificate_path, e.to_string()))?
            .next()
            .ok_or_else(|| file_error(certificate_path, "holds no certificate".into()))?
            .map_err(|e| file_error(certificate_path, e.to_string()))?;
        let identity = Identity::from_certificate(&certificate)
            .map_err(|e| file_error(certificate_path, e.to_string()))?;
        Ok(Self {
            key,
            certificate,
            identity,
        })
    }

    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// Signs `message`: the algorithm, the signature and the signer's certificate (DER).
    pub fn sign(&self, message: &[u8]) -> Result<(Algorithm, Vec<u8>, Vec<u8>), SigningError> {
        let signature = self
            .key
            .sign(message)
            .map_err(|e| SigningError::Sign(e.to_string()))?;
        Ok((
            Algorithm::EcdsaP256Sha256,
            signature,
            self.certificate.to_vec(),
        ))
    }
}

/// Verifies `signature` over `message` by the holder of `signer_certificate` (DER), which
/// must chain to `ca_certificates` (DER) at `now`, not be in `is_revoked`, and carry a site
/// identity. Returns that identity.
pub fn verify(
    ca_certificates: &[CertificateDer<'_>],
    is_revoked: impl Fn(&[u8]) -> bool,
    message: &[u8],
    algorithm: Algorithm,
    signature: &[u8],
    signer_certificate: &[u8],
    now: std::time::SystemTime,
) -> Result<Identity, VerifyError> {
    let signed = Signed {
        message,
        algorithm,
        signature,
        signer_certificate,
    };
    signed.verify(
        ca_certificates,
        is_revoked,
        now,
        webpki::KeyUsage::client_auth(),
        |der| {
            let identity = Identity::from_certificate(der)
                .map_err(|e| VerifyError::Certificate(e.to_string()))?;
            match identity.site_code() {
                Some(_) => Ok(identity),
                None => Err(VerifyError::NotASite(identity)),
            }
        },
    )
}

/// Verifies a publisher's `signature` over `message` as of `at`: the certificate must chain
/// to `ca_certificates`, be valid at `at`, not be in `is_revoked`, be for code signing and
/// carry a publisher identity and vendor. Returns what it says of the publisher.
pub fn verify_publisher(
    ca_certificates: &[CertificateDer<'_>],
    is_revoked: impl Fn(&[u8]) -> bool,
    message: &[u8],
    algorithm: Algorithm,
    signature: &[u8],
    signer_certificate: &[u8],
    at: std::time::SystemTime,
) -> Result<PublisherCertificate, VerifyError> {
    let signed = Signed {
        message,
        algorithm,
        signature,
        signer_certificate,
    };
    signed.verify(
        ca_certificates,
        is_revoked,
        at,
        webpki::KeyUsage::required(EKU_CODE_SIGNING),
        |der| {
            PublisherCertificate::from_der(der)
                .map_err(|e| VerifyError::NotAPublisher(e.to_string()))
        },
    )
}

/// The extended key usage of publisher certificates: code signing (1.3.6.1.5.5.7.3.3).
const EKU_CODE_SIGNING: &[u8] = &[0x2B, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x03];

/// Checks a publisher certificate (DER) without a signature, as the top site does before
/// it delegates a vendor to its key: it chains to `ca_certificates` for code signing at
/// `at`, is not in `is_revoked`, and names a publisher and a vendor.
pub fn verify_publisher_certificate(
    ca_certificates: &[CertificateDer<'_>],
    is_revoked: impl Fn(&[u8]) -> bool,
    certificate: &[u8],
    at: std::time::SystemTime,
) -> Result<PublisherCertificate, VerifyError> {
    let leaf = CertificateDer::from(certificate);
    chained(
        &leaf,
        ca_certificates,
        at,
        webpki::KeyUsage::required(EKU_CODE_SIGNING),
    )?;
    if is_revoked(certificate) {
        return Err(VerifyError::Revoked);
    }
    PublisherCertificate::from_der(certificate)
        .map_err(|e| VerifyError::NotAPublisher(e.to_string()))
}

/// `leaf` as an end-entity certificate that chains to one of `ca_certificates` for `usage`
/// at `at`.
fn chained<'a>(
    leaf: &'a CertificateDer<'a>,
    ca_certificates: &[CertificateDer<'_>],
    at: std::time::SystemTime,
    usage: webpki::KeyUsage,
) -> Result<webpki::EndEntityCert<'a>, VerifyError> {
    let end_entity = webpki::EndEntityCert::try_from(leaf)
        .map_err(|e| VerifyError::Certificate(e.to_string()))?;
    let anchors = ca_certificates
        .iter()
        .map(|ca| {
            webpki::anchor_from_trusted_cert(ca)
                .map(|a| a.to_owned())
                .map_err(|e| VerifyError::Chain(format!("the CA certificate: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let algorithms: &[&dyn SignatureVerificationAlgorithm] = &[
        webpki::ring::ECDSA_P256_SHA256,
        webpki::ring::ECDSA_P384_SHA384,
        webpki::ring::ED25519,
    ];
    let time =
        UnixTime::since_unix_epoch(at.duration_since(std::time::UNIX_EPOCH).unwrap_or_default());
    end_entity
        .verify_for_usage(algorithms, &anchors, &[], time, usage, None, None)
        .map_err(|e| VerifyError::Chain(e.to_string()))?;
    Ok(end_entity)
}

/// A signature and what it covers.
struct Signed<'a> {
    message: &'a [u8],
    algorithm: Algorithm,
    signature: &'a [u8],
    signer_certificate: &'a [u8],
}

impl Signed<'_> {
    /// Checks, in order: the signer certificate chains to the CA for `usage` at `at`, it is
    /// not revoked, `identify` accepts who it names, and the signature over the message is
    /// its key's. Returns what `identify` found.
    fn verify<T>(
        &self,
        ca_certificates: &[CertificateDer<'_>],
        is_revoked: impl Fn(&[u8]) -> bool,
        at: std::time::SystemTime,
        usage: webpki::KeyUsage,
        identify: impl FnOnce(&[u8]) -> Result<T, VerifyError>,
    ) -> Result<T, VerifyError> {
        let leaf = CertificateDer::from(self.signer_certificate);
        let end_entity = chained(&leaf, ca_certificates, at, usage)?;
        if is_revoked(self.signer_certificate) {
            return Err(VerifyError::Revoked);
        }
        let signer = identify(self.signer_certificate)?;
        let algorithm: &dyn SignatureVerificationAlgorithm = match self.algorithm {
            Algorithm::EcdsaP256Sha256 => webpki::ring::ECDSA_P256_SHA256,
        };
        end_entity
            .verify_signature(algorithm, self.message, self.signature)
            .map_err(|_| VerifyError::BadSignature)?;
        Ok(signer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{Authority, DEFAULT_VALIDITY, first_certificate};
    use std::time::SystemTime;

    #[test]
    fn a_signature_verifies_only_for_the_same_bytes_ca_and_a_site_signer() {
        let dir = tempfile::tempdir().unwrap();
        let authority = Authority::init(dir.path(), "test").unwrap();
        let cen = Identity::site("CEN").unwrap();
        authority.issue(&cen, &[], DEFAULT_VALIDITY).unwrap();
        let signer = Signer::load(&TlsFiles::in_pki_dir(dir.path(), &cen)).unwrap();
        let ca = vec![CertificateDer::from(
            first_certificate(&std::fs::read(authority.certificate_path()).unwrap()).unwrap(),
        )];
        let (algorithm, signature, certificate) = signer.sign(b"version 7").unwrap();
        let now = SystemTime::now();
        let verified = verify(
            &ca,
            |_| false,
            b"version 7",
            algorithm,
            &signature,
            &certificate,
            now,
        );
        assert_eq!(verified.unwrap(), cen);
        assert_eq!(
            verify(
                &ca,
                |_| false,
                b"version 8",
                algorithm,
                &signature,
                &certificate,
                now
            ),
            Err(VerifyError::BadSignature)
        );
        assert_eq!(
            verify(
                &ca,
                |_| true,
                b"version 7",
                algorithm,
                &signature,
                &certificate,
                now
            ),
            Err(VerifyError::Revoked)
        );

        // A signer of another hierarchy.
        let other = tempfile::tempdir().unwrap();
        let other_authority = Authority::init(other.path(), "other").unwrap();
        other_authority.issue(&cen, &[], DEFAULT_VALIDITY).unwrap();
        let forger = Signer::load(&TlsFiles::in_pki_dir(other.path(), &cen)).unwrap();
        let (algorithm, signature, certificate) = forger.sign(b"version 7").unwrap();
        assert!(matches!(
            verify(
                &ca,
                |_| false,
                b"version 7",
                algorithm,
                &signature,
                &certificate,
                now
            ),
            Err(VerifyError::Chain(_))
        ));

        // An operator of this hierarchy may not sign catalogs.
        let alice = Identity::operator("alice").unwrap();
        authority.issue(&alice, &[], DEFAULT_VALIDITY).unwrap();
        let operator = Signer::load(&TlsFiles::in_pki_dir(dir.path(), &alice)).unwrap();
        let (algorithm, signature, certificate) = operator.sign(b"version 7").unwrap();
        assert_eq!(
            verify(
                &ca,
                |_| false,
                b"version 7",
                algorithm,
                &signature,
                &certificate,
                now
            ),
            Err(VerifyError::NotASite(alice))
        );
    }

    #[test]
    fn a_publisher_signature_is_judged_at_the_given_time() {
        let dir = tempfile::tempdir().unwrap();
        let authority = Authority::init(dir.path(), "test").unwrap();
        let vendor = crate::Vendor::new("Contoso Ltd").unwrap();
        let expires = time::OffsetDateTime::now_utc() + time::Duration::days(10);
        authority
            .issue_publisher("contoso", &vendor, expires)
            .unwrap();
        let contoso = Identity::publisher("contoso").unwrap();
        let signer = Signer::load(&TlsFiles::in_pki_dir(dir.path(), &contoso)).unwrap();
        let ca = vec![CertificateDer::from(
            first_certificate(&std::fs::read(authority.certificate_path()).unwrap()).unwrap(),
        )];
        let (algorithm, signature, certificate) = signer.sign(b"update hash").unwrap();
        let check = |message: &[u8], at: SystemTime, revoked: bool| {
            verify_publisher(
                &ca,
                |_| revoked,
                message,
                algorithm,
                &signature,
                &certificate,
                at,
            )
        };
        let now = SystemTime::now();
        let publisher = check(b"update hash", now, false).unwrap();
        assert_eq!(
            (publisher.name.as_str(), &publisher.vendor),
            ("contoso", &vendor)
        );
        // Judged at a time after the certificate's end: refused; at a time before, accepted
        // whatever the wall clock says.
        let later = now + std::time::Duration::from_secs(30 * 24 * 3600);
        assert!(matches!(
            check(b"update hash", later, false),
            Err(VerifyError::Chain(_))
        ));
        assert_eq!(
            check(b"altered", now, false),
            Err(VerifyError::BadSignature)
        );
        assert_eq!(check(b"update hash", now, true), Err(VerifyError::Revoked));
        // A publisher cannot sign a catalog version, nor a site an update.
        assert!(matches!(
            verify(
                &ca,
                |_| false,
                b"update hash",
                algorithm,
                &signature,
                &certificate,
                now
            ),
            Err(VerifyError::Chain(_))
        ));
        let cen = Identity::site("CEN").unwrap();
        authority.issue(&cen, &[], DEFAULT_VALIDITY).unwrap();
        let site = Signer::load(&TlsFiles::in_pki_dir(dir.path(), &cen)).unwrap();
        let (algorithm, signature, certificate) = site.sign(b"update hash").unwrap();
        assert!(matches!(
            verify_publisher(
                &ca,
                |_| false,
                b"update hash",
                algorithm,
                &signature,
                &certificate,
                now
            ),
            Err(VerifyError::Chain(_))
        ));
    }
}
