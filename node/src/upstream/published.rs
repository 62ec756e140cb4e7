//! What a top site offers its update-server store besides its upstream's catalog: the
//! built-in `Local publisher` company, and the custom updates published there (S6), held in
//! the publications store. Phase 1 reads both as one upstream ([`WithPublications`]), so the
//! sync settings choose custom updates exactly as they choose upstream ones, and what is
//! deselected leaves the update-server store as any other update does.
//!
//! A published update's id is its own: should the upstream offer an update under the same
//! id, the published one wins and the upstream's is not offered.

use std::collections::HashSet;

use sitesync_metadata::custom::{self, LOCAL_PUBLISHER, local_publisher_document};
use sitesync_metadata::{ParseLimits, RevisionId, UpdateId, UpdateRevision, parse_update};

use super::{Offered, TrackedRevision};
use crate::store::{CatalogStore, StoreError};

/// Revisions of the publications read per page.
const PAGE: usize = 1024;

/// An upstream with the local publisher's updates beside it (see the module documentation).
#[derive(Debug)]
pub struct WithPublications<'a, U> {
    upstream: &'a U,
    publications: &'a CatalogStore,
    /// The built-in company and every published revision, in (update id, revision) order.
    local: Vec<TrackedRevision>,
    local_ids: HashSet<UpdateId>,
}

/// A failure of either side.
#[derive(Debug, thiserror::Error)]
pub enum WithPublicationsError<E> {
    #[error(transparent)]
    Upstream(E),
    #[error("the published custom updates: {0}")]
    Publications(#[from] StoreError),
    /// An upstream document that claims to be a local publisher's: custom updates come
    /// only from publishing at this site.
    #[error(
        "{0} claims a place under `Local publisher` (a publisher's seal, or the Local publisher category), which only this site's publishing gives; the upstream's document is skipped"
    )]
    Foreign(RevisionId),
}

impl<'a, U: Offered> WithPublications<'a, U> {
    /// Reads what the publications hold (custom updates are few: their summaries fit in
    /// memory whatever the size of the upstream catalog). The built-in company is offered
    /// once something is published or when `named` (the sync settings choose it), so a top
    /// site that publishes nothing offers exactly its upstream's catalog.
    pub fn new(
        upstream: &'a U,
        publications: &'a CatalogStore,
        named: bool,
    ) -> Result<Self, StoreError> {
        let mut local = local_revisions(publications)?;
        if !named && local.len() == 1 {
            local.clear();
        }
        let local_ids = local.iter().map(|r| r.id.update_id).collect();
        Ok(Self {
            upstream,
            publications,
            local,
            local_ids,
        })
    }
}

impl<U> WithPublications<'_, U> {
    /// The local categories offered: the built-in company, vendors, products.
    pub fn local_categories(&self) -> impl Iterator<Item = &TrackedRevision> {
        self.local.iter().filter(|r| r.category_type.is_some())
    }
}

/// The built-in company and every published revision, in (update id, revision) order.
fn local_revisions(publications: &CatalogStore) -> Result<Vec<TrackedRevision>, StoreError> {
    let root = local_publisher_document();
    let root = parse_update(&root, &ParseLimits::default()).map_err(|e| StoreError::Corrupt {
        what: format!("the built-in Local publisher category does not parse: {e}"),
    })?;
    let mut local = vec![TrackedRevision::of(
        &root,
        root.content_hash(),
        "built-in".to_owned(),
    )];
    let mut after = None;
    loop {
        let page = publications.revisions_after(after, PAGE)?;
        for &id in &page {
            let revision = publications
                .revision(id)?
                .ok_or_else(|| StoreError::Corrupt {
                    what: format!("published revision {id} is listed but not held"),
                })?;
            local.push(TrackedRevision::of(
                &revision,
                revision.content_hash(),
                format!("published {id}"),
            ));
        }
        after = page.last().copied();
        if page.len() < PAGE {
            break;
        }
    }
    local.sort_by_key(|r| r.id);
    Ok(local)
}

impl<U: Offered> Offered for WithPublications<'_, U> {
    type Error = WithPublicationsError<U::Error>;

    fn offered(&self) -> Box<dyn Iterator<Item = Result<TrackedRevision, Self::Error>> + '_> {
        let upstream = self
            .upstream
            .offered()
            .filter(|r| {
                r.as_ref()
                    .map_or(true, |r| !self.local_ids.contains(&r.id.update_id))
            })
            .map(|r| r.map_err(WithPublicationsError::Upstream));
        Box::new(Merged {
            upstream: upstream.peekable(),
            local: self.local.iter().peekable(),
        })
    }

    fn parsed(&self, id: RevisionId) -> Result<UpdateRevision, Self::Error> {
        if !self.local_ids.contains(&id.update_id) {
            let revision = self
                .upstream
                .parsed(id)
                .map_err(WithPublicationsError::Upstream)?;
            let claims_local = id.update_id == LOCAL_PUBLISHER
                || revision.categories().any(|c| c == LOCAL_PUBLISHER)
                || !matches!(custom::unseal(&revision.document), Ok(None));
            if claims_local {
                return Err(WithPublicationsError::Foreign(id));
            }
            return Ok(revision);
        }
        if id.update_id == LOCAL_PUBLISHER {
            let document = local_publisher_document();
            return parse_update(&document, &ParseLimits::default()).map_err(|e| {
                WithPublicationsError::Publications(StoreError::Corrupt {
                    what: format!("the built-in Local publisher category does not parse: {e}"),
                })
            });
        }
        self.publications.revision(id)?.ok_or_else(|| {
            WithPublicationsError::Publications(StoreError::Corrupt {
                what: format!("published revision {id} is no longer held"),
            })
        })
    }

    fn is_per_document(error: &Self::Error) -> bool {
        match error {
            WithPublicationsError::Upstream(e) => U::is_per_document(e),
            WithPublicationsError::Publications(_) => false,
            WithPublicationsError::Foreign(_) => true,
        }
    }

    fn is_published(&self, id: UpdateId) -> bool {
        id != LOCAL_PUBLISHER && self.local_ids.contains(&id)
    }
}

/// Two sorted walks as one, in (update id, revision) order.
struct Merged<'a, I: Iterator> {
    upstream: std::iter::Peekable<I>,
    local: std::iter::Peekable<std::slice::Iter<'a, TrackedRevision>>,
}

impl<E, I> Iterator for Merged<'_, I>
where
    I: Iterator<Item = Result<TrackedRevision, E>>,
{
    type Item = Result<TrackedRevision, E>;

    fn next(&mut self) -> Option<Self::Item> {
        let take_local = match (self.upstream.peek(), self.local.peek()) {
            (_, None) => false,
            (None, Some(_)) => true,
            // An error comes out at once.
            (Some(Err(_)), Some(_)) => false,
            (Some(Ok(upstream)), Some(local)) => local.id < upstream.id,
        };
        if take_local {
            self.local.next().cloned().map(Ok)
        } else {
            self.upstream.next()
        }
    }
}
