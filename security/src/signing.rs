//! Signatures over catalog versions (beyond WSUS): the top site signs with the key of its
//! own site certificate, and anyone holding the hierarchy CA's certificate can verify —
//! the signer's certificate travels with the signature, so no other key needs handing out.
//!
//! [`Signer::sign`] signs bytes; [`verify`] checks that the signer certificate chains to
//! the CA, is valid now and not revoked, carries a site identity, and that the signature
//! over the bytes is its key's. What the bytes mean is the caller's business (the node
//! signs `CATALOG_VERSION_SIGNATURE_CONTEXT ‖ encoded CatalogVersion`).

use std::path::Path;

use rcgen::{KeyPair, SigningKey};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, SignatureVerificationAlgorithm, UnixTime};

use crate::identity::Identity;
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
        "the signer's key is not ECDSA P-256; issue the top site's certificate with `sitesyncctl pki issue site`"
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
        let file_error = |path: &Path, reason: String| SigningError::File {
            path: path.display().to_string(),
            reason,
        };
        let pem = std::fs::read_to_string(&files.key)
            .map_err(|e| file_error(&files.key, e.to_string()))?;
        let key = KeyPair::from_pem(&pem)
            .map_err(|e| file_error(&files.key, format!("not a private key: {e}")))?;
        if key.algorithm() != &rcgen::PKCS_ECDSA_P256_SHA256 {
            return Err(SigningError::KeyType);
        }
        let certificate = CertificateDer::pem_file_iter(&files.certificate)
            .map_err(|e| file_error(&files.certificate, e.to_string()))?
            .next()
            .ok_or_else(|| file_error(&files.certificate, "holds no certificate".into()))?
            .map_err(|e| file_error(&files.certificate, e.to_string()))?;
        let identity = Identity::from_certificate(&certificate)
            .map_err(|e| file_error(&files.certificate, e.to_string()))?;
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
    let leaf = CertificateDer::from(signer_certificate);
    let end_entity = webpki::EndEntityCert::try_from(&leaf)
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
    let time = UnixTime::since_unix_epoch(
        now.duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default(),
    );
    end_entity
        .verify_for_usage(
            algorithms,
            &anchors,
            &[],
            time,
            webpki::KeyUsage::client_auth(),
            None,
            None,
        )
        .map_err(|e| VerifyError::Chain(e.to_string()))?;
    if is_revoked(signer_certificate) {
        return Err(VerifyError::Revoked);
    }
    let identity = Identity::from_certificate(signer_certificate)
        .map_err(|e| VerifyError::Certificate(e.to_string()))?;
    if identity.is_operator() {
        return Err(VerifyError::NotASite(identity));
    }
    let algorithm: &dyn SignatureVerificationAlgorithm = match algorithm {
        Algorithm::EcdsaP256Sha256 => webpki::ring::ECDSA_P256_SHA256,
    };
    end_entity
        .verify_signature(algorithm, message, signature)
        .map_err(|_| VerifyError::BadSignature)?;
    Ok(identity)
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
}
