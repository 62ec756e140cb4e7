//! The catalog in order: [`CatalogGenerator`] decides what each position of a catalog holds
//! and produces it when asked.
//!
//! A catalog opens with the category documents of the taxonomy, then a run of detectoids
//! (which later updates may require), then a mix drawn per position: new software updates,
//! drivers, more detectoids, bundles with their children, and later revisions (published or
//! expired) of updates published earlier. New updates come from the planner; every document
//! comes from the renderer as soon as it is planned. Creation dates spread evenly over the
//! timeline. Only a bounded pool of recent updates is kept for later revisions, so a
//! catalog of any size streams in constant memory.

use std::collections::VecDeque;
use std::fmt;

use crate::model::PublicationState;

use super::plan::{PlanKind, Planner, UpdatePlan};
use super::render::{document_for, render_category};
use super::timeline::{TIMELINE_END, TIMELINE_START};
use super::{CatalogSpec, GeneratedDocument};

/// Lazily generates the documents of one [`CatalogSpec`]; see [`CatalogSpec::documents`].
pub struct CatalogGenerator {
    spec: CatalogSpec,
    pub(super) planner: Planner,
    emitted: usize,
    /// Documents already planned but not yet yielded (a bundle's children and the bundle).
    pending: VecDeque<(GeneratedDocument, Option<UpdatePlan>)>,
    detectoid_target: usize,
    /// Recently published updates that may get another revision. Bounded, so memory does
    /// not grow with the catalog.
    pool: Vec<PoolEntry>,
    /// Whether to hand out the plans of new updates (only
    /// [`CatalogChanges`](super::CatalogChanges) needs them).
    track_plans: bool,
}

impl fmt::Debug for CatalogGenerator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CatalogGenerator")
            .field("spec", &self.spec)
            .field("emitted", &self.emitted)
            .finish_non_exhaustive()
    }
}

struct PoolEntry {
    plan: UpdatePlan,
    latest: u32,
}

const POOL_CAPACITY: usize = 1024;

impl CatalogGenerator {
    pub(super) fn new(spec: CatalogSpec, track_plans: bool) -> Self {
        let categories = CatalogSpec::category_documents();
        Self {
            spec,
            planner: Planner::new(spec.seed),
            emitted: 0,
            pending: VecDeque::new(),
            detectoid_target: spec.updates.saturating_sub(categories) / 150,
            pool: Vec::new(),
            track_plans,
        }
    }

    /// The next document and, when plans are tracked, the plan of the new update it opens.
    pub(super) fn next_tracked(&mut self) -> Option<(GeneratedDocument, Option<UpdatePlan>)> {
        if self.emitted >= self.spec.updates {
            return None;
        }
        if self.pending.is_empty() {
            self.refill();
        }
        let next = self.pending.pop_front();
        if next.is_some() {
            self.emitted += 1;
        }
        next
    }

    /// Plans the next step of the catalog: one document, or a bundle's children and the
    /// bundle. Never plans past `spec.updates`.
    fn refill(&mut self) {
        let index = self.emitted;
        let remaining = self.spec.updates - index;
        let categories = self.planner.tax.categories.len();
        if index < categories {
            let document = render_category(&self.planner.tax.categories[index]);
            self.pending.push_back((document, None));
            return;
        }
        let when = self.time_at(index);
        if index < categories + self.detectoid_target {
            let plan = self.planner.plan_detectoid(when);
            self.push_new(plan, when);
            return;
        }

        let roll = self.planner.rng.below(10_000);
        if roll < 1_100 && !self.pool.is_empty() {
            self.push_revision(when);
        } else if roll < 1_900 {
            let plan = self.planner.plan_driver(when);
            self.push_new(plan, when);
        } else if roll < 1_950 {
            let plan = self.planner.plan_detectoid(when);
            self.push_new(plan, when);
        } else if roll < 3_100 && remaining >= 2 {
            let children = 1 + self.planner.rng.below(4) as usize;
            let children = children.min(remaining - 1);
            let (parent, children) = self.planner.plan_bundle(when, children);
            for child in children {
                let document = document_for(
                    &self.planner.tax,
                    &child,
                    child.first_revision,
                    PublicationState::Published,
                    when,
                );
                // Children are not offered on their own, so never sampled for changes.
                self.pending.push_back((document, None));
            }
            self.push_new(parent, when);
        } else {
            let plan = self.planner.plan_software(when, None);
            self.push_new(plan, when);
        }
    }

    fn push_new(&mut self, plan: UpdatePlan, when: i64) {
        let document = document_for(
            &self.planner.tax,
            &plan,
            plan.first_revision,
            PublicationState::Published,
            when,
        );
        let tracked = (self.track_plans && plan.kind != PlanKind::Detectoid).then(|| plan.clone());
        let entry = PoolEntry {
            latest: plan.first_revision,
            plan,
        };
        if self.pool.len() < POOL_CAPACITY {
            self.pool.push(entry);
        } else {
            let slot = self.planner.rng.below(POOL_CAPACITY as u64) as usize;
            self.pool[slot] = entry;
        }
        self.pending.push_back((document, tracked));
    }

    /// A later revision of an update still in the pool: usually published (101 after 100,
    /// sometimes the next hundred), sometimes expired, after which it gets no more.
    fn push_revision(&mut self, when: i64) {
        let rng = &mut self.planner.rng;
        let slot = rng.below(self.pool.len() as u64) as usize;
        let expire = rng.chance(3, 10);
        let latest = self.pool[slot].latest;
        let revision = if rng.chance(7, 10) {
            latest + 1
        } else {
            (latest / 100 + 1) * 100
        };
        let state = if expire {
            PublicationState::Expired
        } else {
            PublicationState::Published
        };
        let document = document_for(
            &self.planner.tax,
            &self.pool[slot].plan,
            revision,
            state,
            when,
        );
        if expire {
            self.pool.swap_remove(slot);
        } else {
            self.pool[slot].latest = revision;
        }
        self.pending.push_back((document, None));
    }

    /// The creation time of document `index`: the catalog spreads evenly over the timeline,
    /// with jitter.
    fn time_at(&mut self, index: usize) -> i64 {
        let span = i128::from(TIMELINE_END - TIMELINE_START);
        let total = self.spec.updates.max(1) as i128;
        let base = TIMELINE_START + (span * index as i128 / total) as i64;
        let step = (span / total).max(1) as u64;
        base + self.planner.rng.below(step) as i64
    }
}

impl Iterator for CatalogGenerator {
    type Item = GeneratedDocument;

    fn next(&mut self) -> Option<GeneratedDocument> {
        self.next_tracked().map(|(document, _)| document)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.spec.updates - self.emitted;
        (left, Some(left))
    }
}

impl ExactSizeIterator for CatalogGenerator {}
