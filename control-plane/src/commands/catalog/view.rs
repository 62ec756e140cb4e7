//! The JSON shape of a parsed update document, as `catalog inspect --output json` prints
//! it. These are view types for scripts: the domain model stays free of presentation
//! concerns, and this shape can stay stable while the model evolves.
//!
//! Enumerations are spelled as the update XML spells them (`Software`, `Published`,
//! `ProductFamily`, `Critical`), GUIDs in lower case, digests in lower-case hex.

use std::path::Path;

use serde::Serialize;
use sitesync_metadata::{
    CategoryType, DigestAlgorithm, MsrcSeverity, PublicationState, Relationship, UpdateFile,
    UpdateRef, UpdateRevision, UpdateType,
};

use crate::output::hex;

#[derive(Debug, Serialize)]
pub struct UpdateView {
    /// The file the document was read from; absent for a revision read from a node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    pub update_id: String,
    pub revision: u32,
    pub update_type: &'static str,
    pub publication_state: &'static str,
    pub creation_date: String,
    pub default_language: String,
    /// The title in the default language.
    pub title: String,
    pub description: Option<String>,
    pub languages: Vec<String>,
    pub kb_article: Option<String>,
    pub security_bulletin: Option<String>,
    pub msrc_severity: Option<&'static str>,
    pub category_type: Option<&'static str>,
    /// The ids of the categories (products, classifications…) the update belongs to.
    pub categories: Vec<String>,
    pub prerequisites: Vec<RelationshipView>,
    pub bundled: Vec<RelationshipView>,
    pub superseded: Vec<UpdateRefView>,
    pub files: Vec<FileView>,
    pub document_bytes: usize,
    /// SHA-256 of the document: what the catalog digest covers.
    pub content_sha256: String,
}

/// One entry of `prerequisites` or `bundled`.
#[derive(Debug, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RelationshipView {
    /// This update is required.
    One {
        update_id: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        revision: Option<u32>,
    },
    /// At least one of these is required; `is_category` groups name categories.
    AtLeastOne {
        is_category: bool,
        members: Vec<UpdateRefView>,
    },
}

#[derive(Debug, Serialize)]
pub struct UpdateRefView {
    pub update_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revision: Option<u32>,
}

#[derive(Debug, Serialize)]
pub struct FileView {
    pub name: String,
    pub size: u64,
    pub modified: Option<String>,
    pub sha1: Option<String>,
    pub sha256: Option<String>,
    pub download_url: String,
}

impl UpdateView {
    pub fn new(file: Option<&Path>, revision: &UpdateRevision) -> Self {
        Self {
            file: file.map(|f| f.display().to_string()),
            update_id: revision.id.update_id.to_string(),
            revision: revision.id.revision,
            update_type: update_type_name(revision.update_type),
            publication_state: publication_state_name(revision.publication_state),
            creation_date: revision.creation_date.to_string(),
            default_language: revision.default_language.clone(),
            title: revision.title().to_owned(),
            description: revision.description().map(str::to_owned),
            languages: revision
                .localized
                .iter()
                .map(|l| l.language.clone())
                .collect(),
            kb_article: revision.kb_article.clone(),
            security_bulletin: revision.security_bulletin.clone(),
            msrc_severity: revision.msrc_severity.map(severity_name),
            category_type: revision.category_type.map(category_type_name),
            categories: revision.categories().map(|id| id.to_string()).collect(),
            prerequisites: revision
                .prerequisites
                .iter()
                .map(RelationshipView::new)
                .collect(),
            bundled: revision.bundled.iter().map(RelationshipView::new).collect(),
            superseded: revision.superseded.iter().map(UpdateRefView::new).collect(),
            files: revision.files.iter().map(FileView::new).collect(),
            document_bytes: revision.document.len(),
            content_sha256: hex(&revision.content_hash().0),
        }
    }
}

impl RelationshipView {
    fn new(relationship: &Relationship) -> Self {
        match relationship {
            Relationship::One(one) => Self::One {
                update_id: one.update_id.to_string(),
                revision: one.revision,
            },
            Relationship::AtLeastOne {
                is_category,
                members,
            } => Self::AtLeastOne {
                is_category: *is_category,
                members: members.iter().map(UpdateRefView::new).collect(),
            },
        }
    }
}

impl UpdateRefView {
    fn new(reference: &UpdateRef) -> Self {
        Self {
            update_id: reference.update_id.to_string(),
            revision: reference.revision,
        }
    }
}

impl FileView {
    fn new(file: &UpdateFile) -> Self {
        let digest = |algorithm| {
            file.digests
                .iter()
                .find(|d| d.algorithm == algorithm)
                .map(|d| hex(&d.value))
        };
        Self {
            name: file.name.clone(),
            size: file.size,
            modified: file.modified.map(|t| t.to_string()),
            sha1: digest(DigestAlgorithm::Sha1),
            sha256: digest(DigestAlgorithm::Sha256),
            download_url: file.download_url.clone(),
        }
    }
}

pub fn update_type_name(update_type: UpdateType) -> &'static str {
    match update_type {
        UpdateType::Software => "Software",
        UpdateType::Driver => "Driver",
        UpdateType::Category => "Category",
        UpdateType::Detectoid => "Detectoid",
    }
}

pub fn publication_state_name(state: PublicationState) -> &'static str {
    match state {
        PublicationState::Published => "Published",
        PublicationState::Expired => "Expired",
    }
}

pub fn severity_name(severity: MsrcSeverity) -> &'static str {
    match severity {
        MsrcSeverity::Low => "Low",
        MsrcSeverity::Moderate => "Moderate",
        MsrcSeverity::Important => "Important",
        MsrcSeverity::Critical => "Critical",
    }
}

pub fn category_type_name(category_type: CategoryType) -> &'static str {
    match category_type {
        CategoryType::Company => "Company",
        CategoryType::ProductFamily => "ProductFamily",
        CategoryType::Product => "Product",
        CategoryType::UpdateClassification => "UpdateClassification",
    }
}
