//! How a store fails: one error type for both stores and everything built on them.
//!
//! Kept apart from the catalog store so the parts of a store (the catalog, its category
//! index) share it without importing each other.

use sitesync_metadata::RevisionId;

use super::backend::BackendError;
use super::keys::FORMAT_VERSION;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error(
        "store is corrupt: {what}; restore the node's data directory from a backup or resync it from its upstream"
    )]
    Corrupt { what: String },
    #[error(
        "store was written with layout version {found}, this node understands version {FORMAT_VERSION}; run the sitesync release that wrote it, or resync into an empty data directory"
    )]
    Format { found: u32 },
    #[error("metadata key `{0}` is reserved for the store itself")]
    ReservedMeta(String),
    #[error(
        "revision {id} came without its document and no other store of this node holds it with the same bytes"
    )]
    DocumentNotShared { id: RevisionId },
}

pub(super) fn corrupt(what: impl Into<String>) -> StoreError {
    StoreError::Corrupt { what: what.into() }
}
