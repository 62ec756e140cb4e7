//! Gauges read from the node's stores at each scrape, so they are never older than the
//! scrape: each store's revisions and bytes, and for each registered child the sync
//! requests waiting in the outbox and how far it lags behind this node.
//!
//! Lag is [`crate::hierarchy::site_states::lag`], what `sitesyncctl tree` shows: the
//! child's last reported state against this node's own stores now. A child that stopped
//! reporting keeps its last state, so its lag grows as this node moves on; one that
//! registered and never reported is taken to hold nothing
//! ([`crate::hierarchy::site_states::lag_unreported`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, Weak};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeGaugeValue, EncodeLabelSet, EncodeMetric,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::gauge::ConstGauge;
use tracing::warn;

use crate::config::Role;
use crate::hierarchy::Hierarchy;
use crate::hierarchy::site_states::{ReportedState, SiteStates, lag, lag_unreported};
use crate::store::keys::{SITE_DATABASE_DOCUMENTS, UPDATE_SERVER_DOCUMENTS};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StoreLabels {
    store: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ChildLabels {
    child: String,
}

/// Reads the node through its hierarchy, which the node's metrics outlive: a weak handle,
/// so the registry (held by the node's state) does not keep the node alive in a cycle.
#[derive(Debug)]
pub struct StateCollector {
    hierarchy: Weak<Hierarchy>,
    /// Bytes per store are counted by reading every document, so the count is kept with
    /// the stores' sequence numbers it was made at and made again only when they move.
    document_bytes: Mutex<Option<CountedBytes>>,
}

/// Bytes per store tag, counted when the stores were at these sequence numbers.
type CountedBytes = ((u64, u64), HashMap<u8, u64>);

impl StateCollector {
    pub fn new(hierarchy: &Arc<Hierarchy>) -> Self {
        Self {
            hierarchy: Arc::downgrade(hierarchy),
            document_bytes: Mutex::new(None),
        }
    }

    fn document_bytes(&self, hierarchy: &Hierarchy) -> Option<HashMap<u8, u64>> {
        let database = &hierarchy.node.database;
        let at = (
            database.update_server().last_sequence(),
            database.site_database().last_sequence(),
        );
        let mut cached = self
            .document_bytes
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some((counted_at, bytes)) = &*cached
            && *counted_at == at
        {
            return Some(bytes.clone());
        }
        match database.documents().bytes_by_owner() {
            Ok(bytes) => {
                *cached = Some((at, bytes.clone()));
                Some(bytes)
            }
            Err(e) => {
                warn!(error = %e, "cannot count the stores' bytes for the metrics");
                None
            }
        }
    }
}

impl Collector for StateCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(hierarchy) = self.hierarchy.upgrade() else {
            return Ok(());
        };
        let node = &hierarchy.node;
        let mut stores = vec![(
            "update_server",
            node.database.update_server().state(),
            UPDATE_SERVER_DOCUMENTS,
        )];
        // An internet-facing node has no site database (S11).
        if node.config.role == Role::Site {
            stores.push((
                "site_database",
                node.database.site_database().state(),
                SITE_DATABASE_DOCUMENTS,
            ));
        }
        gauges(
            &mut encoder,
            "sitesync_store_revisions",
            "Update revisions each store holds",
            stores
                .iter()
                .map(|(store, state, _)| (StoreLabels { store }, state.revisions)),
        )?;
        if let Some(bytes) = self.document_bytes(&hierarchy) {
            gauges(
                &mut encoder,
                "sitesync_store_bytes",
                "Bytes of update documents each store wrote, as kept (compressed); a document both stores hold is counted once, in the store that wrote it",
                stores.iter().map(|(store, _, tag)| {
                    (StoreLabels { store }, bytes.get(tag).copied().unwrap_or(0))
                }),
            )?;
        }
        let Some(children) = read_children(&hierarchy) else {
            return Ok(());
        };
        if children.is_empty() {
            return Ok(());
        }
        gauges(
            &mut encoder,
            "sitesync_outbox_requests",
            "Sync requests waiting in this node's outbox for each registered child",
            children.iter().map(|c| {
                (
                    ChildLabels {
                        child: c.code.clone(),
                    },
                    c.outbox,
                )
            }),
        )?;
        gauges(
            &mut encoder,
            "sitesync_replication_lag_revisions",
            "Revisions of this node's log each registered child has not applied (update-server revisions for an internet-facing node), by its last report; all this node holds for a child that never reported",
            children.iter().map(|c| {
                (
                    ChildLabels {
                        child: c.code.clone(),
                    },
                    c.lag.revisions,
                )
            }),
        )?;
        gauges(
            &mut encoder,
            "sitesync_replication_lag_seconds",
            "How long each registered child's stores have not matched this node's (0 when they match), by its last report; since it registered for a child that never reported",
            children.iter().map(|c| {
                (
                    ChildLabels {
                        child: c.code.clone(),
                    },
                    c.lag.behind.as_secs_f64(),
                )
            }),
        )
    }
}

/// A registered child as the gauges show it.
struct ChildFigures {
    code: String,
    outbox: u64,
    lag: crate::hierarchy::site_states::Lag,
}

/// Every registered child with its outbox and lag, by site code; `None` when the stores
/// cannot be read (logged), so the scrape still gives the rest.
fn read_children(hierarchy: &Hierarchy) -> Option<Vec<ChildFigures>> {
    let node = &hierarchy.node;
    let read = || -> Result<Vec<ChildFigures>, String> {
        let registered = hierarchy.children.list().map_err(|e| e.to_string())?;
        if registered.is_empty() {
            return Ok(Vec::new());
        }
        let mut outbox: BTreeMap<String, u64> = BTreeMap::new();
        for entry in hierarchy.outbox.list().map_err(|e| e.to_string())? {
            *outbox.entry(entry.child).or_default() += 1;
        }
        let states = SiteStates::open(node).map_err(|e| e.to_string())?;
        let now = states.now();
        let held: HashMap<String, _> = states
            .list()
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|h| (h.state.site_code.clone(), h))
            .collect();
        let own = ReportedState::own_stores(node, now);
        Ok(registered
            .into_iter()
            .map(|child| {
                let lag = match held.get(&child.site_code) {
                    Some(held) => lag(held, &own, now),
                    None => lag_unreported(
                        child.is_internet_node(),
                        &own,
                        child.registered_at,
                        hierarchy.clock.now(),
                    ),
                };
                ChildFigures {
                    outbox: outbox.get(&child.site_code).copied().unwrap_or(0),
                    code: child.site_code,
                    lag,
                }
            })
            .collect())
    };
    read()
        .inspect_err(|e| warn!(error = %e, "cannot read the children for the metrics"))
        .ok()
}

/// One gauge family of `values`.
fn gauges<L: EncodeLabelSet, V: EncodeGaugeValue>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    values: impl IntoIterator<Item = (L, V)>,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in values {
        ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}
