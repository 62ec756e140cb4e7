//! The sitesync gRPC contract, package `sitesync.v1`.
//!
//! Modules:
//! - [`v1`] is generated from `proto/sitesync/v1/*.proto` at build time (`protox` +
//!   `tonic-prost-build`): the wire messages, and a client and a server for each service —
//!   `UpdateServer`, `SiteReplication`, `Hierarchy`, `Admin` and `ClientPolicy`. The `.proto`
//!   files are the documentation of the contract; read them first.
//! - [`convert`] turns wire messages into domain values from `sitesync-metadata` and back.
//!   `TryFrom<wire>` validates at the receiving edge (required fields present, GUIDs parse,
//!   enums known, digests exactly 32 bytes, documents within [`MAX_DOCUMENT_BYTES`]) and names
//!   the offending field in a [`ConversionError`]; `From<domain>` never fails.
//! - [`FILE_DESCRIPTOR_SET`] is the encoded descriptor set for `tonic-reflection`, and the
//!   constants below are the size limits both ends configure.
//!
//! How data flows: a sending node reads domain values from its stores, converts them with
//! `From` into `v1` messages and streams them; the receiving service decodes (refusing
//! anything over [`MAX_MESSAGE_BYTES`]), converts with `TryFrom` — a failure becomes
//! `INVALID_ARGUMENT` through `From<ConversionError> for tonic::Status` — and hands only
//! validated domain values to its domain logic. Update revisions travel node to node as
//! [`v1::UpdateDocument`]: the identity plus the original XML bytes, which the receiver parses
//! itself (see [`convert::RevisionDocument`]).
#![forbid(unsafe_code)]

pub mod convert;

pub use convert::{
    ConversionError, HeldReference, RevisionDocument, checked_document, compress_document,
    decompress_document, sent_document_len,
};

/// The generated messages, clients and servers of package `sitesync.v1`.
pub mod v1 {
    // Generated code. A oneof whose header variant is larger than its chunk variant is sent
    // once per stream, so boxing it would buy nothing.
    #![allow(clippy::large_enum_variant)]

    tonic::include_proto!("sitesync.v1");

    use std::fmt;

    use prost::Message as _;

    // Hand-written Debug for the messages that carry documents and file bytes (see build.rs):
    // lengths, not contents.
    impl fmt::Debug for UpdateDocument {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("UpdateDocument")
                .field("id", &self.id)
                .field("document_bytes", &self.document.len())
                .field("lz4_document_bytes", &self.lz4_document.len())
                .finish()
        }
    }

    impl fmt::Debug for UpdateRevision {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("UpdateRevision")
                .field("id", &self.id)
                .field("update_type", &self.update_type())
                .field("publication_state", &self.publication_state())
                .field("localized", &self.localized)
                .field("document_bytes", &self.document.len())
                .finish_non_exhaustive()
        }
    }

    impl fmt::Debug for FileChunk {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("FileChunk")
                .field("offset", &self.offset)
                .field("data_bytes", &self.data.len())
                .finish()
        }
    }

    impl SignedCatalogVersion {
        /// The bytes the signature covers: [`crate::CATALOG_VERSION_SIGNATURE_CONTEXT`]
        /// followed by the encoded [`CatalogVersion`] exactly as carried. Signers sign these,
        /// verifiers verify these, and only then decode.
        pub fn signed_bytes(&self) -> Vec<u8> {
            signed_bytes(&self.catalog_version)
        }

        /// Decodes the carried [`CatalogVersion`]. Call only after the signature is verified.
        pub fn decode_catalog_version(&self) -> Result<CatalogVersion, prost::DecodeError> {
            CatalogVersion::decode(self.catalog_version.as_slice())
        }
    }

    impl CatalogVersion {
        /// Encodes this version and returns the bytes to sign (see
        /// [`SignedCatalogVersion::signed_bytes`]) together with the encoding to carry in
        /// [`SignedCatalogVersion::catalog_version`].
        pub fn encode_for_signing(&self) -> (Vec<u8>, Vec<u8>) {
            let encoded = self.encode_to_vec();
            (signed_bytes(&encoded), encoded)
        }
    }

    fn signed_bytes(encoded: &[u8]) -> Vec<u8> {
        let context = crate::CATALOG_VERSION_SIGNATURE_CONTEXT;
        let mut bytes = Vec::with_capacity(context.len() + encoded.len());
        bytes.extend_from_slice(context);
        bytes.extend_from_slice(encoded);
        bytes
    }
}

/// The encoded `FileDescriptorSet` of every `.proto` file of the package and its imports,
/// with comments, for `tonic_reflection::server::Builder::register_encoded_file_descriptor_set`.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/sitesync_descriptor.bin"));

/// The largest message either end decodes or encodes, in bytes (16 MiB). Every server and
/// client sets `max_decoding_message_size` and `max_encoding_message_size` to it; tonic's
/// default of 4 MiB would refuse a batch carrying one maximal document. Anything larger is
/// refused with `RESOURCE_EXHAUSTED` before it is buffered further.
pub const MAX_MESSAGE_BYTES: usize = 16 << 20;

/// The size senders aim for when filling a batch (4 MiB): they stop adding to a batch once
/// the next item would take it past this, and a single item larger than this travels alone.
/// So a batch is at most `max(TARGET_BATCH_BYTES, MAX_DOCUMENT_BYTES)` plus framing, well
/// under [`MAX_MESSAGE_BYTES`], and a receiver applying a batch atomically holds a bounded
/// amount of memory.
pub const TARGET_BATCH_BYTES: usize = 4 << 20;

/// The largest update XML document the wire carries (4 MiB), matching the metadata parser's
/// default limit: one document always fits in one message.
pub const MAX_DOCUMENT_BYTES: usize = 4 << 20;

/// The largest `FileChunk.data` (1 MiB) in export, import and legacy-catalog streams.
pub const FILE_CHUNK_BYTES: usize = 1 << 20;

/// The most ids one `GetUpdateDocuments` request may name.
pub const MAX_IDS_PER_REQUEST: usize = 10_000;

/// The most status messages in one `ReportStatusMessages` batch.
pub const MAX_STATUS_MESSAGES_PER_BATCH: usize = 1_000;

/// The page size of paged listings when the request gives none.
pub const DEFAULT_PAGE_SIZE: u32 = 100;

/// The largest page size of paged listings; larger requests are clamped.
pub const MAX_PAGE_SIZE: u32 = 1_000;

/// Unacknowledged replication batches a parent sends when the child's `Subscribe` gives no
/// window: with [`TARGET_BATCH_BYTES`], about 16 MiB in flight per child.
pub const DEFAULT_REPLICATION_WINDOW: u32 = 4;

/// The largest replication window a child may ask for; larger requests are clamped.
pub const MAX_REPLICATION_WINDOW: u32 = 64;

/// The component name of every sync status message, as ConfigMgr 2007 names its WSUS sync
/// manager.
pub const SYNC_MANAGER_COMPONENT: &str = "SMS_WSUS_SYNC_MANAGER";

/// Prefixed to the encoded `CatalogVersion` before signing, so that a signature made for a
/// catalog version can never be passed off as a signature over anything else.
pub const CATALOG_VERSION_SIGNATURE_CONTEXT: &[u8] = b"sitesync.v1.CatalogVersion\0";

/// Prefixed to the encoded `ArchiveManifest` of an export file before signing, so that its
/// signature can never pass for a signature over a catalog version, nor the reverse.
pub const ARCHIVE_MANIFEST_SIGNATURE_CONTEXT: &[u8] = b"sitesync.v1.ArchiveManifest\0";

#[cfg(test)]
mod tests {
    use prost::Message as _;

    use super::*;

    #[test]
    fn descriptor_set_names_every_service() {
        let set = prost_types::FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).unwrap();
        let services: Vec<String> = set
            .file
            .iter()
            .filter(|f| f.package() == "sitesync.v1")
            .flat_map(|f| f.service.iter().map(|s| s.name().to_owned()))
            .collect();
        for name in [
            "UpdateServer",
            "SiteReplication",
            "Hierarchy",
            "Admin",
            "ClientPolicy",
        ] {
            assert!(services.iter().any(|s| s == name), "{name} missing");
        }
        // Reflection clients must be able to resolve the imported well-known types.
        assert!(
            set.file
                .iter()
                .any(|f| f.name() == "google/protobuf/timestamp.proto")
        );
    }

    #[test]
    fn a_maximal_document_fits_in_a_full_batch() {
        let document = |len: usize| v1::UpdateDocument {
            id: Some(v1::RevisionId {
                update_id: Some(v1::UpdateId {
                    guid: "56309036-4c77-4dd9-951a-99ee9c246a94".into(),
                }),
                revision: u32::MAX,
            }),
            document: vec![b'x'; len],
            lz4_document: Vec::new(),
        };
        let change = |len: usize| v1::CatalogChange {
            sequence: u64::MAX,
            kind: v1::ChangeKind::New as i32,
            payload: Some(v1::catalog_change::Payload::Revision(document(len))),
        };
        // The worst batch the filling rule allows: just under the target, plus one maximal
        // document that did not fit.
        let batch = v1::ChangeBatch {
            from: None,
            body: Some(v1::change_batch::Body::Log(v1::ChangeLogPart {
                changes: vec![change(TARGET_BATCH_BYTES - 1), change(MAX_DOCUMENT_BYTES)],
            })),
            resume_anchor: None,
        };
        assert!(batch.encoded_len() < MAX_MESSAGE_BYTES);
    }

    #[test]
    fn the_wire_carries_every_document_the_parser_accepts() {
        let parser = sitesync_metadata::ParseLimits::default().max_document_bytes;
        assert!(parser <= MAX_DOCUMENT_BYTES);
    }

    #[test]
    fn signed_bytes_are_context_then_encoding() {
        let version = v1::CatalogVersion {
            version: 7,
            top_site_code: "CEN".into(),
            ..Default::default()
        };
        let (to_sign, encoded) = version.encode_for_signing();
        let signed = v1::SignedCatalogVersion {
            catalog_version: encoded.clone(),
            ..Default::default()
        };
        assert_eq!(signed.signed_bytes(), to_sign);
        assert!(to_sign.starts_with(CATALOG_VERSION_SIGNATURE_CONTEXT));
        assert!(to_sign.ends_with(&encoded));
        assert_eq!(signed.decode_catalog_version().unwrap(), version);
    }

    #[test]
    fn debug_of_document_messages_prints_lengths() {
        let chunk = v1::FileChunk {
            offset: 3,
            data: vec![0xAB; 4096],
        };
        let text = format!("{chunk:?}");
        assert!(text.contains("4096"), "{text}");
        assert!(text.len() < 100, "{text}");
    }
}
