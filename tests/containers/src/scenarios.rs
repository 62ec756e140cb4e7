//! The fault scenarios. Each starts from a converged hierarchy, injects one fault with the
//! Docker engine (a kill, a cut network, a paused container, a restart, a full volume, a
//! stranger's certificate), and returns the time from the end of the fault to a converged
//! hierarchy. Nothing here ever asks a child site to sync: what a child does after a fault
//! it does by itself (invariant 4). The only operator actions are catalog changes and
//! syncs at the top site, as in production.

use std::collections::BTreeMap;
use std::future::Future;
use std::io::Write as _;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use sitesync_metadata::generate::{CatalogChanges, CatalogSpec};
use sitesync_proto::v1;
use tokio::time::Instant;

use crate::checks::{Copy, check_stores, tree_converged};
use crate::cluster::{
    Cluster, SITES, current_sync, digests, last_sync, sequences, settled, short, summary,
};
use crate::docker::{container_log, docker};

/// The catalog `up` generates (update documents).
pub const INITIAL_UPDATES: usize = 2_000;
/// The catalog's seed; its size changes between scenarios, which changes, adds, expires
/// and removes documents.
const SEED: &str = "1";
const SEED_NUMBER: u64 = 1;
/// How long a hierarchy may take to converge after a fault.
const CONVERGE: Duration = Duration::from_secs(300);
/// How often the fast waits poll a node.
const FAST_POLL: Duration = Duration::from_millis(20);
const POLL: Duration = Duration::from_millis(250);

type Outcome<'a> = Pin<Box<dyn Future<Output = anyhow::Result<Duration>> + 'a>>;

pub struct Scenario {
    pub name: &'static str,
    pub title: &'static str,
    /// Whose logs a failure prints.
    pub containers: &'static [&'static str],
    pub run: for<'a> fn(&'a mut Run) -> Outcome<'a>,
}

pub const ALL: [Scenario; 6] = [
    Scenario {
        name: "kill-primary",
        title: "SIGKILL a primary site during replication, then start it",
        containers: &["cen", "pr1", "se1", "in1"],
        run: |run| Box::pin(kill_primary(run)),
    },
    Scenario {
        name: "disconnect-grandchild",
        title: "cut the grandchild's network during a cascade, then reconnect it",
        containers: &["pr1", "se1"],
        run: |run| Box::pin(disconnect_grandchild(run)),
    },
    Scenario {
        name: "pause-parent",
        title: "pause a parent while its children pull from it, then unpause it",
        containers: &["pr1", "se1", "in1"],
        run: |run| Box::pin(pause_parent(run)),
    },
    Scenario {
        name: "restart-hierarchy",
        title: "stop and start the whole hierarchy",
        containers: &["cen", "pr1", "pr2", "se1", "in1"],
        run: |run| Box::pin(restart_hierarchy(run)),
    },
    Scenario {
        name: "full-volume",
        title: "a child site's data volume fills up, then space is freed",
        containers: &["cen", "pr3"],
        run: |run| Box::pin(full_volume(run)),
    },
    Scenario {
        name: "foreign-certificate",
        title: "a node and an operator with certificates from another CA",
        containers: &["cen", "intruder"],
        run: |run| Box::pin(foreign_certificate(run)),
    },
];

/// The state the scenarios share: the hierarchy, a work directory, the catalog's size.
pub struct Run {
    pub cluster: Cluster,
    work: PathBuf,
    updates: usize,
}

impl Run {
    pub fn new(cluster: Cluster, work: PathBuf) -> Self {
        Self {
            cluster,
            work,
            updates: INITIAL_UPDATES,
        }
    }

    /// Waits until every site in `sites` holds CEN's digests (an internet-facing node: its
    /// update server) idle after a successful sync, watching the nodes directly; then
    /// until `sitesyncctl tree --output json` at the top site says the same (invariant 1).
    /// Returns the time it took.
    pub async fn converge(&mut self, what: &str, sites: &[&str]) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let deadline = started + CONVERGE;
        let mut behind;
        loop {
            match self.all_converged(sites).await {
                Ok(()) => break,
                Err(e) => behind = format!("{e:#}"),
            }
            if Instant::now() >= deadline {
                bail!("{what}: not converged after {CONVERGE:?}: {behind}");
            }
            tokio::time::sleep(POLL).await;
        }
        let nodes = started.elapsed();
        loop {
            match tree_converged(&self.cluster, sites) {
                Ok(tree) => {
                    let top = &tree["sites"][0];
                    eprintln!(
                        "  {what}: every site holds CEN's catalog after {:.1} s ({} revisions, update server {}, site database {}); `sitesyncctl tree --output json` agrees after {:.1} s",
                        nodes.as_secs_f64(),
                        top["update_server"]["revisions"],
                        short(top["update_server"]["digest"].as_str().unwrap_or("")),
                        short(top["site_database"]["digest"].as_str().unwrap_or("")),
                        started.elapsed().as_secs_f64()
                    );
                    return Ok(nodes);
                }
                Err(e) => behind = format!("{e:#}"),
            }
            if Instant::now() >= deadline {
                bail!("{what}: `sitesyncctl tree` does not show convergence: {behind}");
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    async fn all_converged(&self, sites: &[&str]) -> anyhow::Result<()> {
        let top = self.cluster.status("CEN").await?;
        ensure!(
            settled(&top) && top.queued_syncs.is_empty(),
            "CEN is not settled: {}",
            summary(&top)
        );
        let (update_server, site_database) = digests(&top);
        for site in sites.iter().filter(|s| **s != "CEN") {
            let status = self.cluster.status(site).await?;
            let internet = status
                .site
                .as_ref()
                .is_some_and(|s| s.role() == v1::SiteRole::Internet);
            let (u, s) = digests(&status);
            let same = u == update_server && (internet || s == site_database);
            ensure!(
                same && settled(&status),
                "{site}: {} (CEN: {}, {})",
                summary(&status),
                short(&update_server),
                short(&site_database)
            );
        }
        Ok(())
    }

    /// Regenerates the top site's upstream catalog with `updates` documents, through the
    /// Compose file's `catalog` service.
    fn set_catalog(&mut self, updates: usize) -> anyhow::Result<()> {
        let count = updates.to_string();
        self.cluster.compose.run(&[
            "run",
            "--rm",
            "-T",
            "catalog",
            "catalog",
            "generate",
            "--updates",
            &count,
            "--seed",
            SEED,
            "--out",
            "/srv/catalog",
            "--force",
        ])?;
        self.updates = updates;
        self.cluster
            .compose
            .set_variable("SITESYNC_CATALOG_UPDATES", &count);
        Ok(())
    }

    /// Changes the catalog to `updates` documents and starts a sync at the top site with
    /// `sitesyncctl sync` in the operator's container.
    fn change_catalog_and_sync(&mut self, updates: usize) -> anyhow::Result<()> {
        let before = self.updates;
        self.set_catalog(updates)?;
        let started = self.cluster.compose.operator(&["sync"])?;
        eprintln!(
            "  catalog {before} -> {updates} documents; at CEN: {}",
            started.trim()
        );
        Ok(())
    }

    /// Each site's newest sequence per store: where a scenario's window starts.
    async fn window(
        &self,
        sites: &[&str],
    ) -> anyhow::Result<BTreeMap<(String, &'static str), u64>> {
        let mut window = BTreeMap::new();
        for site in sites {
            let (u, s) = sequences(&self.cluster.status(site).await?);
            window.insert((site.to_string(), "update_server"), u);
            window.insert((site.to_string(), "site_database"), s);
        }
        Ok(window)
    }

    /// Waits until `site` runs a sync other than `previous` and is in one of `phases`
    /// with part of it done; fails if that sync ends first. Returns the run seen.
    async fn wait_mid_sync(
        &self,
        site: &str,
        previous: &str,
        phases: &[v1::SyncPhase],
    ) -> anyhow::Result<v1::SyncRun> {
        let deadline = Instant::now() + CONVERGE;
        loop {
            if let Ok(status) = self.cluster.status(site).await {
                if let Some(run) = current_sync(&status)
                    && run.sync_id != previous
                    && phases.contains(&run.phase())
                    && run.progress.as_ref().is_some_and(|p| p.done > 0)
                {
                    return Ok(run.clone());
                }
                if let Some(run) = last_sync(&status)
                    && run.sync_id != previous
                    && current_sync(&status).is_none()
                {
                    bail!(
                        "{site} finished sync {} before it was seen in {phases:?}: the catalog change is too small to interrupt",
                        run.sync_id
                    );
                }
            }
            ensure!(Instant::now() < deadline, "{site} never synced again");
            tokio::time::sleep(FAST_POLL).await;
        }
    }

    fn last_sync_id(status: &v1::SiteStatus) -> String {
        last_sync(status)
            .map(|r| r.sync_id.clone())
            .unwrap_or_default()
    }

    /// Checks that `site`'s last sync after `previous` was asked for by its parent (no
    /// operator started it) and succeeded with both phases (one at an internet node).
    async fn assert_parent_requested(&self, site: &str, previous: &str) -> anyhow::Result<()> {
        let status = self.cluster.status(site).await?;
        let run = last_sync(&status).context("no sync")?;
        ensure!(
            run.sync_id != previous,
            "{site} did not sync again after the fault"
        );
        ensure!(
            run.trigger() == v1::SyncTrigger::ParentRequest
                || run.trigger() == v1::SyncTrigger::Retry,
            "{site}'s sync {} was started by {:?}, not by its parent's request or its own retry",
            run.sync_id,
            run.trigger()
        );
        Ok(())
    }
}

/// SIGKILL of PR1 in the middle of its sync from CEN; `docker start`; every site converges,
/// PR1's stores keep what they acknowledged and hold exactly CEN's revisions, logged once.
async fn kill_primary(run: &mut Run) -> anyhow::Result<Duration> {
    let sites = ["CEN", "PR1"];
    let window = run.window(&sites).await?;
    let previous = Run::last_sync_id(&run.cluster.status("PR1").await?);
    run.change_catalog_and_sync(8_000)?;
    let seen = run
        .wait_mid_sync(
            "PR1",
            &previous,
            &[v1::SyncPhase::SiteDatabase, v1::SyncPhase::UpdateServer],
        )
        .await?;
    let pr1 = run.cluster.compose.container("pr1")?;
    docker(&["kill", "--signal", "KILL", &pr1])?;
    let before = run.cluster.seen("PR1");
    let top = run.cluster.status("CEN").await?;
    let progress = seen.progress.unwrap_or_default();
    eprintln!(
        "  killed PR1 mid-stream: its sync {} was in phase {:?} with {} batch(es) applied; PR1's update server was at sequence {} and its site database at {}, CEN's stores at {} and {}",
        seen.sync_id,
        seen.phase(),
        progress.done,
        before.update_server.as_ref().map_or(0, |p| p.sequence),
        before.site_database.as_ref().map_or(0, |p| p.sequence),
        sequences(&top).0,
        sequences(&top).1,
    );
    let state = docker(&[
        "inspect",
        "--format",
        "{{.State.Status}} {{.State.ExitCode}}",
        &pr1,
    ])?;
    ensure!(
        state.trim() == "exited 137",
        "PR1 is not down after SIGKILL: {state}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;

    docker(&["start", &pr1])?;
    run.cluster.forget("PR1");
    let converged = run.converge("after PR1 came back", &SITES).await?;
    run.assert_parent_requested("PR1", &seen.sync_id).await?;
    // Nothing PR1 had before the kill was lost (the watch fails the run otherwise), and
    // its stores took the rest of CEN's changes once each.
    check_stores(
        &run.cluster,
        &sites,
        &[("PR1", "CEN")],
        &window,
        &run.work,
        Copy::Stopped,
    )
    .await?;
    run.converge("after the stores were checked", &SITES)
        .await?;
    Ok(converged)
}

/// PR1's network cut from SE1 while the cascade runs: PR1's request for SE1 waits in its
/// outbox; once SE1 is reconnected it arrives and SE1 converges, with no operator.
async fn disconnect_grandchild(run: &mut Run) -> anyhow::Result<Duration> {
    let previous = Run::last_sync_id(&run.cluster.status("SE1").await?);
    let pr1_previous = Run::last_sync_id(&run.cluster.status("PR1").await?);
    let network = run.cluster.compose.scoped("pr1-site");
    let se1 = run.cluster.compose.container("se1")?;
    run.change_catalog_and_sync(9_500)?;
    docker(&["network", "disconnect", &network, &se1])?;
    let top = run.cluster.status("CEN").await?;
    eprintln!(
        "  SE1 disconnected from {network} while the cascade runs (CEN: {})",
        summary(&top)
    );
    // PR1 syncs, then holds a sync request for SE1 that it cannot deliver.
    let pr1 = run
        .cluster
        .wait_for(
            "PR1",
            "synced, SE1's request waiting",
            CONVERGE,
            POLL,
            |s| {
                settled(s)
                    && Run::last_sync_id(s) != pr1_previous
                    && s.children
                        .iter()
                        .any(|c| c.site_code == "SE1" && c.pending_sync_requests > 0)
            },
        )
        .await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let still = run.cluster.status("PR1").await?;
    let pending = still
        .children
        .iter()
        .find(|c| c.site_code == "SE1")
        .map_or(0, |c| c.pending_sync_requests);
    ensure!(
        pending > 0,
        "PR1's request for SE1 went away while SE1 was cut off"
    );
    eprintln!(
        "  PR1 finished sync {} and holds {pending} undelivered sync request(s) for SE1",
        Run::last_sync_id(&pr1)
    );

    docker(&["network", "connect", "--alias", "se1", &network, &se1])?;
    let converged = run.converge("after SE1 was reconnected", &SITES).await?;
    run.assert_parent_requested("SE1", &previous).await?;
    let pr1 = run.cluster.status("PR1").await?;
    ensure!(
        pr1.children
            .iter()
            .all(|c| c.site_code != "SE1" || c.pending_sync_requests == 0),
        "PR1 still holds requests for SE1"
    );
    Ok(converged)
}

/// PR1 paused (frozen) while SE1 pulls from it: SE1's sync times out and fails cleanly
/// (6703, SE1 keeps answering); after `unpause` SE1 and IN1 converge by themselves.
async fn pause_parent(run: &mut Run) -> anyhow::Result<Duration> {
    let previous = Run::last_sync_id(&run.cluster.status("SE1").await?);
    run.change_catalog_and_sync(16_000)?;
    let seen = run
        .wait_mid_sync(
            "SE1",
            &previous,
            &[v1::SyncPhase::UpdateServer, v1::SyncPhase::SiteDatabase],
        )
        .await?;
    let pr1 = run.cluster.compose.container("pr1")?;
    docker(&["pause", &pr1])?;
    let paused = Instant::now();
    let progress = seen.progress.unwrap_or_default();
    eprintln!(
        "  paused PR1 while SE1's sync {} was in phase {:?} ({} done)",
        seen.sync_id,
        seen.phase(),
        progress.done
    );
    let result = async {
        let failed = run
            .cluster
            .wait_for(
                "SE1",
                "its sync failed on the silent parent",
                CONVERGE,
                POLL,
                |s| {
                    last_sync(s).is_some_and(|r| {
                        r.sync_id == seen.sync_id && r.result() == v1::SyncResult::Failed
                    })
                },
            )
            .await?;
        let reason = last_sync(&failed)
            .map(|r| r.failure_reason.clone())
            .unwrap_or_default();
        let messages = run
            .cluster
            .messages("SE1", &[v1::StatusMessageId::SyncFailed], &seen.sync_id)
            .await?;
        ensure!(
            !messages.is_empty(),
            "SE1 raised no 6703 for its failed sync"
        );
        eprintln!(
            "  SE1 gave up on its paused parent after {:.1} s with 6703: {reason}",
            paused.elapsed().as_secs_f64()
        );
        anyhow::Ok(())
    }
    .await;
    docker(&["unpause", &pr1])?;
    result?;
    let converged = run.converge("after PR1 was unpaused", &SITES).await?;
    run.assert_parent_requested("SE1", &seen.sync_id).await?;
    Ok(converged)
}

/// Every node stopped and started again (`stop`, then `up -d` as an operator would): the
/// digests are the same as before, and after a small catalog change each store's change
/// log continues from where it was, in the same log, taking only the new changes.
async fn restart_hierarchy(run: &mut Run) -> anyhow::Result<Duration> {
    let mut before = BTreeMap::new();
    for site in SITES {
        before.insert(site, run.cluster.status(site).await?);
    }
    let window = run.window(&SITES).await?;
    // Stopping every node is also the moment to read their stores (invariants 2 and 3).
    check_stores(
        &run.cluster,
        &SITES,
        &[
            ("PR1", "CEN"),
            ("PR2", "CEN"),
            ("SE1", "PR1"),
            ("IN1", "PR1"),
        ],
        &window,
        &run.work,
        Copy::Stopped,
    )
    .await?;
    run.cluster.compose.run(&["stop", "--timeout", "30"])?;
    let starting = Instant::now();
    run.cluster.compose.run(&["up", "-d"])?;
    let started = starting.elapsed();
    for site in SITES {
        run.cluster.forget(site);
    }
    // From `up -d` on: starting the containers, then every node answering with its
    // catalog (nothing needs syncing again).
    let converged = started + run.converge("after the restart", &SITES).await?;
    for site in SITES {
        let status = run.cluster.status(site).await?;
        let old = &before[site];
        ensure!(
            digests(&status) == digests(old),
            "{site}'s catalog changed across the restart"
        );
        ensure!(
            sequences(&status) == sequences(old),
            "{site}'s sequences changed across the restart: {:?} -> {:?}",
            sequences(old),
            sequences(&status)
        );
    }

    // A small change (a few new, revised, expired and deleted updates, written into the
    // upstream volume): every store continues its log with only that change.
    let top_before = sequences(&before["CEN"]);
    let top_previous = Run::last_sync_id(&before["CEN"]);
    let volume = run.cluster.compose.scoped("upstream");
    let upstream = docker(&["volume", "inspect", "--format", "{{.Mountpoint}}", &volume])?;
    let changes = CatalogChanges::derive(&CatalogSpec::new(run.updates, SEED_NUMBER), 5, 6);
    changes
        .apply_to_dir(std::path::Path::new(upstream.trim()))
        .with_context(|| format!("writing changes into {}", upstream.trim()))?;
    let started = run.cluster.compose.operator(&["sync"])?;
    eprintln!(
        "  a small change ({} new updates, {} new revisions, {} expirations, {} deletions); at CEN: {}",
        changes.new_updates.len(),
        changes.new_revisions.len(),
        changes.expired.len(),
        changes.deleted.len(),
        started.trim()
    );
    run.cluster
        .wait_for("CEN", "its sync of the change done", CONVERGE, POLL, |s| {
            settled(s) && Run::last_sync_id(s) != top_previous
        })
        .await?;
    run.converge("after a small change", &SITES).await?;
    let top_after = sequences(&run.cluster.status("CEN").await?);
    let top_delta = (top_after.0 - top_before.0, top_after.1 - top_before.1);
    ensure!(top_delta.0 > 0, "the small change changed nothing at CEN");
    for site in SITES {
        let status = run.cluster.status(site).await?;
        let (old_u, old_s) = sequences(&before[site]);
        let (u, s) = sequences(&status);
        let internet = site == "IN1";
        ensure!(
            u > old_u && u - old_u <= top_delta.0,
            "{site}'s update server went from {old_u} to {u} for a change of {} at CEN: it synced from zero",
            top_delta.0
        );
        if !internet {
            ensure!(
                s > old_s && s - old_s <= top_delta.1,
                "{site}'s site database went from {old_s} to {s} for a change of {} at CEN",
                top_delta.1
            );
        }
        eprintln!(
            "  {site}: update server {old_u} -> {u}{}",
            if internet {
                String::new()
            } else {
                format!(", site database {old_s} -> {s}")
            }
        );
    }
    Ok(converged)
}

/// PR3, a child site whose data volume is a small tmpfs, is left with less free space than
/// the next sync needs: the sync fails with 6703 naming the full volume, the stores keep
/// what they had, and once space is freed PR3 retries by itself and converges.
async fn full_volume(run: &mut Run) -> anyhow::Result<Duration> {
    run.cluster
        .compose
        .run(&["--profile", "faults", "up", "-d", "pr3"])?;
    let mut with_pr3: Vec<&str> = SITES.to_vec();
    with_pr3.push("PR3");
    run.converge("PR3's first sync", &with_pr3).await?;
    let compose = &run.cluster.compose;

    let volume = compose.scoped("pr3-data");
    let mountpoint = docker(&["volume", "inspect", "--format", "{{.Mountpoint}}", &volume])?;
    let filler = PathBuf::from(mountpoint.trim()).join("filler");
    let free = free_bytes(filler.parent().context("the volume's directory")?)?;
    // Leave PR3 a little more than the free space its store keeps (64 MiB): too little for
    // a sync of thousands of documents.
    let leave = (64 + 8) << 20;
    ensure!(free > leave, "the tmpfs volume has only {free} bytes free");
    fill(&filler, free - leave).with_context(|| format!("filling {}", filler.display()))?;
    eprintln!(
        "  filled PR3's volume: {:.0} MiB free of its 768 MiB tmpfs",
        free_bytes(filler.parent().unwrap())? as f64 / f64::from(1 << 20)
    );

    let previous = Run::last_sync_id(&run.cluster.status("PR3").await?);
    let before = run.cluster.status("PR3").await?;
    let window = run.window(&["CEN", "PR3"]).await?;
    run.change_catalog_and_sync(run.updates + 4_000)?;
    let failed = run
        .cluster
        .wait_for("PR3", "a sync failed for space", CONVERGE, POLL, |s| {
            last_sync(s)
                .is_some_and(|r| r.sync_id != previous && r.result() == v1::SyncResult::Failed)
        })
        .await?;
    let run_failed = last_sync(&failed).unwrap().clone();
    let reason = run_failed.failure_reason.clone();
    ensure!(
        reason.contains("data volume is full"),
        "PR3's sync failed for another reason: {reason}"
    );
    let messages = run
        .cluster
        .messages(
            "PR3",
            &[v1::StatusMessageId::SyncFailed],
            &run_failed.sync_id,
        )
        .await?;
    let message = messages.first().context("PR3 raised no 6703")?;
    ensure!(
        message.text.contains("data volume is full"),
        "PR3's 6703 does not say why: {}",
        message.text
    );
    eprintln!(
        "  PR3's sync {} failed: 6703 \"{}\"",
        run_failed.sync_id, message.text
    );
    // The 6703 reaches the top site too, where operators look.
    let at_top = run.cluster.compose.operator(&[
        "messages", "--site", "PR3", "--id", "6703", "--output", "json",
    ])?;
    ensure!(
        at_top.contains("data volume is full"),
        "CEN does not show PR3's 6703: {at_top}"
    );
    // The node still answers and its stores did not go back (the watch checks every
    // answer); it kept what it had before this sync or moved forward.
    let (u0, s0) = sequences(&before);
    let (u1, s1) = sequences(&failed);
    ensure!(u1 >= u0 && s1 >= s0, "PR3's stores went back");

    std::fs::remove_file(&filler)?;
    eprintln!(
        "  freed {:.0} MiB on PR3's volume",
        free_bytes(filler.parent().unwrap())? as f64 / f64::from(1 << 20)
    );
    let converged = run.converge("after space was freed", &with_pr3).await?;
    let status = run.cluster.status("PR3").await?;
    let recovered = last_sync(&status).context("no sync")?;
    ensure!(
        recovered.trigger() == v1::SyncTrigger::Retry
            || recovered.trigger() == v1::SyncTrigger::ParentRequest,
        "PR3 recovered through {:?}",
        recovered.trigger()
    );
    eprintln!(
        "  PR3 recovered with sync {} ({:?})",
        recovered.sync_id,
        recovered.trigger()
    );
    // No corruption: PR3's stores, as its volume holds them, are whole and hold exactly
    // CEN's revisions, each change logged once since before the failed sync.
    check_stores(
        &run.cluster,
        &["CEN", "PR3"],
        &[("PR3", "CEN")],
        &window,
        &run.work,
        Copy::Frozen,
    )
    .await?;
    run.cluster
        .compose
        .run(&["--profile", "faults", "stop", "pr3"])?;
    Ok(converged)
}

/// A node with a certificate from another CA cannot join: it trusts the hierarchy's CA, so
/// CEN is the one that checks its certificate, refuses the handshake and never lists it.
/// An operator certificate from that CA is refused too, and the hierarchy's operator
/// refuses to talk to the stranger's node.
async fn foreign_certificate(run: &mut Run) -> anyhow::Result<Duration> {
    let compose = &run.cluster.compose;
    compose.run(&["--profile", "faults", "up", "-d", "intruder"])?;
    let intruder = compose.container("intruder")?;
    let address = docker(&[
        "inspect",
        "--format",
        "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
        &intruder,
    ])?;
    let peer = format!("peer={}:", address.trim());
    // Several registration attempts, each refused by CEN.
    let deadline = Instant::now() + Duration::from_secs(60);
    let refusals = loop {
        let cen_log = container_log(&compose.container("cen")?)?;
        let refusals: Vec<String> = cen_log
            .lines()
            .filter(|l| l.contains("TLS handshake refused") && l.contains(&peer))
            .map(str::to_owned)
            .collect();
        let attempts = container_log(&intruder)?
            .matches("cannot register with the parent site")
            .count();
        if refusals.len() >= 3 && attempts >= 3 {
            eprintln!("  PR4 tried to register {attempts} times");
            break refusals;
        }
        ensure!(
            Instant::now() < deadline,
            "within 60 s CEN refused {} handshakes from the stranger, which tried to register {attempts} times",
            refusals.len()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let refusal = refusals.last().cloned().unwrap_or_default();
    ensure!(
        refusal.contains("certificate"),
        "CEN refused the stranger for another reason: {refusal}"
    );
    eprintln!("  CEN: {}", refusal.trim());
    let tree = compose.operator(&["tree", "--output", "json"])?;
    ensure!(!tree.contains("\"PR4\""), "CEN lists the stranger: {tree}");
    let status = run.cluster.status("CEN").await?;
    ensure!(
        status.children.iter().all(|c| c.site_code != "PR4"),
        "CEN registered the stranger"
    );

    // An operator whose certificate comes from the other CA (trusting the hierarchy's).
    let pki = compose.scoped("pki");
    let other = compose.scoped("other-pki");
    let network = compose.scoped("cen-site");
    let refusals_of = |log: &str| -> Vec<String> {
        log.lines()
            .filter(|l| l.contains("TLS handshake refused") && l.contains("certificate"))
            .map(str::to_owned)
            .collect()
    };
    let cen = compose.container("cen")?;
    let refused_before = refusals_of(&container_log(&cen)?).len();
    let refused = docker(&[
        "run",
        "--rm",
        "--network",
        &network,
        "-v",
        &format!("{pki}:/etc/sitesync/pki:ro"),
        "-v",
        &format!("{other}:/other:ro"),
        "--entrypoint",
        "sitesyncctl",
        &compose.image,
        "--node",
        "cen:8530",
        "--ca",
        "/etc/sitesync/pki/ca.pem",
        "--certificate",
        "/other/operators/admin.pem",
        "--key",
        "/other/operators/admin.key",
        "status",
    ]);
    let Err(error) = refused else {
        bail!("an operator from another CA got CEN's status");
    };
    let error = error.to_string();
    // CEN is the side that refuses: its log names the certificate.
    let deadline = Instant::now() + Duration::from_secs(10);
    let refusal = loop {
        let refusals = refusals_of(&container_log(&cen)?);
        if refusals.len() > refused_before {
            break refusals.last().cloned().unwrap_or_default();
        }
        ensure!(
            Instant::now() < deadline,
            "CEN logged no refused handshake for the operator from another CA, which saw: {}",
            first_line(&error)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    eprintln!(
        "  an operator from another CA is refused: {}; CEN: {}",
        first_line(&error),
        refusal.trim()
    );
    // The hierarchy's operator refuses the stranger's server certificate.
    let refused = compose.operator(&["--node", "intruder:8530", "status"]);
    let Err(error) = refused else {
        bail!("the operator trusted the stranger's certificate");
    };
    let error = error.to_string();
    ensure!(
        error.contains("UnknownIssuer"),
        "the operator refused the stranger for another reason: {error}"
    );
    eprintln!(
        "  the operator refuses the stranger: {}",
        first_line(&error)
    );
    compose.run(&["--profile", "faults", "stop", "intruder"])?;
    // The hierarchy did not notice.
    run.converge("with the stranger gone", &SITES).await
}

fn first_line(text: &str) -> String {
    // The tool's own message, without the command line that ran it.
    let message = text.find("error: ").map_or(text, |at| &text[at..]);
    message
        .lines()
        .next()
        .unwrap_or_default()
        .chars()
        .take(300)
        .collect()
}

/// Free bytes on the file system holding `dir`, as `df` reports them.
fn free_bytes(dir: &std::path::Path) -> anyhow::Result<u64> {
    let out = std::process::Command::new("df")
        .args(["--block-size=1", "--output=avail"])
        .arg(dir)
        .output()?;
    ensure!(out.status.success(), "df {} failed", dir.display());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .context("df's output")
}

/// Writes `bytes` of zeros to `path` (a tmpfs allocates what is written).
fn fill(path: &std::path::Path, bytes: u64) -> anyhow::Result<()> {
    let mut file = std::fs::File::create(path)?;
    let chunk = vec![0u8; 1 << 20];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        file.write_all(&chunk[..n])?;
        left -= n as u64;
    }
    file.sync_all()?;
    Ok(())
}
