//! The node's calls to other nodes, each behind a domain trait.
//!
//! - [`parent`]: [`crate::feed::ParentFeed`] over the parent's `UpdateServer` and
//!   `SiteReplication` services.
//! - [`peers`]: [`crate::hierarchy::peers::Peers`] over the `Hierarchy` service.

pub mod parent;
pub mod peers;
