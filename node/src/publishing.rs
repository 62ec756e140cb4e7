//! Custom updates (S6): the publisher delegations the top site signs into each catalog
//! version, and the check every node makes of a custom revision before storing it.
//!
//! A custom document carries a seal (sitesync-metadata's `custom` module): its publisher's
//! signature over the rest of the document, the publisher's certificate, and when the top
//! site accepted it. It is genuine when
//! - the certificate chains to the hierarchy CA for code signing at the time of acceptance
//!   (not the wall clock: an accepted update outlives its publisher's certificate),
//! - the catalog version's delegations name the certificate's key for the seal's vendor,
//!   and that delegation was in force when the top site accepted the revision (added, not
//!   yet retired, not expired) — so a revoked or rotated key refuses new revisions and
//!   leaves the accepted ones verifiable,
//! - the signature is that key's over the document without the seal, and
//! - the document stays in its vendor's namespace (its categories are the vendor's own).
//!
//! The built-in `Local publisher` company carries no seal: it is the same bytes at every
//! node. Any other document that claims a place directly under it without a seal is
//! refused.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::pki_types::CertificateDer;
use serde::{Deserialize, Serialize};
use sitesync_metadata::custom::{self, Seal, key_id};
use sitesync_metadata::{RevisionId, Timestamp, UpdateRevision, UpdateType};
use sitesync_security::signing::{self, Algorithm};
use sitesync_security::{PublisherCertificate, Vendor};

use crate::store::{CatalogStore, StoreError};

/// One publisher key delegated a vendor namespace (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delegation {
    pub publisher: String,
    pub vendor: String,
    /// SubjectPublicKeyInfo, DER.
    pub public_key: Vec<u8>,
    /// The publisher's certificate, DER.
    pub certificate: Vec<u8>,
    pub added_at: Timestamp,
    /// When the key was rotated out or revoked.
    pub retired_at: Option<Timestamp>,
    pub expires_at: Timestamp,
}

impl Delegation {
    /// A delegation of `certificate`'s key and vendor from `now` until `expires_at` (the
    /// certificate's end when `None`; never later).
    pub fn of_certificate(
        der: &[u8],
        now: Timestamp,
        expires_at: Option<Timestamp>,
    ) -> Result<Self, CustomError> {
        let certificate = PublisherCertificate::from_der(der)
            .map_err(|e| CustomRefusal::Certificate(e.to_string()))?;
        let certificate_end = Timestamp(certificate.not_after.saturating_mul(1000));
        let expires_at = match expires_at {
            Some(at) if at > certificate_end => {
                return Err(CustomRefusal::Certificate(format!(
                    "the delegation cannot outlive the publisher's certificate, which ends at {certificate_end}"
                )).into());
            }
            Some(at) => at,
            None => certificate_end,
        };
        if expires_at <= now {
            return Err(CustomRefusal::Certificate(format!(
                "the delegation would end at {expires_at}, which has passed"
            ))
            .into());
        }
        Ok(Self {
            publisher: certificate.name,
            vendor: certificate.vendor.as_str().to_owned(),
            public_key: certificate.public_key,
            certificate: der.to_vec(),
            added_at: now,
            retired_at: None,
            expires_at,
        })
    }

    /// A short name for the key: the first 8 bytes of the SHA-256 of its
    /// SubjectPublicKeyInfo, hex.
    pub fn key_id(&self) -> String {
        key_id(&self.public_key)
    }

    /// Whether revisions accepted at `at` are valid under this delegation.
    pub fn in_force_at(&self, at: Timestamp) -> bool {
        self.added_at <= at && self.retired_at.is_none_or(|r| at < r) && at < self.expires_at
    }

    /// Whether it is active now: not retired, not expired.
    pub fn is_active(&self, now: Timestamp) -> bool {
        self.retired_at.is_none() && now < self.expires_at
    }
}

/// Why a custom document is refused. Every message names the vendor and the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CustomRefusal {
    #[error("{0}")]
    Seal(String),
    #[error("the publisher certificate: {0}")]
    Certificate(String),
    #[error("document {revision} sits under `Local publisher` but carries no publisher signature")]
    Unsealed { revision: String },
    #[error(
        "document {revision} claims to be the built-in `Local publisher` category but differs from it"
    )]
    ForgedRoot { revision: String },
    #[error(
        "document {revision} of vendor `{vendor}` is signed with key {key} ({publisher}), which no delegation of the catalog version allows for that vendor"
    )]
    Undelegated {
        revision: String,
        vendor: String,
        key: String,
        publisher: String,
    },
    #[error(
        "document {revision} of vendor `{vendor}` was accepted at {accepted}, when the delegation of key {key} ({publisher}) was not in force (added {added}, retired {retired}, expires {expires})"
    )]
    NotInForce {
        revision: String,
        vendor: String,
        key: String,
        publisher: String,
        accepted: Timestamp,
        added: Timestamp,
        retired: String,
        expires: Timestamp,
    },
    #[error(
        "document {revision} of vendor `{vendor}`: the signature of key {key} ({publisher}) is refused: {reason}"
    )]
    Signature {
        revision: String,
        vendor: String,
        key: String,
        publisher: String,
        reason: String,
    },
    #[error("document {revision} of vendor `{vendor}` (key {key}): {reason}")]
    Namespace {
        revision: String,
        vendor: String,
        key: String,
        reason: String,
    },
    #[error(
        "document {revision} of vendor `{vendor}` says it was accepted at {accepted}, after catalog version {version} was issued ({issued})"
    )]
    FromTheFuture {
        revision: String,
        vendor: String,
        accepted: Timestamp,
        version: u64,
        issued: Timestamp,
    },
    #[error("document {revision} of vendor `{vendor}` carries no acceptance by the top site")]
    NotAccepted { revision: String, vendor: String },
}

/// Why a custom document is refused (see [`CustomRefusal`]), boxed: it names a lot.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(transparent)]
pub struct CustomError(Box<CustomRefusal>);

impl From<CustomRefusal> for CustomError {
    fn from(refusal: CustomRefusal) -> Self {
        Self(Box::new(refusal))
    }
}

/// What a node checks custom documents against: the hierarchy CA and the delegations of
/// one catalog version.
#[derive(Debug, Clone)]
pub struct CustomCheck {
    cas: Vec<CertificateDer<'static>>,
    delegations: Vec<Delegation>,
    /// The catalog version and when it was issued: no revision it carries can have been
    /// accepted later.
    version: u64,
    issued_at: Timestamp,
}

/// A custom document that passed: who published it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub seal: Seal,
    pub key: String,
}

impl CustomCheck {
    pub fn new(
        cas: Vec<CertificateDer<'static>>,
        delegations: Vec<Delegation>,
        version: u64,
        issued_at: Timestamp,
    ) -> Arc<Self> {
        Arc::new(Self {
            cas,
            delegations,
            version,
            issued_at,
        })
    }

    /// Checks `revision` as a node receiving it from upstream: `Ok(None)` for a document
    /// that is not custom, `Ok(Some)` for a genuine custom one.
    pub fn check(&self, revision: &UpdateRevision) -> Result<Option<Verified>, CustomError> {
        let Some((seal, unsealed)) = unsealed(revision)? else {
            return Ok(None);
        };
        let name = revision.id.to_string();
        let accepted = seal.accepted.ok_or_else(|| {
            CustomError::from(CustomRefusal::NotAccepted {
                revision: name.clone(),
                vendor: seal.vendor.clone(),
            })
        })?;
        if accepted.at > self.issued_at {
            return Err(CustomRefusal::FromTheFuture {
                revision: name,
                vendor: seal.vendor,
                accepted: accepted.at,
                version: self.version,
                issued: self.issued_at,
            }
            .into());
        }
        verify_seal(
            &self.cas,
            |_| false,
            &self.delegations,
            revision,
            seal,
            &unsealed,
            accepted.at,
        )
        .map(Some)
    }
}

/// The seal of revision `id` as `store` holds it; `None` when it has none (an upstream
/// update) or the store does not hold it.
pub fn held_seal(store: &CatalogStore, id: RevisionId) -> Result<Option<Seal>, StoreError> {
    Ok(store
        .document(id)?
        .and_then(|d| custom::unseal(&d).ok().flatten())
        .map(|(seal, _)| seal))
}

/// A custom document's seal as a node judges it now (for operators).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Judgement {
    pub seal: Seal,
    pub key: String,
    pub valid: bool,
    pub verdict: String,
}

/// Judges `revision` against `check`: `None` for a document without a seal.
pub fn judge(revision: &UpdateRevision, check: Option<&CustomCheck>) -> Option<Judgement> {
    let (seal, _) = custom::unseal(&revision.document).ok().flatten()?;
    let key = PublisherCertificate::from_der(&seal.certificate)
        .map(|c| key_id(&c.public_key))
        .unwrap_or_else(|_| "unreadable".to_owned());
    let (valid, verdict) = match check {
        None => (
            false,
            "not checked: this node holds no signed catalog version".to_owned(),
        ),
        Some(check) => match check.check(revision) {
            Ok(_) => (
                true,
                format!(
                    "valid: signed with key {key}, which catalog version {} delegates vendor `{}` and was in force when the top site accepted it",
                    check.version, seal.vendor
                ),
            ),
            Err(e) => (false, format!("refused: {e}")),
        },
    };
    Some(Judgement {
        seal,
        key,
        valid,
        verdict,
    })
}

/// Checks a document a publisher hands the top site (not yet accepted), as of `now`,
/// against `delegations` and the CA, with the revocation list.
pub fn check_for_publishing(
    cas: &[CertificateDer<'static>],
    is_revoked: impl Fn(&[u8]) -> bool,
    delegations: &[Delegation],
    revision: &UpdateRevision,
    now: Timestamp,
) -> Result<(Verified, Vec<u8>), CustomError> {
    let name = revision.id.to_string();
    let Some((seal, unsealed)) = unsealed(revision)? else {
        return Err(CustomRefusal::Seal(format!(
            "document {name} carries no publisher signature: sign it with `sitesyncctl publish`"
        ))
        .into());
    };
    if seal.accepted.is_some() {
        return Err(CustomRefusal::Seal(format!(
            "document {name} was already accepted by a top site; publish the publisher's own document"
        )).into());
    }
    let verified = verify_seal(cas, is_revoked, delegations, revision, seal, &unsealed, now)?;
    Ok((verified, unsealed))
}

/// The seal and the unsealed bytes of a custom document; `None` for an upstream document.
fn unsealed(revision: &UpdateRevision) -> Result<Option<(Seal, Vec<u8>)>, CustomError> {
    let name = revision.id.to_string();
    match custom::unseal(&revision.document)
        .map_err(|e| CustomRefusal::Seal(format!("document {name}: {e}")))?
    {
        Some(found) => Ok(Some(found)),
        None => {
            if revision.id.update_id == custom::LOCAL_PUBLISHER {
                if revision.document != custom::local_publisher_document() {
                    return Err(CustomRefusal::ForgedRoot { revision: name }.into());
                }
            } else if revision.categories().any(|c| c == custom::LOCAL_PUBLISHER) {
                return Err(CustomRefusal::Unsealed { revision: name }.into());
            }
            Ok(None)
        }
    }
}

fn verify_seal(
    cas: &[CertificateDer<'static>],
    is_revoked: impl Fn(&[u8]) -> bool,
    delegations: &[Delegation],
    revision: &UpdateRevision,
    seal: Seal,
    unsealed: &[u8],
    at: Timestamp,
) -> Result<Verified, CustomError> {
    let name = revision.id.to_string();
    let certificate = PublisherCertificate::from_der(&seal.certificate)
        .map_err(|e| CustomRefusal::Certificate(format!("document {name}: {e}")))?;
    let key = key_id(&certificate.public_key);
    let delegation = delegations
        .iter()
        .filter(|d| d.public_key == certificate.public_key && d.vendor == seal.vendor)
        .find(|d| d.in_force_at(at));
    let Some(delegation) = delegation else {
        let any = delegations
            .iter()
            .find(|d| d.public_key == certificate.public_key && d.vendor == seal.vendor);
        return Err(match any {
            Some(d) => CustomRefusal::NotInForce {
                revision: name,
                vendor: seal.vendor,
                key,
                publisher: d.publisher.clone(),
                accepted: at,
                added: d.added_at,
                retired: d.retired_at.map_or("never".to_owned(), |r| r.to_string()),
                expires: d.expires_at,
            },
            None => CustomRefusal::Undelegated {
                revision: name,
                vendor: seal.vendor,
                key,
                publisher: certificate.name,
            },
        }
        .into());
    };
    if certificate.vendor.as_str() != seal.vendor || certificate.name != seal.publisher {
        return Err(CustomRefusal::Undelegated {
            revision: name,
            vendor: seal.vendor,
            key,
            publisher: certificate.name,
        }
        .into());
    }
    // Microsoft's names are never a custom vendor, whatever a delegation says.
    Vendor::new(&seal.vendor).map_err(|e| CustomRefusal::Namespace {
        revision: name.clone(),
        vendor: seal.vendor.clone(),
        key: key.clone(),
        reason: e.to_string(),
    })?;
    let at_time = SystemTime::UNIX_EPOCH + Duration::from_millis(u64::try_from(at.0).unwrap_or(0));
    signing::verify_publisher(
        cas,
        is_revoked,
        &custom::sealed_message(&seal.vendor, &seal.product, unsealed),
        Algorithm::EcdsaP256Sha256,
        &seal.signature,
        &seal.certificate,
        at_time,
    )
    .map_err(|e| CustomRefusal::Signature {
        revision: name.clone(),
        vendor: seal.vendor.clone(),
        key: key.clone(),
        publisher: delegation.publisher.clone(),
        reason: e.to_string(),
    })?;
    custom::check_namespace(revision, &seal.vendor, &seal.product).map_err(|e| {
        CustomRefusal::Namespace {
            revision: name,
            vendor: seal.vendor.clone(),
            key: key.clone(),
            reason: e.to_string(),
        }
    })?;
    if revision.update_type == UpdateType::Category
        && revision.publication_state != sitesync_metadata::PublicationState::Published
    {
        return Err(CustomRefusal::Seal("a custom category cannot be expired".into()).into());
    }
    Ok(Verified { seal, key })
}

#[cfg(test)]
mod tests {
    use rustls::pki_types::pem::PemObject as _;
    use sitesync_metadata::custom::describe::{self, Description};
    use sitesync_metadata::{ParseLimits, RevisionId, parse_update};
    use sitesync_security::pki::Authority;
    use sitesync_security::signing::Signer;

    use super::*;

    const DAY: i64 = 24 * 3600 * 1000;
    const VENDOR: &str = "Northwind Traders";
    const PRODUCT: &str = "Agent";

    /// A CA, a publisher of it, and its delegation from `start` for ten days.
    struct Setup {
        _dir: tempfile::TempDir,
        ca: Vec<CertificateDer<'static>>,
        signer: Signer,
        delegation: Delegation,
        start: Timestamp,
    }

    fn setup() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let authority = Authority::init(&dir.path().join("pki"), "test").unwrap();
        let issued = authority
            .issue_publisher(
                "lob",
                &Vendor::new(VENDOR).unwrap(),
                time::OffsetDateTime::now_utc() + time::Duration::days(60),
            )
            .unwrap();
        let ca = CertificateDer::pem_file_iter(authority.dir().join("ca.pem"))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let der = CertificateDer::from_pem_file(&issued.certificate).unwrap();
        let signer = Signer::from_files(&issued.certificate, &issued.key).unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis();
        let start = Timestamp(i64::try_from(now).unwrap());
        let delegation =
            Delegation::of_certificate(&der, start, Some(Timestamp(start.0 + 10 * DAY))).unwrap();
        Setup {
            _dir: dir,
            ca,
            signer,
            delegation,
            start,
        }
    }

    /// A custom update sealed by the setup's publisher and accepted at `accepted`.
    fn update(setup: &Setup, accepted: Timestamp) -> UpdateRevision {
        let description: Description = serde_json::from_str(&format!(
            r#"{{"product": "{PRODUCT}", "classification": "Updates", "title": {{"en": "t"}}}}"#
        ))
        .unwrap();
        let id = RevisionId {
            update_id: "0d3c2b1a-0000-4000-8000-000000000001".parse().unwrap(),
            revision: 100,
        };
        let unsealed =
            describe::render_update(&description.check(VENDOR).unwrap(), id, setup.start);
        let message = custom::sealed_message(VENDOR, PRODUCT, &unsealed);
        let (_, signature, certificate) = setup.signer.sign(&message).unwrap();
        let sealed = custom::seal(
            &unsealed,
            &Seal {
                publisher: "lob".into(),
                vendor: VENDOR.into(),
                product: PRODUCT.into(),
                signature,
                certificate,
                accepted: Some(custom::Acceptance {
                    version: 7,
                    at: accepted,
                }),
            },
        )
        .unwrap();
        parse_update(&sealed, &ParseLimits::default()).unwrap()
    }

    fn check(setup: &Setup, delegation: Delegation, issued: Timestamp) -> Arc<CustomCheck> {
        CustomCheck::new(setup.ca.clone(), vec![delegation], 9, issued)
    }

    fn refusal(result: Result<Option<Verified>, CustomError>) -> CustomRefusal {
        *result.unwrap_err().0
    }

    #[test]
    fn a_revision_accepted_while_its_delegation_was_in_force_stays_valid() {
        let setup = setup();
        let accepted = Timestamp(setup.start.0 + DAY);
        let revision = update(&setup, accepted);
        // Checked long after, by a version that carries the delegation expired and retired.
        let mut later = setup.delegation.clone();
        later.retired_at = Some(Timestamp(setup.start.0 + 3 * DAY));
        let verified = check(&setup, later, Timestamp(setup.start.0 + 30 * DAY))
            .check(&revision)
            .unwrap()
            .unwrap();
        assert_eq!(verified.seal.vendor, VENDOR);
        assert_eq!(verified.key, setup.delegation.key_id());
    }

    #[test]
    fn a_revision_accepted_after_the_delegation_ended_is_refused() {
        let setup = setup();
        let issued = Timestamp(setup.start.0 + 30 * DAY);
        // Expired: accepted on day 11 of a ten-day delegation.
        let late = update(&setup, Timestamp(setup.start.0 + 11 * DAY));
        let refused = refusal(check(&setup, setup.delegation.clone(), issued).check(&late));
        assert!(
            matches!(refused, CustomRefusal::NotInForce { .. }),
            "{refused}"
        );
        assert!(refused.to_string().contains(VENDOR), "{refused}");
        // Revoked (retired) on day 3, accepted on day 4.
        let mut revoked = setup.delegation.clone();
        revoked.retired_at = Some(Timestamp(setup.start.0 + 3 * DAY));
        let after = update(&setup, Timestamp(setup.start.0 + 4 * DAY));
        let refused = refusal(check(&setup, revoked, issued).check(&after));
        assert!(
            matches!(refused, CustomRefusal::NotInForce { .. }),
            "{refused}"
        );
        // Accepted before the delegation began.
        let early = update(&setup, Timestamp(setup.start.0 - DAY));
        let refused = refusal(check(&setup, setup.delegation.clone(), issued).check(&early));
        assert!(
            matches!(refused, CustomRefusal::NotInForce { .. }),
            "{refused}"
        );
    }

    #[test]
    fn an_acceptance_after_the_version_was_issued_is_refused() {
        let setup = setup();
        let revision = update(&setup, Timestamp(setup.start.0 + 2 * DAY));
        let refused = refusal(
            check(
                &setup,
                setup.delegation.clone(),
                Timestamp(setup.start.0 + DAY),
            )
            .check(&revision),
        );
        assert!(
            matches!(refused, CustomRefusal::FromTheFuture { .. }),
            "{refused}"
        );
    }

    #[test]
    fn an_undelegated_key_or_vendor_is_refused() {
        let setup = setup();
        let revision = update(&setup, Timestamp(setup.start.0 + DAY));
        let mut other_vendor = setup.delegation.clone();
        other_vendor.vendor = "Fabrikam".into();
        let refused = refusal(
            check(&setup, other_vendor, Timestamp(setup.start.0 + 2 * DAY)).check(&revision),
        );
        assert!(
            matches!(refused, CustomRefusal::Undelegated { .. }),
            "{refused}"
        );
        assert!(
            refused.to_string().contains(&setup.delegation.key_id()),
            "{refused}"
        );
    }

    #[test]
    fn unsealed_documents_under_local_publisher_and_a_forged_root_are_refused() {
        let setup = setup();
        let check = check(&setup, setup.delegation.clone(), setup.start);
        let family = describe::render_vendor_category(VENDOR, setup.start);
        let family = parse_update(&family, &ParseLimits::default()).unwrap();
        let refused = refusal(check.check(&family));
        assert!(
            matches!(refused, CustomRefusal::Unsealed { .. }),
            "{refused}"
        );
        let root = String::from_utf8(custom::local_publisher_document())
            .unwrap()
            .replace("Local publisher", "Local publisher!");
        let root = parse_update(root.as_bytes(), &ParseLimits::default()).unwrap();
        let refused = refusal(check.check(&root));
        assert!(
            matches!(refused, CustomRefusal::ForgedRoot { .. }),
            "{refused}"
        );
        let genuine =
            parse_update(&custom::local_publisher_document(), &ParseLimits::default()).unwrap();
        assert_eq!(check.check(&genuine).unwrap(), None);
    }
}
