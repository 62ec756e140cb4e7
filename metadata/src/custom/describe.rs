//! Custom update documents written from a short description (TOML or JSON), as System
//! Center Updates Publisher wrote them from its wizard: title and description per language,
//! vendor, product, classification, KB article, MSRC severity, files, prerequisites and
//! superseded updates. [`Description::check`] refuses what would make a bad document, with a
//! message naming the field; [`render_update`] writes the document, [`render_category`]
//! the vendor's and the product's categories, and [`render_expired`] the revision that
//! expires an update (S3's expired metadata) from its latest revision alone.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};

use crate::model::{MsrcSeverity, RevisionId, Timestamp, UpdateId, UpdateRevision};

use super::{
    LOCAL_PUBLISHER, LOCAL_PUBLISHER_ID, classification_named, product_category_id,
    vendor_category_id,
};

use crate::generate::render::{NS_CAT, NS_CMD, NS_LAR, NS_UPD, NS_XSI};
/// Where a custom file's origin URL is written (update XML itself carries none).
const NS_ORIGIN: &str = "urn:sitesync:publishing:1";

/// Bounds on a description, so one bad file cannot make a huge document.
pub const MAX_TITLE_CHARS: usize = 200;
pub const MAX_DESCRIPTION_CHARS: usize = 4000;
pub const MAX_NAME_BYTES: usize = 128;
pub const MAX_LANGUAGES: usize = 40;
pub const MAX_FILES: usize = 100;
pub const MAX_RELATED: usize = 200;
pub const MAX_URL_BYTES: usize = 2048;
/// The revision number of a custom update's first revision (as WSUS numbers them).
pub const FIRST_REVISION: u32 = 100;

/// A custom update as an operator describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Description {
    /// The vendor; when given it must be the publisher certificate's.
    #[serde(default)]
    pub vendor: Option<String>,
    pub product: String,
    /// A classification's name (`Security Updates`) or id.
    pub classification: String,
    /// Title per language tag; the default language must have one.
    pub title: BTreeMap<String, String>,
    #[serde(default)]
    pub description: BTreeMap<String, String>,
    /// `en` unless given.
    #[serde(default)]
    pub default_language: Option<String>,
    /// Digits only (`5001234`, or with a `KB` prefix).
    #[serde(default)]
    pub kb_article: Option<String>,
    /// `Low`, `Moderate`, `Important` or `Critical`.
    #[serde(default)]
    pub msrc_severity: Option<String>,
    #[serde(default)]
    pub files: Vec<FileDescription>,
    /// Update ids this update needs.
    #[serde(default)]
    pub prerequisites: Vec<String>,
    /// Update ids of the vendor's updates this one replaces.
    #[serde(default)]
    pub supersedes: Vec<String>,
    /// How clients install the first file: the program's arguments.
    #[serde(default)]
    pub install_arguments: Option<String>,
}

/// One payload file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileDescription {
    pub name: String,
    pub size: u64,
    /// 64 hexadecimal digits.
    pub sha256: String,
    /// Where clients and servers fetch it (http or https).
    pub url: String,
}

/// A description that [`Description::check`] accepted, ready to render.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    pub vendor: String,
    pub product: String,
    pub classification: UpdateId,
    pub default_language: String,
    /// `(language, title, description)`, the default language first.
    pub localized: Vec<(String, String, Option<String>)>,
    pub kb_article: Option<String>,
    pub msrc_severity: Option<MsrcSeverity>,
    pub files: Vec<CheckedFile>,
    pub prerequisites: Vec<UpdateId>,
    pub supersedes: Vec<UpdateId>,
    pub install_arguments: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedFile {
    pub name: String,
    pub size: u64,
    pub sha256: [u8; 32],
    pub url: String,
}

/// What is wrong with a description: the field and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct DescriptionError {
    pub field: String,
    pub reason: String,
}

fn refuse<T>(field: impl Into<String>, reason: impl Into<String>) -> Result<T, DescriptionError> {
    Err(DescriptionError {
        field: field.into(),
        reason: reason.into(),
    })
}

impl Description {
    /// Checks every field against the publisher's `vendor` (its certificate's).
    pub fn check(&self, vendor: &str) -> Result<Checked, DescriptionError> {
        if let Some(given) = &self.vendor
            && given != vendor
        {
            return refuse(
                "vendor",
                format!(
                    "`{given}` is not the publisher's vendor `{vendor}`: a publisher publishes only for the vendor its certificate names"
                ),
            );
        }
        check_name("product", &self.product)?;
        let classification = classification_named(&self.classification).map_or_else(
            || {
                refuse(
                    "classification",
                    format!(
                        "`{}` is not an update classification; use one of: {}",
                        self.classification,
                        super::CLASSIFICATIONS
                            .iter()
                            .map(|(_, n)| *n)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )
            },
            Ok,
        )?;
        let default_language = self
            .default_language
            .clone()
            .unwrap_or_else(|| "en".to_owned())
            .to_ascii_lowercase();
        check_language("default_language", &default_language)?;
        if self.title.len() > MAX_LANGUAGES {
            return refuse("title", format!("more than {MAX_LANGUAGES} languages"));
        }
        if !self
            .title
            .keys()
            .any(|l| l.eq_ignore_ascii_case(&default_language))
        {
            return refuse(
                "title",
                format!("no title in the default language `{default_language}`"),
            );
        }
        let mut localized = Vec::new();
        for (language, title) in &self.title {
            let field = format!("title.{language}");
            check_language(&field, language)?;
            check_text(&field, title, MAX_TITLE_CHARS)?;
            let description = self
                .description
                .iter()
                .find(|(l, _)| l.eq_ignore_ascii_case(language))
                .map(|(_, d)| d.clone());
            if let Some(description) = &description {
                check_text(
                    &format!("description.{language}"),
                    description,
                    MAX_DESCRIPTION_CHARS,
                )?;
            }
            let entry = (language.to_ascii_lowercase(), title.clone(), description);
            if language.eq_ignore_ascii_case(&default_language) {
                localized.insert(0, entry);
            } else {
                localized.push(entry);
            }
        }
        for language in self.description.keys() {
            if !self.title.keys().any(|l| l.eq_ignore_ascii_case(language)) {
                return refuse(
                    format!("description.{language}"),
                    "a description without a title in that language",
                );
            }
        }
        let kb_article = match &self.kb_article {
            None => None,
            Some(kb) => {
                let digits = kb
                    .strip_prefix("KB")
                    .or_else(|| kb.strip_prefix("kb"))
                    .unwrap_or(kb);
                if digits.is_empty()
                    || digits.len() > 10
                    || !digits.bytes().all(|b| b.is_ascii_digit())
                {
                    return refuse("kb_article", format!("`{kb}` is not a KB article number"));
                }
                Some(digits.to_owned())
            }
        };
        let msrc_severity = match self.msrc_severity.as_deref() {
            None => None,
            Some(text) => Some(match text.to_ascii_lowercase().as_str() {
                "low" => MsrcSeverity::Low,
                "moderate" => MsrcSeverity::Moderate,
                "important" => MsrcSeverity::Important,
                "critical" => MsrcSeverity::Critical,
                _ => {
                    return refuse(
                        "msrc_severity",
                        format!("`{text}` is not Low, Moderate, Important or Critical"),
                    );
                }
            }),
        };
        if self.files.len() > MAX_FILES {
            return refuse("files", format!("more than {MAX_FILES} files"));
        }
        let files = self
            .files
            .iter()
            .enumerate()
            .map(|(i, f)| check_file(i, f))
            .collect::<Result<Vec<_>, _>>()?;
        let prerequisites = check_ids("prerequisites", &self.prerequisites)?;
        let supersedes = check_ids("supersedes", &self.supersedes)?;
        let install_arguments = self
            .install_arguments
            .clone()
            .unwrap_or_else(|| "/quiet /norestart".to_owned());
        check_text("install_arguments", &install_arguments, 1024).or_else(|e| {
            if install_arguments.is_empty() {
                Ok(())
            } else {
                Err(e)
            }
        })?;
        Ok(Checked {
            vendor: vendor.to_owned(),
            product: self.product.clone(),
            classification,
            default_language,
            localized,
            kb_article,
            msrc_severity,
            files,
            prerequisites,
            supersedes,
            install_arguments,
        })
    }
}

fn check_name(field: &str, name: &str) -> Result<(), DescriptionError> {
    if name.is_empty() {
        return refuse(field, "is empty");
    }
    if name.len() > MAX_NAME_BYTES {
        return refuse(field, format!("is longer than {MAX_NAME_BYTES} bytes"));
    }
    if name.chars().any(char::is_control) || name.trim() != name {
        return refuse(field, "holds a control character or a space at either end");
    }
    Ok(())
}

fn check_text(field: &str, text: &str, max_chars: usize) -> Result<(), DescriptionError> {
    if text.trim().is_empty() {
        return refuse(field, "is empty");
    }
    if text.chars().count() > max_chars {
        return refuse(field, format!("is longer than {max_chars} characters"));
    }
    if text
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return refuse(field, "holds a control character");
    }
    Ok(())
}

fn check_language(field: &str, tag: &str) -> Result<(), DescriptionError> {
    let mut parts = tag.split('-');
    let primary = parts.next().unwrap_or_default();
    let ok = (2..=3).contains(&primary.len())
        && primary.bytes().all(|b| b.is_ascii_alphabetic())
        && parts
            .all(|p| (2..=8).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_alphanumeric()));
    if ok {
        Ok(())
    } else {
        refuse(
            field,
            format!("`{tag}` is not a language tag (en, de, pt-br)"),
        )
    }
}

fn check_file(index: usize, file: &FileDescription) -> Result<CheckedFile, DescriptionError> {
    let field = |name: &str| format!("files[{index}].{name}");
    let name = &file.name;
    if name.is_empty()
        || name.len() > 255
        || name == "."
        || name == ".."
        || name.contains(['/', '\\'])
        || name.chars().any(char::is_control)
    {
        return refuse(
            field("name"),
            format!("`{name}` is not a plain file name (no path, at most 255 bytes)"),
        );
    }
    if file.size == 0 {
        return refuse(field("size"), "is 0");
    }
    let hex = file.sha256.trim();
    let mut sha256 = [0u8; 32];
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return refuse(field("sha256"), "is not 64 hexadecimal digits");
    }
    for (i, byte) in sha256.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap_or_default();
    }
    let url = &file.url;
    if url.len() > MAX_URL_BYTES
        || !(url.starts_with("http://") || url.starts_with("https://"))
        || url.chars().any(|c| c.is_control() || c.is_whitespace())
    {
        return refuse(
            field("url"),
            format!("`{url}` is not an http or https URL of at most {MAX_URL_BYTES} bytes"),
        );
    }
    Ok(CheckedFile {
        name: name.clone(),
        size: file.size,
        sha256,
        url: url.clone(),
    })
}

fn check_ids(field: &str, ids: &[String]) -> Result<Vec<UpdateId>, DescriptionError> {
    if ids.len() > MAX_RELATED {
        return refuse(field, format!("more than {MAX_RELATED} updates"));
    }
    let mut out = Vec::with_capacity(ids.len());
    for (i, text) in ids.iter().enumerate() {
        let id = text.parse::<UpdateId>().map_err(|e| DescriptionError {
            field: format!("{field}[{i}]"),
            reason: e.to_string(),
        })?;
        if !out.contains(&id) {
            out.push(id);
        }
    }
    Ok(out)
}

fn esc(text: &str) -> std::borrow::Cow<'_, str> {
    quick_xml::escape::escape(text)
}

/// The levels of the custom category tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Category {
    /// `Local publisher` itself.
    Company,
    /// A vendor.
    ProductFamily,
    /// A vendor's product.
    Product,
}

/// A category document of the custom tree.
pub fn render_category(
    id: UpdateId,
    level: Category,
    name: &str,
    parent: Option<UpdateId>,
    created: Timestamp,
) -> Vec<u8> {
    let mut out = String::with_capacity(1024);
    let _ = write!(
        out,
        r#"<upd:Update xmlns:lar="{NS_LAR}" xmlns:cat="{NS_CAT}" xmlns:upd="{NS_UPD}"><upd:UpdateIdentity UpdateID="{id}" RevisionNumber="{FIRST_REVISION}" /><upd:Properties DefaultPropertiesLanguage="en" UpdateType="Category" Handler="{NS_CAT}" PublicationState="Published" CreationDate="{created}" PublisherID="{LOCAL_PUBLISHER_ID}"></upd:Properties><upd:LocalizedPropertiesCollection><upd:LocalizedProperties><upd:Language>en</upd:Language><upd:Title>{name}</upd:Title></upd:LocalizedProperties></upd:LocalizedPropertiesCollection>"#,
        name = esc(name),
    );
    if let Some(parent) = parent {
        let _ = write!(
            out,
            r#"<upd:Relationships><upd:Prerequisites><upd:AtLeastOne IsCategory="true"><upd:UpdateIdentity UpdateID="{parent}" /></upd:AtLeastOne></upd:Prerequisites></upd:Relationships>"#
        );
    }
    let (type_name, prohibits_subcategories, prohibits_updates) = match level {
        Category::Company => ("Company", false, true),
        Category::ProductFamily => ("ProductFamily", false, true),
        Category::Product => ("Product", true, false),
    };
    let _ = write!(
        out,
        r#"<upd:ApplicabilityRules><upd:IsInstalled><lar:True /></upd:IsInstalled></upd:ApplicabilityRules><upd:HandlerSpecificData xsi:type="cat:Category" xmlns:xsi="{NS_XSI}"><cat:CategoryInformation CategoryType="{type_name}" ProhibitsSubcategories="{prohibits_subcategories}" ProhibitsUpdates="{prohibits_updates}" DisplayOrder="0" /></upd:HandlerSpecificData></upd:Update>"#
    );
    out.into_bytes()
}

/// The vendor's product family document (under `Local publisher`).
pub fn render_vendor_category(vendor: &str, created: Timestamp) -> Vec<u8> {
    render_category(
        vendor_category_id(vendor),
        Category::ProductFamily,
        vendor,
        Some(LOCAL_PUBLISHER),
        created,
    )
}

/// The product's document (under its vendor).
pub fn render_product_category(vendor: &str, product: &str, created: Timestamp) -> Vec<u8> {
    render_category(
        product_category_id(vendor, product),
        Category::Product,
        product,
        Some(vendor_category_id(vendor)),
        created,
    )
}

/// The document of revision `id` of a custom software update.
pub fn render_update(checked: &Checked, id: RevisionId, created: Timestamp) -> Vec<u8> {
    let mut out = String::with_capacity(4096);
    let _ = write!(
        out,
        r#"<upd:Update xmlns:lar="{NS_LAR}" xmlns:cmd="{NS_CMD}" xmlns:upd="{NS_UPD}"><upd:UpdateIdentity UpdateID="{}" RevisionNumber="{}" />"#,
        id.update_id, id.revision
    );
    let _ = write!(
        out,
        r#"<upd:Properties UpdateType="Software" DefaultPropertiesLanguage="{}""#,
        checked.default_language
    );
    if !checked.files.is_empty() {
        let total: u64 = checked.files.iter().map(|f| f.size).sum();
        let _ = write!(
            out,
            r#" Handler="{NS_CMD}" MaxDownloadSize="{total}" MinDownloadSize="0""#
        );
    }
    if let Some(severity) = checked.msrc_severity {
        let _ = write!(out, r#" MsrcSeverity="{severity:?}""#);
    }
    let _ = write!(
        out,
        r#" PublicationState="Published" CreationDate="{created}" PublisherID="{LOCAL_PUBLISHER_ID}">"#
    );
    if !checked.files.is_empty() {
        out.push_str(
            r#"<upd:InstallationBehavior Impact="Normal" RebootBehavior="CanRequestReboot" />"#,
        );
    }
    if let Some(kb) = &checked.kb_article {
        let _ = write!(out, "<upd:KBArticleID>{kb}</upd:KBArticleID>");
    }
    out.push_str("</upd:Properties><upd:LocalizedPropertiesCollection>");
    for (language, title, description) in &checked.localized {
        let _ = write!(
            out,
            "<upd:LocalizedProperties><upd:Language>{language}</upd:Language><upd:Title>{}</upd:Title>",
            esc(title)
        );
        if let Some(description) = description {
            let _ = write!(
                out,
                "<upd:Description>{}</upd:Description>",
                esc(description)
            );
        }
        out.push_str("</upd:LocalizedProperties>");
    }
    out.push_str("</upd:LocalizedPropertiesCollection>");
    render_relationships(
        &mut out,
        &checked.supersedes,
        &checked.prerequisites,
        &[
            product_category_id(&checked.vendor, &checked.product),
            checked.classification,
        ],
    );
    if !checked.files.is_empty() {
        out.push_str("<upd:Files>");
        for file in &checked.files {
            let _ = write!(
                out,
                r#"<upd:File Digest="{}" DigestAlgorithm="SHA256" FileName="{}" Size="{}"><origin:Origin xmlns:origin="{NS_ORIGIN}" Url="{}" /></upd:File>"#,
                BASE64.encode(file.sha256),
                esc(&file.name),
                file.size,
                esc(&file.url),
            );
        }
        out.push_str("</upd:Files>");
        let _ = write!(
            out,
            r#"<upd:HandlerSpecificData xsi:type="cmd:CommandLineInstallation" xmlns:xsi="{NS_XSI}"><cmd:InstallCommand Program="{}" Arguments="{}" RebootByDefault="false" DefaultResult="Failed"><cmd:ReturnCode Code="0" Result="Succeeded" Reboot="false" /><cmd:ReturnCode Code="3010" Result="Succeeded" Reboot="true" /></cmd:InstallCommand></upd:HandlerSpecificData>"#,
            esc(&checked.files[0].name),
            esc(&checked.install_arguments),
        );
    }
    out.push_str("</upd:Update>");
    out.into_bytes()
}

/// Supersedence, plain prerequisites, then one `IsCategory` group per category.
fn render_relationships(
    out: &mut String,
    supersedes: &[UpdateId],
    prerequisites: &[UpdateId],
    categories: &[UpdateId],
) {
    out.push_str("<upd:Relationships>");
    if !supersedes.is_empty() {
        out.push_str("<upd:SupersededUpdates>");
        for id in supersedes {
            let _ = write!(out, r#"<upd:UpdateIdentity UpdateID="{id}" />"#);
        }
        out.push_str("</upd:SupersededUpdates>");
    }
    out.push_str("<upd:Prerequisites>");
    for id in prerequisites {
        let _ = write!(out, r#"<upd:UpdateIdentity UpdateID="{id}" />"#);
    }
    for id in categories {
        let _ = write!(
            out,
            r#"<upd:AtLeastOne IsCategory="true"><upd:UpdateIdentity UpdateID="{id}" /></upd:AtLeastOne>"#
        );
    }
    out.push_str("</upd:Prerequisites></upd:Relationships>");
}

/// The revision `revision` that expires the update whose latest revision is `latest`: its
/// titles and categories, no files, state `Expired` (S3's expired metadata).
pub fn render_expired(latest: &UpdateRevision, revision: u32, created: Timestamp) -> Vec<u8> {
    let mut out = String::with_capacity(2048);
    let _ = write!(
        out,
        r#"<upd:Update xmlns:upd="{NS_UPD}"><upd:UpdateIdentity UpdateID="{}" RevisionNumber="{revision}" /><upd:Properties UpdateType="Software" DefaultPropertiesLanguage="{}" PublicationState="Expired" CreationDate="{created}" PublisherID="{LOCAL_PUBLISHER_ID}">"#,
        latest.id.update_id,
        esc(&latest.default_language),
    );
    if let Some(kb) = &latest.kb_article {
        let _ = write!(out, "<upd:KBArticleID>{}</upd:KBArticleID>", esc(kb));
    }
    out.push_str("</upd:Properties><upd:LocalizedPropertiesCollection>");
    for localized in &latest.localized {
        let _ = write!(
            out,
            "<upd:LocalizedProperties><upd:Language>{}</upd:Language><upd:Title>{}</upd:Title></upd:LocalizedProperties>",
            esc(&localized.language),
            esc(&localized.title)
        );
    }
    out.push_str("</upd:LocalizedPropertiesCollection>");
    let categories: Vec<UpdateId> = latest.categories().collect();
    render_relationships(&mut out, &[], &[], &categories);
    out.push_str("</upd:Update>");
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::super::{NamespaceError, check_namespace};
    use super::*;
    use crate::model::{PublicationState, UpdateType};
    use crate::xml::{ParseLimits, parse_update};

    pub(crate) fn sample() -> Description {
        toml_like(
            r#"{
                "product": "Line-of-Business Suite",
                "classification": "Security Updates",
                "title": {"en": "LOB Suite 4.2 security fix", "de": "LOB Suite 4.2 Sicherheitskorrektur"},
                "description": {"en": "Fixes <CVE-2026-1> & more."},
                "kb_article": "KB5001234",
                "msrc_severity": "Important",
                "files": [{"name": "lob-4.2.1.msi", "size": 1048576,
                           "sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
                           "url": "https://files.example.com/lob/lob-4.2.1.msi"}],
                "prerequisites": ["bfe5b177-a086-47a0-b102-097e4fa1f807"],
                "supersedes": ["11111111-2222-4333-8444-555555555555"]
            }"#,
        )
    }

    fn toml_like(json: &str) -> Description {
        serde_json::from_str(json).unwrap()
    }

    fn update_id() -> UpdateId {
        "a1b2c3d4-0000-4000-8000-000000000001".parse().unwrap()
    }

    #[test]
    fn a_description_renders_a_document_that_parses_back() {
        let checked = sample().check("Contoso").unwrap();
        let id = RevisionId {
            update_id: update_id(),
            revision: FIRST_REVISION,
        };
        let document = render_update(&checked, id, Timestamp(1_790_000_000_000));
        let parsed = parse_update(&document, &ParseLimits::default()).unwrap();
        assert_eq!(parsed.id, id);
        assert_eq!(parsed.update_type, UpdateType::Software);
        assert_eq!(parsed.title(), "LOB Suite 4.2 security fix");
        assert_eq!(parsed.description(), Some("Fixes <CVE-2026-1> & more."));
        assert_eq!(parsed.localized.len(), 2);
        assert_eq!(parsed.kb_article.as_deref(), Some("5001234"));
        assert_eq!(parsed.msrc_severity, Some(MsrcSeverity::Important));
        assert_eq!(parsed.files.len(), 1);
        assert_eq!(parsed.files[0].size, 1_048_576);
        assert_eq!(parsed.superseded.len(), 1);
        let categories: Vec<_> = parsed.categories().collect();
        assert_eq!(
            categories,
            [
                product_category_id("Contoso", "Line-of-Business Suite"),
                super::super::CLASSIFICATIONS[1].0
            ]
        );
        check_namespace(&parsed, "Contoso", "Line-of-Business Suite").unwrap();
        assert!(matches!(
            check_namespace(&parsed, "Fabrikam", "Line-of-Business Suite"),
            Err(NamespaceError::ForeignMembership { .. })
        ));
    }

    #[test]
    fn categories_sit_in_the_vendor_namespace() {
        let created = Timestamp(1_790_000_000_000);
        let vendor = parse_update(
            &render_vendor_category("Contoso", created),
            &ParseLimits::default(),
        )
        .unwrap();
        check_namespace(&vendor, "Contoso", "").unwrap();
        assert!(check_namespace(&vendor, "Fabrikam", "").is_err());
        let product = parse_update(
            &render_product_category("Contoso", "Suite", created),
            &ParseLimits::default(),
        )
        .unwrap();
        check_namespace(&product, "Contoso", "Suite").unwrap();
        assert!(matches!(
            check_namespace(&product, "Contoso", "Other"),
            Err(NamespaceError::ForeignCategory { .. })
        ));
        // The built-in company is nobody's.
        let root = parse_update(
            &super::super::local_publisher_document(),
            &ParseLimits::default(),
        )
        .unwrap();
        assert!(check_namespace(&root, "Contoso", "").is_err());
    }

    #[test]
    fn an_update_under_a_microsoft_product_is_out_of_namespace() {
        let checked = sample().check("Contoso").unwrap();
        let id = RevisionId {
            update_id: update_id(),
            revision: FIRST_REVISION,
        };
        let document = String::from_utf8(render_update(&checked, id, Timestamp(0))).unwrap();
        let windows_7 = "bfe5b177-a086-47a0-b102-097e4fa1f807";
        let forged = document.replace(
            &product_category_id("Contoso", "Line-of-Business Suite").to_string(),
            windows_7,
        );
        let parsed = parse_update(forged.as_bytes(), &ParseLimits::default()).unwrap();
        assert!(matches!(
            check_namespace(&parsed, "Contoso", "Line-of-Business Suite"),
            Err(NamespaceError::ForeignMembership { .. })
        ));
    }

    #[test]
    fn the_expired_revision_keeps_titles_and_categories() {
        let checked = sample().check("Contoso").unwrap();
        let id = RevisionId {
            update_id: update_id(),
            revision: FIRST_REVISION,
        };
        let latest = parse_update(
            &render_update(&checked, id, Timestamp(0)),
            &ParseLimits::default(),
        )
        .unwrap();
        let expired = parse_update(
            &render_expired(&latest, 101, Timestamp(1)),
            &ParseLimits::default(),
        )
        .unwrap();
        assert_eq!(expired.id.revision, 101);
        assert_eq!(expired.publication_state, PublicationState::Expired);
        assert_eq!(expired.title(), latest.title());
        assert!(expired.files.is_empty());
        check_namespace(&expired, "Contoso", "Line-of-Business Suite").unwrap();
    }

    #[test]
    fn bad_descriptions_name_the_field() {
        type Change = Box<dyn Fn(&mut Description)>;
        let cases: Vec<(&str, Change)> = vec![
            ("vendor", Box::new(|d| d.vendor = Some("Fabrikam".into()))),
            ("product", Box::new(|d| d.product = String::new())),
            ("product", Box::new(|d| d.product = "x".repeat(200))),
            (
                "classification",
                Box::new(|d| d.classification = "Windows 10".into()),
            ),
            (
                "title",
                Box::new(|d| {
                    d.title.remove("en");
                }),
            ),
            (
                "title.de",
                Box::new(|d| {
                    d.title.insert("de".into(), "x".repeat(MAX_TITLE_CHARS + 1));
                }),
            ),
            (
                "title.english",
                Box::new(|d| {
                    d.title.insert("english".into(), "t".into());
                }),
            ),
            (
                "description.fr",
                Box::new(|d| {
                    d.description.insert("fr".into(), "x".into());
                }),
            ),
            (
                "kb_article",
                Box::new(|d| d.kb_article = Some("KB12a".into())),
            ),
            (
                "msrc_severity",
                Box::new(|d| d.msrc_severity = Some("Severe".into())),
            ),
            (
                "files[0].name",
                Box::new(|d| d.files[0].name = "../evil.msi".into()),
            ),
            (
                "files[0].sha256",
                Box::new(|d| d.files[0].sha256 = "abc".into()),
            ),
            (
                "files[0].url",
                Box::new(|d| d.files[0].url = "file:///etc/passwd".into()),
            ),
            ("files[0].size", Box::new(|d| d.files[0].size = 0)),
            (
                "prerequisites[0]",
                Box::new(|d| d.prerequisites = vec!["nope".into()]),
            ),
        ];
        for (field, change) in cases {
            let mut description = sample();
            change(&mut description);
            let error = description.check("Contoso").unwrap_err();
            assert_eq!(error.field, field, "{error}");
        }
    }

    #[test]
    fn unknown_fields_are_refused() {
        let error = serde_json::from_str::<Description>(
            r#"{"product":"p","classification":"Updates","title":{"en":"t"},"colour":"red"}"#,
        )
        .unwrap_err();
        assert!(error.to_string().contains("colour"), "{error}");
    }
}
