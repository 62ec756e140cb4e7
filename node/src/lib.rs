//! The sitesync site node.
//!
//! The modules in the order a revision travels through them, from the upstream to a leaf
//! site's site database (SPEC rule S7, Part 5):
//!
//! - [`upstream`]: the top site's upstream, a catalog directory: scanned, filtered by the
//!   sync settings, documents fetched.
//! - [`sync`]: the sync manager: phase 1 brings the update-server store to the upstream,
//!   phase 2 replays it into the site database; its schedule, retries and status messages.
//! - [`store`]: the node's two stores on one sled database — the update-server store and
//!   the site database — each with revisions, a latest-revision index, a category index, a
//!   change log and an incrementally maintained catalog digest.
//! - [`catalog_version`]: the top site signs each catalog version; every node verifies it.
//! - [`hierarchy`]: registered children, received sync requests and the cascade's outbox,
//!   status forwarding, and the states of the sites below ([`hierarchy::site_states`]),
//!   reaching other nodes only through the [`hierarchy::peers::Peers`] trait.
//! - [`feed`]: the change stream, both ends: batches produced from a store's change log,
//!   followed by a child through the [`feed::ParentFeed`] trait and applied with the
//!   continuity, digest and signature checks. An export file (S12) is the same feed on
//!   disk: imported through the same trait and checks.
//! - [`grpc`]: the edge, the one module that speaks gRPC: the services as thin adapters,
//!   the clients implementing `ParentFeed` and `Peers`, every wire ⇄ domain conversion,
//!   export files written and read as a `ParentFeed` ([`grpc::archive`]), and the one
//!   mapping of domain errors to gRPC codes.
//!
//! Around them: [`config`] (defaults → TOML → environment → flags), [`node`] (a running
//! node's shared state), [`metrics`] (what `/metrics` serves to Prometheus), [`policy`]
//! (the client policy published after each sync, S8), [`legacy_catalog`] (the legacy scan
//! catalog, S13: built at the host, fetched from the parent elsewhere), [`clock`] (the time seam and the one
//! reconnect backoff), [`telemetry`] (logs and traces), [`allocator`] and [`startup`] (the
//! composition root that opens it all).
#![forbid(unsafe_code)]

pub mod allocator;
pub mod catalog_version;
pub mod clock;
pub mod config;
pub mod feed;
pub mod grpc;
pub mod hierarchy;
pub mod legacy_catalog;
pub mod metrics;
pub mod node;
pub mod policy;
pub mod publish;
pub mod publishing;
pub mod startup;
pub mod store;
pub mod sync;
pub mod telemetry;
pub mod upstream;
