//! The node's calls to other nodes, each behind a domain trait.
//!
//! - [`parent`]: [`crate::feed::ParentFeed`] over the parent's `UpdateServer` and
//!   `SiteReplication` services.
//! - [`legacy`]: [`crate::legacy_catalog::ParentLegacyCatalog`] over the parent's
//!   `ClientPolicy.GetLegacyScanCatalog`.
//! - [`peers`]: [`crate::hierarchy::peers::Peers`] over the `Hierarchy` service.

pub mod legacy;
pub mod parent;
pub mod peers;
