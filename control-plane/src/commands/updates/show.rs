//! `sitesyncctl updates show ID`: one update in full from `Admin.GetUpdate` — the revision
//! parsed (titles, KB, bulletin, severity, relationships, files), its categories by name,
//! what supersedes it and every revision the store holds; or, with `--document`, the
//! original XML byte for byte.

use std::io::{self, Write as _};
use std::process::ExitCode;

use anyhow::{Context as _, anyhow};
use comfy_table::Table;
use indicatif::HumanBytes;
use serde::Serialize;
use sitesync_metadata::{CategoryType, DigestAlgorithm, Relationship, UpdateId, UpdateRevision};
use sitesync_proto::convert::optional_enum;
use sitesync_proto::v1;

use super::store_selector;
use crate::cli::UpdatesShowArgs;
use crate::client::{Node, printable, unary};
use crate::commands::catalog::view::{self, UpdateView};
use crate::output::{self, OutputFormat, hex};

/// Width at which long text (descriptions) wraps in the table.
const WRAP_WIDTH: usize = 100;

pub async fn run(
    mut node: Node,
    args: &UpdatesShowArgs,
    output: OutputFormat,
) -> anyhow::Result<ExitCode> {
    let id: UpdateId = args.id.parse().map_err(|_| {
        anyhow!(
            "`{}` is not an update id: give a GUID such as 56309036-4c77-4dd9-951a-99ee9c246a94",
            args.id
        )
    })?;
    let response = node
        .admin
        .get_update(unary(v1::GetUpdateRequest {
            update_id: Some(id.into()),
            revision: args.revision,
            store: store_selector(args.store).into(),
        }))
        .await
        .map_err(|status| node.failed("Admin.GetUpdate", status))?
        .into_inner();

    if args.document {
        let document = response
            .revision
            .as_ref()
            .map(|r| r.document.as_slice())
            .unwrap_or_default();
        let mut stdout = io::stdout().lock();
        stdout.write_all(document)?;
        stdout.flush()?;
        return Ok(ExitCode::SUCCESS);
    }

    let view = UpdateDetailView::new(response)?;
    match output {
        OutputFormat::Json => output::print_json(&view)?,
        OutputFormat::Table | OutputFormat::Dot => output::print_table(&view.table())?,
    }
    Ok(ExitCode::SUCCESS)
}

/// What `updates show --output json` prints: the revision as `catalog inspect` shows a
/// document, plus what only the store knows.
#[derive(Debug, Serialize)]
pub struct UpdateDetailView {
    #[serde(flatten)]
    pub revision: UpdateView,
    /// Every revision number the store holds of this update, ascending.
    pub revisions_held: Vec<u32>,
    /// Held updates that supersede this one.
    pub superseded_by: Vec<String>,
    /// The categories it belongs to, with names where the store holds them.
    pub resolved_categories: Vec<CategoryView>,
    /// For a custom update (S6): its publisher and whether its seal holds; null otherwise.
    pub custom: Option<CustomView>,
    /// Not serialized: the parsed revision, for the table.
    #[serde(skip)]
    parsed: UpdateRevision,
}

/// A custom update's seal, as the node judged it.
#[derive(Debug, Serialize)]
pub struct CustomView {
    pub publisher: String,
    pub vendor: String,
    pub product: String,
    pub key_id: String,
    /// 0 when the top site has not accepted it.
    pub accepted_version: u64,
    pub accepted_at: Option<String>,
    /// `valid` or `refused`.
    pub signature: &'static str,
    pub verdict: String,
}

impl CustomView {
    fn new(wire: v1::CustomUpdateInfo) -> Self {
        Self {
            publisher: printable(&wire.publisher),
            vendor: printable(&wire.vendor),
            product: printable(&wire.product),
            key_id: printable(&wire.key_id),
            accepted_version: wire.accepted_version,
            accepted_at: wire
                .accepted_at
                .and_then(|t| sitesync_proto::convert::timestamp_from_wire(t).ok())
                .map(|t| t.to_string()),
            signature: if wire.valid { "valid" } else { "refused" },
            verdict: printable(&wire.verdict),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct CategoryView {
    pub update_id: String,
    /// Null when the store does not hold the category.
    pub name: Option<String>,
    pub category_type: Option<&'static str>,
}

impl UpdateDetailView {
    pub fn new(response: v1::GetUpdateResponse) -> anyhow::Result<Self> {
        let wire = response
            .revision
            .context("the node's answer has no revision (GetUpdateResponse.revision is missing)")?;
        let parsed = UpdateRevision::try_from(wire)
            .map_err(|e| anyhow!("the node sent an update this sitesyncctl cannot read: {e}"))?;
        Ok(Self {
            revision: UpdateView::new(None, &parsed),
            revisions_held: response.revisions_held,
            superseded_by: response
                .superseded_by
                .iter()
                .map(|id| id.guid.to_ascii_lowercase())
                .collect(),
            resolved_categories: response
                .categories
                .iter()
                .map(|category| CategoryView {
                    update_id: category
                        .id
                        .as_ref()
                        .map_or_else(String::new, |id| id.guid.to_ascii_lowercase()),
                    name: Some(printable(&category.name)).filter(|n| !n.is_empty()),
                    category_type: optional_enum::<CategoryType>(
                        category.category_type,
                        "category_type",
                    )
                    .ok()
                    .flatten()
                    .map(view::category_type_name),
                })
                .collect(),
            custom: response.custom.map(CustomView::new),
            parsed,
        })
    }

    /// A vertical layout: one row per field, lists one item per line.
    pub fn table(&self) -> Table {
        let r = &self.revision;
        let revision = &self.parsed;
        let mut rows: Vec<(&str, String)> = vec![
            ("update", r.update_id.clone()),
            ("revision", r.revision.to_string()),
            (
                "revisions held",
                self.revisions_held
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
            ("title", printable(&r.title)),
        ];
        let other_titles: Vec<String> = revision
            .localized
            .iter()
            .filter(|l| l.language != revision.default_language)
            .map(|l| format!("{}: {}", l.language, printable(&l.title)))
            .collect();
        if !other_titles.is_empty() {
            rows.push(("other titles", other_titles.join("\n")));
        }
        if let Some(description) = &r.description {
            rows.push(("description", wrap(&printable(description), WRAP_WIDTH)));
        }
        let kind = match r.category_type {
            Some(level) => format!("{} ({level})", r.update_type),
            None => r.update_type.to_owned(),
        };
        rows.push(("type", kind));
        rows.push(("state", r.publication_state.to_owned()));
        rows.push(("created", r.creation_date.clone()));
        rows.push((
            "languages",
            format!(
                "{} (default {})",
                r.languages.join(", "),
                r.default_language
            ),
        ));
        let or_dash = |value: Option<&str>| value.unwrap_or("-").to_owned();
        rows.push(("kb", or_dash(r.kb_article.as_deref())));
        rows.push(("bulletin", or_dash(r.security_bulletin.as_deref())));
        rows.push(("severity", or_dash(r.msrc_severity)));
        rows.push((
            "categories",
            lines(
                self.resolved_categories
                    .iter()
                    .map(|c| match (&c.name, c.category_type) {
                        (Some(name), Some(level)) => format!("{name} ({level}) {}", c.update_id),
                        (Some(name), None) => format!("{name} {}", c.update_id),
                        _ => format!("{} (not held)", c.update_id),
                    }),
            ),
        ));
        rows.push((
            "prerequisites",
            lines(
                revision
                    .prerequisites
                    .iter()
                    .filter(|p| !is_category_group(p))
                    .map(relationship_line),
            ),
        ));
        rows.push((
            "bundled",
            lines(revision.bundled.iter().map(relationship_line)),
        ));
        rows.push((
            "supersedes",
            lines(r.superseded.iter().map(|s| s.update_id.clone())),
        ));
        rows.push(("superseded by", lines(self.superseded_by.iter().cloned())));
        rows.push((
            "files",
            lines(revision.files.iter().map(|file| {
                let mut text = format!("{} ({})", printable(&file.name), HumanBytes(file.size));
                for digest in &file.digests {
                    let name = match digest.algorithm {
                        DigestAlgorithm::Sha1 => "sha1",
                        DigestAlgorithm::Sha256 => "sha256",
                    };
                    text.push_str(&format!("\n  {name} {}", hex(&digest.value)));
                }
                if !file.download_url.is_empty() {
                    text.push_str(&format!("\n  url {}", printable(&file.download_url)));
                }
                text
            })),
        ));
        if let Some(custom) = &self.custom {
            rows.push(("publisher", custom.publisher.clone()));
            rows.push(("vendor", custom.vendor.clone()));
            rows.push(("publisher key", custom.key_id.clone()));
            rows.push((
                "accepted",
                match &custom.accepted_at {
                    Some(at) => format!("at catalog version {}, {at}", custom.accepted_version),
                    None => "not yet".to_owned(),
                },
            ));
            rows.push(("signature", wrap(&custom.verdict, WRAP_WIDTH)));
        }
        rows.push((
            "document",
            format!("{} bytes, sha256 {}", r.document_bytes, r.content_sha256),
        ));
        output::name_value_table(rows)
    }
}

/// Category groups are how documents name products and classifications; they show under
/// "categories", not as prerequisites.
fn is_category_group(relationship: &Relationship) -> bool {
    matches!(
        relationship,
        Relationship::AtLeastOne {
            is_category: true,
            ..
        }
    )
}

fn relationship_line(relationship: &Relationship) -> String {
    let reference = |r: &sitesync_metadata::UpdateRef| match r.revision {
        Some(revision) => format!("{} r{revision}", r.update_id),
        None => r.update_id.to_string(),
    };
    match relationship {
        Relationship::One(one) => reference(one),
        Relationship::AtLeastOne { members, .. } => {
            let mut text = "at least one of:".to_owned();
            for member in members {
                text.push_str("\n  ");
                text.push_str(&reference(member));
            }
            text
        }
    }
}

/// One item per line, `-` for none.
fn lines(items: impl Iterator<Item = String>) -> String {
    let items: Vec<String> = items.collect();
    if items.is_empty() {
        "-".to_owned()
    } else {
        items.join("\n")
    }
}

/// Wraps text at word boundaries to lines of at most `width` characters (longer words stay
/// whole).
fn wrap(text: &str, width: usize) -> String {
    let mut out = String::new();
    let mut line_len = 0;
    for word in text.split_whitespace() {
        let len = word.chars().count();
        if line_len > 0 && line_len + 1 + len > width {
            out.push('\n');
            line_len = 0;
        } else if line_len > 0 {
            out.push(' ');
            line_len += 1;
        }
        out.push_str(word);
        line_len += len;
    }
    out
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use sitesync_metadata::{ParseLimits, parse_update};

    use super::*;

    fn fixture(name: &str) -> UpdateRevision {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name);
        parse_update(&std::fs::read(path).unwrap(), &ParseLimits::default()).unwrap()
    }

    fn response() -> v1::GetUpdateResponse {
        let revision = fixture("a2fef9b0-7951-4c2c-a42b-9e351dd1c1fe-r200.xml");
        let categories: Vec<UpdateId> = revision.categories().collect();
        v1::GetUpdateResponse {
            revision: Some(revision.into()),
            revisions_held: vec![199, 200],
            superseded_by: vec![v1::UpdateId {
                guid: "266F6222-C89D-43F2-9F8A-69340271E677".into(),
            }],
            categories: categories
                .iter()
                .enumerate()
                .map(|(i, id)| v1::CategoryInfo {
                    id: Some((*id).into()),
                    name: if i == 0 {
                        "Windows Defender".into()
                    } else {
                        String::new()
                    },
                    category_type: if i == 0 {
                        v1::CategoryType::Product.into()
                    } else {
                        0
                    },
                })
                .collect(),
            custom: None,
        }
    }

    #[test]
    fn json_is_the_inspect_shape_plus_what_the_store_knows() {
        let view = UpdateDetailView::new(response()).unwrap();
        let json = serde_json::to_value(&view).unwrap();
        assert_eq!(json["update_id"], "a2fef9b0-7951-4c2c-a42b-9e351dd1c1fe");
        assert_eq!(json["revision"], 200);
        assert!(json.get("file").is_none(), "{json}");
        assert!(
            json["title"].as_str().unwrap().contains("Defender"),
            "{json}"
        );
        assert_eq!(json["revisions_held"], serde_json::json!([199, 200]));
        assert_eq!(
            json["superseded_by"],
            serde_json::json!(["266f6222-c89d-43f2-9f8a-69340271e677"])
        );
        let first = &json["resolved_categories"][0];
        assert_eq!(first["name"], "Windows Defender");
        assert_eq!(first["category_type"], "Product");
        assert!(json["files"].is_array());
        assert_eq!(json["content_sha256"].as_str().unwrap().len(), 64);
    }

    #[test]
    fn the_table_lists_everything_vertically() {
        let view = UpdateDetailView::new(response()).unwrap();
        let text = view.table().to_string();
        for expected in [
            "a2fef9b0-7951-4c2c-a42b-9e351dd1c1fe",
            "199, 200",
            "Windows Defender (Product)",
            "266f6222-c89d-43f2-9f8a-69340271e677",
            "document",
        ] {
            assert!(text.contains(expected), "{expected} missing:\n{text}");
        }
    }

    #[test]
    fn a_response_without_a_revision_is_an_error() {
        let error = UpdateDetailView::new(v1::GetUpdateResponse::default()).unwrap_err();
        assert!(error.to_string().contains("no revision"), "{error}");
    }

    #[test]
    fn wrapping_keeps_words_whole() {
        assert_eq!(wrap("aaa bbb ccc", 7), "aaa bbb\nccc");
        assert_eq!(wrap("  a   b ", 10), "a b");
        assert_eq!(wrap("abcdefghij k", 4), "abcdefghij\nk");
    }
}
