//! What the sync manager records: how long each phase of a sync takes, how syncs end, the
//! revisions they apply and the status messages they raise.
//!
//! The labels are plain words the manager chooses (`full`, `parent_request`,
//! `update_server`, …), so this file knows nothing of the manager's types. Durations are
//! measured on the monotonic clock, not on the sync clock: they say how long the machine
//! worked, whatever time the schedule believes it is.

use std::sync::Mutex;
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The phase label of a whole sync, from its start to its end, next to the phases proper.
pub const WHOLE_SYNC: &str = "total";

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    phase: &'static str,
}

/// How one sync ended.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SyncLabels {
    /// `full` or `manual`.
    pub kind: &'static str,
    /// `schedule`, `operator`, `retry`, `restart` or `parent_request`.
    pub trigger: &'static str,
    /// `succeeded` or `failed`.
    pub result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AppliedLabels {
    store: &'static str,
    change: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    id: u32,
}

/// What one store phase applied: new, changed, expired and deleted revisions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Applied {
    pub new: u64,
    pub changed: u64,
    pub expired: u64,
    pub deleted: u64,
}

/// The running sync's phase and since when, so the phase is timed when the next begins.
#[derive(Debug, Clone, Copy)]
struct Running {
    sync_id: u64,
    phase: &'static str,
    phase_began: Instant,
    sync_began: Instant,
}

#[derive(Debug)]
pub struct SyncMetrics {
    durations: Family<PhaseLabels, Histogram, fn() -> Histogram>,
    syncs: Family<SyncLabels, Counter>,
    applied: Family<AppliedLabels, Counter>,
    status_messages: Family<StatusLabels, Counter>,
    /// One sync runs at a time (the manager's queue), so one slot is enough.
    running: Mutex<Option<Running>>,
}

/// From a tenth of a second to about four hours: a leaf's sync of a few updates to a top
/// site's first sync of a whole catalog.
fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.1, 3.0, 12))
}

impl SyncMetrics {
    pub(super) fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            durations: Family::new_with_constructor(duration_histogram),
            syncs: Family::default(),
            applied: Family::default(),
            status_messages: Family::default(),
            running: Mutex::new(None),
        };
        registry.register(
            "sitesync_sync_duration_seconds",
            "How long syncs take, by phase: starting, update_server (phase 1), site_database (phase 2, with the signing, client policy and cascade that end a sync) and total (the whole sync)",
            metrics.durations.clone(),
        );
        registry.register(
            "sitesync_syncs",
            "Syncs finished, by kind (full, manual), trigger (schedule, operator, retry, restart, parent_request) and result (succeeded, failed)",
            metrics.syncs.clone(),
        );
        registry.register(
            "sitesync_revisions_applied",
            "Revisions syncs applied, by store (update_server, site_database) and change (new, changed, expired, deleted)",
            metrics.applied.clone(),
        );
        registry.register(
            "sitesync_status_messages",
            "Status messages this node raised, by message id (6701-6706, 6790)",
            metrics.status_messages.clone(),
        );
        metrics
    }

    /// Sync `sync_id` is now in `phase`; the phase it was in, if another, has ended.
    /// Called as often as its progress moves, so the same phase again changes nothing.
    pub fn phase(&self, sync_id: u64, phase: &'static str) {
        let now = Instant::now();
        let mut running = self.lock();
        match *running {
            Some(r) if r.sync_id == sync_id && r.phase == phase => {}
            Some(r) if r.sync_id == sync_id => {
                self.observe(r.phase, now - r.phase_began);
                *running = Some(Running {
                    phase,
                    phase_began: now,
                    ..r
                });
            }
            _ => {
                *running = Some(Running {
                    sync_id,
                    phase,
                    phase_began: now,
                    sync_began: now,
                });
            }
        }
    }

    /// Sync `sync_id` has ended as `labels` says, having applied `applied` to each store
    /// named: its last phase and the whole sync are timed, and it is counted.
    pub fn finished(&self, sync_id: u64, labels: SyncLabels, applied: &[(&'static str, Applied)]) {
        let now = Instant::now();
        if let Some(r) = self.lock().take_if(|r| r.sync_id == sync_id) {
            self.observe(r.phase, now - r.phase_began);
            self.observe(WHOLE_SYNC, now - r.sync_began);
        }
        self.syncs.get_or_create(&labels).inc();
        for &(store, counts) in applied {
            for (change, count) in [
                ("new", counts.new),
                ("changed", counts.changed),
                ("expired", counts.expired),
                ("deleted", counts.deleted),
            ] {
                self.applied
                    .get_or_create(&AppliedLabels { store, change })
                    .inc_by(count);
            }
        }
    }

    /// A status message `id` was raised here.
    pub fn status_message(&self, id: u32) {
        self.status_messages
            .get_or_create(&StatusLabels { id })
            .inc();
    }

    fn observe(&self, phase: &'static str, duration: std::time::Duration) {
        self.durations
            .get_or_create(&PhaseLabels { phase })
            .observe(duration.as_secs_f64());
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Running>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }
}
