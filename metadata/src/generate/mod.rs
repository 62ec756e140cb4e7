//! The catalog generator: deterministic, realistic update catalogs for the demo, tests and
//! benchmarks.
//!
//! A [`CatalogSpec`] names a catalog (how many documents, which seed). [`CatalogGenerator`]
//! yields its [`GeneratedDocument`]s one at a time, so a 100,000-document catalog is never
//! held in memory; [`write_catalog`] writes them to a directory as
//! `<update id>-r<revision>.xml`, the layout of a directory catalog source. [`CatalogChanges`]
//! derives a small, deterministic set of changes to a generated catalog (new updates, new
//! revisions, expirations, deletions) for sync tests.
//!
//! **What `updates: N` counts:** documents. Every file written is one revision of one update,
//! and the catalog has exactly `N` of them: the category updates first (companies, product
//! families, products, update classifications — 51 documents, the same for every seed; a
//! catalog smaller than that is a prefix of them), then detectoids (about one in 150), then a
//! stream of software updates, drivers, bundles with their bundled children, and later
//! revisions (published or expired) of updates already in the stream.
//!
//! The documents follow the real Microsoft update XML format (see
//! `metadata/tests/fixtures/`): category prerequisites as `AtLeastOne IsCategory="true"`
//! groups (one product, one classification), KB articles, security bulletins and MSRC
//! severities, localized titles in up to 24 languages, files with SHA-1 and SHA-256 digests,
//! supersedence chains within a product, bundles naming their children by id and revision,
//! revisions 100/101/200…, and expired revisions. Bundled children carry their product and
//! classification in plain `AtLeastOne` groups, as real children do: they are reached through
//! their bundle, not through the category tree. Sizes: over 90% of documents are 0.5–5 KB, about
//! 6% carry many languages (5–20 KB), and about 0.5% exceed 100 KB (large applicability
//! rules, sometimes with thousands of superseded updates).
//!
//! **Parts**, in the order data flows through them:
//! - `stream` ([`CatalogGenerator`]) decides what each position of the catalog holds: a
//!   category, a new update, a bundle and its children, or a later revision of an earlier
//!   update, and the date it carries. It asks `plan` for each new update and `render` for
//!   each document, and yields the documents in catalog order.
//! - `plan` designs each new update as an `UpdatePlan`: product, classification, KB article,
//!   title, languages, supersedence, bundled children; everything that stays the same across
//!   its revisions.
//! - `render` writes a category, or a plan at a given revision and publication state, as the
//!   XML of a [`GeneratedDocument`].
//!
//! They draw on three shared parts: `taxonomy`, the fixed tables (the category tree,
//! languages, drivers, file names); `rng`, the random source; and `timeline`, the span of
//! dates and their formatting. This module is the public surface: the types above, and
//! [`CatalogChanges`], which runs the stream once more to sample plans, renders newer
//! revisions of them, and plans a few new updates dated after the catalog.
//!
//! Determinism: everything comes from [`SplitMix64`], implemented in `rng` so that a seed
//! gives the same bytes whatever crate versions are in the lock file. Nothing reads the clock.

mod plan;
pub(crate) mod render;
mod rng;
mod stream;
mod taxonomy;
mod timeline;

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::Path;

use crate::model::{PublicationState, RevisionId, UpdateId, UpdateType};

use plan::UpdatePlan;
use render::document_for;
pub use rng::SplitMix64;
use rng::mix;
pub use stream::CatalogGenerator;
use taxonomy::CATEGORY_DOCUMENTS;
use timeline::{DAY_MS, TIMELINE_END};

/// Which catalog to generate. The same spec always gives the same bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CatalogSpec {
    /// The number of documents (revisions), category updates included; see the module
    /// documentation.
    pub updates: usize,
    pub seed: u64,
}

impl CatalogSpec {
    /// The seed `sitesyncctl catalog generate` uses when none is given.
    pub const DEFAULT_SEED: u64 = 2007;

    pub fn new(updates: usize, seed: u64) -> Self {
        Self { updates, seed }
    }

    /// The catalog's documents, generated lazily in catalog order.
    pub fn documents(&self) -> CatalogGenerator {
        CatalogGenerator::new(*self, false)
    }

    /// How many category documents open every catalog.
    pub fn category_documents() -> usize {
        CATEGORY_DOCUMENTS
    }
}

/// One generated revision document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneratedDocument {
    /// `<update id, lower case>-r<revision>.xml`, the name a directory catalog uses.
    pub file_name: String,
    pub id: RevisionId,
    /// What the document declares, so callers can count without parsing.
    pub update_type: UpdateType,
    pub publication_state: PublicationState,
    /// The UTF-8 document, one line, no trailing newline (like the real ones).
    pub xml: Vec<u8>,
}

impl GeneratedDocument {
    /// The file name a directory catalog gives a revision.
    pub fn file_name_for(id: RevisionId) -> String {
        format!("{}-r{}.xml", id.update_id, id.revision)
    }
}

/// Counts over a set of generated documents.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CatalogSummary {
    pub documents: usize,
    pub bytes: u64,
    pub categories: usize,
    pub software: usize,
    pub drivers: usize,
    pub detectoids: usize,
    /// Revisions whose publication state is `Expired`.
    pub expired: usize,
    pub largest_document: u64,
}

impl CatalogSummary {
    pub fn record(&mut self, document: &GeneratedDocument) {
        let len = document.xml.len() as u64;
        self.documents += 1;
        self.bytes += len;
        self.largest_document = self.largest_document.max(len);
        match document.update_type {
            UpdateType::Category => self.categories += 1,
            UpdateType::Software => self.software += 1,
            UpdateType::Driver => self.drivers += 1,
            UpdateType::Detectoid => self.detectoids += 1,
        }
        if document.publication_state == PublicationState::Expired {
            self.expired += 1;
        }
    }
}

/// How far [`write_catalog`] has come; passed to its progress callback after every document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteProgress {
    pub written: usize,
    pub total: usize,
    pub bytes: u64,
}

/// Writes the catalog of `spec` into `dir` (created if missing), one file per document.
/// Files of the same name are overwritten; other files are left alone.
pub fn write_catalog(
    dir: &Path,
    spec: &CatalogSpec,
    mut progress: impl FnMut(WriteProgress),
) -> io::Result<CatalogSummary> {
    fs::create_dir_all(dir)?;
    let mut summary = CatalogSummary::default();
    for document in spec.documents() {
        fs::write(dir.join(&document.file_name), &document.xml)?;
        summary.record(&document);
        progress(WriteProgress {
            written: summary.documents,
            total: spec.updates,
            bytes: summary.bytes,
        });
    }
    Ok(summary)
}

/// A small, deterministic set of changes to a generated catalog, as an upstream would
/// publish them after the catalog was taken: what later sync tests feed a top site.
///
/// Every update named here is distinct: no update is both revised and expired, or expired and
/// deleted. If the base catalog has too few updates, the lists are shorter than asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogChanges {
    /// Updates that are not in the base catalog (their first revision).
    pub new_updates: Vec<GeneratedDocument>,
    /// A newer, published revision of updates in the base catalog.
    pub new_revisions: Vec<GeneratedDocument>,
    /// A newer revision of updates in the base catalog whose publication state is `Expired`.
    pub expired: Vec<GeneratedDocument>,
    /// Updates of the base catalog the upstream no longer offers (every revision goes).
    pub deleted: Vec<UpdateId>,
}

impl CatalogChanges {
    /// Derives up to `per_kind` changes of each kind from the catalog of `base`; `seed`
    /// chooses which. Software updates and drivers (not bundled children, detectoids or
    /// categories) are revised, expired and deleted. This regenerates the base catalog once,
    /// keeping only a small sample in memory.
    pub fn derive(base: &CatalogSpec, per_kind: usize, seed: u64) -> Self {
        let mut generator = CatalogGenerator::new(*base, true);
        let mut sampler = SplitMix64::new(mix(base.seed, seed ^ 0xC4A4_6E5C_0000_0001));
        // Reservoir sampling over eligible updates, with headroom for the ones that turn out
        // expired later in the catalog.
        let capacity = per_kind * 4;
        let mut reservoir: Vec<Candidate> = Vec::with_capacity(capacity);
        let mut positions: HashMap<UpdateId, usize> = HashMap::new();
        let mut eligible_seen = 0u64;

        while let Some((document, plan)) = generator.next_tracked() {
            if let Some(&position) = positions.get(&document.id.update_id) {
                let candidate = &mut reservoir[position];
                candidate.latest = candidate.latest.max(document.id.revision);
                candidate.expired |= document.publication_state == PublicationState::Expired;
            }
            let Some(plan) = plan else { continue };
            eligible_seen += 1;
            let candidate = Candidate {
                latest: document.id.revision,
                expired: document.publication_state == PublicationState::Expired,
                plan,
            };
            if reservoir.len() < capacity {
                positions.insert(candidate.plan.id, reservoir.len());
                reservoir.push(candidate);
            } else if capacity > 0 {
                let slot = sampler.below(eligible_seen) as usize;
                if slot < capacity {
                    positions.remove(&reservoir[slot].plan.id);
                    positions.insert(candidate.plan.id, slot);
                    reservoir[slot] = candidate;
                }
            }
        }

        let mut live = reservoir.into_iter().filter(|c| !c.expired);
        let tax = &generator.planner.tax;
        let when = TIMELINE_END + 7 * DAY_MS;
        let revise = |candidate: Candidate, state| {
            let revision = candidate.latest + 1;
            document_for(tax, &candidate.plan, revision, state, when)
        };
        let new_revisions: Vec<_> = live
            .by_ref()
            .take(per_kind)
            .map(|c| revise(c, PublicationState::Published))
            .collect();
        let expired: Vec<_> = live
            .by_ref()
            .take(per_kind)
            .map(|c| revise(c, PublicationState::Expired))
            .collect();
        let deleted: Vec<_> = live.take(per_kind).map(|c| c.plan.id).collect();

        let planner = &mut generator.planner;
        planner.rng = SplitMix64::new(mix(base.seed, seed ^ 0xC4A4_6E5C_0000_0002));
        let new_updates = (0..per_kind)
            .map(|i| {
                let when = TIMELINE_END + (i as i64 + 1) * DAY_MS;
                let plan = planner.plan_software(when, None);
                document_for(
                    &planner.tax,
                    &plan,
                    plan.first_revision,
                    PublicationState::Published,
                    when,
                )
            })
            .collect();

        Self {
            new_updates,
            new_revisions,
            expired,
            deleted,
        }
    }

    /// Every new document: new updates, new revisions, expired revisions.
    pub fn documents(&self) -> impl Iterator<Item = &GeneratedDocument> {
        self.new_updates
            .iter()
            .chain(&self.new_revisions)
            .chain(&self.expired)
    }

    /// Applies the changes to a directory catalog: writes every new document and removes
    /// every revision file of the deleted updates.
    pub fn apply_to_dir(&self, dir: &Path) -> io::Result<()> {
        for document in self.documents() {
            fs::write(dir.join(&document.file_name), &document.xml)?;
        }
        if self.deleted.is_empty() {
            return Ok(());
        }
        let prefixes: Vec<String> = self.deleted.iter().map(|id| format!("{id}-r")).collect();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.ends_with(".xml") && prefixes.iter().any(|p| name.starts_with(p.as_str())) {
                fs::remove_file(entry.path())?;
            }
        }
        Ok(())
    }
}

struct Candidate {
    plan: UpdatePlan,
    latest: u32,
    expired: bool,
}
