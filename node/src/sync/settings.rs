//! Sync settings (S1, S6): which updates enter the stores, and when syncs run.
//!
//! Products and classifications are chosen by category id or by name. A product selector
//! may name a company, a product family or a product: it selects that category and every
//! category below it, which is how choosing the product `Local publisher` selects the
//! custom updates published locally (S6). Category updates themselves always sync: they
//! are the tree operators choose from. An update that an included update bundles, or that
//! it needs as a prerequisite (a detectoid, say), comes along with it.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sitesync_metadata::{CategoryType, UpdateId, UpdateType};

use super::schedule::{RetryPolicy, Schedule};
use crate::store::{CatalogStore, StoreError};
use crate::upstream::TrackedRevision;

/// A category chosen by id or by (case-insensitive) title.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CategorySelector {
    Id(UpdateId),
    Name(String),
}

impl FromStr for CategorySelector {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.is_empty() {
            return Err("an empty category name: give a category id or its title".into());
        }
        Ok(match s.parse::<UpdateId>() {
            Ok(id) => Self::Id(id),
            Err(_) => Self::Name(s.to_owned()),
        })
    }
}

impl fmt::Display for CategorySelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Id(id) => id.fmt(f),
            Self::Name(name) => f.write_str(name),
        }
    }
}

/// What to sync and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncSettings {
    /// Empty: every product.
    pub products: Vec<CategorySelector>,
    /// Empty: every classification.
    pub classifications: Vec<CategorySelector>,
    /// Language tags (`en`, `de`); empty: every language.
    pub languages: Vec<String>,
    pub schedule: Schedule,
    pub retry: RetryPolicy,
    /// Bumped by every change, so a writer that read an older revision is refused and the
    /// sync manager knows the next sync must be full.
    pub revision: u64,
}

impl Default for SyncSettings {
    fn default() -> Self {
        Self {
            products: Vec::new(),
            classifications: Vec::new(),
            languages: Vec::new(),
            schedule: Schedule::default(),
            retry: RetryPolicy::default(),
            revision: 1,
        }
    }
}

impl SyncSettings {
    /// Whether the products name the built-in `Local publisher` company (S6).
    pub fn names_local_publisher(&self) -> bool {
        self.products.iter().any(|p| match p {
            CategorySelector::Id(id) => *id == sitesync_metadata::custom::LOCAL_PUBLISHER,
            CategorySelector::Name(name) => {
                name.eq_ignore_ascii_case(sitesync_metadata::custom::LOCAL_PUBLISHER_NAME)
            }
        })
    }

    /// Whether two settings select the same updates (the schedule aside).
    pub fn same_selection(&self, other: &Self) -> bool {
        self.products == other.products
            && self.classifications == other.classifications
            && self.languages == other.languages
    }
}

/// The categories `store` holds that `selectors` name (by id, or by title in any case), of
/// the kinds `of_kind` accepts: one pass over the store's latest revisions.
pub fn categories_in_store(
    store: &CatalogStore,
    selectors: &[CategorySelector],
    of_kind: impl Fn(Option<CategoryType>) -> bool,
) -> Result<HashSet<UpdateId>, StoreError> {
    let ids: HashSet<UpdateId> = selectors
        .iter()
        .filter_map(|s| match s {
            CategorySelector::Id(id) => Some(*id),
            CategorySelector::Name(_) => None,
        })
        .collect();
    let names: Vec<String> = selectors
        .iter()
        .filter_map(|s| match s {
            CategorySelector::Name(name) => Some(name.to_lowercase()),
            CategorySelector::Id(_) => None,
        })
        .collect();
    let mut found = HashSet::new();
    let mut after = None;
    loop {
        let page = store.summaries(after, 1_000)?;
        let Some(last) = page.last() else { break };
        after = Some(last.id.update_id);
        for s in page
            .iter()
            .filter(|s| s.update_type == UpdateType::Category && of_kind(s.category_type))
        {
            if ids.contains(&s.id.update_id) || names.contains(&s.title.to_lowercase()) {
                found.insert(s.id.update_id);
            }
        }
    }
    Ok(found)
}

/// A selector that names nothing in the upstream catalog.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{kind} `{selector}` is not in the upstream catalog; choose one of the {kind}s it offers (sitesyncctl updates list shows the categories)"
)]
pub struct UnknownCategory {
    pub kind: &'static str,
    pub selector: String,
}

/// The settings resolved against an upstream catalog's categories: the decision per update.
#[derive(Debug, Clone)]
pub struct CatalogFilter {
    /// `None`: every product.
    products: Option<HashSet<UpdateId>>,
    /// `None`: every classification.
    classifications: Option<HashSet<UpdateId>>,
    /// Lower-case tags; empty: every language.
    languages: Vec<String>,
}

impl CatalogFilter {
    /// Resolves the settings' selectors against the category updates of a catalog.
    pub fn resolve<'a>(
        settings: &SyncSettings,
        categories: impl IntoIterator<Item = &'a TrackedRevision>,
    ) -> Result<Self, UnknownCategory> {
        let categories: Vec<&TrackedRevision> = categories
            .into_iter()
            .filter(|r| r.update_type == UpdateType::Category)
            .collect();
        let is_product = |t: Option<CategoryType>| t.is_some_and(is_product);
        let is_classification =
            |t: Option<CategoryType>| t == Some(CategoryType::UpdateClassification);
        let products = resolve_selectors(&settings.products, &categories, "product", is_product)?;
        let classifications = resolve_selectors(
            &settings.classifications,
            &categories,
            "classification",
            is_classification,
        )?;
        Ok(Self {
            products: products.map(|chosen| with_descendants(chosen, &categories)),
            classifications,
            languages: settings
                .languages
                .iter()
                .map(|l| l.to_ascii_lowercase())
                .collect(),
        })
    }

    /// Whether the chosen products take in category `id` (every category when every
    /// product is chosen).
    pub fn takes_category(&self, id: UpdateId) -> bool {
        self.products.as_ref().is_none_or(|p| p.contains(&id))
    }

    /// What to ask an upstream server's update list for (GetRevisionIdList): the chosen
    /// products (with the categories below them) and classifications. The server lists only
    /// updates of a listed product **and** a listed classification, and everything when
    /// both lists are empty; so "every product" with chosen classifications lists every
    /// product category of `categories`, and the other way round.
    pub fn upstream_lists(&self, categories: &[TrackedRevision]) -> (Vec<UpdateId>, Vec<UpdateId>) {
        let of_kind = |wanted: fn(CategoryType) -> bool| -> Vec<UpdateId> {
            categories
                .iter()
                .filter(|c| c.category_type.is_some_and(wanted))
                .map(|c| c.id.update_id)
                .collect()
        };
        let chosen = |set: &HashSet<UpdateId>| -> Vec<UpdateId> {
            let mut ids: Vec<UpdateId> = set.iter().copied().collect();
            ids.sort_unstable();
            ids
        };
        match (&self.products, &self.classifications) {
            (None, None) => (Vec::new(), Vec::new()),
            (products, classifications) => (
                products
                    .as_ref()
                    .map(chosen)
                    .unwrap_or_else(|| of_kind(is_product)),
                classifications
                    .as_ref()
                    .map(chosen)
                    .unwrap_or_else(|| of_kind(|t| t == CategoryType::UpdateClassification)),
            ),
        }
    }

    /// Whether an update matches on its own (before following bundles and prerequisites).
    pub fn matches(&self, revision: &Candidate) -> bool {
        if revision.update_type == UpdateType::Category {
            return true;
        }
        let in_set = |set: &Option<HashSet<UpdateId>>| match set {
            None => true,
            Some(set) => revision.categories.iter().any(|c| set.contains(c)),
        };
        let language = self.languages.is_empty()
            || revision
                .languages
                .iter()
                .any(|l| self.languages.contains(&l.to_ascii_lowercase()));
        in_set(&self.products) && in_set(&self.classifications) && language
    }
}

/// Whether a category is a product or a level above products.
fn is_product(category: CategoryType) -> bool {
    matches!(
        category,
        CategoryType::Company | CategoryType::ProductFamily | CategoryType::Product
    )
}

fn resolve_selectors(
    selectors: &[CategorySelector],
    categories: &[&TrackedRevision],
    kind: &'static str,
    of_kind: impl Fn(Option<CategoryType>) -> bool,
) -> Result<Option<HashSet<UpdateId>>, UnknownCategory> {
    if selectors.is_empty() {
        return Ok(None);
    }
    let mut chosen = HashSet::new();
    for selector in selectors {
        let found: Vec<UpdateId> = categories
            .iter()
            .filter(|c| of_kind(c.category_type))
            .filter(|c| match selector {
                CategorySelector::Id(id) => c.id.update_id == *id,
                CategorySelector::Name(name) => c.title.eq_ignore_ascii_case(name),
            })
            .map(|c| c.id.update_id)
            .collect();
        if found.is_empty() {
            return Err(UnknownCategory {
                kind,
                selector: selector.to_string(),
            });
        }
        chosen.extend(found);
    }
    Ok(Some(chosen))
}

/// The chosen categories and every category below them (a category names its parents in
/// its `IsCategory` prerequisites).
fn with_descendants(
    mut chosen: HashSet<UpdateId>,
    categories: &[&TrackedRevision],
) -> HashSet<UpdateId> {
    let mut children: HashMap<UpdateId, Vec<UpdateId>> = HashMap::new();
    for category in categories {
        for parent in &category.categories {
            children
                .entry(*parent)
                .or_default()
                .push(category.id.update_id);
        }
    }
    let mut pending: Vec<UpdateId> = chosen.iter().copied().collect();
    while let Some(parent) = pending.pop() {
        for child in children.get(&parent).into_iter().flatten() {
            if chosen.insert(*child) {
                pending.push(*child);
            }
        }
    }
    chosen
}

/// What the selection needs to know of one upstream revision: far less than a
/// [`TrackedRevision`], so a whole catalog of them fits in a few megabytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub update_id: UpdateId,
    pub update_type: UpdateType,
    pub categories: Vec<UpdateId>,
    pub languages: Vec<String>,
    /// What it bundles and what it needs as prerequisites.
    pub needs: Vec<UpdateId>,
}

impl From<TrackedRevision> for Candidate {
    fn from(revision: TrackedRevision) -> Self {
        let mut needs = revision.bundled;
        needs.extend(revision.prerequisites);
        Self {
            update_id: revision.id.update_id,
            update_type: revision.update_type,
            categories: revision.categories,
            languages: revision.languages,
            needs,
        }
    }
}

/// The updates that enter the stores: those the filter matches (in any of their
/// revisions), plus everything they bundle or need as prerequisites, transitively.
pub fn included_updates(filter: &CatalogFilter, candidates: &[Candidate]) -> HashSet<UpdateId> {
    let mut included = HashSet::new();
    let mut needs: HashMap<UpdateId, Vec<UpdateId>> = HashMap::new();
    for candidate in candidates {
        let id = candidate.update_id;
        if filter.matches(candidate) {
            included.insert(id);
        }
        if !candidate.needs.is_empty() {
            needs.entry(id).or_default().extend(&candidate.needs);
        }
    }
    let mut pending: Vec<UpdateId> = included.iter().copied().collect();
    while let Some(update) = pending.pop() {
        for needed in needs.get(&update).into_iter().flatten() {
            if included.insert(*needed) {
                pending.push(*needed);
            }
        }
    }
    included
}
