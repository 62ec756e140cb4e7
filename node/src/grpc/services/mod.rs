//! gRPC adapters: each service decodes the request, calls the domain, and encodes the
//! answer. Nothing here decides anything the domain could decide.
//!
//! - [`update_server`]: `sitesync.v1.UpdateServer`, the node's update-server store served
//!   to downstream nodes.
//! - [`site_replication`]: `sitesync.v1.SiteReplication`, the node's site database
//!   streamed to child sites, batches made by the same producer as `update_server`'s.
//! - [`admin`]: `sitesync.v1.Admin`, the operator's surface.
//! - [`client_policy`]: `sitesync.v1.ClientPolicy`, what clients fetch (S8).
//! - [`hierarchy`]: `sitesync.v1.Hierarchy`, registration, sync requests, status upward.

pub mod admin;
pub mod client_policy;
pub mod hierarchy;
pub mod site_replication;
pub mod update_server;
