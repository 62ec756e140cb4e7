//! Watching the hierarchy converge: the top site's first scheduled sync followed with
//! `Admin.WatchSync` ([`follow_top_sync`]), then every node's `Admin.GetSiteStatus` polled
//! until each holds the top site's catalog ([`wait_for_convergence`]), with a progress bar
//! on a terminal and lines otherwise; and [`settle_tree`], which waits for the top site's
//! view of the tree to catch up before it is drawn.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use indicatif::{ProgressBar, ProgressDrawTarget};
use sitesync_proto::v1;

use super::processes::Nodes;
use super::{Role, SITES, SiteSpec};
use crate::client::{Node, printable, unary};
use crate::commands::sync::{bar_style, message_text};
use crate::units::{self, human_duration};
use crate::views::{StoreView, SyncRunView, short_digest};

/// How long the top site may take to begin its first scheduled sync once it listens.
const FIRST_SYNC_TIMEOUT: Duration = Duration::from_secs(30);

/// How often the sites' states are polled while waiting for them.
const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// How long to wait for the top site's view of the tree (built from the reports sites send
/// up) to show every site in step before drawing it as it is.
const TREE_SETTLE: Duration = Duration::from_secs(10);

/// A progress bar on stderr when it is a terminal; otherwise lines, so logs get the counts.
struct Progress {
    bar: ProgressBar,
}

impl Progress {
    fn new(prefix: &str) -> Self {
        let bar = ProgressBar::hidden()
            .with_style(bar_style(false))
            .with_prefix(prefix.to_owned());
        bar.set_draw_target(ProgressDrawTarget::stderr());
        bar.enable_steady_tick(Duration::from_millis(120));
        Self { bar }
    }

    fn is_terminal(&self) -> bool {
        !self.bar.is_hidden()
    }

    fn line(&self, text: &str) {
        if self.is_terminal() {
            self.bar.println(text);
        } else {
            eprintln!("{text}");
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}

/// Follows the top site's first scheduled sync (it starts by itself when the node starts)
/// with `Admin.WatchSync` until it finishes, and returns it; an error if it failed.
pub async fn follow_top_sync(
    top: &mut Node,
    nodes: &mut Nodes,
    deadline: Instant,
) -> anyhow::Result<v1::SyncRun> {
    let code = SITES[0].code;
    let log = nodes.sites[0].node.log().display().to_string();
    let sync_id = first_sync_id(top, nodes).await?;
    let progress = Progress::new(code);
    let mut stream = top
        .admin
        .watch_sync(v1::WatchSyncRequest {
            sync_id: sync_id.clone(),
        })
        .await
        .map_err(|status| top.failed("Admin.WatchSync", status))?
        .into_inner();
    // Without a terminal, a line per phase once its size is known: the counts for logs.
    let mut phase_printed = None;
    let mut bounded = None;
    loop {
        let next = tokio::time::timeout_at(deadline.into(), stream.message())
            .await
            .map_err(|_| {
                anyhow!("{code}'s sync {sync_id} did not finish within the timeout; its log: {log}")
            })?
            .map_err(|status| top.failed("Admin.WatchSync", status))?;
        let Some(update) = next else {
            bail!("{code} ended the watch of sync {sync_id} before it finished; its log: {log}");
        };
        for message in &update.messages {
            progress.line(&message_text(message));
        }
        let Some(run) = update.run else { continue };
        let view = SyncRunView::new(&run);
        let (done, total) = run
            .progress
            .as_ref()
            .filter(|p| p.phase == run.phase)
            .map_or((0, 0), |p| (p.done, p.total));
        if !progress.is_terminal() && phase_printed != Some(run.phase) && total > 0 {
            progress.line(&format!(
                "{code} {}: {done}/{total} · {}",
                view.phase_description,
                view.counts.summary()
            ));
            phase_printed = Some(run.phase);
        }
        if bounded != Some(total > 0) {
            progress.bar.set_style(bar_style(total > 0));
            bounded = Some(total > 0);
        }
        if total > 0 {
            progress.bar.set_length(total);
        } else {
            progress.bar.unset_length();
        }
        progress.bar.set_position(done);
        progress.bar.set_message(format!(
            "{} · {} new, {} changed, {} expired",
            view.phase.replace('_', " "),
            view.counts.new,
            view.counts.changed,
            view.counts.expired
        ));
        if run.phase() == v1::SyncPhase::Finished {
            if run.result() == v1::SyncResult::Succeeded {
                return Ok(run);
            }
            bail!(
                "{code}'s scheduled sync failed: {}; its log: {log}",
                view.failure_reason
                    .as_deref()
                    .unwrap_or("the node gave no reason")
            );
        }
    }
}

/// The id of the top site's first sync: the one running or queued, or the one that already
/// finished (a small catalog syncs before the children are up).
async fn first_sync_id(top: &mut Node, nodes: &mut Nodes) -> anyhow::Result<String> {
    let deadline = Instant::now() + FIRST_SYNC_TIMEOUT;
    loop {
        nodes.check_running()?;
        let state = site_status(top).await?;
        let site = state.site.unwrap_or_default();
        if let Some(run) = site
            .current_sync
            .or_else(|| state.queued_syncs.into_iter().next())
            .or(site.last_sync)
        {
            return Ok(run.sync_id);
        }
        if Instant::now() > deadline {
            bail!(
                "{} did not start its scheduled sync within {} of starting; its log: {}",
                SITES[0].code,
                human_duration(FIRST_SYNC_TIMEOUT),
                nodes.sites[0].node.log().display()
            );
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

async fn site_status(node: &mut Node) -> anyhow::Result<v1::SiteStatus> {
    Ok(node
        .admin
        .get_site_status(unary(v1::GetSiteStatusRequest {}))
        .await
        .map_err(|status| node.failed("Admin.GetSiteStatus", status))?
        .into_inner())
}

/// A site that reached the top site's catalog.
#[derive(Debug, Clone)]
pub struct Converged {
    pub state: v1::SiteState,
    /// The sync that brought it there (its 6702).
    pub run: v1::SyncRun,
}

/// The stores of every site at the end, and when each got there.
#[derive(Debug)]
pub struct Convergence {
    /// The top site's sync the demo followed (the one that cascaded).
    pub top_run: v1::SyncRun,
    /// Per site, in [`SITES`] order; the top site included.
    pub sites: Vec<Converged>,
}

/// Polls every node until its stores hold the top site's catalog; prints each site's 6702 as
/// it arrives. Fails at `deadline` naming the sites that did not get there.
pub async fn wait_for_convergence(
    clients: &mut [Node],
    nodes: &mut Nodes,
    top_run: &v1::SyncRun,
    (deadline, timeout): (Instant, Duration),
) -> anyhow::Result<Convergence> {
    let top_code = SITES[0].code;
    let top_run = top_run.clone();
    let top_done = top_run.finished_at.unwrap_or_default();
    let progress = Progress::new("cascade");
    let mut converged: Vec<Option<Converged>> = vec![None; SITES.len()];
    let mut states: Vec<Option<v1::SiteStatus>> = vec![None; SITES.len()];
    loop {
        nodes.check_running()?;
        for (index, client) in clients.iter_mut().enumerate() {
            // A node that does not answer now may answer at the next poll; one that died is
            // caught by `check_running`.
            states[index] = site_status(client).await.ok();
        }
        let Some(top) = states[0].as_ref().and_then(|s| s.site.clone()) else {
            bail!(
                "{top_code} stopped answering; its log: {}",
                nodes.sites[0].node.log().display()
            );
        };
        converged[0] = Some(Converged {
            state: top.clone(),
            run: top_run.clone(),
        });
        for index in 1..SITES.len() {
            if converged[index].is_some() {
                continue;
            }
            let Some(state) = states[index].as_ref().and_then(|s| s.site.clone()) else {
                continue;
            };
            let Some(run) = in_step(&SITES[index], &state, &top) else {
                continue;
            };
            let message = sync_done_text(&mut clients[index], &run.sync_id).await;
            let after = run
                .finished_at
                .as_ref()
                .and_then(|done| units::between(&top_done, done))
                .map(|d| format!("+{}", human_duration(d)))
                .unwrap_or_else(|| "+0.0 s".to_owned());
            progress.line(&format!(
                "{} 6702 {after} after {top_code}'s · {}",
                SITES[index].code,
                message.unwrap_or_else(|| describe_stores(&state))
            ));
            converged[index] = Some(Converged { state, run });
        }
        let pending: Vec<usize> = (1..SITES.len())
            .filter(|&i| converged[i].is_none())
            .collect();
        if pending.is_empty() {
            let sites = converged.into_iter().flatten().collect();
            return Ok(Convergence { top_run, sites });
        }
        if Instant::now() > deadline {
            drop(progress);
            bail!(not_converged(&pending, &states, &top, nodes, timeout));
        }
        progress.bar.set_message(
            pending
                .iter()
                .map(|&i| pending_state(&SITES[i], states[i].as_ref()))
                .collect::<Vec<_>>()
                .join(" · "),
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// The sync that brought `state` to the top site's catalog, if it is there: the same
/// update-server digest and, at a site node, the same site-database digest, after a
/// successful sync.
fn in_step(spec: &SiteSpec, state: &v1::SiteState, top: &v1::SiteState) -> Option<v1::SyncRun> {
    let digest = |store: &Option<v1::StoreInfo>| store.as_ref().and_then(|s| s.digest.clone());
    let update_server = digest(&state.update_server);
    if update_server.is_none() || update_server != digest(&top.update_server) {
        return None;
    }
    if spec.role == Role::Site && digest(&state.site_database) != digest(&top.site_database) {
        return None;
    }
    state
        .last_sync
        .clone()
        .filter(|run| run.result() == v1::SyncResult::Succeeded)
}

/// The text of the 6702 a site raised for `sync_id`, from the site itself.
async fn sync_done_text(node: &mut Node, sync_id: &str) -> Option<String> {
    let response = node
        .admin
        .list_status_messages(unary(v1::ListStatusMessagesRequest {
            message_ids: vec![v1::StatusMessageId::SyncDone.into()],
            sync_id: sync_id.to_owned(),
            page_size: 1,
            ..Default::default()
        }))
        .await
        .ok()?
        .into_inner();
    response
        .messages
        .first()
        .map(|message| printable(&message.text))
}

/// `update server 2000 rev ecd56cd6cd8c7648, site database 2000 rev ecd56cd6cd8c7648`.
fn describe_stores(state: &v1::SiteState) -> String {
    let store = |name: &str, store: &Option<v1::StoreInfo>| {
        store.as_ref().map(|s| {
            let view = StoreView::new(s);
            format!("{name} {} rev {}", view.revisions, view.short_digest())
        })
    };
    [
        store("update server", &state.update_server),
        store("site database", &state.site_database),
    ]
    .into_iter()
    .flatten()
    .collect::<Vec<_>>()
    .join(", ")
}

/// `PR1 update server 1200/2000`, `SE1 waiting`: short, as a progress line has one row.
fn pending_state(spec: &SiteSpec, status: Option<&v1::SiteStatus>) -> String {
    let Some(state) = status.and_then(|s| s.site.as_ref()) else {
        return format!("{} not answering", spec.code);
    };
    let Some(run) = &state.current_sync else {
        return format!("{} waiting", spec.code);
    };
    let phase = SyncRunView::new(run).phase.replace('_', " ");
    match run.progress.as_ref().filter(|p| p.total > 0) {
        Some(p) => format!("{} {phase} {}/{}", spec.code, p.done, p.total),
        None => format!("{} {phase}", spec.code),
    }
}

/// The error for sites that did not reach the top site's catalog in time.
fn not_converged(
    pending: &[usize],
    states: &[Option<v1::SiteStatus>],
    top: &v1::SiteState,
    nodes: &Nodes,
    timeout: Duration,
) -> String {
    let top_store = top.update_server.as_ref().map(StoreView::new);
    let mut text = format!(
        "{} of {} sites did not reach {}'s catalog (update server {} rev {}) within {} \
         (--timeout):",
        pending.len(),
        SITES.len(),
        SITES[0].code,
        top_store.as_ref().map_or(0, |s| s.revisions),
        short_digest(top_store.as_ref().and_then(|s| s.digest.as_deref())),
        human_duration(timeout),
    );
    for &index in pending {
        let spec = &SITES[index];
        let state = states[index].as_ref().and_then(|s| s.site.as_ref());
        let stores = state.map_or_else(|| "not answering".to_owned(), describe_stores);
        let sync = match state {
            None => String::new(),
            Some(state) => match (&state.current_sync, &state.last_sync) {
                (Some(run), _) => format!("; syncing: {}", SyncRunView::new(run).phase_description),
                (None, Some(run)) => {
                    let view = SyncRunView::new(run);
                    match view.failure_reason {
                        Some(reason) => format!("; its last sync failed: {reason}"),
                        None => format!(
                            "; its last sync {} ({})",
                            view.result.unwrap_or("finished"),
                            view.trigger.unwrap_or("unknown trigger")
                        ),
                    }
                }
                (None, None) => "; it has not synced".to_owned(),
            },
        };
        let _ = write!(
            text,
            "\n  {} ({}, parent {}): {stores}{sync}; log: {}",
            spec.code,
            spec.role.name(),
            spec.parent.unwrap_or("-"),
            nodes.sites[index].node.log().display()
        );
    }
    text
}

/// Waits (at most [`TREE_SETTLE`]) until the top site's view of the hierarchy, built from
/// the states sites report upward every few seconds, shows every site in step with the top,
/// so the tree drawn next is the final one; it is drawn as it is otherwise.
pub async fn settle_tree(top: &mut Node) {
    let deadline = Instant::now() + TREE_SETTLE;
    while Instant::now() < deadline {
        let Ok(hierarchy) = top
            .admin
            .get_hierarchy(unary(v1::GetHierarchyRequest { stale_after: None }))
            .await
        else {
            return;
        };
        let states: Vec<&v1::SiteState> = hierarchy
            .get_ref()
            .sites
            .iter()
            .filter_map(|node| node.state.as_ref())
            .collect();
        let state_of = |code: &str| states.iter().copied().find(|s| s.site_code == code);
        let settled = state_of(SITES[0].code).is_some_and(|top| {
            SITES[1..].iter().all(|spec| {
                state_of(spec.code).is_some_and(|state| in_step(spec, state, top).is_some())
            })
        });
        if settled {
            return;
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(digest: u8, revisions: u64) -> Option<v1::StoreInfo> {
        Some(v1::StoreInfo {
            digest: Some(v1::CatalogDigest {
                value: vec![digest; 32],
            }),
            revision_count: revisions,
            ..Default::default()
        })
    }

    fn state(code: &str, update_server: u8, site_database: Option<u8>) -> v1::SiteState {
        v1::SiteState {
            site_code: code.into(),
            update_server: store(update_server, 10),
            site_database: site_database.and_then(|d| store(d, 10)),
            last_sync: Some(v1::SyncRun {
                sync_id: "1".into(),
                result: v1::SyncResult::Succeeded.into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_site_is_in_step_when_its_stores_match_the_top_sites() {
        let top = state("CEN", 7, Some(7));
        let [_, pr1, _, _, in1] = &SITES;
        assert!(in_step(pr1, &state("PR1", 7, Some(7)), &top).is_some());
        // The site database lags: not yet.
        assert!(in_step(pr1, &state("PR1", 7, Some(1)), &top).is_none());
        assert!(in_step(pr1, &state("PR1", 7, None), &top).is_none());
        // An internet-facing node has no site database to compare.
        assert!(in_step(in1, &state("IN1", 7, None), &top).is_some());
        assert!(in_step(in1, &state("IN1", 1, None), &top).is_none());
        // Equal stores after a failed sync are not a 6702.
        let mut failed = state("PR1", 7, Some(7));
        failed.last_sync.as_mut().unwrap().result = v1::SyncResult::Failed.into();
        assert!(in_step(pr1, &failed, &top).is_none());
    }

    #[test]
    fn pending_sites_read_in_one_short_line() {
        let mut status = v1::SiteStatus {
            site: Some(state("PR1", 0, Some(0))),
            ..Default::default()
        };
        assert_eq!(pending_state(&SITES[1], Some(&status)), "PR1 waiting");
        status.site.as_mut().unwrap().current_sync = Some(v1::SyncRun {
            phase: v1::SyncPhase::UpdateServer.into(),
            progress: Some(v1::PhaseProgress {
                phase: v1::SyncPhase::UpdateServer.into(),
                done: 12,
                total: 200,
            }),
            ..Default::default()
        });
        assert_eq!(
            pending_state(&SITES[1], Some(&status)),
            "PR1 update server 12/200"
        );
        assert_eq!(pending_state(&SITES[3], None), "SE1 not answering");
    }
}
