//! The top site's upstream over [MS-WSUSSS]: Microsoft Update or a WSUS, reached over HTTP(S).
//!
//! The protocol itself (request bodies, answer parsers, faults, update blobs) is the
//! `sitesync-wsus` codec, which does no I/O. This module is the I/O around it:
//!
//! - [`settings`]: what the configuration says: the server, trust roots, proxy, protocol
//!   version, timeouts, retries, answer limits.
//! - `http`: the HTTP client (rustls on ring) and one POST, its answer read under the size
//!   limit and handed to the operation's parser.
//! - [`session`]: the calls a sync makes ([`Session::config`], [`Session::revision_list`],
//!   [`Session::update_data`]) behind a lazy, renewed authorization, with retries.
//! - [`error`]: why a call failed, one variant per reaction the sync has to choose.
//! - [`catalog`]: [`WsusUpstream`], the server as a catalog the sync manager scans: the two
//!   lists with their anchors, the documents fetched in batches and kept in a tracker.
//! - [`documents`]: the tracker's documents, in append-only segment files.
//!
//! [MS-WSUSSS]: https://learn.microsoft.com/en-us/openspecs/windows_protocols/ms-wsusss/

pub mod catalog;
pub mod documents;
pub mod error;
mod http;
pub mod session;
pub mod settings;

pub use catalog::{SkippedRevision, WsusScanReport, WsusUpstream, WsusUpstreamError};
pub use documents::DocumentLogOptions;
pub use error::WsusError;
pub use session::Session;
pub use settings::{ProxySetting, RetryPolicy, WsusSettings};
