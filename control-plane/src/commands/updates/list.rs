//! `sitesyncctl updates list`: the latest revision of each matching update, following page
//! tokens up to `--limit`. Products and classifications are named by looking up the store's
//! category updates once, since summaries carry only category ids.

use std::process::ExitCode;

use serde::Serialize;
use sitesync_metadata::{CategoryType, MsrcSeverity, PublicationState, UpdateType};
use sitesync_proto::convert::optional_enum;
use sitesync_proto::v1;

use super::{CategoryNames, category_selector, store_selector};
use crate::cli::{MsrcSeverityArg, UpdateTypeArg, UpdatesListArgs};
use crate::client::{Node, unary};
use crate::commands::catalog::view;
use crate::commands::{limit, next_page_token, page_size};
use crate::output::{self, OutputFormat, RowSink};

/// Longest title shown in the table, in characters.
const TITLE_WIDTH: usize = 60;
/// Longest product or classification list shown in the table.
const NAMES_WIDTH: usize = 32;

pub async fn run(
    mut node: Node,
    args: &UpdatesListArgs,
    output: OutputFormat,
) -> anyhow::Result<ExitCode> {
    let store = store_selector(args.store);
    let mut request = v1::ListUpdatesRequest {
        filter: Some(filter(args)),
        store: store.into(),
        page_size: 0,
        page_token: String::new(),
    };
    let mut remaining = limit(args.limit);
    let mut names: Option<CategoryNames> = None;
    let mut sink = RowSink::new(
        output,
        [
            "update id",
            "rev",
            "title",
            "kb",
            "classification",
            "product",
            "state",
            "severity",
        ],
        Some("no updates match"),
    )?;
    while remaining > 0 {
        request.page_size = page_size(remaining);
        let page = node
            .admin
            .list_updates(unary(request.clone()))
            .await
            .map_err(|status| node.failed("Admin.ListUpdates", status))?
            .into_inner();
        if names.is_none() && !page.updates.is_empty() {
            names = Some(CategoryNames::fetch(&mut node, store).await?);
        }
        let names = names.as_ref();
        for summary in page.updates.iter().take(remaining) {
            sink.push(
                &UpdateSummaryView::new(summary, names.unwrap_or(&CategoryNames::default())),
                table_row,
            )?;
            remaining -= 1;
        }
        match next_page_token(&request.page_token, page.next_page_token) {
            Some(token) => request.page_token = token,
            None => break,
        }
    }
    sink.finish()?;
    Ok(ExitCode::SUCCESS)
}

/// The filter for the flags; flags not given leave their filter out.
fn filter(args: &UpdatesListArgs) -> v1::UpdateFilter {
    let selectors = |names: &[String]| -> Vec<v1::CategorySelector> {
        names
            .iter()
            .filter(|n| !n.trim().is_empty())
            .map(|n| category_selector(n))
            .collect()
    };
    v1::UpdateFilter {
        products: selectors(&args.products),
        classifications: selectors(&args.classifications),
        kb_article: args.kb.as_deref().map(|kb| {
            let kb = kb.trim();
            kb.strip_prefix("KB")
                .or_else(|| kb.strip_prefix("kb"))
                .unwrap_or(kb)
                .to_owned()
        }),
        text: args.text.clone(),
        publisher: args.publisher.clone(),
        superseded: args.superseded.then_some(true),
        expired: args.expired.then_some(true),
        update_types: args
            .types
            .iter()
            .map(|t| {
                match t {
                    UpdateTypeArg::Software => v1::UpdateType::Software,
                    UpdateTypeArg::Driver => v1::UpdateType::Driver,
                    UpdateTypeArg::Category => v1::UpdateType::Category,
                    UpdateTypeArg::Detectoid => v1::UpdateType::Detectoid,
                }
                .into()
            })
            .collect(),
        min_msrc_severity: match args.min_severity {
            None => v1::MsrcSeverity::Unspecified,
            Some(MsrcSeverityArg::Low) => v1::MsrcSeverity::Low,
            Some(MsrcSeverityArg::Moderate) => v1::MsrcSeverity::Moderate,
            Some(MsrcSeverityArg::Important) => v1::MsrcSeverity::Important,
            Some(MsrcSeverityArg::Critical) => v1::MsrcSeverity::Critical,
        }
        .into(),
    }
}

/// One update as `updates list --output json` prints it. Enumerations are spelled as
/// `catalog inspect` spells them (the update XML's spelling).
#[derive(Debug, Serialize)]
pub struct UpdateSummaryView {
    pub update_id: String,
    pub revision: u32,
    pub title: String,
    /// `Software`, `Driver`, `Category`, `Detectoid`.
    pub update_type: &'static str,
    /// `Published` or `Expired`.
    pub publication_state: &'static str,
    pub kb_article: Option<String>,
    pub msrc_severity: Option<&'static str>,
    pub category_type: Option<&'static str>,
    /// The ids of the categories it belongs to.
    pub categories: Vec<String>,
    /// The names of those categories that are products, where the store holds them.
    pub products: Vec<String>,
    /// The names of those categories that are classifications, where the store holds them.
    pub classifications: Vec<String>,
    /// Updates this one supersedes.
    pub superseded: Vec<String>,
    /// Another held update supersedes this one.
    pub is_superseded: bool,
}

impl UpdateSummaryView {
    pub fn new(summary: &v1::UpdateSummary, names: &CategoryNames) -> Self {
        let id = summary.id.as_ref();
        Self {
            update_id: id
                .and_then(|r| r.update_id.as_ref())
                .map_or_else(String::new, |u| u.guid.to_ascii_lowercase()),
            revision: id.map_or(0, |r| r.revision),
            title: crate::client::printable(&summary.title),
            update_type: optional_enum::<UpdateType>(summary.update_type, "")
                .ok()
                .flatten()
                .map_or("Unknown", view::update_type_name),
            publication_state: optional_enum::<PublicationState>(summary.publication_state, "")
                .ok()
                .flatten()
                .map_or("Unknown", view::publication_state_name),
            kb_article: summary.kb_article.clone(),
            msrc_severity: optional_enum::<MsrcSeverity>(summary.msrc_severity, "")
                .ok()
                .flatten()
                .map(view::severity_name),
            category_type: optional_enum::<CategoryType>(summary.category_type, "")
                .ok()
                .flatten()
                .map(view::category_type_name),
            categories: summary
                .categories
                .iter()
                .map(|c| c.guid.to_ascii_lowercase())
                .collect(),
            products: names.names_at(&summary.categories, CategoryType::Product),
            classifications: names
                .names_at(&summary.categories, CategoryType::UpdateClassification),
            superseded: summary
                .superseded
                .iter()
                .map(|c| c.guid.to_ascii_lowercase())
                .collect(),
            is_superseded: summary.is_superseded,
        }
    }

    fn state(&self) -> String {
        if self.is_superseded {
            format!("{}, superseded", self.publication_state)
        } else {
            self.publication_state.to_owned()
        }
    }
}

fn table_row(update: &UpdateSummaryView) -> [String; 8] {
    let or_dash = |text: String| {
        if text.is_empty() {
            "-".to_owned()
        } else {
            text
        }
    };
    [
        update.update_id.clone(),
        update.revision.to_string(),
        output::truncate(&update.title, TITLE_WIDTH),
        or_dash(update.kb_article.clone().unwrap_or_default()),
        or_dash(output::truncate(
            &update.classifications.join(", "),
            NAMES_WIDTH,
        )),
        or_dash(output::truncate(&update.products.join(", "), NAMES_WIDTH)),
        update.state(),
        update.msrc_severity.unwrap_or("-").to_owned(),
    ]
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::cli::{Cli, Command, UpdatesCommand};

    fn parse(args: &[&str]) -> UpdatesListArgs {
        let cli =
            Cli::try_parse_from([&["sitesyncctl", "updates", "list"], args].concat()).unwrap();
        match cli.command {
            Command::Updates(UpdatesCommand::List(args)) => args,
            other => panic!("{other:?}"),
        }
    }

    fn id(guid: &str) -> v1::UpdateId {
        v1::UpdateId { guid: guid.into() }
    }

    const WINDOWS: &str = "6407468e-edc7-4ecd-8c32-521f64cee65e";
    const SECURITY: &str = "0fa1201d-4330-4fa8-8ae9-b877473b6441";

    #[test]
    fn flags_become_a_filter() {
        let args = parse(&[
            "--product",
            "Windows 10,Office 2007",
            "--classification",
            SECURITY,
            "--kb",
            "KB890830",
            "--text",
            "malicious",
            "--superseded",
            "--type",
            "software",
            "--min-severity",
            "important",
            "--store",
            "update-server",
            "--limit",
            "0",
        ]);
        let filter = filter(&args);
        assert_eq!(filter.products.len(), 2);
        assert_eq!(filter.classifications, [category_selector(SECURITY)]);
        assert_eq!(filter.kb_article.as_deref(), Some("890830"));
        assert_eq!(filter.text.as_deref(), Some("malicious"));
        assert_eq!(filter.superseded, Some(true));
        assert_eq!(filter.expired, None);
        assert_eq!(filter.update_types, [v1::UpdateType::Software as i32]);
        assert_eq!(filter.min_msrc_severity(), v1::MsrcSeverity::Important);
        assert_eq!(store_selector(args.store), v1::StoreSelector::UpdateServer);
        assert_eq!(limit(args.limit), usize::MAX);

        let defaults = parse(&[]);
        assert_eq!(filter_of(&defaults), v1::UpdateFilter::default());
        assert_eq!(defaults.limit, 100);
    }

    fn filter_of(args: &UpdatesListArgs) -> v1::UpdateFilter {
        filter(args)
    }

    #[test]
    fn summaries_name_products_and_classifications() {
        let mut names = CategoryNames::default();
        for (guid, title, level) in [
            (WINDOWS, "Windows 10", v1::CategoryType::Product),
            (
                SECURITY,
                "Security Updates",
                v1::CategoryType::UpdateClassification,
            ),
        ] {
            names.insert(&v1::UpdateSummary {
                id: Some(v1::RevisionId {
                    update_id: Some(id(guid)),
                    revision: 1,
                }),
                title: title.into(),
                category_type: level.into(),
                update_type: v1::UpdateType::Category.into(),
                ..Default::default()
            });
        }
        let summary = v1::UpdateSummary {
            id: Some(v1::RevisionId {
                update_id: Some(id("A2FEF9B0-7951-4C2C-A42B-9E351DD1C1FE")),
                revision: 200,
            }),
            update_type: v1::UpdateType::Software.into(),
            publication_state: v1::PublicationState::Expired.into(),
            title: "Definition Update for Windows Defender".into(),
            kb_article: Some("915597".into()),
            msrc_severity: v1::MsrcSeverity::Critical.into(),
            category_type: 0,
            categories: vec![
                id(WINDOWS),
                id(SECURITY),
                id("00000000-0000-0000-0000-000000000001"),
            ],
            superseded: vec![],
            is_superseded: true,
        };
        let view = UpdateSummaryView::new(&summary, &names);
        let json = serde_json::to_value(&view).unwrap();
        assert_eq!(json["update_id"], "a2fef9b0-7951-4c2c-a42b-9e351dd1c1fe");
        assert_eq!(json["revision"], 200);
        assert_eq!(json["update_type"], "Software");
        assert_eq!(json["publication_state"], "Expired");
        assert_eq!(json["msrc_severity"], "Critical");
        assert_eq!(json["category_type"], serde_json::Value::Null);
        assert_eq!(json["products"], serde_json::json!(["Windows 10"]));
        assert_eq!(
            json["classifications"],
            serde_json::json!(["Security Updates"])
        );
        assert_eq!(json["categories"].as_array().unwrap().len(), 3);
        assert_eq!(json["is_superseded"], true);
        assert_eq!(
            table_row(&view),
            [
                "a2fef9b0-7951-4c2c-a42b-9e351dd1c1fe",
                "200",
                "Definition Update for Windows Defender",
                "915597",
                "Security Updates",
                "Windows 10",
                "Expired, superseded",
                "Critical",
            ]
        );
    }
}
