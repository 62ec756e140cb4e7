//! One trace per cascade (observability): a hierarchy of real node processes exports its
//! spans over OTLP to a collector inside the test — a tonic server of the OTLP trace
//! service — and the test follows one trace from the top site's sync to every leaf: each
//! child's sync sits under the `RequestSync` call its parent's outbox delivery made, which
//! sits under the parent's own sync. A child that is down when the cascade reaches it still
//! joins the trace when it comes back, because the trace context waits in the outbox.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use sitesync_metadata::generate::{CatalogChanges, CatalogSpec, write_catalog};
use sitesync_proto::v1;
use sitesync_tests::cluster::{Hierarchy, NodeProcess};
use sitesync_tests::otlp::{Collector, Received};

/// A cascade of a small catalog through a few debug-build nodes.
const CONVERGE: Duration = Duration::from_secs(240);

/// A hierarchy whose nodes export their spans to `collector` at once.
async fn traced_hierarchy(collector: &Collector) -> Hierarchy {
    let endpoint = collector.start().await;
    let mut hierarchy = Hierarchy::new().unwrap();
    hierarchy.set_env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint);
    hierarchy.set_env("OTEL_BSP_SCHEDULE_DELAY", "100");
    hierarchy
}

/// Idle, and the last sync succeeded.
fn settled(status: &v1::SiteStatus) -> bool {
    let site = status.site.as_ref();
    site.is_some_and(|s| s.current_sync.is_none())
        && site
            .and_then(|s| s.last_sync.as_ref())
            .is_some_and(|r| r.result() == v1::SyncResult::Succeeded)
}

fn digest(status: &v1::SiteStatus) -> Option<v1::CatalogDigest> {
    status
        .site
        .as_ref()
        .and_then(|s| s.update_server.as_ref())
        .and_then(|s| s.digest.clone())
}

async fn wait_converged(node: &NodeProcess, reference: &v1::SiteStatus) {
    let want = digest(reference);
    node.wait_status("the top site's catalog", CONVERGE, |status| {
        settled(status) && digest(status) == want
    })
    .await
    .unwrap();
}

/// The top site `CEN`, its primary `PR1`, `PR1`'s secondary `SE1` and internet-facing node
/// `IN1`, converged on a first catalog; returns the catalog's spec.
async fn three_levels(hierarchy: &mut Hierarchy) -> CatalogSpec {
    let spec = CatalogSpec::new(120, 21);
    write_catalog(hierarchy.catalog(), &spec, |_| {}).unwrap();
    hierarchy.start_top("CEN").await.unwrap();
    let top = hierarchy.node("CEN");
    let first = top
        .wait_status("the first sync", CONVERGE, settled)
        .await
        .unwrap();
    hierarchy.start_child("PR1", "CEN").await.unwrap();
    hierarchy.start_child("SE1", "PR1").await.unwrap();
    hierarchy.start_internet("IN1", "PR1").await.unwrap();
    for site in ["PR1", "SE1", "IN1"] {
        wait_converged(hierarchy.node(site), &first).await;
    }
    spec
}

/// Runs an operator's sync at the top site after a catalog change; returns the sync's trace
/// id, read from its 6701 status message.
async fn sync_top_with_changes(hierarchy: &Hierarchy, spec: &CatalogSpec, seed: u64) -> String {
    CatalogChanges::derive(spec, 6, seed)
        .apply_to_dir(hierarchy.catalog())
        .unwrap();
    let top = hierarchy.node("CEN");
    let sync_id = top.run_sync(v1::SyncKind::Full).await.unwrap();
    let done = top.sync_finished(&sync_id, CONVERGE).await.unwrap();
    assert_eq!(
        done.message_id(),
        v1::StatusMessageId::SyncDone,
        "{}",
        done.text
    );
    assert_eq!(done.trace_id.len(), 32, "6702 names no trace: {done:?}");
    let started = top
        .messages(&[v1::StatusMessageId::SyncStarted], &sync_id)
        .await
        .unwrap();
    assert_eq!(started.len(), 1);
    assert_eq!(
        started[0].trace_id, done.trace_id,
        "one sync, one trace: {started:?}"
    );
    done.trace_id
}

/// The spans of `site` in `trace` whose name starts with `name`.
fn named<'a>(trace: &'a [Received], site: &str, name: &str) -> Vec<&'a Received> {
    trace
        .iter()
        .filter(|s| s.site == site && s.name.starts_with(name))
        .collect()
}

/// `span`'s ancestors in `trace`, nearest first.
fn ancestors<'a>(trace: &'a [Received], span: &Received) -> Vec<&'a Received> {
    let by_id: HashMap<&str, &Received> = trace.iter().map(|s| (s.span_id.as_str(), s)).collect();
    let mut out = Vec::new();
    let mut parent = span.parent_span_id.as_str();
    while let Some(next) = by_id.get(parent) {
        out.push(*next);
        parent = next.parent_span_id.as_str();
    }
    out
}

/// Waits until `trace` holds a sync span from every site in `sites`; returns the trace.
async fn wait_for_syncs(collector: &Collector, trace_id: &str, sites: &[&str]) -> Vec<Received> {
    let deadline = tokio::time::Instant::now() + CONVERGE;
    loop {
        let trace = collector.trace(trace_id);
        let synced: BTreeSet<&str> = trace
            .iter()
            .filter(|s| s.name.starts_with("sync full"))
            .map(|s| s.site.as_str())
            .collect();
        if sites.iter().all(|site| synced.contains(site)) {
            // The spans around the syncs (deliveries, calls) end around the same time.
            tokio::time::sleep(Duration::from_secs(1)).await;
            return collector.trace(trace_id);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "trace {trace_id} has syncs from {synced:?} only, not all of {sites:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `child`'s sync in `trace` is a child of the `RequestSync` call it served, which is a child
/// of `parent`'s delivery of that request, which is inside `parent`'s sync.
fn assert_under_parents_request(trace: &[Received], child: &str, parent: &str) {
    let syncs = named(trace, child, "sync full");
    assert_eq!(
        syncs.len(),
        1,
        "{child} synced once in the trace: {syncs:#?}"
    );
    let sync = syncs[0];
    let chain = ancestors(trace, sync);
    let names: Vec<(&str, &str)> = chain
        .iter()
        .map(|s| (s.site.as_str(), s.name.as_str()))
        .collect();
    let request = chain
        .first()
        .unwrap_or_else(|| panic!("{child}'s sync has no parent in the trace: {sync:#?}"));
    assert_eq!(
        (request.site.as_str(), request.name.as_str()),
        (child, "sitesync.v1.Hierarchy/RequestSync"),
        "{child}'s sync is not under the request it received: {names:?}"
    );
    let delivery = chain.get(1).unwrap_or_else(|| panic!("{names:?}"));
    assert_eq!(delivery.site, parent, "{names:?}");
    assert!(
        delivery
            .name
            .starts_with(&format!("deliver sync request to {child}")),
        "{names:?}"
    );
    assert!(
        chain
            .iter()
            .any(|s| s.site == parent && s.name.starts_with("sync full")),
        "the delivery to {child} is not inside {parent}'s sync: {names:?}"
    );
}

fn assert_every_span_is_the_nodes(trace: &[Received]) {
    for span in trace {
        assert_eq!(span.service, "sitesync-node", "{span:#?}");
        assert!(!span.site.is_empty(), "{span:#?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_holds_the_whole_cascade_from_the_top_site_to_every_leaf() {
    let collector = Collector::default();
    let mut hierarchy = traced_hierarchy(&collector).await;
    let spec = three_levels(&mut hierarchy).await;

    let trace_id = sync_top_with_changes(&hierarchy, &spec, 5).await;
    let trace = wait_for_syncs(&collector, &trace_id, &["CEN", "PR1", "SE1", "IN1"]).await;
    assert_every_span_is_the_nodes(&trace);

    // The top site's sync starts the trace, under the operator's call.
    let top = named(&trace, "CEN", "sync full");
    assert_eq!(top.len(), 1, "{top:#?}");
    assert!(
        ancestors(&trace, top[0])
            .iter()
            .all(|s| s.name == "sitesync.v1.Admin/RunSync"),
        "{top:#?}"
    );
    assert_under_parents_request(&trace, "PR1", "CEN");
    assert_under_parents_request(&trace, "SE1", "PR1");
    assert_under_parents_request(&trace, "IN1", "PR1");

    // Every phase and every pulled batch is in it; the child's calls to its parent were
    // served inside the trace, at the parent.
    for (site, phases) in [
        ("CEN", &["update_server (6704)", "site_database (6705)"][..]),
        (
            "PR1",
            &[
                "update_server (6704)",
                "internet_update_servers (6706)",
                "site_database (6705)",
            ],
        ),
        ("SE1", &["update_server (6704)", "site_database (6705)"]),
        ("IN1", &["update_server (6704)"]),
    ] {
        for phase in phases {
            assert!(
                !named(&trace, site, phase).is_empty(),
                "{site} has no {phase} span"
            );
        }
    }
    for site in ["PR1", "SE1", "IN1"] {
        assert!(
            !named(&trace, site, "apply batch").is_empty(),
            "{site} applied no batch in the trace"
        );
    }
    for parent in ["CEN", "PR1"] {
        assert!(
            !named(&trace, parent, "sitesync.v1.UpdateServer/GetChanges").is_empty(),
            "{parent} served no change stream in the trace"
        );
    }
    let batch = named(&trace, "PR1", "apply batch")[0];
    assert!(batch.attributes.contains_key("revisions"), "{batch:#?}");
    assert!(batch.attributes.contains_key("bytes"), "{batch:#?}");

    // The children's status messages name the same trace.
    let pr1 = hierarchy.node("PR1");
    let status = pr1.status().await.unwrap();
    let run = status.site.unwrap().last_sync.unwrap();
    let messages = pr1.messages(&[], &run.sync_id).await.unwrap();
    assert!(!messages.is_empty());
    for message in messages {
        assert_eq!(message.trace_id, trace_id, "{message:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_down_when_the_cascade_reaches_it_joins_the_trace_when_it_returns() {
    let collector = Collector::default();
    let mut hierarchy = traced_hierarchy(&collector).await;
    let spec = three_levels(&mut hierarchy).await;

    // PR1 crashes; the cascade's request for it waits in the top site's outbox.
    hierarchy.node_mut("PR1").kill();
    let trace_id = sync_top_with_changes(&hierarchy, &spec, 6).await;
    let before = collector.trace(&trace_id);
    assert!(
        named(&before, "PR1", "sync full").is_empty(),
        "PR1 synced while it was down"
    );

    hierarchy.node_mut("PR1").restart().await.unwrap();
    let trace = wait_for_syncs(&collector, &trace_id, &["CEN", "PR1", "SE1", "IN1"]).await;
    assert_every_span_is_the_nodes(&trace);
    assert_under_parents_request(&trace, "PR1", "CEN");
    assert_under_parents_request(&trace, "SE1", "PR1");
    assert_under_parents_request(&trace, "IN1", "PR1");
    // Delivery was tried while PR1 was down: the failed tries are in the trace too.
    let deliveries = named(&trace, "CEN", "deliver sync request to PR1");
    assert!(!deliveries.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_log_lines_inside_a_sync_carry_the_site_the_sync_and_the_trace() {
    let mut hierarchy = Hierarchy::new().unwrap();
    hierarchy.set_env("SITESYNC_LOG_FORMAT", "json");
    write_catalog(hierarchy.catalog(), &CatalogSpec::new(40, 22), |_| {}).unwrap();
    hierarchy.start_top("CEN").await.unwrap();
    let top = hierarchy.node("CEN");
    let status = top
        .wait_status("the first sync", CONVERGE, settled)
        .await
        .unwrap();
    let sync_id = status.site.unwrap().last_sync.unwrap().sync_id;
    let done = top.sync_finished(&sync_id, CONVERGE).await.unwrap();

    let log = std::fs::read_to_string(&top.log_path).unwrap();
    let mut in_sync = 0;
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let object: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("a log line is not JSON ({e}): {line}"));
        for field in ["timestamp", "level", "target", "message", "site"] {
            assert!(object.get(field).is_some(), "no {field}: {line}");
        }
        assert_eq!(object["site"], "CEN", "{line}");
        if object.get("sync_id").map(ToString::to_string) == Some(sync_id.clone()) {
            in_sync += 1;
            assert_eq!(
                object["trace_id"], done.trace_id,
                "a line of sync {sync_id} without its trace: {line}"
            );
        }
    }
    assert!(
        in_sync >= 5,
        "only {in_sync} lines carry sync {sync_id}:\n{log}"
    );
}
