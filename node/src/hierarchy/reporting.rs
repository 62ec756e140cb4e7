//! Reporting site states up: every node with a parent sends its own state and the states it
//! holds of the sites below to the parent, every [`REPORT_INTERVAL`] (or as soon as the
//! parent asks) and soon after each of its own syncs finishes, with backoff while the
//! parent fails.

use std::sync::Arc;

use sitesync_metadata::Timestamp;
use tracing::{debug, warn};

use super::peers::{Peers, StatesReport};
use super::site_states::{MAX_INTERVAL, MIN_INTERVAL, REPORT_INTERVAL, SiteStates};
use crate::clock::Backoff;
use crate::config::UpstreamConfig;
use crate::node::NodeState;
use crate::sync::manager::SyncManager;

/// Starts the reporting task when this node has a parent: its own state and the states it
/// holds, to the parent.
pub fn spawn_reporting(node: Arc<NodeState>, sync: SyncManager, peers: Arc<dyn Peers>) {
    if let UpstreamConfig::Parent(parent) = &node.config.upstream {
        let parent = parent.clone();
        node.clone()
            .spawn_background(report_loop(node, sync, parent, peers));
    }
}

async fn report_loop(
    node: Arc<NodeState>,
    sync: SyncManager,
    parent: String,
    peers: Arc<dyn Peers>,
) {
    let states = match SiteStates::open(&node) {
        Ok(states) => states,
        Err(e) => {
            warn!(error = %e, "cannot report site states: the site-state store does not open");
            return;
        }
    };
    let states = Arc::new(states);
    let mut watch = sync.watch();
    let last_finished = |view: &crate::sync::manager::ManagerView| view.last.as_ref().map(|r| r.id);
    let mut reported_finish = last_finished(&watch.borrow_and_update());
    let mut last_observed = Timestamp::from_unix_millis(i64::MIN);
    let mut backoff = Backoff::reconnect();
    loop {
        // Strictly later than the last report even if the clock stands still or steps back,
        // so the parent never takes a new state for a replay.
        let now = states.now();
        let observed_at = if now > last_observed {
            now
        } else {
            Timestamp::from_unix_millis(last_observed.unix_millis().saturating_add(1))
        };
        last_observed = observed_at;
        let view = sync.watch().borrow().clone();
        let held = {
            let states = states.clone();
            tokio::task::spawn_blocking(move || states.list()).await
        };
        let outcome = match held {
            Ok(Ok(held)) => {
                let report = StatesReport {
                    view,
                    observed_at,
                    held,
                };
                peers.report_states(&parent, report).await
            }
            Ok(Err(e)) => Err(format!("cannot read the site states held here: {e}")),
            Err(e) => Err(format!("the report task failed: {e}")),
        };
        match outcome {
            Ok((count, within)) => {
                debug!(parent = %parent, sites = count, "site states reported to the parent");
                backoff.reset();
                let interval =
                    within.map_or(REPORT_INTERVAL, |d| d.clamp(MIN_INTERVAL, MAX_INTERVAL));
                // Sleep until the interval passes or one of this node's syncs finishes.
                let deadline = tokio::time::Instant::now() + interval;
                loop {
                    tokio::select! {
                        () = tokio::time::sleep_until(deadline) => break,
                        changed = watch.changed() => {
                            if changed.is_err() {
                                tokio::time::sleep_until(deadline).await;
                                break;
                            }
                            let finished = last_finished(&watch.borrow_and_update());
                            if finished != reported_finish {
                                reported_finish = finished;
                                break;
                            }
                        }
                    }
                }
            }
            Err(reason) => {
                let delay = backoff.next_delay();
                warn!(parent = %parent, %reason, retry_in = ?delay, "cannot report site states to the parent site");
                tokio::time::sleep(delay).await;
            }
        }
    }
}
