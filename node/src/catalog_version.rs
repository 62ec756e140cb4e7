//! Signed catalog versions (issue 5, beyond WSUS): the top site signs a statement after
//! each sync — "version N of the catalog has these digests; trust it until E" — with the key
//! of its site certificate. Every node verifies the statement its parent offers before it
//! applies anything, refuses an older version (rollback) and an expired one (freeze),
//! checks its stores against the signed digests, and passes the statement down unchanged.
//! A middle site can then neither inject, alter, drop nor replay updates without its
//! children noticing: the children report 6703 and keep the catalog they had.
//!
//! Which top site a node follows is fixed by the first version it accepts; from then on a
//! version signed by another site of the hierarchy is refused. Signing is on whenever TLS
//! is: the key is the top site's certificate key, checked against the hierarchy CA.
//!
//! The top site signs twice per sync: after phase 1 a version covering only the
//! update-server store (its internet-facing node syncs in between, S11), and after phase 2
//! the next version, covering both stores, which the cascade carries to the child sites.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use prost::Message as _;
use rustls::pki_types::CertificateDer;
use sitesync_metadata::{CatalogDigest, Timestamp};
use sitesync_proto::convert::{timestamp_from_wire, timestamp_to_wire};
use sitesync_proto::v1;
use sitesync_security::signing::{self, Algorithm, Signer, SigningError, VerifyError};
use sitesync_security::{Identity, TlsContext};

use crate::publishing::{CustomCheck, Delegation};
use crate::store::{Backend, StoreError, StoreState, WriteBatch};

/// How long a signed version is valid by default: two of the default weekly syncs.
pub const DEFAULT_VALIDITY: Duration = Duration::from_secs(14 * 24 * 3600);

/// The key of the held version in the node's `catalog-version` space.
const KEY_HELD: &[u8] = b"held";

/// The key of the last version imported from an export file, at a node that signs its own
/// (a top site whose upstream is imports): the versions it imports are another top site's.
const KEY_IMPORTED: &[u8] = b"imported";

/// At the top site, the publisher delegations it signs into the next version (S6).
const KEY_DELEGATIONS: &[u8] = b"delegations";

/// A signed catalog version as it travels between nodes. The signature covers the
/// statement's protobuf encoding, so the statement moves as those bytes, unchanged, and
/// this is the one wire type the domain carries (the layering check names this file as its
/// deliberate exception).
pub type SignedVersion = v1::SignedCatalogVersion;

/// A verified (or self-signed) catalog version: the statement as carried and as read.
#[derive(Debug, Clone, PartialEq)]
pub struct Held {
    pub signed: v1::SignedCatalogVersion,
    pub version: v1::CatalogVersion,
}

impl Held {
    pub fn number(&self) -> u64 {
        self.version.version
    }

    /// The digest the update-server store must have.
    pub fn update_server_digest(&self) -> Option<CatalogDigest> {
        digest(self.version.update_server_digest.clone())
    }

    /// The digest the site database must have; `None` for a version the top site signed
    /// between its phases.
    pub fn site_database_digest(&self) -> Option<CatalogDigest> {
        digest(self.version.site_database_digest.clone())
    }

    /// When the top site signed it.
    pub fn issued_at(&self) -> Timestamp {
        self.version
            .issued_at
            .and_then(|t| timestamp_from_wire(t).ok())
            .unwrap_or(Timestamp(0))
    }

    /// The publisher delegations it carries (S6).
    pub fn delegations(&self) -> Result<Vec<Delegation>, VersionError> {
        self.version
            .delegations
            .iter()
            .map(delegation_from_wire)
            .collect()
    }
}

fn delegation_from_wire(wire: &v1::PublisherDelegation) -> Result<Delegation, VersionError> {
    let time = |t: &Option<prost_types::Timestamp>, what: &str| {
        (*t).map(timestamp_from_wire).transpose().map_err(|e| {
            VersionError::Malformed(format!("delegation of {}: {what}: {e}", wire.publisher))
        })
    };
    let required = |t: Option<Timestamp>, what: &str| {
        t.ok_or_else(|| {
            VersionError::Malformed(format!(
                "delegation of {}: {what} is missing",
                wire.publisher
            ))
        })
    };
    Ok(Delegation {
        publisher: wire.publisher.clone(),
        vendor: wire.vendor.clone(),
        public_key: wire.public_key.clone(),
        certificate: wire.certificate.clone(),
        added_at: required(time(&wire.added_at, "added_at")?, "added_at")?,
        retired_at: time(&wire.retired_at, "retired_at")?,
        expires_at: required(time(&wire.expires_at, "expires_at")?, "expires_at")?,
    })
}

/// A delegation as the catalog version carries it.
pub fn delegation_to_wire(delegation: &Delegation) -> v1::PublisherDelegation {
    v1::PublisherDelegation {
        publisher: delegation.publisher.clone(),
        vendor: delegation.vendor.clone(),
        public_key: delegation.public_key.clone(),
        certificate: delegation.certificate.clone(),
        added_at: Some(timestamp_to_wire(delegation.added_at)),
        retired_at: delegation.retired_at.map(timestamp_to_wire),
        expires_at: Some(timestamp_to_wire(delegation.expires_at)),
    }
}

fn digest(wire: Option<v1::CatalogDigest>) -> Option<CatalogDigest> {
    wire.and_then(|d| CatalogDigest::try_from(d).ok())
}

/// Why a catalog version is refused. Every variant names what was offered and what is
/// held, so the 6703 it becomes explains itself.
#[derive(Debug, thiserror::Error)]
pub enum VersionError {
    #[error(
        "no signed catalog version is offered; this node accepts only catalogs the top site signed"
    )]
    Missing,
    #[error("the signed catalog version is malformed: {0}")]
    Malformed(String),
    #[error("the signature over catalog version is refused: {0}")]
    Signature(#[from] VerifyError),
    #[error(
        "catalog version {version} says it is from the top site {claimed}, but {signer} signed it"
    )]
    WrongSigner {
        version: u64,
        claimed: String,
        signer: Identity,
    },
    #[error(
        "catalog version {version} is from the top site {offered}, but this node follows the top site {followed}"
    )]
    OtherTop {
        version: u64,
        offered: String,
        followed: String,
    },
    #[error(
        "catalog version {offered} is older than version {held}, which this node holds: a rollback is refused"
    )]
    Rollback { offered: u64, held: u64 },
    #[error(
        "catalog version {version} expired at {expired_at}: a frozen catalog is refused (the top site signs a new version with every sync)"
    )]
    Expired { version: u64, expired_at: Timestamp },
    #[error(
        "catalog version {version} is not the version {version} this node holds: two different statements under one number"
    )]
    Conflict { version: u64 },
    #[error(
        "catalog version {version} does not cover the site database yet (the top site is between its phases); the next request brings a complete one"
    )]
    Incomplete { version: u64 },
    #[error(
        "the {store} does not hold the top site's signed catalog version {version}: digest {actual}, signed {signed}"
    )]
    DigestMismatch {
        store: &'static str,
        version: u64,
        actual: CatalogDigest,
        signed: CatalogDigest,
    },
    #[error(
        "the parent's catalog kept changing while it was pulled, though it matched the signed version; the next sync tries again"
    )]
    Unsettled,
    #[error("cannot sign the catalog version: {0}")]
    Sign(#[from] SigningError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The node's signed catalog version: signing at the top site, verifying everywhere.
pub struct CatalogVersions {
    tls: Arc<TlsContext>,
    /// This node signs: it is the top site.
    signs: bool,
    /// The top site to follow, when configured; otherwise the first accepted version's.
    top_site: Option<String>,
    validity: Duration,
    space: Box<dyn Backend>,
    held: Mutex<Option<Held>>,
    /// CAs of other hierarchies whose top sites' export files this node imports
    /// (`[import] trust`), besides its own hierarchy's.
    import_trust: Vec<CertificateDer<'static>>,
}

impl std::fmt::Debug for CatalogVersions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CatalogVersions")
            .field("signs", &self.signs)
            .field("top_site", &self.top_site)
            .field("held", &self.held().map(|h| h.number()))
            .finish()
    }
}

impl CatalogVersions {
    /// Opens the held version in `space`.
    pub fn open(
        space: Box<dyn Backend>,
        tls: Arc<TlsContext>,
        signs: bool,
        top_site: Option<String>,
        validity: Duration,
    ) -> Result<Self, StoreError> {
        let held = read_held(&*space, KEY_HELD)?;
        Ok(Self {
            tls,
            signs,
            top_site,
            validity,
            space,
            held: Mutex::new(held),
            import_trust: Vec::new(),
        })
    }

    /// Also trusts `cas` (DER) for the versions of imported export files.
    pub fn trusting_imports_from(mut self, cas: Vec<CertificateDer<'static>>) -> Self {
        self.import_trust = cas;
        self
    }

    /// The CAs an export file's signatures may chain to: this hierarchy's and
    /// `[import] trust`.
    pub fn import_cas(&self) -> Vec<CertificateDer<'static>> {
        let material = self.tls.current();
        material
            .ca
            .iter()
            .cloned()
            .chain(self.import_trust.iter().cloned())
            .collect()
    }

    /// Whether `der` is a certificate this hierarchy's revocation list names.
    pub fn is_revoked(&self, der: &[u8]) -> bool {
        self.tls.current().is_revoked(der)
    }

    /// The version imports are judged against: at a node that signs its own versions, the
    /// last imported one; elsewhere the held one (the imported version is what it holds).
    pub fn last_imported(&self) -> Result<Option<Held>, StoreError> {
        if self.signs {
            read_held(&*self.space, KEY_IMPORTED)
        } else {
            Ok(self.held())
        }
    }

    /// Checks the version an export file carries, as [`CatalogVersions::verify`] checks a
    /// parent's, against [`CatalogVersions::import_cas`] and [`CatalogVersions::last_imported`].
    pub fn verify_import(
        &self,
        offered: Option<&v1::SignedCatalogVersion>,
        now: Timestamp,
    ) -> Result<Held, VersionError> {
        let held = self.last_imported()?;
        let followed = if self.signs {
            None
        } else {
            self.top_site.clone()
        };
        check_offered(
            offered,
            now,
            &self.import_cas(),
            |der| self.is_revoked(der),
            held.as_ref(),
            followed,
        )
    }

    /// Keeps the version of an imported file (durably): as the held version at a node that
    /// passes versions on, apart from its own at a node that signs.
    pub fn hold_import(&self, held: &Held) -> Result<(), StoreError> {
        if !self.signs {
            return self.hold(held);
        }
        let mut batch = WriteBatch::default();
        batch.put(KEY_IMPORTED.to_vec(), held.signed.encode_to_vec());
        self.space.apply(batch)?;
        self.space.flush()?;
        Ok(())
    }

    /// The version this node holds: the last it signed or accepted.
    pub fn held(&self) -> Option<Held> {
        self.held.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The held version as carried on the wire, for `CatalogInfo`, sync requests, status
    /// and the client policy.
    pub fn held_wire(&self) -> Option<v1::SignedCatalogVersion> {
        self.held().map(|h| h.signed)
    }

    pub fn signs(&self) -> bool {
        self.signs
    }

    /// The publisher delegations: at the top site those it signs into the next version,
    /// elsewhere those of the held version.
    pub fn delegations(&self) -> Result<Vec<Delegation>, VersionError> {
        if !self.signs {
            return self.held().map_or(Ok(Vec::new()), |h| h.delegations());
        }
        Ok(self.stored_delegations()?)
    }

    fn stored_delegations(&self) -> Result<Vec<Delegation>, StoreError> {
        match self.space.get(KEY_DELEGATIONS)? {
            None => Ok(Vec::new()),
            Some(bytes) => postcard::from_bytes(&bytes).map_err(|e| StoreError::Corrupt {
                what: format!("the publisher delegations do not decode: {e}"),
            }),
        }
    }

    /// At the top site: replaces the delegations the next version carries (durably).
    pub fn set_delegations(&self, delegations: &[Delegation]) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        batch.put(
            KEY_DELEGATIONS.to_vec(),
            postcard::to_allocvec(delegations).expect("postcard serializes plain structs"),
        );
        self.space.apply(batch)?;
        self.space.flush()?;
        Ok(())
    }

    /// What custom documents arriving with `held` are checked against: this hierarchy's CA
    /// (and, for imports, the trusted ones) and `held`'s delegations.
    pub fn custom_check(
        &self,
        held: &Held,
        import: bool,
    ) -> Result<Arc<CustomCheck>, VersionError> {
        let cas = if import {
            self.import_cas()
        } else {
            self.tls.current().ca.to_vec()
        };
        Ok(CustomCheck::new(
            cas.into_iter().map(|c| c.into_owned()).collect(),
            held.delegations()?,
            held.number(),
            held.issued_at(),
        ))
    }

    /// What custom documents are judged against now: at the top site its current
    /// delegations, as the next version will carry them; elsewhere the held version's.
    pub fn current_check(&self, now: Timestamp) -> Result<Option<Arc<CustomCheck>>, VersionError> {
        if self.signs {
            return Ok(Some(CustomCheck::new(
                self.ca(),
                self.stored_delegations()?,
                self.held().map_or(1, |h| h.number() + 1),
                now,
            )));
        }
        self.held()
            .map(|held| self.custom_check(&held, false))
            .transpose()
    }

    /// The hierarchy CA (DER), against which publishers' certificates are checked.
    pub fn ca(&self) -> Vec<CertificateDer<'static>> {
        self.tls
            .current()
            .ca
            .iter()
            .map(|c| c.clone().into_owned())
            .collect()
    }

    /// The key that signs catalog versions (read from the certificate files now, so a
    /// rotated certificate signs from then on): at the top site, it also signs the legacy
    /// scan catalog's index.
    pub fn signer(&self) -> Result<Signer, SigningError> {
        Signer::load(self.tls.files())
    }

    /// The CA certificates and revocation check of the hierarchy, for checking what the
    /// top site signed.
    pub fn trust(&self) -> (Vec<CertificateDer<'static>>, impl Fn(&[u8]) -> bool + use<>) {
        let material = self.tls.current();
        let cas = self.ca();
        (cas, move |der: &[u8]| material.is_revoked(der))
    }

    /// At the top site: signs the next version for the stores as they are and holds it.
    /// `site_database` is `None` between the phases.
    pub fn sign(
        &self,
        top_site: &str,
        update_server: &StoreState,
        site_database: Option<&StoreState>,
        now: Timestamp,
    ) -> Result<Held, VersionError> {
        // The key is read at each signing, so a rotated certificate signs from then on.
        let signer = Signer::load(self.tls.files())?;
        let number = self.held().map_or(1, |h| h.number() + 1);
        let version = v1::CatalogVersion {
            version: number,
            top_site_code: top_site.to_owned(),
            update_server_digest: Some(update_server.digest.into()),
            revision_count: update_server.revisions,
            site_database_digest: site_database.map(|s| s.digest.into()),
            issued_at: Some(timestamp_to_wire(now)),
            expires_at: Some(timestamp_to_wire(Timestamp(now.0.saturating_add(
                i64::try_from(self.validity.as_millis()).unwrap_or(i64::MAX),
            )))),
            delegations: self
                .stored_delegations()?
                .iter()
                .map(delegation_to_wire)
                .collect(),
        };
        let (message, encoded) = version.encode_for_signing();
        let (algorithm, signature, certificate) = signer.sign(&message)?;
        let signed = v1::SignedCatalogVersion {
            catalog_version: encoded,
            algorithm: match algorithm {
                Algorithm::EcdsaP256Sha256 => v1::SignatureAlgorithm::EcdsaP256Sha256 as i32,
            },
            signature,
            signer_certificate: certificate,
        };
        let held = Held { signed, version };
        self.hold(&held)?;
        Ok(held)
    }

    /// Checks a version offered from upstream, before anything is applied: the signature
    /// chains to the hierarchy CA and is the top site's, the version is not older than the
    /// held one (nor a different statement under the same number), and it has not expired.
    pub fn verify(
        &self,
        offered: Option<&v1::SignedCatalogVersion>,
        now: Timestamp,
    ) -> Result<Held, VersionError> {
        let material = self.tls.current();
        check_offered(
            offered,
            now,
            &material.ca,
            |der| material.is_revoked(der),
            self.held().as_ref(),
            self.top_site.clone(),
        )
    }

    /// Holds `held` (durably, before this returns) unless a newer version is held.
    pub fn hold(&self, held: &Held) -> Result<(), StoreError> {
        let mut current = self.held.lock().unwrap_or_else(|p| p.into_inner());
        if current.as_ref().is_some_and(|c| c.number() > held.number()) {
            return Ok(());
        }
        let mut batch = WriteBatch::default();
        batch.put(KEY_HELD.to_vec(), held.signed.encode_to_vec());
        self.space.apply(batch)?;
        self.space.flush()?;
        *current = Some(held.clone());
        Ok(())
    }
}

/// Checks an offered version, before anything is applied: the signature chains to one of
/// `cas` and is the top site's, the version is the followed top site's, it is not older than
/// `held` (nor a different statement under the same number), and it has not expired.
fn check_offered(
    offered: Option<&v1::SignedCatalogVersion>,
    now: Timestamp,
    cas: &[CertificateDer<'_>],
    is_revoked: impl Fn(&[u8]) -> bool,
    held: Option<&Held>,
    followed: Option<String>,
) -> Result<Held, VersionError> {
    let offered = offered.ok_or(VersionError::Missing)?;
    let algorithm = match v1::SignatureAlgorithm::try_from(offered.algorithm) {
        Ok(v1::SignatureAlgorithm::EcdsaP256Sha256) => Algorithm::EcdsaP256Sha256,
        _ => {
            return Err(VersionError::Malformed(format!(
                "signature algorithm {} is not one this node verifies",
                offered.algorithm
            )));
        }
    };
    let signer = signing::verify(
        cas,
        is_revoked,
        &offered.signed_bytes(),
        algorithm,
        &offered.signature,
        &offered.signer_certificate,
        // Certificates are issued and expire in real time, as the TLS handshake judges
        // them, whatever the clock seam says; the version's own expiry below follows the
        // seam.
        SystemTime::now(),
    )?;
    let version = offered
        .decode_catalog_version()
        .map_err(|e| VersionError::Malformed(e.to_string()))?;
    let number = version.version;
    if number == 0 || version.update_server_digest.is_none() {
        return Err(VersionError::Malformed(
            "a version number and the update-server digest are required".into(),
        ));
    }
    if signer != Identity::Site(version.top_site_code.clone()) {
        return Err(VersionError::WrongSigner {
            version: number,
            claimed: version.top_site_code.clone(),
            signer,
        });
    }
    let followed = followed.or_else(|| held.map(|h| h.version.top_site_code.clone()));
    if let Some(followed) = followed
        && followed != version.top_site_code
    {
        return Err(VersionError::OtherTop {
            version: number,
            offered: version.top_site_code,
            followed,
        });
    }
    if let Some(held) = held {
        if number < held.number() {
            return Err(VersionError::Rollback {
                offered: number,
                held: held.number(),
            });
        }
        if number == held.number() && held.signed.catalog_version != offered.catalog_version {
            return Err(VersionError::Conflict { version: number });
        }
    }
    let expires_at = version
        .expires_at
        .map(timestamp_from_wire)
        .transpose()
        .map_err(|e| VersionError::Malformed(e.to_string()))?
        .ok_or_else(|| VersionError::Malformed("the expiry is missing".into()))?;
    if expires_at <= now {
        return Err(VersionError::Expired {
            version: number,
            expired_at: expires_at,
        });
    }
    Ok(Held {
        signed: offered.clone(),
        version,
    })
}

/// The version kept under `key`, if any.
fn read_held(space: &dyn Backend, key: &[u8]) -> Result<Option<Held>, StoreError> {
    let Some(bytes) = space.get(key).map_err(StoreError::from)? else {
        return Ok(None);
    };
    let corrupt = |e: prost::DecodeError| StoreError::Corrupt {
        what: format!("the held catalog version does not decode: {e}"),
    };
    let signed = v1::SignedCatalogVersion::decode(bytes.as_slice()).map_err(corrupt)?;
    let version = signed.decode_catalog_version().map_err(corrupt)?;
    Ok(Some(Held { signed, version }))
}

/// Checks that `store` (named for the message) reached `signed`.
pub fn check_digest(
    store: &'static str,
    version: u64,
    actual: CatalogDigest,
    signed: Option<CatalogDigest>,
) -> Result<(), VersionError> {
    let signed = signed.ok_or(VersionError::Incomplete { version })?;
    if actual == signed {
        Ok(())
    } else {
        Err(VersionError::DigestMismatch {
            store,
            version,
            actual,
            signed,
        })
    }
}

#[cfg(test)]
mod tests {
    use sitesync_security::TlsFiles;
    use sitesync_security::pki::{Authority, DEFAULT_VALIDITY};

    use super::*;
    use crate::store::MemoryBackend;

    /// A CA with the sites CEN (the top), PR1 and SE1, each with its catalog versions.
    struct Sites {
        _dir: tempfile::TempDir,
        top: CatalogVersions,
        middle: CatalogVersions,
        leaf: CatalogVersions,
    }

    fn sites() -> Sites {
        let dir = tempfile::tempdir().unwrap();
        let authority = Authority::init(dir.path(), "test").unwrap();
        let versions = |code: &str, signs: bool| {
            let identity = Identity::site(code).unwrap();
            authority.issue(&identity, &[], DEFAULT_VALIDITY).unwrap();
            let tls = TlsContext::load(TlsFiles::in_pki_dir(dir.path(), &identity)).unwrap();
            CatalogVersions::open(
                Box::new(MemoryBackend::new()),
                tls,
                signs,
                None,
                DEFAULT_VALIDITY,
            )
            .unwrap()
        };
        Sites {
            top: versions("CEN", true),
            middle: versions("PR1", false),
            leaf: versions("SE1", false),
            _dir: dir,
        }
    }

    fn state(byte: u8) -> StoreState {
        let mut state = crate::store::NodeDatabase::in_memory()
            .unwrap()
            .update_server()
            .state();
        state.digest = CatalogDigest([byte; 32]);
        state.revisions = u64::from(byte);
        state
    }

    const NOW: Timestamp = Timestamp(1_790_000_000_000);

    #[test]
    fn a_version_of_the_top_site_is_accepted_and_passed_on_unchanged() {
        let sites = sites();
        let signed = sites
            .top
            .sign("CEN", &state(1), Some(&state(2)), NOW)
            .unwrap();
        assert_eq!(signed.number(), 1);
        let at_middle = sites.middle.verify(Some(&signed.signed), NOW).unwrap();
        sites.middle.hold(&at_middle).unwrap();
        // The middle passes on what it holds, byte for byte; the leaf accepts it too.
        let passed = sites.middle.held_wire().unwrap();
        assert_eq!(passed, signed.signed);
        let at_leaf = sites.leaf.verify(Some(&passed), NOW).unwrap();
        assert_eq!(at_leaf.update_server_digest(), Some(CatalogDigest([1; 32])));
        assert_eq!(at_leaf.site_database_digest(), Some(CatalogDigest([2; 32])));
        // The same version again is fine (a repeated request).
        sites.leaf.hold(&at_leaf).unwrap();
        sites.leaf.verify(Some(&passed), NOW).unwrap();
        // Every sync signs the next number.
        let next = sites.top.sign("CEN", &state(3), None, NOW).unwrap();
        assert_eq!(next.number(), 2);
        assert_eq!(next.site_database_digest(), None);
    }

    #[test]
    fn rollback_freeze_forgery_and_tampering_are_refused() {
        let sites = sites();
        let first = sites
            .top
            .sign("CEN", &state(1), Some(&state(1)), NOW)
            .unwrap();
        let second = sites
            .top
            .sign("CEN", &state(2), Some(&state(2)), NOW)
            .unwrap();
        let held = sites.leaf.verify(Some(&second.signed), NOW).unwrap();
        sites.leaf.hold(&held).unwrap();

        // Rollback: the older version, validly signed.
        let error = sites.leaf.verify(Some(&first.signed), NOW).unwrap_err();
        assert!(
            matches!(
                error,
                VersionError::Rollback {
                    offered: 1,
                    held: 2
                }
            ),
            "{error}"
        );

        // Freeze: the held version itself, once expired.
        let later = Timestamp(NOW.0 + DEFAULT_VALIDITY.as_millis() as i64 + 1);
        let error = sites.leaf.verify(Some(&second.signed), later).unwrap_err();
        assert!(
            matches!(error, VersionError::Expired { version: 2, .. }),
            "{error}"
        );

        // Tampering: one byte of the statement changed after signing.
        let mut altered = second.signed.clone();
        let last = altered.catalog_version.len() - 1;
        altered.catalog_version[last] ^= 1;
        let error = sites.leaf.verify(Some(&altered), NOW).unwrap_err();
        assert!(
            matches!(
                error,
                VersionError::Signature(VerifyError::BadSignature) | VersionError::Malformed(_)
            ),
            "{error}"
        );

        // Forgery: the middle site signs with its own key, claiming to be the top site...
        let forged = CatalogVersions::open(
            Box::new(MemoryBackend::new()),
            sites.middle.tls.clone(),
            true,
            None,
            DEFAULT_VALIDITY,
        )
        .unwrap();
        forged.hold(&held).unwrap();
        let claimed = forged.sign("CEN", &state(9), Some(&state(9)), NOW).unwrap();
        let error = sites.leaf.verify(Some(&claimed.signed), NOW).unwrap_err();
        assert!(matches!(error, VersionError::WrongSigner { .. }), "{error}");
        // ... or as itself: not the top site this node follows.
        let own = forged.sign("PR1", &state(9), Some(&state(9)), NOW).unwrap();
        let error = sites.leaf.verify(Some(&own.signed), NOW).unwrap_err();
        assert!(
            matches!(&error, VersionError::OtherTop { followed, .. } if followed == "CEN"),
            "{error}"
        );

        // A different statement under the held number.
        let rival = CatalogVersions::open(
            Box::new(MemoryBackend::new()),
            sites.top.tls.clone(),
            true,
            None,
            DEFAULT_VALIDITY,
        )
        .unwrap();
        rival.hold(&first).unwrap();
        let conflicting = rival.sign("CEN", &state(7), Some(&state(7)), NOW).unwrap();
        assert_eq!(conflicting.number(), 2);
        let error = sites
            .leaf
            .verify(Some(&conflicting.signed), NOW)
            .unwrap_err();
        assert!(
            matches!(error, VersionError::Conflict { version: 2 }),
            "{error}"
        );

        // Nothing offered at all.
        let error = sites.leaf.verify(None, NOW).unwrap_err();
        assert!(matches!(error, VersionError::Missing), "{error}");
        // Through all of it the leaf kept what it held.
        assert_eq!(sites.leaf.held().unwrap().number(), 2);
    }

    #[test]
    fn stores_are_checked_against_the_signed_digests() {
        let ok = check_digest(
            "update server",
            3,
            CatalogDigest([1; 32]),
            Some(CatalogDigest([1; 32])),
        );
        assert!(ok.is_ok());
        let error = check_digest(
            "site database",
            3,
            CatalogDigest([1; 32]),
            Some(CatalogDigest([2; 32])),
        )
        .unwrap_err();
        assert!(
            error
                .to_string()
                .contains("site database does not hold the top site's signed catalog version 3"),
            "{error}"
        );
        let error = check_digest("site database", 3, CatalogDigest([1; 32]), None).unwrap_err();
        assert!(matches!(error, VersionError::Incomplete { version: 3 }));
    }
}
