//! The sitesync site node.
//!
//! - [`store`]: the node's two stores on one sled database — the update-server store (what
//!   the node's update server has synced) and the site database (the site's view) — each
//!   with revisions, a latest-revision index, a category index, a change log and an
//!   incrementally maintained catalog digest.
//!
//! Data flows upstream → update-server store (phase 1 of a sync) → site database (phase 2)
//! → children, as SPEC rule S7 describes.
#![forbid(unsafe_code)]

pub mod store;
