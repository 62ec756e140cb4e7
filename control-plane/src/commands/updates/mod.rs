//! `sitesyncctl updates list|show`: the updates a node's store holds, from
//! `Admin.ListUpdates` and `Admin.GetUpdate`.

use std::collections::HashMap;

use sitesync_metadata::{CategoryType, UpdateId};
use sitesync_proto::convert::optional_enum;
use sitesync_proto::{MAX_PAGE_SIZE, v1};

use crate::cli::StoreArg;
use crate::client::{Node, unary};
use crate::commands::next_page_token;

pub mod list;
pub mod show;

/// The most category updates fetched to name products and classifications in listings; a
/// store with more shows ids where names are missing rather than paging without end.
const MAX_CATEGORIES: usize = 10_000;

/// `--store`; absent lets the node choose (the site database at a site, the update-server
/// store at an internet-facing node).
pub fn store_selector(store: Option<StoreArg>) -> v1::StoreSelector {
    match store {
        None => v1::StoreSelector::Unspecified,
        Some(StoreArg::UpdateServer) => v1::StoreSelector::UpdateServer,
        Some(StoreArg::SiteDatabase) => v1::StoreSelector::SiteDatabase,
        Some(StoreArg::Publications) => v1::StoreSelector::Publications,
    }
}

/// A category named on the command line: a GUID is an id, anything else a name (which the
/// node compares case-insensitively).
pub fn category_selector(text: &str) -> v1::CategorySelector {
    use v1::category_selector::By;
    let text = text.trim();
    let by = match text.parse::<UpdateId>() {
        Ok(id) => By::Id(id.into()),
        Err(_) => By::Name(text.to_owned()),
    };
    v1::CategorySelector { by: Some(by) }
}

/// A selector as people and `--products` write it: the name, or the id.
pub fn selector_text(selector: &v1::CategorySelector) -> String {
    use v1::category_selector::By;
    match &selector.by {
        Some(By::Name(name)) => name.clone(),
        Some(By::Id(id)) => id.guid.to_ascii_lowercase(),
        None => "(empty selector)".to_owned(),
    }
}

/// Category ids to titles and levels, for naming products and classifications.
#[derive(Debug, Default)]
pub struct CategoryNames {
    by_id: HashMap<String, (String, Option<CategoryType>)>,
}

impl CategoryNames {
    /// Every category update of `store`, up to [`MAX_CATEGORIES`].
    pub async fn fetch(node: &mut Node, store: v1::StoreSelector) -> anyhow::Result<Self> {
        let mut names = Self::default();
        let mut request = v1::ListUpdatesRequest {
            filter: Some(v1::UpdateFilter {
                update_types: vec![v1::UpdateType::Category.into()],
                ..Default::default()
            }),
            store: store.into(),
            page_size: MAX_PAGE_SIZE,
            page_token: String::new(),
        };
        loop {
            let page = node
                .admin
                .list_updates(unary(request.clone()))
                .await
                .map_err(|status| node.failed("Admin.ListUpdates", status))?
                .into_inner();
            for summary in &page.updates {
                names.insert(summary);
            }
            if names.by_id.len() >= MAX_CATEGORIES {
                return Ok(names);
            }
            match next_page_token(&request.page_token, page.next_page_token) {
                Some(token) => request.page_token = token,
                None => return Ok(names),
            }
        }
    }

    pub fn insert(&mut self, summary: &v1::UpdateSummary) {
        let Some(id) = summary.id.as_ref().and_then(|r| r.update_id.as_ref()) else {
            return;
        };
        let level = optional_enum::<CategoryType>(summary.category_type, "category_type")
            .ok()
            .flatten();
        self.by_id
            .insert(id.guid.to_ascii_lowercase(), (summary.title.clone(), level));
    }

    /// The names of the categories among `ids` that are at `level`.
    pub fn names_at(&self, ids: &[v1::UpdateId], level: CategoryType) -> Vec<String> {
        ids.iter()
            .filter_map(|id| self.by_id.get(&id.guid.to_ascii_lowercase()))
            .filter(|(_, l)| *l == Some(level))
            .map(|(name, _)| name.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_are_ids_or_names() {
        use v1::category_selector::By;
        let id = category_selector("{A2FEF9B0-7951-4C2C-A42B-9E351DD1C1FE}");
        assert_eq!(
            id.by,
            Some(By::Id(v1::UpdateId {
                guid: "a2fef9b0-7951-4c2c-a42b-9e351dd1c1fe".into()
            }))
        );
        assert_eq!(selector_text(&id), "a2fef9b0-7951-4c2c-a42b-9e351dd1c1fe");
        let name = category_selector(" Security Updates ");
        assert_eq!(name.by, Some(By::Name("Security Updates".into())));
        assert_eq!(selector_text(&name), "Security Updates");
    }
}
