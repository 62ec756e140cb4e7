//! What the fuzz targets check, kept out of the targets so that the seed generator
//! (`examples/seeds.rs`) and the targets agree on the input format.
//!
//! - [`update_xml`]: the update XML parser, fed any bytes, under the default limits and
//!   under tight ones; what it accepts must respect the limits and survive the wire
//!   round trip.
//! - [`inbound`]: every message a node (or the control plane) decodes from a peer. The first
//!   input byte picks the message type from [`inbound::INBOUND`], the rest is the encoded
//!   message; it is decoded with prost and put through every conversion into domain types the
//!   project has (`sitesync_proto::convert`), documents through the parser.
//! - [`export_file`]: the export-file reader of S12 (`sitesync-archive`), every check past
//!   the signature included.
//!
//! None may panic: a panic, or a broken invariant asserted here, is a crash.
#![forbid(unsafe_code)]

pub mod export_file;
pub mod inbound;
pub mod update_xml;
