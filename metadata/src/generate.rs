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
//! Determinism: everything comes from [`SplitMix64`], implemented here so that a seed gives
//! the same bytes whatever crate versions are in the lock file. Nothing reads the clock.

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::fmt::{self, Write as _};
use std::fs;
use std::io;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use time::OffsetDateTime;

use crate::model::{
    CategoryType, MsrcSeverity, PublicationState, RevisionId, UpdateId, UpdateType,
};

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
        COMPANIES.len() + FAMILIES.len() + PRODUCTS.len() + CLASSIFICATIONS.len()
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

/// SplitMix64 (Steele, Lea, Flood 2014): a tiny, fast, well-mixed generator whose output is
/// fixed by its definition, so generated catalogs never change with a dependency upgrade.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub const fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (0 when `n` is 0), by multiply-shift.
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `low..=high`.
    pub fn range(&mut self, low: u64, high: u64) -> u64 {
        low + self.below(high - low + 1)
    }

    /// True with probability `numerator / denominator`.
    pub fn chance(&mut self, numerator: u64, denominator: u64) -> bool {
        self.below(denominator) < numerator
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    /// A random GUID with the version-4 layout (version nibble 4, RFC 4122 variant).
    pub fn guid(&mut self) -> UpdateId {
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&self.next_u64().to_be_bytes());
        bytes[8..].copy_from_slice(&self.next_u64().to_be_bytes());
        bytes[6] = (bytes[6] & 0x0f) | 0x40;
        bytes[8] = (bytes[8] & 0x3f) | 0x80;
        UpdateId::from_bytes(bytes)
    }

    fn bytes<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        for chunk in out.chunks_mut(8) {
            let word = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
        out
    }
}

/// Combines two seeds into one well-mixed seed.
fn mix(a: u64, b: u64) -> u64 {
    let mut rng = SplitMix64::new(a ^ b.rotate_left(32));
    rng.next_u64() ^ b
}

/// Lazily generates the documents of one [`CatalogSpec`]; see [`CatalogSpec::documents`].
pub struct CatalogGenerator {
    spec: CatalogSpec,
    planner: Planner,
    emitted: usize,
    /// Documents already planned but not yet yielded (a bundle's children and the bundle).
    pending: VecDeque<(GeneratedDocument, Option<UpdatePlan>)>,
    detectoid_target: usize,
    /// Recently published updates that may get another revision. Bounded, so memory does
    /// not grow with the catalog.
    pool: Vec<PoolEntry>,
    /// Whether to hand out the plans of new updates (only [`CatalogChanges`] needs them).
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
    fn new(spec: CatalogSpec, track_plans: bool) -> Self {
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

    fn next_tracked(&mut self) -> Option<(GeneratedDocument, Option<UpdatePlan>)> {
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

// ---------------------------------------------------------------------------------------
// The category tree. Real ids and names from the public catalog, except the fictional
// third-party vendor "Contoso" (its ids are fixed version-4 GUIDs made up for sitesync).

const DAY_MS: i64 = 86_400_000;
/// 2004-01-01T00:00:00Z.
const TIMELINE_START: i64 = 1_072_915_200_000;
/// 2025-06-30T00:00:00Z.
const TIMELINE_END: i64 = 1_751_241_600_000;

const MICROSOFT: &str = "56309036-4c77-4dd9-951a-99ee9c246a94";
const LOCAL_PUBLISHER: &str = "7c40e8c2-01ae-47f5-9af2-6e75a0582518";
const CONTOSO: &str = "c0a1e7d4-5b2f-4e8a-9c31-7d2b6f4e8a10";
/// The publisher ids of the fixtures: categories, and software updates.
const MICROSOFT_CATEGORY_PUBLISHER: &str = "42f20e12-2856-447d-a8b2-68f06c2e9b45";
const MICROSOFT_UPDATE_PUBLISHER: &str = "bccf8ca0-2819-4598-8d15-c1506e363e92";
const LOCAL_PUBLISHER_ID: &str = "9a3f5d7e-2b41-4c8d-8e6f-0d1c2b3a4f5e";

/// `(id, revision, name, created)` of a company.
#[rustfmt::skip]
const COMPANIES: [(&str, u32, &str, &str); 3] = [
    (MICROSOFT, 101, "Microsoft", "2005-09-22T00:05:11.471Z"),
    (LOCAL_PUBLISHER, 100, "Local Publisher", "2007-03-05T18:22:40.120Z"),
    (CONTOSO, 100, "Contoso Ltd", "2008-06-12T09:14:03.507Z"),
];

const WINDOWS: &str = "6964aab4-c5b5-43bd-a17d-ffb4346a8e1d";
const OFFICE: &str = "477b856e-65c4-4473-b621-a8b230bb70d9";
const SQL_SERVER: &str = "0a4c6c73-8887-4d7f-9cbe-d08fa8fa9d1e";
const EXCHANGE: &str = "352f9494-d516-4b40-a21a-cd2416098982";
const FOREFRONT: &str = "f8c3c9a9-10de-4f09-bc16-5eb1b861fb4c";
const SYSTEM_CENTER: &str = "26a5d0a5-b108-46f1-93fa-f2a9cf10d029";
const SMS: &str = "78f4e068-1609-4e7a-ac8e-174288fa70a1";
const DEVELOPER_TOOLS: &str = "48ce8c86-6850-4f68-8e9d-7dc8535ced60";
const SILVERLIGHT: &str = "fe729f7e-3945-11dc-8e0c-cd1356d89593";

/// `(id, revision, name, company, created)` of a product family.
#[rustfmt::skip]
const FAMILIES: [(&str, u32, &str, &str, &str); 9] = [
    (WINDOWS, 100, "Windows", MICROSOFT, "2004-05-15T05:50:01.611Z"),
    (OFFICE, 100, "Office", MICROSOFT, "2004-05-15T05:52:17.340Z"),
    (SQL_SERVER, 100, "SQL Server", MICROSOFT, "2004-07-09T21:03:45.002Z"),
    (EXCHANGE, 100, "Exchange", MICROSOFT, "2004-07-09T21:05:12.877Z"),
    (FOREFRONT, 101, "Forefront", MICROSOFT, "2007-04-17T16:40:33.215Z"),
    (SYSTEM_CENTER, 100, "System Center", MICROSOFT, "2007-05-22T11:31:08.664Z"),
    (SMS, 100, "Systems Management Server", MICROSOFT, "2004-11-30T08:12:55.390Z"),
    (DEVELOPER_TOOLS, 100, "Developer Tools, Runtimes, and Redistributables", MICROSOFT, "2006-02-14T19:27:41.908Z"),
    (SILVERLIGHT, 100, "Silverlight", MICROSOFT, "2007-09-04T17:48:29.131Z"),
];

/// How updates of a product look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flavor {
    /// Windows releases up to Server 2003: `<stem>-KB<n>-x86-ENU.exe`.
    WindowsClassic,
    /// Vista and later: `<stem>-KB<n>-x64.msu`.
    WindowsModern,
    /// Office: `<stem>-kb<n>-fullfile-x86-glb.exe`.
    Office,
    /// Server products and tools: `<stem>-KB<n>-x86-ENU.exe`.
    ServerApp,
    /// Antimalware definitions.
    Definitions,
    /// Custom updates published locally (System Center Updates Publisher).
    LocalPublisher,
    /// A third-party vendor's catalog.
    ThirdParty,
}

struct ProductDef {
    id: &'static str,
    name: &'static str,
    parent: &'static str,
    flavor: Flavor,
    /// Years in which the product gets updates.
    years: (i32, i32),
    /// Relative share of the updates published while it is active.
    weight: u64,
    /// File-name stem.
    stem: &'static str,
}

const fn product(
    id: &'static str,
    name: &'static str,
    parent: &'static str,
    flavor: Flavor,
    years: (i32, i32),
    weight: u64,
    stem: &'static str,
) -> ProductDef {
    ProductDef {
        id,
        name,
        parent,
        flavor,
        years,
        weight,
        stem,
    }
}

use Flavor::*;

#[rustfmt::skip]
const PRODUCTS: [ProductDef; 30] = [
    product("3b4b8621-726e-43a6-b43b-37d07ec7019f", "Windows 2000", WINDOWS, WindowsClassic, (2004, 2010), 6, "Windows2000"),
    product("558f4bc3-4827-49e1-accf-ea79fd72d4c9", "Windows XP", WINDOWS, WindowsClassic, (2004, 2014), 12, "WindowsXP"),
    product("4cb6ebd5-e38a-4826-9f76-1416a6f563b0", "Windows XP x64 Edition", WINDOWS, WindowsClassic, (2005, 2014), 4, "WindowsServer2003.WindowsXP"),
    product("dbf57a08-0d5a-46ff-b30c-7715eb9498e9", "Windows Server 2003", WINDOWS, WindowsClassic, (2004, 2015), 10, "WindowsServer2003"),
    product("26997d30-08ce-4f25-b2de-699c36a8033a", "Windows Vista", WINDOWS, WindowsModern, (2007, 2017), 9, "Windows6.0"),
    product("ba0ae9cc-5f01-40b4-ac3f-50192b5d6aaf", "Windows Server 2008", WINDOWS, WindowsModern, (2008, 2025), 8, "Windows6.0"),
    product("bfe5b177-a086-47a0-b102-097e4fa1f807", "Windows 7", WINDOWS, WindowsModern, (2009, 2023), 12, "Windows6.1"),
    product("fdfe8200-9d98-44ba-a12a-772282bf60ef", "Windows Server 2008 R2", WINDOWS, WindowsModern, (2009, 2025), 10, "Windows6.1"),
    product("6407468e-edc7-4ecd-8c32-521f64cee65e", "Windows 8.1", WINDOWS, WindowsModern, (2013, 2023), 9, "Windows8.1"),
    product("d31bd4c3-d872-41c9-a2e7-231f372588cb", "Windows Server 2012 R2", WINDOWS, WindowsModern, (2013, 2025), 9, "Windows8.1"),
    product("8c3fcc84-7410-4a95-8b89-a166a0190486", "Windows Defender", WINDOWS, Definitions, (2006, 2025), 10, "mpas-fe"),
    product("1403f223-a63f-f572-82ba-c92391218055", "Office 2003", OFFICE, Office, (2004, 2014), 6, "office2003"),
    product("041e4f9f-3a3d-4f58-8b2f-5e6fe95c4591", "Office 2007", OFFICE, Office, (2007, 2017), 7, "office2007"),
    product("84f5f325-30d7-41c4-81d1-87a0e6535b66", "Office 2010", OFFICE, Office, (2010, 2020), 7, "office2010"),
    product("704a0a4a-518f-4d69-9e03-10ba44198bd5", "Office 2013", OFFICE, Office, (2013, 2023), 6, "office2013"),
    product("7145181b-9556-4b11-b659-0162fa9df11f", "SQL Server 2000", SQL_SERVER, ServerApp, (2004, 2013), 2, "SQL2000"),
    product("60916385-7546-4e9b-836e-79d65e517bab", "SQL Server 2005", SQL_SERVER, ServerApp, (2006, 2016), 3, "SQLServer2005"),
    product("c5f0b23c-e990-4b71-9808-718d353f533a", "SQL Server 2008", SQL_SERVER, ServerApp, (2008, 2019), 3, "SQLServer2008"),
    product("56750722-19b4-4449-a547-5b68f19eee38", "Microsoft SQL Server 2012", SQL_SERVER, ServerApp, (2012, 2022), 3, "SQLServer2012"),
    product("3cf32f7c-d8ee-43f8-a0da-8b88a6f8af1a", "Exchange Server 2003", EXCHANGE, ServerApp, (2004, 2014), 2, "Exchange2003"),
    product("26bb6be1-37d1-4ca6-baee-ec00b2f7d0f1", "Exchange Server 2007", EXCHANGE, ServerApp, (2007, 2017), 3, "Exchange2007"),
    product("9b135dd5-fc75-4609-a6ae-fb5d22333ef0", "Exchange Server 2010", EXCHANGE, ServerApp, (2010, 2020), 3, "Exchange2010"),
    product("0a487050-8b0f-4f81-b401-be4ceacd61cd", "Forefront Client Security", FOREFRONT, Definitions, (2007, 2015), 5, "mp_ambits"),
    product("d22b3d16-bc75-418f-b648-e5f3d32490ee", "System Center Configuration Manager 2007", SYSTEM_CENTER, ServerApp, (2007, 2019), 2, "ConfigMgr2007"),
    product("5a456666-3ac5-4162-9f52-260885d6533a", "Systems Management Server 2003", SMS, ServerApp, (2004, 2010), 1, "SMS2003"),
    product("a0dd7e72-90ec-41e3-b370-c86a245cd44f", "Visual Studio 2005", DEVELOPER_TOOLS, ServerApp, (2006, 2016), 2, "VS80sp1"),
    product("e3fde9f8-14d6-4b5c-911c-fba9e0fc9887", "Visual Studio 2008", DEVELOPER_TOOLS, ServerApp, (2008, 2018), 2, "VS90sp1"),
    product("9f3dd20a-1004-470e-ba65-3dc62d982958", "Silverlight", SILVERLIGHT, ServerApp, (2008, 2021), 2, "Silverlight"),
    product("5cc25303-143f-40f3-a2ff-803a1db69955", "Locally published packages", LOCAL_PUBLISHER, LocalPublisher, (2007, 2025), 3, ""),
    product("5b1e0a6c-8d2f-4c3b-a4e5-f6a7b8c9d0e1", "Contoso Line-of-Business Suite", CONTOSO, ThirdParty, (2008, 2025), 2, "ContosoLOB"),
];

/// The update classifications the generator uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Critical,
    Security,
    Definition,
    Updates,
    ServicePacks,
    UpdateRollups,
    FeaturePacks,
    Tools,
    Drivers,
}

/// `(class, id, name, created)`, real classification ids.
#[rustfmt::skip]
const CLASSIFICATIONS: [(Class, &str, &str, &str); 9] = [
    (Class::Critical, "e6cf1350-c01b-414d-a61f-263d14d133b4", "Critical Updates", "2004-01-15T19:32:06.383Z"),
    (Class::Security, "0fa1201d-4330-4fa8-8ae9-b877473b6441", "Security Updates", "2004-01-15T19:32:28.617Z"),
    (Class::Definition, "e0789628-ce08-4437-be74-2495b842f43b", "Definition Updates", "2005-12-01T22:02:11.104Z"),
    (Class::Updates, "cd5ffd1e-e932-4e3a-bf74-18bf0b1bbd83", "Updates", "2004-01-15T19:33:14.958Z"),
    (Class::ServicePacks, "68c5b0a3-d1a6-4553-ae49-01d3a7827828", "Service Packs", "2004-01-15T19:33:40.249Z"),
    (Class::UpdateRollups, "28bc880e-0592-4cbf-8f95-c79b17911d5f", "Update Rollups", "2004-01-15T19:34:02.776Z"),
    (Class::FeaturePacks, "b54e7d24-7add-428f-8b75-90a396fa584f", "Feature Packs", "2004-01-15T19:34:27.302Z"),
    (Class::Tools, "b4832bd8-e735-4761-8daf-37f882276dab", "Tools", "2004-01-15T19:34:49.811Z"),
    (Class::Drivers, "ebfc1fc5-71a4-4f7b-9aca-3b9a503104a0", "Drivers", "2005-04-28T17:57:30.521Z"),
];

/// One language of localized properties: the language tag and the title and description
/// templates (`{p}` is the product).
struct Lang {
    tag: &'static str,
    security: &'static str,
    update: &'static str,
    description: &'static str,
}

const fn lang(
    tag: &'static str,
    security: &'static str,
    update: &'static str,
    description: &'static str,
) -> Lang {
    Lang {
        tag,
        security,
        update,
        description,
    }
}

/// The 24 languages of the category fixtures, in their order.
#[rustfmt::skip]
const LANGUAGES: [Lang; 24] = [
    lang("ar", "تحديث أمان لـ {p}", "تحديث لـ {p}", "قم بتثبيت هذا التحديث للمساعدة في حماية الكمبيوتر."),
    lang("cs", "Aktualizace zabezpečení pro {p}", "Aktualizace pro {p}", "Nainstalujte tuto aktualizaci, která pomůže chránit váš počítač."),
    lang("da", "Sikkerhedsopdatering til {p}", "Opdatering til {p}", "Installer denne opdatering for at beskytte computeren."),
    lang("de", "Sicherheitsupdate für {p}", "Update für {p}", "Installieren Sie dieses Update, um Ihren Computer zu schützen."),
    lang("el", "Ενημέρωση ασφαλείας για {p}", "Ενημέρωση για {p}", "Εγκαταστήστε αυτήν την ενημέρωση για να προστατέψετε τον υπολογιστή σας."),
    lang("en", "Security Update for {p}", "Update for {p}", ""),
    lang("es", "Actualización de seguridad para {p}", "Actualización para {p}", "Instale esta actualización para ayudar a proteger el equipo."),
    lang("fi", "Suojauspäivitys: {p}", "Päivitys: {p}", "Asenna tämä päivitys tietokoneen suojaamiseksi."),
    lang("fr", "Mise à jour de sécurité pour {p}", "Mise à jour pour {p}", "Installez cette mise à jour pour protéger votre ordinateur."),
    lang("he", "עדכון אבטחה עבור {p}", "עדכון עבור {p}", "התקן עדכון זה כדי לסייע בהגנה על המחשב שלך."),
    lang("hu", "Biztonsági frissítés – {p}", "Frissítés – {p}", "A számítógép védelme érdekében telepítse ezt a frissítést."),
    lang("it", "Aggiornamento della protezione per {p}", "Aggiornamento per {p}", "Installare questo aggiornamento per proteggere il computer."),
    lang("ja", "{p} セキュリティ更新プログラム", "{p} 更新プログラム", "この更新プログラムをインストールすると、コンピューターを保護できます。"),
    lang("ko", "{p} 보안 업데이트", "{p} 업데이트", "컴퓨터를 보호하려면 이 업데이트를 설치하십시오."),
    lang("nl", "Beveiligingsupdate voor {p}", "Update voor {p}", "Installeer deze update om uw computer te beschermen."),
    lang("no", "Sikkerhetsoppdatering for {p}", "Oppdatering for {p}", "Installer denne oppdateringen for å beskytte datamaskinen."),
    lang("pl", "Aktualizacja zabezpieczeń dla {p}", "Aktualizacja dla {p}", "Zainstaluj tę aktualizację, aby chronić komputer."),
    lang("pt", "Actualização de segurança para {p}", "Actualização para {p}", "Instale esta actualização para ajudar a proteger o computador."),
    lang("pt-br", "Atualização de segurança para {p}", "Atualização para {p}", "Instale esta atualização para ajudar a proteger o computador."),
    lang("ru", "Обновление безопасности для {p}", "Обновление для {p}", "Установите это обновление для защиты компьютера."),
    lang("sv", "Säkerhetsuppdatering för {p}", "Uppdatering för {p}", "Installera den här uppdateringen för att skydda datorn."),
    lang("tr", "{p} için güvenlik güncelleştirmesi", "{p} için güncelleştirme", "Bilgisayarınızı korumaya yardımcı olmak için bu güncelleştirmeyi yükleyin."),
    lang("zh-cn", "{p} 安全更新", "{p} 更新", "安装此更新有助于保护您的计算机。"),
    lang("zh-tw", "{p} 安全性更新", "{p} 更新", "安裝此更新以協助保護您的電腦。"),
];
const EN: usize = 5;
const EN_ONLY: u32 = 1 << EN;

const SECURITY_DESCRIPTION: &str = "A security issue has been identified that could allow an unauthenticated remote attacker to compromise your system and gain control over it. You can help protect your system by installing this update from Microsoft. After you install this update, you may have to restart your system.";
const UPDATE_DESCRIPTION: &str = "Install this update to resolve issues in {p}. For a complete listing of the issues that are included in this update, see the associated Microsoft Knowledge Base article for more information. After you install this item, you may have to restart your computer.";
const DEFINITION_DESCRIPTION: &str = "Install this update to revise the definition files that are used to detect viruses, spyware, and other potentially unwanted software. Once you have installed this item, it cannot be removed.";

/// `(manufacturer, class, device, hardware id with {} for a device number)`.
#[rustfmt::skip]
const DRIVERS: [(&str, &str, &str, &str); 6] = [
    ("Intel", "Display", "Intel(R) HD Graphics", "PCI\\VEN_8086&DEV_{}"),
    ("Realtek", "Net", "Realtek PCIe GBE Family Controller", "PCI\\VEN_10EC&DEV_{}"),
    ("NVIDIA", "Display", "NVIDIA GeForce", "PCI\\VEN_10DE&DEV_{}"),
    ("Broadcom", "Net", "Broadcom NetXtreme Gigabit Ethernet", "PCI\\VEN_14E4&DEV_{}"),
    ("Synaptics", "Mouse", "Synaptics PS/2 Port TouchPad", "ACPI\\SYN{}"),
    ("Hewlett-Packard", "Printer", "HP LaserJet & Color LaserJet", "USBPRINT\\HEWLETT-PACKARDHP_LA{}"),
];

const LOCAL_APPS: [&str; 5] = [
    "Contoso Expense Client",
    "Fabrikam Timesheet",
    "Northwind Inventory Agent",
    "Adatum VPN Client",
    "Litware Document Viewer",
];

const SYSTEM_FILES: [&str; 16] = [
    "kernel32.dll",
    "ntdll.dll",
    "mshtml.dll",
    "win32k.sys",
    "netapi32.dll",
    "gdiplus.dll",
    "msxml6.dll",
    "schannel.dll",
    "tcpip.sys",
    "srv.sys",
    "wininet.dll",
    "urlmon.dll",
    "rpcrt4.dll",
    "ole32.dll",
    "user32.dll",
    "mscorlib.dll",
];

const NS_UPD: &str = "http://schemas.microsoft.com/msus/2002/12/Update";
const NS_PUB: &str = "http://schemas.microsoft.com/msus/2002/12/Publishing";
const NS_LAR: &str = "http://schemas.microsoft.com/msus/2002/12/LogicalApplicabilityRules";
const NS_BAR: &str = "http://schemas.microsoft.com/msus/2002/12/BaseApplicabilityRules";
const NS_CAT: &str = "http://schemas.microsoft.com/msus/2002/12/UpdateHandlers/Category";
const NS_CMD: &str =
    "http://schemas.microsoft.com/msus/2002/12/UpdateHandlers/CommandLineInstallation";
const NS_DRV: &str = "http://schemas.microsoft.com/msus/2002/12/UpdateHandlers/WindowsDriver";
const NS_XSI: &str = "http://www.w3.org/2001/XMLSchema-instance";

/// The category documents and the products and classifications updates point at, with
/// parsed ids.
struct Taxonomy {
    categories: Vec<CategoryDoc>,
    /// Parallel to `PRODUCTS`.
    products: Vec<UpdateId>,
    /// Parallel to `CLASSIFICATIONS`.
    classifications: Vec<UpdateId>,
}

struct CategoryDoc {
    id: UpdateId,
    revision: u32,
    category_type: CategoryType,
    name: &'static str,
    parent: Option<UpdateId>,
    created: String,
    display_order: usize,
}

fn known_id(text: &str) -> UpdateId {
    text.parse()
        .unwrap_or_else(|_| panic!("built-in category id {text} is not a GUID"))
}

impl Taxonomy {
    fn new() -> Self {
        let mut categories = Vec::with_capacity(CatalogSpec::category_documents());
        for (order, (id, revision, name, created)) in COMPANIES.iter().enumerate() {
            categories.push(CategoryDoc {
                id: known_id(id),
                revision: *revision,
                category_type: CategoryType::Company,
                name,
                parent: None,
                created: (*created).to_owned(),
                display_order: order + 1,
            });
        }
        for (order, (id, revision, name, company, created)) in FAMILIES.iter().enumerate() {
            categories.push(CategoryDoc {
                id: known_id(id),
                revision: *revision,
                category_type: CategoryType::ProductFamily,
                name,
                parent: Some(known_id(company)),
                created: (*created).to_owned(),
                display_order: order + 2,
            });
        }
        for (order, def) in PRODUCTS.iter().enumerate() {
            // A product category appears some weeks before its first updates.
            let created = year_start(def.years.0) - (40 + order as i64) * DAY_MS
                + (order as i64 * 7_919_113) % DAY_MS;
            categories.push(CategoryDoc {
                id: known_id(def.id),
                revision: 100,
                category_type: CategoryType::Product,
                name: def.name,
                parent: Some(known_id(def.parent)),
                created: iso8601(created),
                display_order: order + 1,
            });
        }
        for (order, (_, id, name, created)) in CLASSIFICATIONS.iter().enumerate() {
            categories.push(CategoryDoc {
                id: known_id(id),
                revision: 100,
                category_type: CategoryType::UpdateClassification,
                name,
                parent: None,
                created: (*created).to_owned(),
                display_order: order + 1,
            });
        }
        Self {
            categories,
            products: PRODUCTS.iter().map(|p| known_id(p.id)).collect(),
            classifications: CLASSIFICATIONS.iter().map(|c| known_id(c.1)).collect(),
        }
    }

    fn classification(&self, class: Class) -> UpdateId {
        let index = CLASSIFICATIONS
            .iter()
            .position(|c| c.0 == class)
            .unwrap_or_else(|| unreachable!("every class is in CLASSIFICATIONS"));
        self.classifications[index]
    }
}

// ---------------------------------------------------------------------------------------
// Plans: everything that stays the same across an update's revisions.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PlanKind {
    Software,
    /// Offered only through its bundle.
    BundleChild,
    Driver,
    Detectoid,
}

#[derive(Debug, Clone)]
struct UpdatePlan {
    id: UpdateId,
    kind: PlanKind,
    product: usize,
    class: Class,
    first_revision: u32,
    /// When the first revision was published; payload files date from shortly before.
    created: i64,
    publisher: &'static str,
    kb: Option<u32>,
    bulletin: Option<String>,
    severity: Option<MsrcSeverity>,
    /// English title.
    title: String,
    /// Bit `i` set: the update is localized in `LANGUAGES[i]` (only security updates and
    /// updates get translated titles).
    languages: u32,
    /// Detectoids this update requires.
    prerequisites: Vec<UpdateId>,
    superseded: Vec<UpdateId>,
    bundled: Vec<RevisionId>,
    /// The applicability rules grow until the document has at least this many bytes: the
    /// tail of the size distribution.
    min_bytes: usize,
    /// Seeds the details rendered identically in every revision (files, rules, handler).
    content_seed: u64,
}

/// Chooses what the next updates are. Its state is bounded: recent ids per product for
/// supersedence, and the detectoids updates can require.
struct Planner {
    tax: Taxonomy,
    rng: SplitMix64,
    /// Per product, ids of its recent updates, oldest first.
    history: Vec<Vec<UpdateId>>,
    detectoids: Vec<(UpdateId, usize)>,
    bulletin: Option<(i32, u32)>,
}

const HISTORY_CAPACITY: usize = 4096;
const DETECTOID_CAPACITY: usize = 512;

impl Planner {
    fn new(seed: u64) -> Self {
        Self {
            tax: Taxonomy::new(),
            rng: SplitMix64::new(mix(seed, 0x5173_5953_C000_0000)),
            history: vec![Vec::new(); PRODUCTS.len()],
            detectoids: Vec::new(),
            bulletin: None,
        }
    }

    /// A product that gets updates in the year of `when`, by weight.
    fn pick_product(&mut self, when: i64, accept: impl Fn(&ProductDef) -> bool) -> usize {
        let year = year_of(when);
        let active = |p: &ProductDef| p.years.0 <= year && year <= p.years.1 && accept(p);
        let total: u64 = PRODUCTS
            .iter()
            .filter(|p| active(p))
            .map(|p| p.weight)
            .sum();
        if total == 0 {
            return 0;
        }
        let mut roll = self.rng.below(total);
        for (index, def) in PRODUCTS.iter().enumerate() {
            if !active(def) {
                continue;
            }
            if roll < def.weight {
                return index;
            }
            roll -= def.weight;
        }
        unreachable!("the roll is below the total weight")
    }

    fn pick_class(&mut self, flavor: Flavor) -> Class {
        use Class::*;
        let weights: &[(Class, u64)] = match flavor {
            WindowsClassic | WindowsModern => &[
                (Security, 40),
                (Critical, 12),
                (Updates, 30),
                (UpdateRollups, 4),
                (ServicePacks, 2),
                (FeaturePacks, 4),
                (Tools, 3),
            ],
            Office => &[
                (Security, 45),
                (Critical, 10),
                (Updates, 40),
                (ServicePacks, 5),
            ],
            ServerApp => &[
                (Security, 35),
                (Critical, 10),
                (Updates, 40),
                (ServicePacks, 5),
                (UpdateRollups, 10),
            ],
            Definitions => &[(Definition, 95), (Updates, 5)],
            LocalPublisher | ThirdParty => &[(Updates, 60), (Security, 30), (Critical, 10)],
        };
        let total: u64 = weights.iter().map(|w| w.1).sum();
        let mut roll = self.rng.below(total);
        for &(class, weight) in weights {
            if roll < weight {
                return class;
            }
            roll -= weight;
        }
        unreachable!("the roll is below the total weight")
    }

    fn first_revision(when: i64) -> u32 {
        // Newer catalog content starts at 200, as the recent fixtures do.
        if year_of(when) >= 2016 { 200 } else { 100 }
    }

    /// A KB number that grows with time, as real ones do; updates close in time may share
    /// one, as updates for several products often do.
    fn kb_at(&mut self, when: i64) -> u32 {
        let progress =
            (when - TIMELINE_START).max(0) as f64 / (TIMELINE_END - TIMELINE_START) as f64;
        820_000 + (progress * 4_250_000.0) as u32 + self.rng.below(400) as u32
    }

    fn remember(&mut self, product: usize, id: UpdateId) {
        let history = &mut self.history[product];
        if history.len() >= HISTORY_CAPACITY {
            history.drain(..HISTORY_CAPACITY / 2);
        }
        history.push(id);
    }

    /// The latest updates of the product a new one supersedes: usually none or the last
    /// one to three (a chain), and for the largest documents hundreds to thousands.
    fn supersede(&mut self, product: usize, huge: bool) -> Vec<UpdateId> {
        let history = &self.history[product];
        let count = if huge && self.rng.chance(1, 2) {
            self.rng.range(300, 3_000) as usize
        } else if self.rng.chance(35, 100) {
            self.rng.range(1, 3) as usize
        } else {
            0
        };
        let count = count.min(history.len());
        history[history.len() - count..]
            .iter()
            .rev()
            .copied()
            .collect()
    }

    fn pick_languages(&mut self, class: Class, flavor: Flavor) -> u32 {
        let translated = matches!(class, Class::Security | Class::Critical | Class::Updates)
            && matches!(flavor, WindowsClassic | WindowsModern | Office | ServerApp);
        if !translated {
            return EN_ONLY;
        }
        let roll = self.rng.below(100);
        if roll < 68 {
            EN_ONLY
        } else if roll < 90 {
            let mut mask = EN_ONLY;
            for _ in 0..self.rng.range(2, 6) {
                mask |= 1 << self.rng.below(LANGUAGES.len() as u64);
            }
            mask
        } else {
            (1 << LANGUAGES.len()) - 1
        }
    }

    fn detectoid_prerequisites(&mut self, product: usize) -> Vec<UpdateId> {
        if self.detectoids.is_empty() || !self.rng.chance(4, 10) {
            return Vec::new();
        }
        let own: Vec<UpdateId> = self
            .detectoids
            .iter()
            .filter(|d| d.1 == product)
            .map(|d| d.0)
            .collect();
        let pool: Vec<UpdateId> = if own.is_empty() {
            self.detectoids.iter().map(|d| d.0).collect()
        } else {
            own
        };
        let mut chosen = Vec::new();
        for _ in 0..self.rng.range(1, 2) {
            let id = *self.rng.pick(&pool);
            if !chosen.contains(&id) {
                chosen.push(id);
            }
        }
        chosen
    }

    fn security_details(
        &mut self,
        when: i64,
        flavor: Flavor,
    ) -> (Option<String>, Option<MsrcSeverity>) {
        let severity = *self.rng.pick(&[
            MsrcSeverity::Critical,
            MsrcSeverity::Critical,
            MsrcSeverity::Important,
            MsrcSeverity::Important,
            MsrcSeverity::Important,
            MsrcSeverity::Moderate,
            MsrcSeverity::Low,
        ]);
        let year = year_of(when);
        // Microsoft stopped numbering security bulletins in 2017; local updates never had
        // them.
        let bulletin = if year >= 2017 || matches!(flavor, LocalPublisher | ThirdParty) {
            None
        } else {
            let number = match self.bulletin {
                Some((y, n)) if y == year && self.rng.chance(1, 2) => n,
                Some((y, n)) if y == year => n + 1,
                _ => 1,
            };
            self.bulletin = Some((year, number));
            Some(format!("MS{:02}-{:03}", year % 100, number))
        };
        (bulletin, Some(severity))
    }

    /// A new software update (not a bundle) of `product`, or of a product chosen by weight.
    fn plan_software(&mut self, when: i64, product: Option<usize>) -> UpdatePlan {
        let product = product.unwrap_or_else(|| self.pick_product(when, |_| true));
        let def = &PRODUCTS[product];
        let class = self.pick_class(def.flavor);
        let huge = self.rng.chance(75, 10_000);
        let min_bytes = if huge {
            self.rng.range(110_000, 300_000) as usize
        } else {
            0
        };
        let (bulletin, severity) = if class == Class::Security {
            self.security_details(when, def.flavor)
        } else {
            (None, None)
        };
        let kb = match def.flavor {
            LocalPublisher | ThirdParty => None,
            Definitions if def.name == "Windows Defender" => Some(915_597),
            Definitions => Some(977_939),
            _ => Some(self.kb_at(when)),
        };
        let title = self.title(def, class, kb, when);
        let languages = self.pick_languages(class, def.flavor);
        let prerequisites = if matches!(def.flavor, WindowsClassic | WindowsModern) {
            self.detectoid_prerequisites(product)
        } else {
            Vec::new()
        };
        let superseded = self.supersede(product, huge);
        let id = self.rng.guid();
        self.remember(product, id);
        UpdatePlan {
            id,
            kind: PlanKind::Software,
            product,
            class,
            first_revision: Self::first_revision(when),
            created: when,
            publisher: publisher_of(def.flavor),
            kb,
            bulletin,
            severity,
            title,
            languages,
            prerequisites,
            superseded,
            bundled: Vec::new(),
            min_bytes,
            content_seed: self.rng.next_u64(),
        }
    }

    /// A bundle and its `children`: the children are hidden software updates in plain
    /// (non-category) groups; the bundle names each child by id and revision.
    fn plan_bundle(&mut self, when: i64, children: usize) -> (UpdatePlan, Vec<UpdatePlan>) {
        let product = self.pick_product(when, |p| p.flavor != Definitions);
        let mut parent = self.plan_software(when, Some(product));
        let mut planned = Vec::with_capacity(children);
        let variants = match PRODUCTS[product].flavor {
            WindowsClassic | WindowsModern => ["x86", "x64", "arm64", "ia64"],
            _ => ["English", "German", "Japanese", "French"],
        };
        for index in 0..children {
            let id = self.rng.guid();
            let variant = variants[index % variants.len()];
            planned.push(UpdatePlan {
                id,
                kind: PlanKind::BundleChild,
                product,
                class: parent.class,
                first_revision: parent.first_revision,
                created: when,
                publisher: parent.publisher,
                kb: parent.kb,
                bulletin: None,
                severity: None,
                title: format!("{} - {variant}", parent.title),
                languages: EN_ONLY,
                prerequisites: Vec::new(),
                superseded: Vec::new(),
                bundled: Vec::new(),
                min_bytes: 0,
                content_seed: self.rng.next_u64(),
            });
        }
        parent.bundled = planned
            .iter()
            .map(|c| RevisionId {
                update_id: c.id,
                revision: c.first_revision,
            })
            .collect();
        (parent, planned)
    }

    fn plan_driver(&mut self, when: i64) -> UpdatePlan {
        let product =
            self.pick_product(when, |p| matches!(p.flavor, WindowsClassic | WindowsModern));
        let (manufacturer, class, device, _) = *self.rng.pick(&DRIVERS);
        let model = self.rng.range(100, 9_999);
        let superseded = self.supersede(product, false);
        let id = self.rng.guid();
        self.remember(product, id);
        UpdatePlan {
            id,
            kind: PlanKind::Driver,
            product,
            class: Class::Drivers,
            first_revision: Self::first_revision(when),
            created: when,
            publisher: MICROSOFT_UPDATE_PUBLISHER,
            kb: None,
            bulletin: None,
            severity: None,
            title: format!("{manufacturer} - {class} - {device} {model}"),
            languages: EN_ONLY,
            prerequisites: Vec::new(),
            superseded,
            bundled: Vec::new(),
            min_bytes: 0,
            content_seed: self.rng.next_u64(),
        }
    }

    fn plan_detectoid(&mut self, when: i64) -> UpdatePlan {
        let product =
            self.pick_product(when, |p| matches!(p.flavor, WindowsClassic | WindowsModern));
        let arch = *self.rng.pick(&["x86", "x64", "Itanium"]);
        let service_pack = self.rng.range(0, 3);
        let title = if service_pack == 0 {
            format!("{} RTM {arch}", PRODUCTS[product].name)
        } else {
            format!("{} SP{service_pack} {arch}", PRODUCTS[product].name)
        };
        let id = self.rng.guid();
        if self.detectoids.len() < DETECTOID_CAPACITY {
            self.detectoids.push((id, product));
        }
        UpdatePlan {
            id,
            kind: PlanKind::Detectoid,
            product,
            class: Class::Updates,
            first_revision: Self::first_revision(when),
            created: when,
            publisher: MICROSOFT_UPDATE_PUBLISHER,
            kb: None,
            bulletin: None,
            severity: None,
            title,
            languages: EN_ONLY,
            prerequisites: Vec::new(),
            superseded: Vec::new(),
            bundled: Vec::new(),
            min_bytes: 0,
            content_seed: self.rng.next_u64(),
        }
    }

    fn title(&mut self, def: &ProductDef, class: Class, kb: Option<u32>, when: i64) -> String {
        let kb_text = kb.map(|kb| format!(" (KB{kb})")).unwrap_or_default();
        let name = match def.flavor {
            WindowsModern if self.rng.chance(3, 10) => {
                format!("{} for x64-based Systems", def.name)
            }
            WindowsClassic if self.rng.chance(1, 10) => format!("{} x64 Edition", def.name),
            Office => format!("Microsoft {}", def.name),
            _ => def.name.to_owned(),
        };
        match (def.flavor, class) {
            (LocalPublisher, _) => {
                let app = *self.rng.pick(&LOCAL_APPS);
                let version = format!(
                    "{}.{}.{}",
                    self.rng.range(1, 9),
                    self.rng.range(0, 9),
                    self.rng.range(0, 999)
                );
                format!("{app} {version}")
            }
            (ThirdParty, Class::Security) => {
                format!(
                    "Security Update for {name} {}.{}",
                    self.rng.range(3, 12),
                    self.rng.range(0, 9)
                )
            }
            (ThirdParty, _) => format!(
                "{name} {}.{} Update",
                self.rng.range(3, 12),
                self.rng.range(0, 9)
            ),
            (_, Class::Definition) => {
                let minor = 1 + (year_of(when) - 2006).max(0) as u64 * 20 + self.rng.below(20);
                let build = self.rng.below(10_000);
                format!(
                    "Definition Update for {name} - KB{} (Definition 1.{minor}.{build}.0)",
                    kb.unwrap_or(915_597)
                )
            }
            (_, Class::Security) => format!("Security Update for {name}{kb_text}"),
            (_, Class::UpdateRollups) => format!(
                "Update Rollup {} for {name}{kb_text}",
                self.rng.range(1, 12)
            ),
            (_, Class::ServicePacks) => {
                format!("{name} Service Pack {}{kb_text}", self.rng.range(1, 3))
            }
            (_, Class::FeaturePacks) => format!("Feature Pack for {name}{kb_text}"),
            (_, Class::Tools) => format!("Diagnostic Tool for {name}{kb_text}"),
            _ => format!("Update for {name}{kb_text}"),
        }
    }
}

fn publisher_of(flavor: Flavor) -> &'static str {
    match flavor {
        LocalPublisher | ThirdParty => LOCAL_PUBLISHER_ID,
        _ => MICROSOFT_UPDATE_PUBLISHER,
    }
}

// ---------------------------------------------------------------------------------------
// Rendering.

/// Appends formatted text to a `String` (which cannot fail).
macro_rules! put {
    ($out:expr, $($arg:tt)*) => {{
        let _ = write!($out, $($arg)*);
    }};
}

fn esc(text: &str) -> Cow<'_, str> {
    if !text.contains(['&', '<', '>', '"', '\'']) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

fn render_category(category: &CategoryDoc) -> GeneratedDocument {
    let mut out = String::with_capacity(5 * 1024);
    // The namespace declarations and attribute order of the category fixtures.
    put!(
        out,
        r#"<upd:Update xmlns:pub="{NS_PUB}" xmlns:lar="{NS_LAR}" xmlns:cat="{NS_CAT}" xmlns:upd="{NS_UPD}"><upd:UpdateIdentity UpdateID="{}" RevisionNumber="{}" /><upd:Properties DefaultPropertiesLanguage="en" IsPublic="true" UpdateType="Category" Handler="{NS_CAT}" PublicationState="Published" CreationDate="{}" PublisherID="{MICROSOFT_CATEGORY_PUBLISHER}"></upd:Properties><upd:LocalizedPropertiesCollection>"#,
        category.id.to_string().to_uppercase(),
        category.revision,
        category.created,
    );
    let name = esc(category.name);
    for lang in &LANGUAGES {
        put!(
            out,
            "<upd:LocalizedProperties><upd:Language>{}</upd:Language><upd:Title>{name}</upd:Title><upd:Description>{name}</upd:Description></upd:LocalizedProperties>",
            lang.tag
        );
    }
    out.push_str("</upd:LocalizedPropertiesCollection>");
    if let Some(parent) = category.parent {
        put!(
            out,
            r#"<upd:Relationships><upd:Prerequisites><upd:AtLeastOne IsCategory="true"><upd:UpdateIdentity UpdateID="{parent}" /></upd:AtLeastOne></upd:Prerequisites></upd:Relationships>"#
        );
    }
    let (type_name, prohibits_subcategories, prohibits_updates) = match category.category_type {
        CategoryType::Company => ("Company", false, true),
        CategoryType::ProductFamily => ("ProductFamily", false, true),
        CategoryType::Product => ("Product", true, false),
        CategoryType::UpdateClassification => ("UpdateClassification", true, false),
    };
    put!(
        out,
        r#"<upd:ApplicabilityRules><upd:IsInstalled><lar:True /></upd:IsInstalled></upd:ApplicabilityRules><upd:HandlerSpecificData xsi:type="cat:Category" xmlns:xsi="{NS_XSI}"><cat:CategoryInformation CategoryType="{type_name}" ProhibitsSubcategories="{prohibits_subcategories}" ProhibitsUpdates="{prohibits_updates}" DisplayOrder="{}" /></upd:HandlerSpecificData></upd:Update>"#,
        category.display_order
    );
    let id = RevisionId {
        update_id: category.id,
        revision: category.revision,
    };
    GeneratedDocument {
        file_name: GeneratedDocument::file_name_for(id),
        id,
        update_type: UpdateType::Category,
        publication_state: PublicationState::Published,
        xml: out.into_bytes(),
    }
}

/// One generated payload file.
struct FileSpec {
    name: String,
    size: u64,
    modified: i64,
    sha1: [u8; 20],
    sha256: [u8; 32],
}

fn files_of(plan: &UpdatePlan) -> Vec<FileSpec> {
    let def = &PRODUCTS[plan.product];
    let mut rng = SplitMix64::new(plan.content_seed ^ 0x0F11_E500);
    let kb = plan.kb.unwrap_or(0);
    let names: Vec<String> = match (plan.kind, def.flavor) {
        (PlanKind::Detectoid, _) => return Vec::new(),
        // A bundle carries no payload of its own, like the real ones.
        (PlanKind::Software, _) if !plan.bundled.is_empty() => return Vec::new(),
        (PlanKind::Driver, _) => vec![format!("{:016x}.cab", rng.next_u64())],
        (_, WindowsClassic) => {
            let count = rng.range(1, 3);
            (0..count)
                .map(|i| {
                    format!(
                        "{}-KB{kb}-{}-ENU.exe",
                        def.stem,
                        ["x86", "x64", "ia64"][i as usize]
                    )
                })
                .collect()
        }
        (_, WindowsModern) => {
            let count = rng.range(1, 2);
            (0..count)
                .map(|i| format!("{}-KB{kb}-{}.msu", def.stem, ["x86", "x64"][i as usize]))
                .collect()
        }
        (_, Office) => vec![format!("{}-kb{kb}-fullfile-x86-glb.exe", def.stem)],
        (_, ServerApp) => vec![format!("{}-KB{kb}-x86-ENU.exe", def.stem)],
        (_, Definitions) => {
            if rng.chance(1, 2) {
                vec!["mpas-fe.exe".to_owned()]
            } else {
                vec!["mpas-fe.exe".to_owned(), "AM_Delta.exe".to_owned()]
            }
        }
        (_, LocalPublisher) => vec![format!("{}.msi", plan.title.replace(' ', ""))],
        (_, ThirdParty) => vec![format!("{}-{:08x}.exe", def.stem, rng.next_u64() as u32)],
    };
    names
        .into_iter()
        .map(|name| {
            let bits = rng.range(15, 27);
            FileSpec {
                name,
                size: rng.range(1 << bits, (1 << (bits + 1)) - 1),
                modified: plan.created - rng.range(DAY_MS as u64, 20 * DAY_MS as u64) as i64,
                sha1: rng.bytes(),
                sha256: rng.bytes(),
            }
        })
        .collect()
}

fn document_for(
    tax: &Taxonomy,
    plan: &UpdatePlan,
    revision: u32,
    state: PublicationState,
    created: i64,
) -> GeneratedDocument {
    let id = RevisionId {
        update_id: plan.id,
        revision,
    };
    let update_type = match plan.kind {
        PlanKind::Software | PlanKind::BundleChild => UpdateType::Software,
        PlanKind::Driver => UpdateType::Driver,
        PlanKind::Detectoid => UpdateType::Detectoid,
    };
    GeneratedDocument {
        file_name: GeneratedDocument::file_name_for(id),
        id,
        update_type,
        publication_state: state,
        xml: render_update(tax, plan, revision, state, created).into_bytes(),
    }
}

fn render_update(
    tax: &Taxonomy,
    plan: &UpdatePlan,
    revision: u32,
    state: PublicationState,
    created: i64,
) -> String {
    let def = &PRODUCTS[plan.product];
    let files = files_of(plan);
    let mut out = String::with_capacity(4 * 1024);

    put!(
        out,
        r#"<upd:Update xmlns:pub="{NS_PUB}" xmlns:bar="{NS_BAR}" xmlns:lar="{NS_LAR}" "#
    );
    match plan.kind {
        PlanKind::Driver => put!(out, r#"xmlns:drv="{NS_DRV}" "#),
        PlanKind::Software | PlanKind::BundleChild if !files.is_empty() => {
            put!(out, r#"xmlns:cmd="{NS_CMD}" "#)
        }
        _ => {}
    }
    put!(
        out,
        r#"xmlns:upd="{NS_UPD}"><upd:UpdateIdentity UpdateID="{}" RevisionNumber="{revision}" />"#,
        plan.id
    );

    // Properties.
    let state_text = match state {
        PublicationState::Published => "Published",
        PublicationState::Expired => "Expired",
    };
    let type_text = match plan.kind {
        PlanKind::Software | PlanKind::BundleChild => "Software",
        PlanKind::Driver => "Driver",
        PlanKind::Detectoid => "Detectoid",
    };
    put!(
        out,
        r#"<upd:Properties UpdateType="{type_text}" DefaultPropertiesLanguage="en""#
    );
    if !files.is_empty() {
        let handler = if plan.kind == PlanKind::Driver {
            NS_DRV
        } else {
            NS_CMD
        };
        let total: u64 = files.iter().map(|f| f.size).sum();
        put!(
            out,
            r#" Handler="{handler}" MaxDownloadSize="{total}" MinDownloadSize="0""#
        );
    }
    if !plan.bundled.is_empty() {
        out.push_str(r#" AutoSelectOnWebSites="true" ExplicitlyDeployable="true""#);
    }
    if plan.kind == PlanKind::BundleChild {
        out.push_str(r#" ExplicitlyDeployable="false""#);
    }
    if let Some(severity) = plan.severity {
        put!(out, r#" MsrcSeverity="{}""#, severity_text(severity));
    }
    put!(
        out,
        r#" PublicationState="{state_text}" CreationDate="{}" PublisherID="{}">"#,
        iso8601(created),
        plan.publisher
    );
    if !files.is_empty() {
        let behavior = match (plan.kind, def.flavor) {
            (PlanKind::Driver, _) => {
                r#"<upd:InstallationBehavior RebootBehavior="CanRequestReboot" />"#
            }
            (_, Definitions) => r#"<upd:InstallationBehavior Impact="Minor" />"#,
            _ => {
                r#"<upd:InstallationBehavior Impact="Normal" RebootBehavior="CanRequestReboot" />"#
            }
        };
        out.push_str(behavior);
    }
    if plan.kb.is_some() {
        out.push_str("<upd:SupportUrl>http://support.microsoft.com</upd:SupportUrl>");
    }
    if let Some(bulletin) = &plan.bulletin {
        put!(
            out,
            "<upd:SecurityBulletinID>{bulletin}</upd:SecurityBulletinID>"
        );
    }
    if let Some(kb) = plan.kb {
        put!(out, "<upd:KBArticleID>{kb}</upd:KBArticleID>");
    }
    out.push_str("</upd:Properties>");

    render_localized(&mut out, plan, def);
    render_relationships(&mut out, tax, plan);

    // What follows the rules is rendered first, so the rules can grow to the target size.
    let mut tail = String::new();
    render_files(&mut tail, &files);
    render_handler(&mut tail, plan, &files);
    tail.push_str("</upd:Update>");
    let rules_target = plan.min_bytes.saturating_sub(out.len() + tail.len());
    render_rules(&mut out, plan, def, rules_target);
    out.push_str(&tail);
    out
}

fn severity_text(severity: MsrcSeverity) -> &'static str {
    match severity {
        MsrcSeverity::Low => "Low",
        MsrcSeverity::Moderate => "Moderate",
        MsrcSeverity::Important => "Important",
        MsrcSeverity::Critical => "Critical",
    }
}

fn render_localized(out: &mut String, plan: &UpdatePlan, def: &ProductDef) {
    out.push_str("<upd:LocalizedPropertiesCollection>");
    let english_description = match (plan.kind, plan.class) {
        (PlanKind::Detectoid, _) => None,
        (PlanKind::Driver, _) => Some(format!("{} driver update", plan.title)),
        (_, Class::Security) => Some(SECURITY_DESCRIPTION.to_owned()),
        (_, Class::Definition) => Some(DEFINITION_DESCRIPTION.to_owned()),
        _ => Some(UPDATE_DESCRIPTION.replace("{p}", def.name)),
    };
    // English first, then the others in catalog order, like the real documents.
    let order = std::iter::once(EN).chain((0..LANGUAGES.len()).filter(|&i| i != EN));
    for index in order.filter(|i| plan.languages & (1 << i) != 0) {
        let lang = &LANGUAGES[index];
        let (title, description) = if index == EN {
            (plan.title.clone(), english_description.clone())
        } else {
            let template = if plan.class == Class::Security {
                lang.security
            } else {
                lang.update
            };
            let kb = plan.kb.map(|kb| format!(" (KB{kb})")).unwrap_or_default();
            (
                format!("{}{kb}", template.replace("{p}", def.name)),
                Some(lang.description.to_owned()),
            )
        };
        put!(
            out,
            "<upd:LocalizedProperties><upd:Language>{}</upd:Language><upd:Title>{}</upd:Title>",
            lang.tag,
            esc(&title)
        );
        if let Some(description) = description {
            put!(
                out,
                "<upd:Description>{}</upd:Description>",
                esc(&description)
            );
        }
        if let Some(kb) = plan.kb {
            put!(
                out,
                "<upd:MoreInfoUrl>http://support.microsoft.com/kb/{kb}</upd:MoreInfoUrl>"
            );
        }
        out.push_str("</upd:LocalizedProperties>");
    }
    out.push_str("</upd:LocalizedPropertiesCollection>");
}

fn render_relationships(out: &mut String, tax: &Taxonomy, plan: &UpdatePlan) {
    out.push_str("<upd:Relationships>");
    if !plan.superseded.is_empty() {
        out.push_str("<upd:SupersededUpdates>");
        for id in &plan.superseded {
            put!(out, r#"<upd:UpdateIdentity UpdateID="{id}" />"#);
        }
        out.push_str("</upd:SupersededUpdates>");
    }
    out.push_str("<upd:Prerequisites>");
    for id in &plan.prerequisites {
        put!(out, r#"<upd:UpdateIdentity UpdateID="{id}" />"#);
    }
    // Children name their categories in plain groups, as the real ones do.
    let group = if plan.kind == PlanKind::BundleChild {
        "<upd:AtLeastOne>"
    } else {
        r#"<upd:AtLeastOne IsCategory="true">"#
    };
    put!(
        out,
        r#"{group}<upd:UpdateIdentity UpdateID="{}" /></upd:AtLeastOne>"#,
        tax.products[plan.product]
    );
    if plan.kind != PlanKind::Detectoid {
        put!(
            out,
            r#"{group}<upd:UpdateIdentity UpdateID="{}" /></upd:AtLeastOne>"#,
            tax.classification(plan.class)
        );
    }
    out.push_str("</upd:Prerequisites>");
    if !plan.bundled.is_empty() {
        out.push_str("<upd:BundledUpdates>");
        // Alternatives (one per architecture) form a group; a single child stands alone.
        let grouped = plan.bundled.len() > 1;
        if grouped {
            out.push_str("<upd:AtLeastOne>");
        }
        for child in &plan.bundled {
            put!(
                out,
                r#"<upd:UpdateIdentity UpdateID="{}" RevisionNumber="{}" />"#,
                child.update_id,
                child.revision
            );
        }
        if grouped {
            out.push_str("</upd:AtLeastOne>");
        }
        out.push_str("</upd:BundledUpdates>");
    }
    out.push_str("</upd:Relationships>");
}

/// Windows versions `(major, minor)` per product stem, for rules.
fn windows_version(stem: &str) -> (u32, u32) {
    match stem {
        "Windows2000" => (5, 0),
        "WindowsXP" => (5, 1),
        "Windows6.0" => (6, 0),
        "Windows6.1" => (6, 1),
        "Windows8.1" => (6, 3),
        _ => (5, 2),
    }
}

fn render_rules(out: &mut String, plan: &UpdatePlan, def: &ProductDef, target: usize) {
    let mut rng = SplitMix64::new(plan.content_seed ^ 0x000A_11E5);
    let start = out.len();
    let (major, minor) = windows_version(def.stem);
    out.push_str("<upd:ApplicabilityRules>");
    match plan.kind {
        PlanKind::Driver => {
            let (manufacturer, class, _, hardware) = DRIVERS
                .iter()
                .find(|d| plan.title.starts_with(d.0))
                .copied()
                .unwrap_or(DRIVERS[0]);
            let hardware_id = hardware.replace("{}", &format!("{:04X}", rng.below(0x10000)));
            let date = iso8601(TIMELINE_START + rng.below(20 * 365) as i64 * DAY_MS);
            put!(
                out,
                r#"<upd:Metadata><drv:WindowsDriverMetaData HardwareID="{}" WhqlDriverID="{}" Manufacturer="{manufacturer}" Company="{manufacturer}" Provider="{manufacturer}" DriverVerDate="{}" DriverVerVersion="{}.{}.{}.{}" Class="{class}" /></upd:Metadata>"#,
                esc(&hardware_id),
                rng.range(100_000, 9_999_999),
                &date[..10],
                rng.range(1, 30),
                rng.range(0, 99),
                rng.range(0, 999),
                rng.range(0, 9_999),
            );
        }
        PlanKind::Detectoid => {
            put!(
                out,
                r#"<upd:IsInstalled><lar:And><bar:WindowsVersion Comparison="EqualTo" MajorVersion="{major}" MinorVersion="{minor}" /><bar:Processor Architecture="{}" /></lar:And></upd:IsInstalled>"#,
                rng.below(3) * 3
            );
        }
        PlanKind::Software | PlanKind::BundleChild if !plan.bundled.is_empty() => {
            // A bundle is installed when its children are; it has no rules of its own.
            out.push_str("<upd:IsInstalled><lar:False /></upd:IsInstalled>");
        }
        PlanKind::Software | PlanKind::BundleChild => {
            let file = *rng.pick(&SYSTEM_FILES);
            let build = rng.range(1_000, 24_000);
            let fix = rng.range(16_000, 23_000);
            put!(
                out,
                r#"<upd:IsInstalled><bar:FileVersion Path="{file}" Comparison="GreaterThanOrEqualTo" Version="{major}.{minor}.{build}.{fix}" Csidl="37" /></upd:IsInstalled><upd:IsInstallable><lar:And><bar:WindowsVersion Comparison="GreaterThanOrEqualTo" MajorVersion="{major}" MinorVersion="{minor}" /><bar:FileExists Path="{file}" Csidl="37" />"#
            );
            if def.flavor == Office || def.flavor == ServerApp {
                put!(
                    out,
                    r#"<bar:RegKeyExists Key="HKEY_LOCAL_MACHINE" Subkey="SOFTWARE\Microsoft\{}" />"#,
                    esc(def.name)
                );
            }
            // The large tail: long lists of versions this update replaces, like the
            // Defender delta fixture's.
            if out.len() - start < target {
                out.push_str("<lar:Not><lar:Or>");
                let mut version = rng.range(100, 900);
                while out.len() - start + 40 < target {
                    version += rng.range(1, 3);
                    put!(
                        out,
                        r#"<lar:And><bar:FileVersionPrependRegSz Path="{file}" Comparison="EqualTo" Version="{major}.{minor}.{build}.{version}" Key="HKEY_LOCAL_MACHINE" Subkey="SOFTWARE\Microsoft\Windows\CurrentVersion" Value="ProgramFilesDir" /><bar:RegDword Key="HKEY_LOCAL_MACHINE" Subkey="SOFTWARE\Microsoft\Updates\KB{}" Value="Installed" Comparison="EqualTo" Data="1" /></lar:And>"#,
                        plan.kb.unwrap_or(0)
                    );
                }
                out.push_str("</lar:Or></lar:Not>");
            }
            out.push_str("</lar:And></upd:IsInstallable>");
        }
    }
    out.push_str("</upd:ApplicabilityRules>");
}

fn render_files(out: &mut String, files: &[FileSpec]) {
    if files.is_empty() {
        return;
    }
    out.push_str("<upd:Files>");
    for file in files {
        put!(
            out,
            r#"<upd:File Digest="{}" DigestAlgorithm="SHA1" FileName="{}" Size="{}" Modified="{}Z"><upd:AdditionalDigest Algorithm="SHA256">{}</upd:AdditionalDigest></upd:File>"#,
            BASE64.encode(file.sha1),
            esc(&file.name),
            file.size,
            &iso8601(file.modified)[..19],
            BASE64.encode(file.sha256),
        );
    }
    out.push_str("</upd:Files>");
}

fn render_handler(out: &mut String, plan: &UpdatePlan, files: &[FileSpec]) {
    let (PlanKind::Software | PlanKind::BundleChild, Some(first)) = (plan.kind, files.first())
    else {
        return;
    };
    let arguments = match PRODUCTS[plan.product].flavor {
        Definitions => "-q",
        LocalPublisher => "/qn /norestart",
        _ => "/quiet /norestart",
    };
    put!(
        out,
        r#"<upd:HandlerSpecificData xsi:type="cmd:CommandLineInstallation" xmlns:xsi="{NS_XSI}"><cmd:InstallCommand Program="{}" Arguments="{arguments}" RebootByDefault="false" DefaultResult="Failed"><cmd:ReturnCode Code="0" Result="Succeeded" Reboot="false" /><cmd:ReturnCode Code="3010" Result="Succeeded" Reboot="true" /></cmd:InstallCommand></upd:HandlerSpecificData>"#,
        esc(&first.name)
    );
}

// ---------------------------------------------------------------------------------------
// Time.

/// `2005-09-22T00:05:11.471Z`, the form update documents use.
fn iso8601(millis: i64) -> String {
    let t = OffsetDateTime::from_unix_timestamp_nanos(i128::from(millis) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

fn year_of(millis: i64) -> i32 {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(millis) * 1_000_000)
        .map(|t| t.year())
        .unwrap_or(1970)
}

fn year_start(year: i32) -> i64 {
    time::Date::from_calendar_date(year, time::Month::January, 1)
        .map(|d| d.midnight().assume_utc().unix_timestamp() * 1000)
        .unwrap_or(TIMELINE_START)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_matches_the_reference_sequence() {
        // From the reference implementation, seed 1234567.
        let mut rng = SplitMix64::new(1_234_567);
        assert_eq!(rng.next_u64(), 6_457_827_717_110_365_317);
        assert_eq!(rng.next_u64(), 3_203_168_211_198_807_973);
    }

    #[test]
    fn guids_have_the_version_4_layout() {
        let mut rng = SplitMix64::new(7);
        for _ in 0..100 {
            let text = rng.guid().to_string();
            assert_eq!(&text[14..15], "4", "{text}");
            assert!(matches!(&text[19..20], "8" | "9" | "a" | "b"), "{text}");
        }
    }

    #[test]
    fn the_taxonomy_parses() {
        let tax = Taxonomy::new();
        assert_eq!(tax.categories.len(), CatalogSpec::category_documents());
    }

    #[test]
    fn iso8601_has_milliseconds() {
        assert_eq!(iso8601(1_127_347_511_471), "2005-09-22T00:05:11.471Z");
    }
}
