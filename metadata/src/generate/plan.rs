//! The planner: what each new update of the catalog is.
//!
//! [`Planner`] draws from the random source and the taxonomy tables to decide an update's
//! product, classification, KB article, security bulletin, title, languages, supersedence,
//! prerequisites and, for bundles, children. It returns an [`UpdatePlan`], which holds no XML:
//! the renderer turns a plan into a document, once for its first revision and again for each
//! later one, so a plan must hold everything that stays the same across revisions. The
//! planner remembers only a bounded amount (recent updates per product, some detectoids), so
//! memory does not grow with the catalog.

use crate::model::{MsrcSeverity, RevisionId, UpdateId};

use super::rng::{SplitMix64, mix};
use super::taxonomy::Flavor::{self, *};
use super::taxonomy::{
    Class, DRIVERS, EN_ONLY, LANGUAGES, LOCAL_APPS, MICROSOFT_UPDATE_PUBLISHER, PRODUCTS,
    ProductDef, THIRD_PARTY_PUBLISHER_ID, Taxonomy,
};
use super::timeline::{TIMELINE_END, TIMELINE_START, year_of};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PlanKind {
    Software,
    /// Offered only through its bundle.
    BundleChild,
    Driver,
    Detectoid,
}

/// One update as planned: everything that stays the same across its revisions, so a later
/// revision is the same plan rendered again with another number and state.
#[derive(Debug, Clone)]
pub(super) struct UpdatePlan {
    pub(super) id: UpdateId,
    pub(super) kind: PlanKind,
    pub(super) product: usize,
    pub(super) class: Class,
    pub(super) first_revision: u32,
    /// When the first revision was published; payload files date from shortly before.
    pub(super) created: i64,
    pub(super) publisher: &'static str,
    pub(super) kb: Option<u32>,
    pub(super) bulletin: Option<String>,
    pub(super) severity: Option<MsrcSeverity>,
    /// English title.
    pub(super) title: String,
    /// Bit `i` set: the update is localized in `LANGUAGES[i]` (only security updates and
    /// updates get translated titles).
    pub(super) languages: u32,
    /// Detectoids this update requires.
    pub(super) prerequisites: Vec<UpdateId>,
    pub(super) superseded: Vec<UpdateId>,
    pub(super) bundled: Vec<RevisionId>,
    /// The applicability rules grow until the document has at least this many bytes: the
    /// tail of the size distribution.
    pub(super) min_bytes: usize,
    /// Seeds the details rendered identically in every revision (files, rules, handler).
    pub(super) content_seed: u64,
}

/// Chooses what the next updates are. Its state is bounded: recent ids per product for
/// supersedence, and the detectoids updates can require.
pub(super) struct Planner {
    pub(super) tax: Taxonomy,
    pub(super) rng: SplitMix64,
    /// Per product, ids of its recent updates, oldest first.
    history: Vec<Vec<UpdateId>>,
    detectoids: Vec<(UpdateId, usize)>,
    bulletin: Option<(i32, u32)>,
}

const HISTORY_CAPACITY: usize = 4096;
const DETECTOID_CAPACITY: usize = 512;

impl Planner {
    pub(super) fn new(seed: u64) -> Self {
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
            LineOfBusiness | ThirdParty => &[(Updates, 60), (Security, 30), (Critical, 10)],
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
        let bulletin = if year >= 2017 || matches!(flavor, LineOfBusiness | ThirdParty) {
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
    pub(super) fn plan_software(&mut self, when: i64, product: Option<usize>) -> UpdatePlan {
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
            LineOfBusiness | ThirdParty => None,
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
    pub(super) fn plan_bundle(
        &mut self,
        when: i64,
        children: usize,
    ) -> (UpdatePlan, Vec<UpdatePlan>) {
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

    pub(super) fn plan_driver(&mut self, when: i64) -> UpdatePlan {
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

    pub(super) fn plan_detectoid(&mut self, when: i64) -> UpdatePlan {
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
            (LineOfBusiness, _) => {
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
        LineOfBusiness | ThirdParty => THIRD_PARTY_PUBLISHER_ID,
        _ => MICROSOFT_UPDATE_PUBLISHER,
    }
}
