//! Software-update metadata for sitesync.
//!
//! Modules, in the order data flows through them:
//! - [`xml`] parses one update XML document (the real Microsoft Update format, namespace
//!   `http://schemas.microsoft.com/msus/2002/12/Update`) into an [`UpdateRevision`], keeping
//!   the original bytes, and refuses hostile or malformed input with a typed [`ParseError`].
//! - [`model`] is the domain model: one [`UpdateRevision`] per `(update id, revision number)`.
//!   Required fields are plain values; only what the format itself leaves out is an `Option`.
//! - [`custom`] writes, seals and checks custom updates (S6): the local publisher's
//!   category tree, the publisher's seal and its vendor namespace.
//! - [`digest`] is the order-independent [`CatalogDigest`] that both stores maintain
//!   incrementally, so two stores compare in O(1).
//! - [`generate`] writes deterministic, schema-valid catalogs for the demo, tests and
//!   benchmarks.
//! - [`sample`] is the small catalog of real documents built into the binaries.
//!
//! Nothing here knows about storage or the network: the stores (`sitesync-node`) and the wire
//! types (`sitesync-proto`) depend on this crate, never the reverse.
#![forbid(unsafe_code)]

pub mod custom;
pub mod digest;
pub mod generate;
pub mod model;
pub mod sample;
pub mod xml;

pub use digest::{CatalogDigest, ContentHash};
pub use model::*;
pub use xml::{ParseError, ParseLimits, parse_update, parse_update_owned};
