//! Publishing a custom update at the top site (S6): the documents a publisher sealed are
//! checked ([`crate::publishing`]), stamped with the top site's acceptance (the next
//! catalog version and the time), and kept in the publications store; phase 1 of the next
//! sync takes them into the update-server store while `Local publisher` is selected.
//!
//! Also here: the delegations the top site keeps (add, rotate, revoke), which it signs into
//! every catalog version.

use sitesync_metadata::custom::{self, Acceptance};
use sitesync_metadata::{
    ParseLimits, PublicationState, RevisionId, Timestamp, UpdateType, parse_update,
};
use sitesync_security::signing;

use crate::catalog_version::{CatalogVersions, VersionError};
use crate::publishing::{CustomError, Delegation, check_for_publishing, held_seal};
use crate::store::{ApplyOutcome, CatalogChange, CatalogStore, StoreError, StoreState};

/// A publish request holds the vendor's category, the product's and the update.
pub const MAX_DOCUMENTS: usize = 3;

/// Why a publication or a delegation change is refused.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error(
        "only the top site publishes custom updates and keeps publisher delegations; this node takes them from its parent"
    )]
    NotTop,
    #[error(
        "custom updates need signed catalog versions: run the top site with mutual TLS (a PKI directory)"
    )]
    NoSigning,
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Custom(#[from] CustomError),
    #[error(transparent)]
    Version(#[from] VersionError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a publication did.
#[derive(Debug, Clone)]
pub struct Published {
    pub id: RevisionId,
    pub outcome: ApplyOutcome,
    pub publications: StoreState,
    pub accepted: Acceptance,
    pub vendor: String,
    pub product: String,
}

/// Publishes `documents` (see the module documentation) at `now`.
pub fn publish(
    versions: Option<&CatalogVersions>,
    publications: &CatalogStore,
    update_server: &CatalogStore,
    documents: Vec<Vec<u8>>,
    now: Timestamp,
) -> Result<Published, PublishError> {
    let versions = signing_top(versions)?;
    if documents.is_empty() || documents.len() > MAX_DOCUMENTS {
        return Err(PublishError::Invalid(format!(
            "documents: give the update's document, after its vendor's and product's categories ({} documents at most, {} given)",
            MAX_DOCUMENTS,
            documents.len()
        )));
    }
    let delegations = versions.delegations()?;
    let cas = versions.ca();
    let accepted = Acceptance {
        version: versions.held().map_or(1, |h| h.number() + 1),
        at: now,
    };
    let last = documents.len() - 1;
    let mut changes = Vec::with_capacity(documents.len());
    let mut update = None;
    for (index, document) in documents.into_iter().enumerate() {
        let revision = parse_update(&document, &ParseLimits::default())
            .map_err(|e| PublishError::Invalid(format!("document {}: {e}", index + 1)))?;
        let is_category = revision.update_type == UpdateType::Category;
        if is_category == (index == last) {
            return Err(PublishError::Invalid(format!(
                "document {} ({}): categories come first and the update last",
                index + 1,
                revision.id
            )));
        }
        let (verified, unsealed) = check_for_publishing(
            &cas,
            |der| versions.is_revoked(der),
            &delegations,
            &revision,
            now,
        )?;
        if is_category {
            // A category the publications hold stays as it is (its first seal).
            if publications.latest(revision.id.update_id)?.is_some() {
                continue;
            }
        } else {
            check_update(
                publications,
                update_server,
                &revision,
                &verified.seal.vendor,
            )?;
            update = Some((
                revision.id,
                verified.seal.vendor.clone(),
                verified.seal.product.clone(),
            ));
        }
        let stamped = custom::seal(
            &unsealed,
            &custom::Seal {
                accepted: Some(accepted),
                ..verified.seal
            },
        )
        .map_err(|e| PublishError::Invalid(e.to_string()))?;
        let revision = parse_update(&stamped, &ParseLimits::default())
            .map_err(|e| PublishError::Invalid(format!("the stamped document: {e}")))?;
        changes.push(CatalogChange::Put(revision));
    }
    let (id, vendor, product) = update.ok_or_else(|| PublishError::Invalid("no update".into()))?;
    let outcome = publications.apply(changes, &[])?;
    Ok(Published {
        id,
        outcome,
        publications: publications.state(),
        accepted,
        vendor,
        product,
    })
}

/// An update revision may join the publications when its id is not an upstream update's,
/// it is newer than what is published of it, it keeps its vendor, and what it supersedes
/// is its vendor's.
fn check_update(
    publications: &CatalogStore,
    update_server: &CatalogStore,
    revision: &sitesync_metadata::UpdateRevision,
    vendor: &str,
) -> Result<(), PublishError> {
    let id = revision.id;
    match publications.latest(id.update_id)? {
        None => {
            if update_server.latest(id.update_id)?.is_some() {
                return Err(PublishError::Invalid(format!(
                    "update {} is an update of the upstream catalog, not a custom one: a custom update needs an id of its own",
                    id.update_id
                )));
            }
            if revision.publication_state == PublicationState::Expired {
                return Err(PublishError::Invalid(format!(
                    "update {} is not published, so there is nothing to expire",
                    id.update_id
                )));
            }
        }
        Some(latest) => {
            if id.revision <= latest.id.revision {
                return Err(PublishError::Invalid(format!(
                    "revision {} of update {} is not newer than the published revision {}: a revision number is used once",
                    id.revision, id.update_id, latest.id.revision
                )));
            }
            if latest.publication_state == PublicationState::Expired {
                return Err(PublishError::Invalid(format!(
                    "update {} is expired; an expired update takes no further revisions (publish a new update that supersedes it)",
                    id.update_id
                )));
            }
            let held_vendor = held_seal(publications, latest.id)?.map(|seal| seal.vendor);
            if held_vendor.as_deref() != Some(vendor) {
                return Err(PublishError::Invalid(format!(
                    "update {} is published for vendor `{}`, not `{vendor}`",
                    id.update_id,
                    held_vendor.unwrap_or_default()
                )));
            }
        }
    }
    for superseded in &revision.superseded {
        let of_vendor = match publications.latest(superseded.update_id)? {
            Some(latest) => {
                held_seal(publications, latest.id)?.is_some_and(|seal| seal.vendor == vendor)
            }
            None => false,
        };
        if !of_vendor {
            return Err(PublishError::Invalid(format!(
                "the update supersedes {}, which is not a published update of vendor `{vendor}`: custom updates supersede only their own vendor's",
                superseded.update_id
            )));
        }
    }
    Ok(())
}

fn signing_top(versions: Option<&CatalogVersions>) -> Result<&CatalogVersions, PublishError> {
    let versions = versions.ok_or(PublishError::NoSigning)?;
    if versions.signs() {
        Ok(versions)
    } else {
        Err(PublishError::NotTop)
    }
}

/// What a delegation change did.
#[derive(Debug, Clone)]
pub struct DelegationChange {
    pub added: Option<Delegation>,
    pub retired: Vec<Delegation>,
}

/// Delegates `certificate`'s vendor to its key from `now`; with `rotate`, the publisher's
/// other active keys are retired at the same moment.
pub fn delegate(
    versions: Option<&CatalogVersions>,
    update_server: &CatalogStore,
    certificate: &[u8],
    expires_at: Option<Timestamp>,
    rotate: bool,
    now: Timestamp,
) -> Result<DelegationChange, PublishError> {
    let versions = signing_top(versions)?;
    let der = certificate_der(certificate)?;
    signing::verify_publisher_certificate(
        &versions.ca(),
        |d| versions.is_revoked(d),
        &der,
        std::time::SystemTime::now(),
    )
    .map_err(|e| PublishError::Invalid(format!("the publisher certificate: {e}")))?;
    let added = Delegation::of_certificate(&der, now, expires_at)?;
    if custom::classification_named(&added.vendor).is_some() {
        return Err(PublishError::Invalid(format!(
            "vendor `{}` is the name of an update classification, which no publisher may take",
            added.vendor
        )));
    }
    if let Some(taken) = upstream_category_named(update_server, &added.vendor)? {
        return Err(PublishError::Invalid(format!(
            "vendor `{}` is the name of {taken} of the upstream catalog, which no publisher may take: issue the publisher a certificate for its own company name",
            added.vendor
        )));
    }
    let mut delegations = versions.delegations()?;
    if delegations
        .iter()
        .any(|d| d.public_key == added.public_key && d.is_active(now))
    {
        return Err(PublishError::Invalid(format!(
            "key {} of publisher {} is already delegated",
            added.key_id(),
            added.publisher
        )));
    }
    if let Some(other) = delegations
        .iter()
        .find(|d| d.publisher == added.publisher && d.vendor != added.vendor && d.is_active(now))
    {
        return Err(PublishError::Invalid(format!(
            "publisher {} publishes for vendor `{}`; revoke it before delegating vendor `{}` to it",
            added.publisher, other.vendor, added.vendor
        )));
    }
    let mut retired = Vec::new();
    if rotate {
        for d in delegations
            .iter_mut()
            .filter(|d| d.publisher == added.publisher && d.is_active(now))
        {
            d.retired_at = Some(now);
            retired.push(d.clone());
        }
    }
    delegations.push(added.clone());
    versions.set_delegations(&delegations)?;
    Ok(DelegationChange {
        added: Some(added),
        retired,
    })
}

/// Retires every active key of `publisher` at `now`.
pub fn revoke(
    versions: Option<&CatalogVersions>,
    publisher: &str,
    now: Timestamp,
) -> Result<DelegationChange, PublishError> {
    let versions = signing_top(versions)?;
    let mut delegations = versions.delegations()?;
    if !delegations.iter().any(|d| d.publisher == publisher) {
        return Err(PublishError::Invalid(format!(
            "no publisher `{publisher}` was ever delegated (sitesyncctl publishers list shows them)"
        )));
    }
    let mut retired = Vec::new();
    for d in delegations
        .iter_mut()
        .filter(|d| d.publisher == publisher && d.retired_at.is_none())
    {
        d.retired_at = Some(now);
        retired.push(d.clone());
    }
    versions.set_delegations(&delegations)?;
    Ok(DelegationChange {
        added: None,
        retired,
    })
}

/// The upstream category (company, product family, product, classification) the update
/// server holds under `name`, case-insensitively, if any: such names are the upstream's.
fn upstream_category_named(
    update_server: &CatalogStore,
    name: &str,
) -> Result<Option<String>, PublishError> {
    let mut after = None;
    loop {
        let page = update_server.summaries(after, 1_000)?;
        let Some(last) = page.last() else {
            return Ok(None);
        };
        after = Some(last.id.update_id);
        let found = page.iter().find(|s| {
            s.update_type == UpdateType::Category
                && s.title.eq_ignore_ascii_case(name)
                && !s.categories.contains(&custom::LOCAL_PUBLISHER)
                && s.id.update_id != custom::LOCAL_PUBLISHER
                && !is_custom_product(update_server, s)
        });
        if let Some(found) = found {
            let level = found
                .category_type
                .map_or("a category".to_owned(), |t| format!("the {t:?} category"));
            return Ok(Some(format!("{level} {}", found.id.update_id)));
        }
    }
}

/// Whether a category summary is a local publisher's product (its parent is a vendor
/// family under `Local publisher`).
fn is_custom_product(store: &CatalogStore, summary: &crate::store::UpdateSummary) -> bool {
    summary.categories.iter().any(|parent| {
        store
            .latest(*parent)
            .ok()
            .flatten()
            .is_some_and(|p| p.categories.contains(&custom::LOCAL_PUBLISHER))
    })
}

/// A certificate given as PEM or DER, as DER.
fn certificate_der(bytes: &[u8]) -> Result<Vec<u8>, PublishError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    if bytes.starts_with(b"-----BEGIN") {
        CertificateDer::from_pem_slice(bytes)
            .map(|c| c.to_vec())
            .map_err(|e| {
                PublishError::Invalid(format!("the publisher certificate is not PEM: {e}"))
            })
    } else {
        Ok(bytes.to_vec())
    }
}
