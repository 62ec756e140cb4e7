//! The hierarchy's certificate authority: one CA per hierarchy, certificates for sites,
//! operators and publishers carrying their [`Identity`], and a revocation list.
//!
//! A PKI directory holds:
//! - `ca.pem`, `ca.key`: the authority (the key with mode 0600);
//! - `sites/CODE.pem`, `sites/CODE.key`, `operators/NAME.pem`, `operators/NAME.key` and
//!   `publishers/NAME.pem`, `publishers/NAME.key`;
//! - `crl.pem`: the revocation list every node may be pointed at, and `revoked.txt`, the
//!   serial numbers it lists (one per line, hex, with the identity and time).
//!
//! Every file is written to a temporary name and renamed into place, so a node that
//! reloads its certificates never reads half a file.

use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    RevokedCertParams, SanType, SerialNumber,
};
use time::OffsetDateTime;

use crate::identity::{Identity, IdentityError};
use crate::publisher::Vendor;

/// How long the authority's own certificate is valid.
pub const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// How long an issued certificate is valid unless told otherwise.
pub const DEFAULT_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// How long a revocation list is valid; nodes refuse an expired one, so reissue before.
pub const CRL_VALIDITY: Duration = Duration::from_secs(30 * 24 * 3600);

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{0} already holds a certificate authority (ca.key); use it, or choose another directory"
    )]
    Exists(PathBuf),
    #[error(
        "{0} holds no certificate authority (ca.pem and ca.key): create one with `sitesyncctl pki init`"
    )]
    NoAuthority(PathBuf),
    #[error("cannot create the certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error("`{0}` is not a host name or an IP address")]
    Host(String),
    #[error("{path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PkiError + '_ {
    move |source| PkiError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The files of one issued certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    pub identity: Identity,
    pub certificate: PathBuf,
    pub key: PathBuf,
    /// The serial number, hex.
    pub serial: String,
    pub not_after: OffsetDateTime,
}

/// A certificate authority opened from its directory.
pub struct Authority {
    dir: PathBuf,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl Authority {
    /// Creates a new authority in `dir` (created if missing) named `name`, with an empty
    /// revocation list. Refuses to replace an existing one.
    pub fn init(dir: &Path, name: &str) -> Result<Self, PkiError> {
        if dir.join("ca.key").exists() {
            return Err(PkiError::Exists(dir.to_owned()));
        }
        fs::create_dir_all(dir).map_err(io(dir))?;
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = distinguished_name(&format!("sitesync CA {name}"));
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.serial_number = Some(random_serial()?);
        let now = OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + CA_VALIDITY;
        let certificate = params.self_signed(&key)?;
        write_file(&dir.join("ca.key"), key.serialize_pem().as_bytes(), 0o600)?;
        write_file(&dir.join("ca.pem"), certificate.pem().as_bytes(), 0o644)?;
        let authority = Self {
            dir: dir.to_owned(),
            issuer: Issuer::new(params, key),
        };
        authority.write_crl(&[])?;
        Ok(authority)
    }

    /// Opens the authority in `dir`.
    pub fn open(dir: &Path) -> Result<Self, PkiError> {
        let (cert_path, key_path) = (dir.join("ca.pem"), dir.join("ca.key"));
        if !cert_path.exists() || !key_path.exists() {
            return Err(PkiError::NoAuthority(dir.to_owned()));
        }
        let key_pem = fs::read_to_string(&key_path).map_err(io(&key_path))?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| PkiError::Invalid {
            path: key_path.clone(),
            reason: format!("not a private key: {e}"),
        })?;
        let cert_pem = fs::read_to_string(&cert_path).map_err(io(&cert_path))?;
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, key).map_err(|e| PkiError::Invalid {
            path: cert_path.clone(),
            reason: format!("not a CA certificate: {e}"),
        })?;
        Ok(Self {
            dir: dir.to_owned(),
            issuer,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The authority's certificate file: what every node and operator trusts.
    pub fn certificate_path(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// The revocation list file.
    pub fn crl_path(&self) -> PathBuf {
        self.dir.join("crl.pem")
    }

    /// Where the certificate of `identity` is written.
    pub fn paths_for(&self, identity: &Identity) -> (PathBuf, PathBuf) {
        let (folder, stem) = match identity {
            Identity::Site(code) => ("sites", code.as_str()),
            Identity::Operator(name) => ("operators", name.as_str()),
            Identity::Publisher(name) => ("publishers", name.as_str()),
        };
        let dir = self.dir.join(folder);
        (
            dir.join(format!("{stem}.pem")),
            dir.join(format!("{stem}.key")),
        )
    }

    /// Issues a certificate for `identity`, replacing any earlier one at the same paths
    /// (rotation). A site's certificate serves and calls (server and client use) and names
    /// `hosts` (DNS names or IP addresses) besides `localhost`, `127.0.0.1`, `::1` and the
    /// site code in lower case; an operator's only calls.
    pub fn issue(
        &self,
        identity: &Identity,
        hosts: &[String],
        validity: Duration,
    ) -> Result<Issued, PkiError> {
        let (cert_path, key_path) = self.paths_for(identity);
        self.issue_to(identity, hosts, validity, &cert_path, &key_path)
    }

    /// [`Authority::issue`], writing the certificate and key to the given paths (their
    /// directory is created).
    pub fn issue_to(
        &self,
        identity: &Identity,
        hosts: &[String],
        validity: Duration,
        cert_path: &Path,
        key_path: &Path,
    ) -> Result<Issued, PkiError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = distinguished_name(&identity.to_string());
        params.subject_alt_names = vec![SanType::URI(identity.uri().try_into()?)];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        match identity {
            Identity::Site(code) => {
                params.extended_key_usages = vec![
                    ExtendedKeyUsagePurpose::ServerAuth,
                    ExtendedKeyUsagePurpose::ClientAuth,
                ];
                let mut names: Vec<String> = vec![
                    "localhost".into(),
                    "127.0.0.1".into(),
                    "::1".into(),
                    code.to_ascii_lowercase(),
                ];
                for host in hosts {
                    if !names.contains(host) {
                        names.push(host.clone());
                    }
                }
                for name in names {
                    params.subject_alt_names.push(host_name(&name)?);
                }
            }
            Identity::Operator(_) => {
                params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            }
            Identity::Publisher(name) => {
                return Err(PkiError::Invalid {
                    path: cert_path.to_owned(),
                    reason: format!(
                        "publisher {name} needs its vendor: issue it with `sitesyncctl pki issue publisher`"
                    ),
                });
            }
        }
        let now = OffsetDateTime::now_utc();
        params.not_after = now + validity;
        self.sign_and_write(identity, params, key, cert_path, key_path)
    }

    /// Issues a publisher's certificate: its name and the one vendor it may publish for,
    /// valid until `not_after`, for code signing only (it opens no connection). Written to
    /// `publishers/NAME.pem` and `.key`, replacing an earlier one (a rotated key).
    pub fn issue_publisher(
        &self,
        name: &str,
        vendor: &Vendor,
        not_after: OffsetDateTime,
    ) -> Result<Issued, PkiError> {
        let identity = Identity::publisher(name)?;
        let (cert_path, key_path) = self.paths_for(&identity);
        if not_after <= OffsetDateTime::now_utc() {
            return Err(PkiError::Invalid {
                path: cert_path,
                reason: format!("the expiry {not_after} has passed"),
            });
        }
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = distinguished_name(&identity.to_string());
        params.subject_alt_names = vec![
            SanType::URI(identity.uri().try_into()?),
            SanType::URI(vendor.uri().try_into()?),
        ];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::CodeSigning];
        params.not_after = not_after;
        self.sign_and_write(&identity, params, key, &cert_path, &key_path)
    }

    /// Gives `params` a serial number and a start of validity, signs them with the
    /// authority, and writes key and certificate (with the authority's after it).
    fn sign_and_write(
        &self,
        identity: &Identity,
        mut params: CertificateParams,
        key: KeyPair,
        cert_path: &Path,
        key_path: &Path,
    ) -> Result<Issued, PkiError> {
        let serial = random_serial()?;
        params.serial_number = Some(serial.clone());
        params.use_authority_key_identifier_extension = true;
        params.not_before = OffsetDateTime::now_utc() - time::Duration::hours(1);
        let not_after = params.not_after;
        let certificate = params.signed_by(&key, &self.issuer)?;
        for path in [cert_path, key_path] {
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent).map_err(io(parent))?;
            }
        }
        // The key first: a certificate never sits next to a key it does not match for
        // longer than the two renames.
        write_file(key_path, key.serialize_pem().as_bytes(), 0o600)?;
        let mut chain = certificate.pem();
        chain.push_str(&fs::read_to_string(self.certificate_path()).unwrap_or_default());
        write_file(cert_path, chain.as_bytes(), 0o644)?;
        Ok(Issued {
            identity: identity.clone(),
            certificate: cert_path.to_owned(),
            key: key_path.to_owned(),
            serial: hex(&serial.to_bytes()),
            not_after,
        })
    }

    /// Revokes the certificate in `certificate` (a PEM file this authority issued) and
    /// rewrites the revocation list. Returns the identity and serial number revoked.
    pub fn revoke(&self, certificate: &Path) -> Result<(Identity, String), PkiError> {
        let pem = fs::read(certificate).map_err(io(certificate))?;
        let der = first_certificate(&pem).ok_or_else(|| PkiError::Invalid {
            path: certificate.to_owned(),
            reason: "holds no PEM certificate".into(),
        })?;
        let identity = Identity::from_certificate(&der)?;
        let (_, parsed) =
            x509_parser::parse_x509_certificate(&der).map_err(|e| PkiError::Invalid {
                path: certificate.to_owned(),
                reason: e.to_string(),
            })?;
        let serial = hex(parsed.raw_serial());
        let mut revoked = self.revoked()?;
        if !revoked.iter().any(|(s, _)| *s == serial) {
            revoked.push((serial.clone(), format!("{identity}")));
        }
        self.write_crl(&revoked)?;
        Ok((identity, serial))
    }

    /// The serial numbers revoked so far, with the identity each carried.
    pub fn revoked(&self) -> Result<Vec<(String, String)>, PkiError> {
        let path = self.dir.join("revoked.txt");
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io(&path)(e)),
        };
        Ok(text
            .lines()
            .filter_map(|line| {
                let (serial, rest) = line.split_once('\t')?;
                Some((serial.to_owned(), rest.to_owned()))
            })
            .collect())
    }

    fn write_crl(&self, revoked: &[(String, String)]) -> Result<(), PkiError> {
        let now = OffsetDateTime::now_utc();
        let revoked_certs = revoked
            .iter()
            .map(|(serial, _)| {
                Ok(RevokedCertParams {
                    serial_number: SerialNumber::from_slice(&unhex(serial).ok_or_else(|| {
                        PkiError::Invalid {
                            path: self.dir.join("revoked.txt"),
                            reason: format!("`{serial}` is not a hex serial number"),
                        }
                    })?),
                    revocation_time: now,
                    reason_code: None,
                    invalidity_date: None,
                })
            })
            .collect::<Result<Vec<_>, PkiError>>()?;
        let params = CertificateRevocationListParams {
            this_update: now - time::Duration::minutes(5),
            next_update: now + CRL_VALIDITY,
            crl_number: SerialNumber::from(u64::try_from(now.unix_timestamp()).unwrap_or(0)),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: KeyIdMethod::Sha256,
        };
        let crl = params.signed_by(&self.issuer)?;
        let list: String = revoked
            .iter()
            .map(|(serial, who)| format!("{serial}\t{who}\n"))
            .collect();
        write_file(&self.dir.join("revoked.txt"), list.as_bytes(), 0o644)?;
        write_file(&self.crl_path(), crl.pem()?.as_bytes(), 0o644)
    }
}

fn distinguished_name(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::OrganizationName, "sitesync");
    name.push(DnType::CommonName, common_name);
    name
}

fn host_name(host: &str) -> Result<SanType, PkiError> {
    if let Ok(ip) = IpAddr::from_str(host) {
        return Ok(SanType::IpAddress(ip));
    }
    let valid = !host.is_empty()
        && host.len() <= 253
        && host
            .split('.')
            .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
    if !valid {
        return Err(PkiError::Host(host.to_owned()));
    }
    Ok(SanType::DnsName(
        host.try_into()
            .map_err(|_| PkiError::Host(host.to_owned()))?,
    ))
}

fn random_serial() -> Result<SerialNumber, PkiError> {
    let mut bytes = [0u8; 16];
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut bytes)
        .map_err(|_| PkiError::Certificate(rcgen::Error::RingUnspecified))?;
    // Positive and without a leading zero byte, so the DER encoding is 16 bytes.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}

/// The first certificate of a PEM file, DER.
pub fn first_certificate(pem: &[u8]) -> Option<Vec<u8>> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem)
        .next()?
        .ok()
        .map(|c| c.to_vec())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Writes `bytes` to `path` through a temporary file in the same directory, created with
/// `mode`, then renamed into place.
fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), PkiError> {
    let file_name = path
        .file_name()
        .map_or_else(|| "file".into(), |n| n.to_string_lossy().into_owned());
    let temporary = path.with_file_name(format!(".{file_name}.tmp"));
    let _ = fs::remove_file(&temporary);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&temporary)
        .map_err(io(&temporary))?;
    file.write_all(bytes).map_err(io(&temporary))?;
    file.sync_all().map_err(io(&temporary))?;
    // The umask may have narrowed the mode; never widened it. Set it exactly.
    fs::set_permissions(&temporary, fs::Permissions::from_mode(mode)).map_err(io(&temporary))?;
    fs::rename(&temporary, path).map_err(io(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_certificates_carry_their_identity_and_keys_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let authority = Authority::init(dir.path(), "test").unwrap();
        assert!(matches!(
            Authority::init(dir.path(), "again"),
            Err(PkiError::Exists(_))
        ));
        let authority_again = Authority::open(dir.path()).unwrap();
        let site = Identity::site("PR1").unwrap();
        let issued = authority_again
            .issue(
                &site,
                &["pr1.example".into(), "10.0.0.5".into()],
                DEFAULT_VALIDITY,
            )
            .unwrap();
        let der = first_certificate(&fs::read(&issued.certificate).unwrap()).unwrap();
        assert_eq!(Identity::from_certificate(&der).unwrap(), site);
        let mode = fs::metadata(&issued.key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let mode = fs::metadata(dir.path().join("ca.key"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);

        let operator = Identity::operator("alice").unwrap();
        let issued_operator = authority.issue(&operator, &[], DEFAULT_VALIDITY).unwrap();
        let (revoked, serial) = authority.revoke(&issued_operator.certificate).unwrap();
        assert_eq!(revoked, operator);
        assert_eq!(serial, issued_operator.serial);
        assert_eq!(authority.revoked().unwrap().len(), 1);
        assert!(matches!(
            authority.issue(&site, &["bad host!".into()], DEFAULT_VALIDITY),
            Err(PkiError::Host(_))
        ));
    }

    #[test]
    fn a_publisher_certificate_names_its_vendor_and_expiry_and_only_signs() {
        let dir = tempfile::tempdir().unwrap();
        let authority = Authority::init(dir.path(), "test").unwrap();
        let vendor = Vendor::new("Contoso Ltd").unwrap();
        let expires = OffsetDateTime::now_utc() + time::Duration::days(90);
        let issued = authority
            .issue_publisher("contoso", &vendor, expires)
            .unwrap();
        assert_eq!(
            issued.certificate,
            dir.path().join("publishers/contoso.pem")
        );
        let pem = fs::read(&issued.certificate).unwrap();
        let publisher = crate::PublisherCertificate::from_pem(&pem).unwrap();
        assert_eq!(publisher.name, "contoso");
        assert_eq!(publisher.vendor, vendor);
        assert_eq!(publisher.not_after, expires.unix_timestamp());
        assert_eq!(publisher.serial, issued.serial);

        let der = first_certificate(&pem).unwrap();
        let (_, parsed) = x509_parser::parse_x509_certificate(&der).unwrap();
        let usage = parsed.extended_key_usage().unwrap().unwrap().value;
        assert!(usage.code_signing && !usage.client_auth && !usage.server_auth);

        // A new key for the same publisher replaces the files (rotation); revocable.
        let rotated = authority
            .issue_publisher("contoso", &vendor, expires)
            .unwrap();
        assert_ne!(rotated.serial, issued.serial);
        let (revoked, _) = authority.revoke(&rotated.certificate).unwrap();
        assert_eq!(revoked, Identity::publisher("contoso").unwrap());

        // Refused: no vendor through the generic path, an expiry in the past.
        let publisher_identity = Identity::publisher("fabrikam").unwrap();
        let err = authority
            .issue(&publisher_identity, &[], DEFAULT_VALIDITY)
            .unwrap_err();
        assert!(err.to_string().contains("pki issue publisher"), "{err}");
        let past = OffsetDateTime::now_utc() - time::Duration::days(1);
        let err = authority
            .issue_publisher("fabrikam", &vendor, past)
            .unwrap_err();
        assert!(err.to_string().contains("has passed"), "{err}");
        assert!(!dir.path().join("publishers/fabrikam.pem").exists());

        // A site certificate is not a publisher's.
        let site = authority
            .issue(&Identity::site("CEN").unwrap(), &[], DEFAULT_VALIDITY)
            .unwrap();
        let err = crate::PublisherCertificate::from_pem(&fs::read(&site.certificate).unwrap())
            .unwrap_err();
        assert!(
            matches!(err, crate::PublisherError::NotAPublisher(_)),
            "{err}"
        );
    }

    #[test]
    fn a_directory_without_an_authority_says_how_to_make_one() {
        let dir = tempfile::tempdir().unwrap();
        let error = Authority::open(dir.path()).unwrap_err();
        assert!(
            error.to_string().contains("sitesyncctl pki init"),
            "{error}"
        );
    }
}
