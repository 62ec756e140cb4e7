//! The sitesync site node.
//!
//! - [`store`]: the node's two stores on one sled database — the update-server store (what
//!   the node's update server has synced) and the site database (the site's view) — each
//!   with revisions, a latest-revision index, a category index, a change log and an
//!   incrementally maintained catalog digest.
//! - [`upstream`]: where an update server syncs from: a catalog directory (a top site) or
//!   the parent's update server.
//! - [`replication`]: the child side of site-database replication: follows the parent's
//!   `SiteReplication` stream into the site database, batch by batch, with no gap and no
//!   duplicate across restarts.
//! - [`hierarchy`]: registered children, received sync requests and the cascade's outbox.
//! - [`site_states`]: the states of the sites below this node, reported up so the top site
//!   can draw the whole tree.
//! - [`access`]: who may call which method, from the peer's certificate.
//! - [`sync`]: the sync manager, its schedule and its status messages.
//! - [`allocator`]: the allocator settings the binary starts with.
//! - [`clock`]: the time seam, so 60-minute retries and 7-day schedules test instantly.
//! - [`policy`]: the site-wide client policy published after each successful sync (S8).
//! - [`config`]: defaults → TOML → environment → flags, validated at load.
//! - [`node`]: a running node's shared state; [`service`] adapts it to gRPC and [`server`]
//!   serves those services with health and reflection; [`startup`] opens it all.
//!
//! Data flows upstream → update-server store (phase 1 of a sync) → site database (phase 2)
//! → children, as SPEC rule S7 describes.
#![forbid(unsafe_code)]

pub mod access;
pub mod allocator;
pub mod catalog_version;
pub mod clock;
pub mod config;
pub mod hierarchy;
pub mod node;
pub mod policy;
pub mod replication;
pub mod server;
pub mod service;
pub mod site_states;
pub mod startup;
pub mod store;
pub mod sync;
pub mod upstream;
