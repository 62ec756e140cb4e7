//! The SPEC's invariants, checked on the containers:
//!
//! - [`tree_converged`]: invariant 1, through `sitesyncctl tree --output json` in the
//!   operator's container — every site holds the top site's digests, idle after a
//!   successful sync.
//! - [`check_stores`]: invariants 2 and 3 on the stores themselves. The nodes are stopped
//!   (a clean shutdown), their data directories copied out of the containers, and each
//!   copy opened: every change log runs from 1 to its newest sequence without a gap,
//!   names no revision twice since the scenario began (a change applied twice after a
//!   crash would), passes the store's own consistency check, and a child holds exactly the
//!   revisions its parent holds. Then the nodes start again. A node whose volume does not
//!   outlive it is frozen instead while its data is copied.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail, ensure};
use serde_json::Value;
use sitesync_metadata::RevisionId;
use sitesync_node::store::{CatalogStore, DEFAULT_CACHE_BYTES, NodeDatabase};

use crate::cluster::{Cluster, service};
use crate::docker::docker;

/// Reads `sitesyncctl tree --output json` at the top site and checks that every site in
/// `sites` reported, is reachable, holds the top site's digests (an internet-facing node:
/// its update server only) and is idle after a successful sync. Returns the tree, or why
/// it is not converged yet.
pub fn tree_converged(cluster: &Cluster, sites: &[&str]) -> anyhow::Result<Value> {
    let text = cluster.compose.operator(&["tree", "--output", "json"])?;
    let tree: Value = serde_json::from_str(&text).context("tree --output json")?;
    let entries: BTreeMap<String, &Value> = tree["sites"]
        .as_array()
        .context("the tree lists no sites")?
        .iter()
        .filter_map(|s| Some((s["site_code"].as_str()?.to_owned(), s)))
        .collect();
    let top = entries.get("CEN").context("the tree has no CEN")?;
    let digest = |site: &Value, store: &str| site[store]["digest"].as_str().map(str::to_owned);
    let top_update_server = digest(top, "update_server").context("CEN has no digest")?;
    let top_site_database = digest(top, "site_database").context("CEN has no digest")?;
    let mut problems = Vec::new();
    for code in sites {
        let Some(site) = entries.get(*code) else {
            problems.push(format!("{code} is not in the tree"));
            continue;
        };
        if site["reported"] != Value::Bool(true) || site["reachable"] != Value::Bool(true) {
            problems.push(format!("{code} is not reported as reachable"));
        }
        if digest(site, "update_server").as_deref() != Some(top_update_server.as_str()) {
            problems.push(format!(
                "{code}'s update server digest {:?} is not CEN's {top_update_server}",
                digest(site, "update_server")
            ));
        }
        if site["role"] == "internet" {
            if site["site_database"]["revisions"].as_u64().unwrap_or(0) != 0 {
                problems.push(format!("{code} is internet-facing and has a site database"));
            }
        } else if digest(site, "site_database").as_deref() != Some(top_site_database.as_str()) {
            problems.push(format!(
                "{code}'s site database digest {:?} is not CEN's {top_site_database}",
                digest(site, "site_database")
            ));
        }
        if !site["current_sync"].is_null() || site["last_sync"]["result"] != "succeeded" {
            problems.push(format!(
                "{code} is not idle after a successful sync (current {}, last result {})",
                site["current_sync"]["phase"], site["last_sync"]["result"]
            ));
        }
    }
    if problems.is_empty() {
        Ok(tree)
    } else {
        bail!("{}", problems.join("; "))
    }
}

/// A store's log from sequence `window_start` on, as the tests read it.
struct LogCheck {
    held: Vec<RevisionId>,
    digest: sitesync_metadata::CatalogDigest,
}

/// Checks one store copy; see the module documentation.
fn check_store(store: &CatalogStore, what: &str, window_start: u64) -> anyhow::Result<LogCheck> {
    let state = store.state();
    ensure!(
        state.first_retained_sequence <= 1,
        "{what}: the log was compacted (first retained {}), cannot check it",
        state.first_retained_sequence
    );
    let log = store.changes_since(0, usize::MAX)?;
    let mut expected = 1;
    for change in &log {
        ensure!(
            change.sequence == expected,
            "{what}: the change log jumps from {} to {} (a gap)",
            expected.saturating_sub(1),
            change.sequence
        );
        expected += 1;
    }
    ensure!(
        expected - 1 == state.last_sequence,
        "{what}: the log ends at {} but the store says {}",
        expected - 1,
        state.last_sequence
    );
    let mut recent = BTreeSet::new();
    for change in log.iter().filter(|c| c.sequence > window_start) {
        ensure!(
            recent.insert(change.revision),
            "{what}: {:?} is logged twice since sequence {window_start} (again at {}): a change applied twice",
            change.revision,
            change.sequence
        );
    }
    let report = store.verify()?;
    ensure!(
        report.is_consistent(),
        "{what}: the store's consistency check failed: {:?}",
        report.problems
    );
    let mut held = Vec::new();
    loop {
        let page = store.revisions_after(held.last().copied(), 10_000)?;
        if page.is_empty() {
            break;
        }
        held.extend(page);
    }
    eprintln!(
        "  {what}: log 1..={} without gap, {} records since {window_start} each naming another revision, consistent, {} revisions",
        state.last_sequence,
        recent.len(),
        held.len()
    );
    Ok(LogCheck {
        held,
        digest: store.digest(),
    })
}

/// How [`check_stores`] gets a copy of a node's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Copy {
    /// Stop the node (a clean shutdown), copy, start it again.
    Stopped,
    /// Freeze the node (`docker pause`), copy, thaw it: what the disk holds at that moment,
    /// as after a crash. For a node whose volume does not outlive it (a tmpfs).
    Frozen,
}

/// Copies the data of `sites` out, checks their stores (a child against its parent when
/// both are in `sites`), and lets them run on. `window_start` gives, per site and store
/// (`update_server`, `site_database`), the sequence the scenario began at.
pub async fn check_stores(
    cluster: &Cluster,
    sites: &[&str],
    parents: &[(&str, &str)],
    window_start: &BTreeMap<(String, &'static str), u64>,
    work: &Path,
    how: Copy,
) -> anyhow::Result<()> {
    let compose = &cluster.compose;
    let services: Vec<String> = sites.iter().map(|s| service(s)).collect();
    let mut containers = Vec::new();
    for service in &services {
        containers.push(compose.container(service)?);
    }
    if how == Copy::Stopped {
        let mut args = vec!["stop", "--timeout", "30"];
        args.extend(services.iter().map(String::as_str));
        compose.run(&args)?;
    } else {
        let mut args = vec!["pause"];
        args.extend(containers.iter().map(String::as_str));
        docker(&args)?;
    }
    let mut copies = BTreeMap::new();
    let mut copied = Ok(());
    for (site, container) in sites.iter().zip(&containers) {
        let copy = work.join(format!("{site}-data"));
        let _ = std::fs::remove_dir_all(&copy);
        copied = docker(&[
            "cp",
            &format!("{container}:/var/lib/sitesync"),
            &copy.display().to_string(),
        ])
        .map(drop);
        if copied.is_err() {
            break;
        }
        copies.insert(site.to_string(), copy);
    }
    if how == Copy::Stopped {
        let mut args = vec!["start"];
        args.extend(services.iter().map(String::as_str));
        compose.run(&args)?;
        for site in sites {
            cluster.forget(site);
        }
    } else {
        let mut args = vec!["unpause"];
        args.extend(containers.iter().map(String::as_str));
        docker(&args)?;
    }
    copied?;

    let window = window_start.clone();
    let checked = tokio::task::spawn_blocking(move || check_copies(&copies, &window)).await??;
    for (child, parent) in parents {
        let (Some(c), Some(p)) = (checked.get(*child), checked.get(*parent)) else {
            continue;
        };
        for (store, (child_store, parent_store)) in ["update server", "site database"]
            .iter()
            .zip([(&c.0, &p.0), (&c.1, &p.1)])
        {
            let (Some(child_store), Some(parent_store)) = (child_store, parent_store) else {
                continue;
            };
            ensure!(
                child_store.held == parent_store.held,
                "{child}'s {store} holds other revisions than {parent}'s ({} against {})",
                child_store.held.len(),
                parent_store.held.len()
            );
            ensure!(
                child_store.digest == parent_store.digest,
                "{child}'s {store} digest differs from {parent}'s"
            );
            eprintln!(
                "  {child}'s {store} holds exactly {parent}'s {} revisions",
                parent_store.held.len()
            );
        }
    }
    Ok(())
}

type Checked = BTreeMap<String, (Option<LogCheck>, Option<LogCheck>)>;

fn check_copies(
    copies: &BTreeMap<String, PathBuf>,
    window: &BTreeMap<(String, &'static str), u64>,
) -> anyhow::Result<Checked> {
    let mut out = BTreeMap::new();
    for (site, copy) in copies {
        let database = NodeDatabase::open(&copy.join("db"), DEFAULT_CACHE_BYTES)
            .with_context(|| format!("opening the copy of {site}'s database"))?;
        let start = |store: &'static str| window.get(&(site.clone(), store)).copied().unwrap_or(0);
        let update_server = check_store(
            database.update_server(),
            &format!("{site}'s update server"),
            start("update_server"),
        )?;
        let site_database = if database.site_database().state().last_sequence > 0 {
            Some(check_store(
                database.site_database(),
                &format!("{site}'s site database"),
                start("site_database"),
            )?)
        } else {
            None
        };
        out.insert(site.clone(), (Some(update_server), site_database));
        drop(database);
        let _ = std::fs::remove_dir_all(copy);
    }
    Ok(out)
}
