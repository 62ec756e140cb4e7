//! The domain model of software-update metadata.
//!
//! The shapes follow the Microsoft update XML document: an update is identified by a GUID,
//! each publication of it is a revision, and relationships (prerequisites, bundles,
//! supersedence) point at other updates by id, sometimes at a specific revision.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::digest::ContentHash;

/// An update's GUID. Upstream documents mix upper and lower case; GUIDs compare
/// case-insensitively, so the parsed value is canonical and always prints lower case.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct UpdateId(uuid::Uuid);

impl UpdateId {
    pub const fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(uuid::Uuid::from_bytes(bytes))
    }

    /// The 16 bytes in big-endian GUID text order; store keys use them so that byte order
    /// equals the order of the printed ids.
    pub const fn as_bytes(&self) -> &[u8; 16] {
        self.0.as_bytes()
    }
}

impl fmt::Display for UpdateId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

impl fmt::Debug for UpdateId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The text given was not a GUID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not an update id (expected a GUID such as 56309036-4c77-4dd9-951a-99ee9c246a94)")]
pub struct InvalidUpdateId(pub String);

impl FromStr for UpdateId {
    type Err = InvalidUpdateId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // Only the hyphenated form (optionally braced) appears in update documents and on
        // command lines; accepting every uuid spelling would make typos look valid.
        let trimmed = s
            .strip_prefix('{')
            .and_then(|t| t.strip_suffix('}'))
            .unwrap_or(s);
        if trimmed.len() != 36 {
            return Err(InvalidUpdateId(s.to_owned()));
        }
        uuid::Uuid::parse_str(trimmed)
            .map(Self)
            .map_err(|_| InvalidUpdateId(s.to_owned()))
    }
}

/// One revision of one update: the unit every store keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RevisionId {
    pub update_id: UpdateId,
    pub revision: u32,
}

impl fmt::Display for RevisionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} r{}", self.update_id, self.revision)
    }
}

/// A reference from one update to another. Bundles name a revision; prerequisites and
/// supersedence usually name only the update.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct UpdateRef {
    pub update_id: UpdateId,
    pub revision: Option<u32>,
}

/// The `UpdateType` attribute of `Properties`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum UpdateType {
    Software,
    Driver,
    Category,
    Detectoid,
}

/// The `PublicationState` attribute. An expired update is a newer revision whose state is
/// `Expired`: it stays in the catalog so downstream servers learn of the expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PublicationState {
    Published,
    Expired,
}

/// The `CategoryType` of a category update: the levels of the category tree that sync
/// settings select by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CategoryType {
    Company,
    ProductFamily,
    Product,
    UpdateClassification,
}

/// The Microsoft Security Response Center severity rating.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum MsrcSeverity {
    Low,
    Moderate,
    Important,
    Critical,
}

/// Title and description in one language.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalizedProperties {
    /// A language tag as the document writes it (`en`, `pt-br`, `zh-tw`).
    pub language: String,
    pub title: String,
    pub description: Option<String>,
}

/// One entry of `Prerequisites` or `BundledUpdates`: either a single update that is
/// required, or a group of which at least one is required. A group marked `is_category`
/// names the categories (product, classification) the update belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Relationship {
    One(UpdateRef),
    AtLeastOne {
        is_category: bool,
        members: Vec<UpdateRef>,
    },
}

impl Relationship {
    /// Every update this entry names, in document order.
    pub fn members(&self) -> &[UpdateRef] {
        match self {
            Relationship::One(one) => std::slice::from_ref(one),
            Relationship::AtLeastOne { members, .. } => members,
        }
    }
}

/// The algorithm of a file digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DigestAlgorithm {
    Sha1,
    Sha256,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileDigest {
    pub algorithm: DigestAlgorithm,
    /// The raw digest bytes (the document carries them in base64).
    pub value: Vec<u8>,
}

/// One payload file of an update.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateFile {
    pub name: String,
    pub size: u64,
    pub modified: Option<Timestamp>,
    /// The primary `Digest` first, then every `AdditionalDigest`.
    pub digests: Vec<FileDigest>,
    /// Where an update server serves the file, relative to its content root. Update XML
    /// carries no URL; update servers address content by SHA-1 digest
    /// (`Content/<last two hex digits>/<SHA-1 hex><extension>`), and so do we.
    pub download_url: String,
}

/// A point in time, in milliseconds since the Unix epoch (UTC).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub fn from_unix_millis(millis: i64) -> Self {
        Self(millis)
    }

    pub fn unix_millis(self) -> i64 {
        self.0
    }

    /// Parses the ISO 8601 forms update documents use: `2005-09-22T00:05:11.471Z`, and the
    /// same without fraction or without the `Z` (taken as UTC).
    pub fn parse_iso8601(text: &str) -> Option<Self> {
        let parsed = OffsetDateTime::parse(text, &Rfc3339).ok().or_else(|| {
            let with_zone = format!("{text}Z");
            OffsetDateTime::parse(&with_zone, &Rfc3339).ok()
        })?;
        let millis = parsed.unix_timestamp_nanos() / 1_000_000;
        i64::try_from(millis).ok().map(Self)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nanos = i128::from(self.0) * 1_000_000;
        match OffsetDateTime::from_unix_timestamp_nanos(nanos)
            .ok()
            .and_then(|t| t.format(&Rfc3339).ok())
        {
            Some(text) => f.write_str(&text),
            None => write!(f, "@{}ms", self.0),
        }
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// One revision of one update, parsed from its XML document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateRevision {
    pub id: RevisionId,
    pub update_type: UpdateType,
    pub publication_state: PublicationState,
    pub creation_date: Timestamp,
    pub default_language: String,
    /// At least one entry; the default language's entry is the one shown to people.
    pub localized: Vec<LocalizedProperties>,
    pub kb_article: Option<String>,
    pub security_bulletin: Option<String>,
    pub msrc_severity: Option<MsrcSeverity>,
    /// Present exactly when `update_type` is `Category`.
    pub category_type: Option<CategoryType>,
    pub prerequisites: Vec<Relationship>,
    pub bundled: Vec<Relationship>,
    pub superseded: Vec<UpdateRef>,
    pub files: Vec<UpdateFile>,
    /// The original document, byte for byte: what downstream servers receive and what the
    /// content hash covers.
    pub document: Vec<u8>,
}

impl UpdateRevision {
    /// The title in the default language, else the first one.
    pub fn title(&self) -> &str {
        self.localized_default()
            .map(|l| l.title.as_str())
            .unwrap_or("")
    }

    pub fn description(&self) -> Option<&str> {
        self.localized_default()
            .and_then(|l| l.description.as_deref())
    }

    fn localized_default(&self) -> Option<&LocalizedProperties> {
        self.localized
            .iter()
            .find(|l| l.language.eq_ignore_ascii_case(&self.default_language))
            .or_else(|| self.localized.first())
    }

    /// The categories this update belongs to: the members of prerequisite groups marked
    /// `IsCategory`, which is how update documents name products and classifications.
    pub fn categories(&self) -> impl Iterator<Item = UpdateId> + '_ {
        self.prerequisites
            .iter()
            .filter_map(|r| match r {
                Relationship::AtLeastOne {
                    is_category: true,
                    members,
                } => Some(members.iter().map(|m| m.update_id)),
                _ => None,
            })
            .flatten()
    }

    /// The SHA-256 of the original document.
    pub fn content_hash(&self) -> ContentHash {
        ContentHash::of(&self.document)
    }
}
