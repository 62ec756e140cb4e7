//! What listing updates needs: category selectors resolved against a store, the summary
//! on the wire, and the cached set of superseded updates per store.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use sitesync_metadata::{CategoryType, UpdateId};
use sitesync_proto::v1;
use tonic::Status;

use crate::store::{CatalogStore, UpdateSummary};
use crate::sync::settings::{CategorySelector, categories_in_store};

/// The superseded set of a store as of a change-log position.
type SupersededAt = (u64, Arc<HashSet<UpdateId>>);

/// Which updates some held update supersedes, per store (update server, site database):
/// listing filters on it, and recomputing it costs a walk of the store, so it is kept until
/// the store's log moves.
#[derive(Debug, Clone, Default)]
pub(super) struct SupersededCache(Arc<Mutex<[Option<SupersededAt>; 3]>>);

impl SupersededCache {
    pub(super) fn superseded_in(
        &self,
        store: &CatalogStore,
        slot: usize,
    ) -> Result<Arc<HashSet<UpdateId>>, Status> {
        let position = store.last_sequence();
        let mut cache = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, set)) = &cache[slot]
            && *at == position
        {
            return Ok(set.clone());
        }
        let mut set = HashSet::new();
        let mut after = None;
        loop {
            let page = store.summaries(after, 1_000)?;
            let Some(last) = page.last() else { break };
            after = Some(last.id.update_id);
            for summary in page {
                set.extend(summary.superseded);
            }
        }
        let set = Arc::new(set);
        cache[slot] = Some((position, set.clone()));
        Ok(set)
    }
}

pub(super) fn is_product(t: Option<CategoryType>) -> bool {
    matches!(
        t,
        Some(CategoryType::Company | CategoryType::ProductFamily | CategoryType::Product)
    )
}

/// Resolves selectors against the store's own category updates.
pub(super) fn resolve_categories(
    store: &CatalogStore,
    selectors: &[v1::CategorySelector],
    field: &str,
    of_kind: impl Fn(Option<CategoryType>) -> bool,
) -> Result<Option<HashSet<UpdateId>>, Status> {
    if selectors.is_empty() {
        return Ok(None);
    }
    let selectors = selectors
        .iter()
        .map(|selector| match &selector.by {
            Some(v1::category_selector::By::Id(id)) => {
                Ok(CategorySelector::Id(UpdateId::try_from(id.clone())?))
            }
            Some(v1::category_selector::By::Name(name)) => Ok(CategorySelector::Name(name.clone())),
            None => Err(Status::invalid_argument(format!(
                "{field}: a selector needs an id or a name"
            ))),
        })
        .collect::<Result<Vec<_>, Status>>()?;
    let found = categories_in_store(store, &selectors, of_kind)?;
    if found.is_empty() {
        return Err(Status::not_found(format!(
            "{field}: no such category in this store; `sitesyncctl updates list` shows the categories it holds"
        )));
    }
    Ok(Some(found))
}

pub(super) fn wire_summary(summary: &UpdateSummary, is_superseded: bool) -> v1::UpdateSummary {
    use sitesync_proto::convert::{enum_to_wire, optional_enum_to_wire};
    v1::UpdateSummary {
        id: Some(summary.id.into()),
        update_type: enum_to_wire(summary.update_type),
        publication_state: enum_to_wire(summary.publication_state),
        title: summary.title.clone(),
        kb_article: summary.kb_article.clone(),
        msrc_severity: optional_enum_to_wire(summary.msrc_severity),
        category_type: optional_enum_to_wire(summary.category_type),
        categories: summary.categories.iter().map(|c| (*c).into()).collect(),
        superseded: summary.superseded.iter().map(|c| (*c).into()).collect(),
        is_superseded,
    }
}
