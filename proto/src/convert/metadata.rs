//! Update metadata: `sitesync-metadata`'s domain types ↔ `v1` messages.

use std::fmt;

use sitesync_metadata::{
    CatalogDigest, CategoryType, ContentHash, DigestAlgorithm, FileDigest, LocalizedProperties,
    MsrcSeverity, PublicationState, Relationship, RevisionId, UpdateFile, UpdateId, UpdateRef,
    UpdateRevision, UpdateType,
};

use super::{
    ConversionError, WireEnum, enum_to_wire, fixed_bytes, optional_enum, optional_enum_to_wire,
    optional_timestamp, quoted, repeated, required, required_enum, required_timestamp,
    timestamp_to_wire,
};
use crate::{MAX_DOCUMENT_BYTES, v1};

// ---------------------------------------------------------------------------------------
// Identities

impl TryFrom<v1::UpdateId> for UpdateId {
    type Error = ConversionError;

    fn try_from(wire: v1::UpdateId) -> Result<Self, Self::Error> {
        if wire.guid.is_empty() {
            return Err(ConversionError::missing("guid"));
        }
        wire.guid.parse().map_err(|_| ConversionError::InvalidGuid {
            field: "guid".to_owned(),
            value: quoted(&wire.guid),
        })
    }
}

impl From<UpdateId> for v1::UpdateId {
    fn from(id: UpdateId) -> Self {
        Self {
            guid: id.to_string(),
        }
    }
}

impl TryFrom<v1::RevisionId> for RevisionId {
    type Error = ConversionError;

    fn try_from(wire: v1::RevisionId) -> Result<Self, Self::Error> {
        Ok(Self {
            update_id: required(wire.update_id, "update_id")?,
            revision: wire.revision,
        })
    }
}

impl From<RevisionId> for v1::RevisionId {
    fn from(id: RevisionId) -> Self {
        Self {
            update_id: Some(id.update_id.into()),
            revision: id.revision,
        }
    }
}

impl TryFrom<v1::UpdateRef> for UpdateRef {
    type Error = ConversionError;

    fn try_from(wire: v1::UpdateRef) -> Result<Self, Self::Error> {
        Ok(Self {
            update_id: required(wire.update_id, "update_id")?,
            revision: wire.revision,
        })
    }
}

impl From<UpdateRef> for v1::UpdateRef {
    fn from(reference: UpdateRef) -> Self {
        Self {
            update_id: Some(reference.update_id.into()),
            revision: reference.revision,
        }
    }
}

impl TryFrom<v1::CatalogDigest> for CatalogDigest {
    type Error = ConversionError;

    fn try_from(wire: v1::CatalogDigest) -> Result<Self, Self::Error> {
        fixed_bytes(&wire.value, "value").map(Self)
    }
}

impl From<CatalogDigest> for v1::CatalogDigest {
    fn from(digest: CatalogDigest) -> Self {
        Self {
            value: digest.0.to_vec(),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Enums

/// Both directions of a domain enum and its wire enum, variant by variant. The match on the
/// wire enum is exhaustive, so a value added to the contract fails to compile here until it
/// is mapped.
macro_rules! wire_enum {
    ($domain:ident <=> $wire:ident as $name:literal { $($d:ident <=> $w:ident),+ $(,)? }) => {
        impl From<$domain> for v1::$wire {
            fn from(value: $domain) -> Self {
                match value {
                    $($domain::$d => Self::$w,)+
                }
            }
        }

        impl TryFrom<v1::$wire> for $domain {
            type Error = ConversionError;

            fn try_from(wire: v1::$wire) -> Result<Self, Self::Error> {
                match wire {
                    $(v1::$wire::$w => Ok(Self::$d),)+
                    v1::$wire::Unspecified => Err(ConversionError::missing("")),
                }
            }
        }

        impl WireEnum for $domain {
            type Wire = v1::$wire;
            const TYPE_NAME: &'static str = $name;
        }
    };
}

wire_enum!(UpdateType <=> UpdateType as "UpdateType" {
    Software <=> Software,
    Driver <=> Driver,
    Category <=> Category,
    Detectoid <=> Detectoid,
});

wire_enum!(PublicationState <=> PublicationState as "PublicationState" {
    Published <=> Published,
    Expired <=> Expired,
});

wire_enum!(CategoryType <=> CategoryType as "CategoryType" {
    Company <=> Company,
    ProductFamily <=> ProductFamily,
    Product <=> Product,
    UpdateClassification <=> UpdateClassification,
});

wire_enum!(MsrcSeverity <=> MsrcSeverity as "MsrcSeverity" {
    Low <=> Low,
    Moderate <=> Moderate,
    Important <=> Important,
    Critical <=> Critical,
});

wire_enum!(DigestAlgorithm <=> DigestAlgorithm as "DigestAlgorithm" {
    Sha1 <=> Sha1,
    Sha256 <=> Sha256,
});

// ---------------------------------------------------------------------------------------
// The document-carrying message

/// A revision as received from another node: the identity the sender filed it under and the
/// original XML document, validated for shape (identity present and well-formed, document
/// non-empty and within [`MAX_DOCUMENT_BYTES`]) but not parsed.
///
/// The receiver parses `document` with the metadata parser — the document, not the sender,
/// says what the revision is — then calls [`RevisionDocument::check_identity`] with the
/// parsed identity, so a sender cannot file a document under another revision's id.
#[derive(Clone, PartialEq, Eq)]
pub struct RevisionDocument {
    /// The identity the sender declared.
    pub id: RevisionId,
    /// The original document, byte for byte.
    pub document: Vec<u8>,
}

impl RevisionDocument {
    /// SHA-256 of the document: what the catalog digest covers.
    pub fn content_hash(&self) -> ContentHash {
        ContentHash::of(&self.document)
    }

    /// Refuses a document whose parsed identity is not the declared one.
    pub fn check_identity(&self, parsed: RevisionId) -> Result<(), ConversionError> {
        if parsed == self.id {
            Ok(())
        } else {
            Err(ConversionError::IdentityMismatch {
                field: "id".to_owned(),
                declared: self.id,
                actual: parsed,
            })
        }
    }
}

impl fmt::Debug for RevisionDocument {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RevisionDocument")
            .field("id", &self.id)
            .field("document_bytes", &self.document.len())
            .finish()
    }
}

/// A required document field: non-empty and within [`MAX_DOCUMENT_BYTES`].
pub fn checked_document(bytes: Vec<u8>, field: &str) -> Result<Vec<u8>, ConversionError> {
    if bytes.is_empty() {
        return Err(ConversionError::missing(field));
    }
    if bytes.len() > MAX_DOCUMENT_BYTES {
        return Err(ConversionError::TooLarge {
            field: field.to_owned(),
            actual: bytes.len(),
            limit: MAX_DOCUMENT_BYTES,
        });
    }
    Ok(bytes)
}

/// The document of an `UpdateDocument`, from whichever of its two forms is set, and the
/// compressed form when that was it.
fn sent_document(
    document_field: Vec<u8>,
    lz4: Vec<u8>,
) -> Result<(Vec<u8>, Option<Vec<u8>>), ConversionError> {
    if lz4.is_empty() {
        return Ok((checked_document(document_field, "document")?, None));
    }
    if !document_field.is_empty() {
        return Err(ConversionError::OutOfRange {
            field: "lz4_document".to_owned(),
            reason: "set together with `document`; a document travels in one form",
        });
    }
    Ok((decompress_document(&lz4)?, Some(lz4)))
}

/// A document from its compressed form (see [`compress_document`]). The declared length is
/// checked against [`MAX_DOCUMENT_BYTES`] before anything is allocated for it.
pub fn decompress_document(lz4: &[u8]) -> Result<Vec<u8>, ConversionError> {
    const FIELD: &str = "lz4_document";
    let undecodable = |reason: String| ConversionError::Undecodable {
        field: FIELD.to_owned(),
        reason,
    };
    let (length, block) = lz4
        .split_first_chunk::<4>()
        .ok_or_else(|| undecodable("shorter than its 4-byte length".to_owned()))?;
    let declared = u32::from_le_bytes(*length) as usize;
    if declared > MAX_DOCUMENT_BYTES {
        return Err(ConversionError::TooLarge {
            field: FIELD.to_owned(),
            actual: declared,
            limit: MAX_DOCUMENT_BYTES,
        });
    }
    if declared == 0 {
        return Err(ConversionError::missing(FIELD));
    }
    let document =
        lz4_flex::block::decompress(block, declared).map_err(|e| undecodable(e.to_string()))?;
    if document.len() != declared {
        return Err(undecodable(format!(
            "declares {declared} bytes but holds {}",
            document.len()
        )));
    }
    Ok(document)
}

/// A document's compressed wire form (`UpdateDocument.lz4_document`): its length (4 bytes,
/// little endian), then its LZ4 block. The same bytes as `lz4_flex`'s size-prepended form.
pub fn compress_document(document: &[u8]) -> Vec<u8> {
    lz4_flex::compress_prepend_size(document)
}

/// The length of the document an `UpdateDocument` carries, compressed or not: what a
/// sender counts against a batch's size.
pub fn sent_document_len(wire: &v1::UpdateDocument) -> usize {
    match wire.lz4_document.first_chunk::<4>() {
        Some(length) if wire.document.is_empty() => u32::from_le_bytes(*length) as usize,
        _ => wire.document.len(),
    }
}

impl TryFrom<v1::UpdateDocument> for RevisionDocument {
    type Error = ConversionError;

    fn try_from(wire: v1::UpdateDocument) -> Result<Self, Self::Error> {
        Self::with_compressed(wire).map(|(document, _)| document)
    }
}

impl RevisionDocument {
    /// As `try_from`, also giving back the compressed form the document came in, if it came
    /// compressed: it decompressed to exactly `document`, so a receiver that keeps
    /// documents compressed can keep it as it is.
    pub fn with_compressed(
        wire: v1::UpdateDocument,
    ) -> Result<(Self, Option<Vec<u8>>), ConversionError> {
        let id = required(wire.id, "id")?;
        let (document, compressed) = sent_document(wire.document, wire.lz4_document)?;
        Ok((Self { id, document }, compressed))
    }
}

impl From<RevisionDocument> for v1::UpdateDocument {
    fn from(revision: RevisionDocument) -> Self {
        Self {
            id: Some(revision.id.into()),
            document: revision.document,
            lz4_document: Vec::new(),
        }
    }
}

/// A revision named instead of carried (`RevisionReference` on the wire): its identity and
/// the SHA-256 of its document, which the receiver must already hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeldReference {
    pub id: RevisionId,
    pub content: ContentHash,
}

impl TryFrom<v1::RevisionReference> for HeldReference {
    type Error = ConversionError;

    fn try_from(wire: v1::RevisionReference) -> Result<Self, Self::Error> {
        Ok(Self {
            id: required(wire.id, "id")?,
            content: ContentHash(fixed_bytes(&wire.content_sha256, "content_sha256")?),
        })
    }
}

impl From<HeldReference> for v1::RevisionReference {
    fn from(reference: HeldReference) -> Self {
        Self {
            id: Some(reference.id.into()),
            content_sha256: reference.content.0.to_vec(),
        }
    }
}

/// Sending a held revision: its identity and its original bytes (moved, not copied).
impl From<UpdateRevision> for v1::UpdateDocument {
    fn from(revision: UpdateRevision) -> Self {
        Self {
            id: Some(revision.id.into()),
            document: revision.document,
            lz4_document: Vec::new(),
        }
    }
}

impl From<&UpdateRevision> for v1::UpdateDocument {
    fn from(revision: &UpdateRevision) -> Self {
        Self {
            id: Some(revision.id.into()),
            document: revision.document.clone(),
            lz4_document: Vec::new(),
        }
    }
}

// ---------------------------------------------------------------------------------------
// The structured revision (operators' view)

impl TryFrom<v1::LocalizedProperties> for LocalizedProperties {
    type Error = ConversionError;

    fn try_from(wire: v1::LocalizedProperties) -> Result<Self, Self::Error> {
        if wire.language.is_empty() {
            return Err(ConversionError::missing("language"));
        }
        Ok(Self {
            language: wire.language,
            title: wire.title,
            description: wire.description,
        })
    }
}

impl From<LocalizedProperties> for v1::LocalizedProperties {
    fn from(localized: LocalizedProperties) -> Self {
        Self {
            language: localized.language,
            title: localized.title,
            description: localized.description,
        }
    }
}

impl TryFrom<v1::Relationship> for Relationship {
    type Error = ConversionError;

    fn try_from(wire: v1::Relationship) -> Result<Self, Self::Error> {
        use v1::relationship::Kind;
        match wire.kind {
            None => Err(ConversionError::missing("kind")),
            Some(Kind::One(one)) => required(Some(one), "one").map(Self::One),
            Some(Kind::AtLeastOne(group)) => Ok(Self::AtLeastOne {
                is_category: group.is_category,
                members: repeated(group.members, "members")
                    .map_err(|e| e.within("at_least_one"))?,
            }),
        }
    }
}

impl From<Relationship> for v1::Relationship {
    fn from(relationship: Relationship) -> Self {
        use v1::relationship::Kind;
        let kind = match relationship {
            Relationship::One(one) => Kind::One(one.into()),
            Relationship::AtLeastOne {
                is_category,
                members,
            } => Kind::AtLeastOne(v1::AtLeastOne {
                is_category,
                members: members.into_iter().map(Into::into).collect(),
            }),
        };
        Self { kind: Some(kind) }
    }
}

impl TryFrom<v1::FileDigest> for FileDigest {
    type Error = ConversionError;

    fn try_from(wire: v1::FileDigest) -> Result<Self, Self::Error> {
        let algorithm: DigestAlgorithm = required_enum(wire.algorithm, "algorithm")?;
        let expected = match algorithm {
            DigestAlgorithm::Sha1 => 20,
            DigestAlgorithm::Sha256 => 32,
        };
        if wire.value.len() != expected {
            return Err(ConversionError::WrongLength {
                field: "value".to_owned(),
                expected,
                actual: wire.value.len(),
            });
        }
        Ok(Self {
            algorithm,
            value: wire.value,
        })
    }
}

impl From<FileDigest> for v1::FileDigest {
    fn from(digest: FileDigest) -> Self {
        Self {
            algorithm: enum_to_wire(digest.algorithm),
            value: digest.value,
        }
    }
}

impl TryFrom<v1::UpdateFile> for UpdateFile {
    type Error = ConversionError;

    fn try_from(wire: v1::UpdateFile) -> Result<Self, Self::Error> {
        Ok(Self {
            name: wire.name,
            size: wire.size,
            modified: optional_timestamp(wire.modified, "modified")?,
            digests: repeated(wire.digests, "digests")?,
            download_url: wire.download_url,
        })
    }
}

impl From<UpdateFile> for v1::UpdateFile {
    fn from(file: UpdateFile) -> Self {
        Self {
            name: file.name,
            size: file.size,
            modified: file.modified.map(timestamp_to_wire),
            digests: file.digests.into_iter().map(Into::into).collect(),
            download_url: file.download_url,
        }
    }
}

/// Validates everything the domain type promises: identity, required enums, the creation
/// date, at least one localized entry, well-formed references and file digests, and a
/// document within [`MAX_DOCUMENT_BYTES`]. It does not check that the structured fields
/// agree with `document`: node-to-node transfers use [`RevisionDocument`] and re-parse.
impl TryFrom<v1::UpdateRevision> for UpdateRevision {
    type Error = ConversionError;

    fn try_from(wire: v1::UpdateRevision) -> Result<Self, Self::Error> {
        if wire.localized.is_empty() {
            return Err(ConversionError::missing("localized"));
        }
        Ok(Self {
            id: required(wire.id, "id")?,
            update_type: required_enum(wire.update_type, "update_type")?,
            publication_state: required_enum(wire.publication_state, "publication_state")?,
            creation_date: required_timestamp(wire.creation_date, "creation_date")?,
            default_language: wire.default_language,
            localized: repeated(wire.localized, "localized")?,
            kb_article: wire.kb_article,
            security_bulletin: wire.security_bulletin,
            msrc_severity: optional_enum(wire.msrc_severity, "msrc_severity")?,
            category_type: optional_enum(wire.category_type, "category_type")?,
            prerequisites: repeated(wire.prerequisites, "prerequisites")?,
            bundled: repeated(wire.bundled, "bundled")?,
            superseded: repeated(wire.superseded, "superseded")?,
            files: repeated(wire.files, "files")?,
            document: checked_document(wire.document, "document")?,
        })
    }
}

impl From<UpdateRevision> for v1::UpdateRevision {
    fn from(revision: UpdateRevision) -> Self {
        fn all<D, W: From<D>>(items: Vec<D>) -> Vec<W> {
            items.into_iter().map(Into::into).collect()
        }
        Self {
            id: Some(revision.id.into()),
            update_type: enum_to_wire(revision.update_type),
            publication_state: enum_to_wire(revision.publication_state),
            creation_date: Some(timestamp_to_wire(revision.creation_date)),
            default_language: revision.default_language,
            localized: all(revision.localized),
            kb_article: revision.kb_article,
            security_bulletin: revision.security_bulletin,
            msrc_severity: optional_enum_to_wire(revision.msrc_severity),
            category_type: optional_enum_to_wire(revision.category_type),
            prerequisites: all(revision.prerequisites),
            bundled: all(revision.bundled),
            superseded: all(revision.superseded),
            files: all(revision.files),
            document: revision.document,
        }
    }
}

impl From<&UpdateRevision> for v1::UpdateRevision {
    fn from(revision: &UpdateRevision) -> Self {
        revision.clone().into()
    }
}

/// The listing row of a revision. `is_superseded` is left false: only a store knows whether
/// another update it holds supersedes this one, and sets it.
impl From<&UpdateRevision> for v1::UpdateSummary {
    fn from(revision: &UpdateRevision) -> Self {
        let mut categories: Vec<UpdateId> = revision.categories().collect();
        categories.sort();
        categories.dedup();
        Self {
            id: Some(revision.id.into()),
            update_type: enum_to_wire(revision.update_type),
            publication_state: enum_to_wire(revision.publication_state),
            title: revision.title().to_owned(),
            kb_article: revision.kb_article.clone(),
            msrc_severity: optional_enum_to_wire(revision.msrc_severity),
            category_type: optional_enum_to_wire(revision.category_type),
            categories: categories.into_iter().map(Into::into).collect(),
            superseded: revision
                .superseded
                .iter()
                .map(|r| r.update_id.into())
                .collect(),
            is_superseded: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use sitesync_metadata::Timestamp;

    use super::*;

    const GUID: &str = "56309036-4c77-4dd9-951a-99ee9c246a94";

    fn update_id(n: u8) -> UpdateId {
        UpdateId::from_bytes([n; 16])
    }

    fn revision_id() -> RevisionId {
        RevisionId {
            update_id: GUID.parse().unwrap(),
            revision: 103,
        }
    }

    /// A revision with every field set, by hand (the parser is not needed to build one).
    fn sample_revision() -> UpdateRevision {
        UpdateRevision {
            id: revision_id(),
            update_type: UpdateType::Software,
            publication_state: PublicationState::Published,
            creation_date: Timestamp::parse_iso8601("2005-09-22T00:05:11.471Z").unwrap(),
            default_language: "en".into(),
            localized: vec![
                LocalizedProperties {
                    language: "en".into(),
                    title: "Security Update for Windows XP (KB896422)".into(),
                    description: Some("A security issue has been identified.".into()),
                },
                LocalizedProperties {
                    language: "ja".into(),
                    title: "Windows XP 用セキュリティ更新プログラム".into(),
                    description: None,
                },
            ],
            kb_article: Some("896422".into()),
            security_bulletin: Some("MS05-043".into()),
            msrc_severity: Some(MsrcSeverity::Critical),
            category_type: None,
            prerequisites: vec![
                Relationship::One(UpdateRef {
                    update_id: update_id(1),
                    revision: None,
                }),
                Relationship::AtLeastOne {
                    is_category: true,
                    members: vec![
                        UpdateRef {
                            update_id: update_id(3),
                            revision: None,
                        },
                        UpdateRef {
                            update_id: update_id(2),
                            revision: None,
                        },
                    ],
                },
            ],
            bundled: vec![Relationship::One(UpdateRef {
                update_id: update_id(4),
                revision: Some(100),
            })],
            superseded: vec![UpdateRef {
                update_id: update_id(5),
                revision: None,
            }],
            files: vec![UpdateFile {
                name: "windowsxp-kb896422-x86-enu.exe".into(),
                size: 635_904,
                modified: Timestamp::parse_iso8601("2005-07-27T22:20:04Z"),
                digests: vec![
                    FileDigest {
                        algorithm: DigestAlgorithm::Sha1,
                        value: vec![7; 20],
                    },
                    FileDigest {
                        algorithm: DigestAlgorithm::Sha256,
                        value: vec![8; 32],
                    },
                ],
                download_url: "Content/07/0707070707070707070707070707070707070707.exe".into(),
            }],
            document: b"<Update xmlns=\"http://schemas.microsoft.com/msus/2002/12/Update\"/>"
                .to_vec(),
        }
    }

    fn wire_revision() -> v1::UpdateRevision {
        sample_revision().into()
    }

    fn assert_field<T: fmt::Debug>(
        result: Result<T, ConversionError>,
        field: &str,
    ) -> ConversionError {
        let error = result.expect_err("conversion should fail");
        assert_eq!(error.field(), field, "{error}");
        error
    }

    // --- round trips ------------------------------------------------------------------

    #[test]
    fn ids_round_trip() {
        let id = revision_id();
        assert_eq!(RevisionId::try_from(v1::RevisionId::from(id)), Ok(id));
        assert_eq!(
            v1::UpdateId::from(id.update_id).guid,
            GUID,
            "senders write the hyphenated lower-case form"
        );
        let reference = UpdateRef {
            update_id: update_id(9),
            revision: Some(0),
        };
        assert_eq!(
            UpdateRef::try_from(v1::UpdateRef::from(reference)),
            Ok(reference)
        );
    }

    #[test]
    fn guids_in_any_case_and_braced_are_accepted() {
        for text in [GUID.to_uppercase(), format!("{{{GUID}}}")] {
            let wire = v1::UpdateId { guid: text };
            assert_eq!(UpdateId::try_from(wire).unwrap().to_string(), GUID);
        }
    }

    #[test]
    fn catalog_digest_round_trips() {
        let mut digest = CatalogDigest::EMPTY;
        digest.add(revision_id(), ContentHash::of(b"<a/>"));
        assert_eq!(
            CatalogDigest::try_from(v1::CatalogDigest::from(digest)),
            Ok(digest)
        );
    }

    #[test]
    fn enums_round_trip() {
        fn check<D: WireEnum + Copy + PartialEq + fmt::Debug>(values: &[D]) {
            for &value in values {
                let raw = enum_to_wire(value);
                assert_ne!(raw, 0);
                assert_eq!(required_enum::<D>(raw, "f"), Ok(value));
                assert_eq!(optional_enum::<D>(raw, "f"), Ok(Some(value)));
                assert_eq!(optional_enum_to_wire(Some(value)), raw);
            }
            assert_eq!(optional_enum_to_wire::<D>(None), 0);
            assert_eq!(optional_enum::<D>(0, "f"), Ok(None));
        }
        check(&[
            UpdateType::Software,
            UpdateType::Driver,
            UpdateType::Category,
            UpdateType::Detectoid,
        ]);
        check(&[PublicationState::Published, PublicationState::Expired]);
        check(&[
            CategoryType::Company,
            CategoryType::ProductFamily,
            CategoryType::Product,
            CategoryType::UpdateClassification,
        ]);
        check(&[
            MsrcSeverity::Low,
            MsrcSeverity::Moderate,
            MsrcSeverity::Important,
            MsrcSeverity::Critical,
        ]);
        check(&[DigestAlgorithm::Sha1, DigestAlgorithm::Sha256]);
    }

    #[test]
    fn structured_revision_round_trips() {
        let revision = sample_revision();
        let wire = v1::UpdateRevision::from(&revision);
        assert_eq!(UpdateRevision::try_from(wire), Ok(revision));
    }

    #[test]
    fn structured_revision_round_trips_through_encoded_bytes() {
        use prost::Message as _;
        let revision = sample_revision();
        let bytes = v1::UpdateRevision::from(&revision).encode_to_vec();
        let decoded = v1::UpdateRevision::decode(bytes.as_slice()).unwrap();
        assert_eq!(UpdateRevision::try_from(decoded), Ok(revision));
    }

    #[test]
    fn document_round_trips_and_moves_the_bytes() {
        let revision = sample_revision();
        let wire = v1::UpdateDocument::from(&revision);
        let received = RevisionDocument::try_from(wire.clone()).unwrap();
        assert_eq!(received.id, revision.id);
        assert_eq!(received.document, revision.document);
        assert_eq!(received.content_hash(), revision.content_hash());
        assert_eq!(v1::UpdateDocument::from(received), wire);
        assert_eq!(v1::UpdateDocument::from(revision.clone()), wire);
    }

    #[test]
    fn summary_shows_the_listing_fields() {
        let summary = v1::UpdateSummary::from(&sample_revision());
        assert_eq!(summary.title, "Security Update for Windows XP (KB896422)");
        assert_eq!(summary.kb_article.as_deref(), Some("896422"));
        assert_eq!(summary.msrc_severity(), v1::MsrcSeverity::Critical);
        assert_eq!(summary.category_type(), v1::CategoryType::Unspecified);
        let categories: Vec<UpdateId> = summary
            .categories
            .into_iter()
            .map(|c| UpdateId::try_from(c).unwrap())
            .collect();
        assert_eq!(
            categories,
            vec![update_id(2), update_id(3)],
            "sorted, from the category group"
        );
        assert_eq!(summary.superseded.len(), 1);
        assert!(!summary.is_superseded);
    }

    // --- validation failures name the field -------------------------------------------

    #[test]
    fn missing_and_malformed_ids() {
        assert_field(
            UpdateId::try_from(v1::UpdateId {
                guid: String::new(),
            }),
            "guid",
        );
        let error = assert_field(
            UpdateId::try_from(v1::UpdateId {
                guid: "not-a-guid".into(),
            }),
            "guid",
        );
        assert!(
            matches!(error, ConversionError::InvalidGuid { ref value, .. } if value == "not-a-guid")
        );
        // The unhyphenated form is a typo waiting to happen: refused.
        assert_field(
            UpdateId::try_from(v1::UpdateId {
                guid: GUID.replace('-', ""),
            }),
            "guid",
        );
        assert_field(
            RevisionId::try_from(v1::RevisionId {
                update_id: None,
                revision: 1,
            }),
            "update_id",
        );
        assert_field(
            UpdateRef::try_from(v1::UpdateRef {
                update_id: Some(v1::UpdateId { guid: "x".into() }),
                revision: None,
            }),
            "update_id.guid",
        );
    }

    #[test]
    fn hostile_guid_text_is_not_echoed_whole() {
        let error = UpdateId::try_from(v1::UpdateId {
            guid: "A".repeat(1 << 20),
        })
        .unwrap_err();
        assert!(error.to_string().len() < 300, "{error}");
    }

    #[test]
    fn digests_must_be_exactly_32_bytes() {
        for len in [0, 31, 33] {
            let error = assert_field(
                CatalogDigest::try_from(v1::CatalogDigest {
                    value: vec![0; len],
                }),
                "value",
            );
            assert_eq!(
                error,
                ConversionError::WrongLength {
                    field: "value".into(),
                    expected: 32,
                    actual: len
                }
            );
        }
    }

    #[test]
    fn unspecified_and_unknown_enums() {
        assert_eq!(
            required_enum::<UpdateType>(0, "update_type"),
            Err(ConversionError::missing("update_type"))
        );
        assert_eq!(
            optional_enum::<MsrcSeverity>(99, "msrc_severity"),
            Err(ConversionError::UnknownEnumValue {
                field: "msrc_severity".into(),
                type_name: "MsrcSeverity",
                value: 99
            })
        );
        assert_eq!(
            UpdateType::try_from(v1::UpdateType::Unspecified),
            Err(ConversionError::missing(""))
        );
        assert_eq!(
            ConversionError::missing("").to_string(),
            "the value is required but missing"
        );
    }

    /// A compressed document reads back as the bytes it was made from; every malformed form
    /// is refused naming `lz4_document`, an oversized one before anything is allocated.
    #[test]
    fn compressed_documents() {
        let plain = v1::UpdateDocument::from(&sample_revision());
        let mut compressed = plain.clone();
        compressed.lz4_document = compress_document(&plain.document);
        compressed.document.clear();
        assert_eq!(sent_document_len(&compressed), plain.document.len());
        assert_eq!(sent_document_len(&plain), plain.document.len());
        assert_eq!(
            RevisionDocument::try_from(compressed.clone()).unwrap(),
            RevisionDocument::try_from(plain.clone()).unwrap()
        );
        let (_, kept) = RevisionDocument::with_compressed(compressed.clone()).unwrap();
        assert_eq!(kept.as_ref(), Some(&compressed.lz4_document));
        let (_, kept) = RevisionDocument::with_compressed(plain.clone()).unwrap();
        assert_eq!(kept, None);

        let mut both = compressed.clone();
        both.document = plain.document.clone();
        assert_field(RevisionDocument::try_from(both), "lz4_document");

        let with_block = |declared: u32, block: &[u8]| {
            let mut wire = compressed.clone();
            wire.lz4_document = declared.to_le_bytes().to_vec();
            wire.lz4_document.extend_from_slice(block);
            RevisionDocument::try_from(wire)
        };
        let block = &compressed.lz4_document[4..];
        let length = plain.document.len() as u32;
        assert_eq!(
            with_block(MAX_DOCUMENT_BYTES as u32 + 1, block).unwrap_err(),
            ConversionError::TooLarge {
                field: "lz4_document".into(),
                actual: MAX_DOCUMENT_BYTES + 1,
                limit: MAX_DOCUMENT_BYTES,
            }
        );
        assert_eq!(
            with_block(0, &[]).unwrap_err(),
            ConversionError::missing("lz4_document")
        );
        for (declared, block) in [
            // Claims more than the block holds.
            (length + 1, block),
            // Claims less.
            (length - 1, block),
            // Cut short.
            (length, &block[..block.len() / 2]),
            // Not LZ4 at all.
            (length, &[0xff; 16][..]),
        ] {
            let error = with_block(declared, block).unwrap_err();
            assert!(
                matches!(&error, ConversionError::Undecodable { field, .. } if field == "lz4_document"),
                "{error}"
            );
        }
        let mut short = compressed;
        short.lz4_document.truncate(3);
        assert_field(RevisionDocument::try_from(short), "lz4_document");
    }

    #[test]
    fn document_message_failures() {
        let good = v1::UpdateDocument::from(&sample_revision());

        let mut wire = good.clone();
        wire.id = None;
        assert_field(RevisionDocument::try_from(wire), "id");

        let mut wire = good.clone();
        wire.id.as_mut().unwrap().update_id.as_mut().unwrap().guid = "nope".into();
        assert_field(RevisionDocument::try_from(wire), "id.update_id.guid");

        let mut wire = good.clone();
        wire.document.clear();
        assert_field(RevisionDocument::try_from(wire), "document");

        let mut wire = good.clone();
        wire.document = vec![b' '; MAX_DOCUMENT_BYTES + 1];
        let error = assert_field(RevisionDocument::try_from(wire), "document");
        assert!(matches!(
            error,
            ConversionError::TooLarge {
                limit: MAX_DOCUMENT_BYTES,
                ..
            }
        ));

        let mut wire = good;
        wire.document = vec![b' '; MAX_DOCUMENT_BYTES];
        assert!(
            RevisionDocument::try_from(wire).is_ok(),
            "the limit itself is allowed"
        );
    }

    #[test]
    fn identity_check_refuses_a_document_filed_under_another_id() {
        let received =
            RevisionDocument::try_from(v1::UpdateDocument::from(&sample_revision())).unwrap();
        assert_eq!(received.check_identity(revision_id()), Ok(()));
        let other = RevisionId {
            revision: 104,
            ..revision_id()
        };
        let error = assert_field(received.check_identity(other), "id");
        assert!(error.to_string().contains("r103"), "{error}");
        assert!(error.to_string().contains("r104"), "{error}");
    }

    #[test]
    fn structured_revision_failures() {
        type Edit = fn(&mut v1::UpdateRevision);
        let cases: &[(Edit, &str)] = &[
            (|w| w.id = None, "id"),
            (|w| w.update_type = 0, "update_type"),
            (|w| w.update_type = 42, "update_type"),
            (|w| w.publication_state = 0, "publication_state"),
            (|w| w.creation_date = None, "creation_date"),
            (
                |w| w.creation_date.as_mut().unwrap().nanos = -5,
                "creation_date.nanos",
            ),
            (|w| w.localized.clear(), "localized"),
            (|w| w.localized[1].language.clear(), "localized[1].language"),
            (|w| w.msrc_severity = 17, "msrc_severity"),
            (|w| w.category_type = -1, "category_type"),
            (|w| w.prerequisites[0].kind = None, "prerequisites[0].kind"),
            (
                |w| {
                    let Some(v1::relationship::Kind::AtLeastOne(group)) =
                        &mut w.prerequisites[1].kind
                    else {
                        unreachable!()
                    };
                    group.members[1].update_id = None;
                },
                "prerequisites[1].at_least_one.members[1].update_id",
            ),
            (
                |w| {
                    let Some(v1::relationship::Kind::One(one)) = &mut w.bundled[0].kind else {
                        unreachable!()
                    };
                    one.update_id.as_mut().unwrap().guid = "zz".into();
                },
                "bundled[0].one.update_id.guid",
            ),
            (
                |w| w.superseded[0].update_id = None,
                "superseded[0].update_id",
            ),
            (
                |w| w.files[0].digests[0].algorithm = 0,
                "files[0].digests[0].algorithm",
            ),
            (
                |w| {
                    w.files[0].digests[1].value.pop();
                },
                "files[0].digests[1].value",
            ),
            (
                |w| w.files[0].digests[0].value = vec![0; 32],
                "files[0].digests[0].value",
            ),
            (
                |w| w.files[0].modified.as_mut().unwrap().nanos = 2_000_000_000,
                "files[0].modified.nanos",
            ),
            (|w| w.document.clear(), "document"),
        ];
        for (edit, field) in cases {
            let mut wire = wire_revision();
            edit(&mut wire);
            assert_field(UpdateRevision::try_from(wire), field);
        }
    }

    // --- property: every valid revision survives domain → wire → bytes → wire → domain ---

    fn update_id_strategy() -> impl Strategy<Value = UpdateId> {
        any::<[u8; 16]>().prop_map(UpdateId::from_bytes)
    }

    fn update_ref_strategy() -> impl Strategy<Value = UpdateRef> {
        (update_id_strategy(), any::<Option<u32>>()).prop_map(|(update_id, revision)| UpdateRef {
            update_id,
            revision,
        })
    }

    fn relationship_strategy() -> impl Strategy<Value = Relationship> {
        prop_oneof![
            update_ref_strategy().prop_map(Relationship::One),
            (
                any::<bool>(),
                prop::collection::vec(update_ref_strategy(), 0..4)
            )
                .prop_map(|(is_category, members)| Relationship::AtLeastOne {
                    is_category,
                    members
                }),
        ]
    }

    fn file_strategy() -> impl Strategy<Value = UpdateFile> {
        let digest = prop_oneof![
            prop::collection::vec(any::<u8>(), 20).prop_map(|value| FileDigest {
                algorithm: DigestAlgorithm::Sha1,
                value
            }),
            prop::collection::vec(any::<u8>(), 32).prop_map(|value| FileDigest {
                algorithm: DigestAlgorithm::Sha256,
                value
            }),
        ];
        (
            ".{0,20}",
            any::<u64>(),
            any::<Option<i64>>(),
            prop::collection::vec(digest, 0..3),
            ".{0,20}",
        )
            .prop_map(|(name, size, modified, digests, download_url)| UpdateFile {
                name,
                size,
                modified: modified.map(Timestamp::from_unix_millis),
                digests,
                download_url,
            })
    }

    fn revision_strategy() -> impl Strategy<Value = UpdateRevision> {
        let localized = ("[a-z]{2}(-[a-z]{2})?", ".{0,30}", any::<Option<String>>()).prop_map(
            |(language, title, description)| LocalizedProperties {
                language,
                title,
                description,
            },
        );
        let head = (
            update_id_strategy(),
            any::<u32>(),
            prop::sample::select(vec![
                UpdateType::Software,
                UpdateType::Driver,
                UpdateType::Category,
                UpdateType::Detectoid,
            ]),
            prop::sample::select(vec![PublicationState::Published, PublicationState::Expired]),
            any::<i64>(),
            ".{0,5}",
            prop::collection::vec(localized, 1..4),
        );
        let tail = (
            any::<Option<String>>(),
            any::<Option<String>>(),
            prop::option::of(prop::sample::select(vec![
                MsrcSeverity::Low,
                MsrcSeverity::Moderate,
                MsrcSeverity::Important,
                MsrcSeverity::Critical,
            ])),
            prop::option::of(prop::sample::select(vec![
                CategoryType::Company,
                CategoryType::ProductFamily,
                CategoryType::Product,
                CategoryType::UpdateClassification,
            ])),
            prop::collection::vec(relationship_strategy(), 0..4),
            prop::collection::vec(relationship_strategy(), 0..3),
            prop::collection::vec(update_ref_strategy(), 0..3),
            prop::collection::vec(file_strategy(), 0..3),
            prop::collection::vec(any::<u8>(), 1..256),
        );
        (head, tail).prop_map(
            |(
                (
                    update_id,
                    revision,
                    update_type,
                    publication_state,
                    created,
                    default_language,
                    localized,
                ),
                (
                    kb_article,
                    security_bulletin,
                    msrc_severity,
                    category_type,
                    prerequisites,
                    bundled,
                    superseded,
                    files,
                    document,
                ),
            )| UpdateRevision {
                id: RevisionId {
                    update_id,
                    revision,
                },
                update_type,
                publication_state,
                creation_date: Timestamp::from_unix_millis(created),
                default_language,
                localized,
                kb_article,
                security_bulletin,
                msrc_severity,
                category_type,
                prerequisites,
                bundled,
                superseded,
                files,
                document,
            },
        )
    }

    proptest! {
        #[test]
        fn revisions_round_trip(revision in revision_strategy()) {
            use prost::Message as _;
            let bytes = v1::UpdateRevision::from(&revision).encode_to_vec();
            let wire = v1::UpdateRevision::decode(bytes.as_slice()).unwrap();
            prop_assert_eq!(UpdateRevision::try_from(wire), Ok(revision.clone()));

            let bytes = v1::UpdateDocument::from(&revision).encode_to_vec();
            let wire = v1::UpdateDocument::decode(bytes.as_slice()).unwrap();
            let received = RevisionDocument::try_from(wire).unwrap();
            prop_assert_eq!(received.id, revision.id);
            prop_assert_eq!(received.document, revision.document);
        }

        #[test]
        fn digests_round_trip(bytes in any::<[u8; 32]>()) {
            let digest = CatalogDigest(bytes);
            prop_assert_eq!(CatalogDigest::try_from(v1::CatalogDigest::from(digest)), Ok(digest));
        }

        #[test]
        fn arbitrary_guid_text_never_panics(text in ".{0,64}") {
            let _ = UpdateId::try_from(v1::UpdateId { guid: text });
        }
    }
}
