//! Synchronization at the top site, driven over real TCP gRPC with a manual clock: the
//! status-message sequence, full versus manual syncs, retry after failure, queueing,
//! per-document isolation, settings, schedule and client policy.

use std::path::Path;
use std::time::Duration;

use sitesync_metadata::generate::{CatalogChanges, CatalogSpec, write_catalog};
use sitesync_metadata::{PublicationState, Timestamp};
use sitesync_node::sync::manager::SyncResult;
use sitesync_proto::v1;
use sitesync_proto::v1::client_policy_client::ClientPolicyClient;

mod common;

use common::{T0, TestNode};

fn catalog(n: usize, seed: u64) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_catalog(dir.path(), &CatalogSpec::new(n, seed), |_| {}).unwrap();
    dir
}

fn fixtures_into(dir: &Path) {
    sitesync_metadata::sample::write_to(dir).unwrap();
}

#[tokio::test]
async fn a_sync_raises_6701_6704_6705_6702_and_publishes_a_client_policy() {
    let upstream = tempfile::tempdir().unwrap();
    fixtures_into(upstream.path());
    let mut node = TestNode::start(upstream.path(), "").await;
    let first = node.finished(1).await;
    assert_eq!(
        first.result,
        Some(SyncResult::Succeeded),
        "{:?}",
        first.failure_reason
    );
    assert_eq!(first.counts.update_server.new, 5);
    assert_eq!(first.counts.site_database.new, 5);
    assert_eq!(node.message_ids(1).await, vec![6701, 6704, 6705, 6702]);

    let status = node.status().await;
    let site = status.site.unwrap();
    let update_server = site.update_server.unwrap();
    let site_database = site.site_database.unwrap();
    assert_eq!(update_server.revision_count, 5);
    assert_eq!(update_server.digest, site_database.digest);
    assert_eq!(site.last_sync.unwrap().result(), v1::SyncResult::Succeeded);
    assert_eq!(status.client_policy_version, 1);

    let mut clients = ClientPolicyClient::new(node.channel.clone());
    let policy = clients
        .get_machine_policy(v1::GetMachinePolicyRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(policy.version, 1);
    assert_eq!(policy.site_code, "CEN");
    assert_eq!(policy.catalog_digest, update_server.digest);
    assert_eq!(policy.revision_count, 5);
    assert_eq!(policy.update_servers.len(), 1);
    assert_ne!(
        policy.update_servers[0].address, "127.0.0.1:0",
        "the bound address, not the configured one"
    );

    // Another sync, nothing new upstream: a new policy version all the same.
    let (id, _) = node.run_sync(v1::SyncKind::Full).await;
    assert_eq!(node.finished(id).await.counts.update_server.new, 0);
    let policy = clients
        .get_machine_policy(v1::GetMachinePolicyRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(policy.version, 2);
}

/// S3 versus S4 on a catalog where one update is new, one revised, one expired and one
/// deleted since the last sync.
#[tokio::test]
async fn a_manual_sync_takes_only_new_updates_and_a_full_sync_takes_everything() {
    let spec = CatalogSpec::new(400, 11);
    let upstream = catalog(400, 11);
    let mut node = TestNode::start(upstream.path(), "").await;
    assert_eq!(node.finished(1).await.result, Some(SyncResult::Succeeded));

    let changes = CatalogChanges::derive(&spec, 1, 99);
    changes.apply_to_dir(upstream.path()).unwrap();
    let new = changes.new_updates[0].id;
    let revised = changes.new_revisions[0].id;
    let expired = changes.expired[0].id;
    let deleted = changes.deleted[0];
    let state = node.started.node.clone();
    let site = state.database.site_database();
    let update_server = state.database.update_server();
    let revised_before = site.latest(revised.update_id).unwrap().unwrap().id.revision;

    let (id, _) = node.run_sync(v1::SyncKind::Manual).await;
    let run = node.finished(id).await;
    assert_eq!(run.result, Some(SyncResult::Succeeded));
    // The update server syncs everything (phase 1 is always complete)...
    assert_eq!(
        update_server.latest(new.update_id).unwrap().unwrap().id,
        new
    );
    assert_eq!(
        update_server.latest(revised.update_id).unwrap().unwrap().id,
        revised
    );
    assert_eq!(
        update_server
            .latest(expired.update_id)
            .unwrap()
            .unwrap()
            .publication_state,
        PublicationState::Expired
    );
    assert!(update_server.latest(deleted).unwrap().is_none());
    // ...but the site database takes only the new update.
    assert_eq!(run.counts.site_database.new, 1);
    assert_eq!(
        run.counts.site_database.changed
            + run.counts.site_database.expired
            + run.counts.site_database.deleted,
        0
    );
    assert_eq!(site.latest(new.update_id).unwrap().unwrap().id, new);
    assert_eq!(
        site.latest(revised.update_id).unwrap().unwrap().id.revision,
        revised_before
    );
    assert_eq!(
        site.latest(expired.update_id)
            .unwrap()
            .unwrap()
            .publication_state,
        PublicationState::Published
    );
    assert!(site.latest(deleted).unwrap().is_some());
    assert_ne!(site.digest(), update_server.digest());

    // A full sync brings the rest, and the two stores agree.
    let (id, _) = node.run_sync(v1::SyncKind::Full).await;
    let run = node.finished(id).await;
    assert_eq!(
        run.counts.update_server.new + run.counts.update_server.changed,
        0
    );
    assert_eq!(run.counts.site_database.changed, 1);
    assert_eq!(run.counts.site_database.expired, 1);
    assert_eq!(run.counts.site_database.deleted, 1);
    assert_eq!(site.latest(revised.update_id).unwrap().unwrap().id, revised);
    assert!(site.latest(deleted).unwrap().is_none());
    assert_eq!(site.digest(), update_server.digest());
    assert!(site.verify().unwrap().is_consistent());
    assert!(update_server.verify().unwrap().is_consistent());
}

#[tokio::test]
async fn a_failed_sync_raises_6703_and_is_retried_sixty_minutes_later() {
    let upstream = tempfile::tempdir().unwrap();
    let missing = upstream.path().join("not-there-yet");
    let mut node = TestNode::start(&missing, "").await;
    let failed = node.finished(1).await;
    assert_eq!(failed.result, Some(SyncResult::Failed));
    let reason = failed.failure_reason.clone().unwrap();
    assert!(reason.contains("not-there-yet"), "{reason}");
    let failed_at = failed.finished_at.unwrap();
    assert_eq!(
        failed.retry_at,
        Some(Timestamp(failed_at.0 + 60 * 60 * 1000))
    );
    assert_eq!(node.message_ids(1).await, vec![6701, 6704, 6703]);

    // Nothing happens before the hour is up.
    assert_eq!(
        node.clock.next_deadline().await,
        Timestamp(failed_at.0 + 3_600_000)
    );
    node.clock.advance(Duration::from_secs(59 * 60));
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        node.started.sync.watch().borrow().last.as_ref().unwrap().id,
        1
    );

    // The upstream comes back; the retry an hour after the failure succeeds.
    fixtures_into(&missing);
    node.clock.advance(Duration::from_secs(60));
    let retried = node.finished(2).await;
    assert_eq!(
        retried.result,
        Some(SyncResult::Succeeded),
        "{:?}",
        retried.failure_reason
    );
    assert_eq!(
        retried.trigger,
        sitesync_node::sync::manager::SyncTrigger::Retry
    );
    assert_eq!(node.message_ids(2).await, vec![6701, 6704, 6705, 6702]);
    assert_eq!(
        node.started.node.database.site_database().state().revisions,
        5
    );
}

#[tokio::test]
async fn scheduled_syncs_follow_the_interval() {
    let upstream = tempfile::tempdir().unwrap();
    fixtures_into(upstream.path());
    let node = TestNode::start(upstream.path(), "[sync]\nschedule = \"7d\"\n").await;
    assert_eq!(node.finished(1).await.result, Some(SyncResult::Succeeded));
    let next = node.clock.next_deadline().await;
    assert_eq!(next, Timestamp(T0.0 + 7 * 24 * 3_600_000));
    node.clock.advance(Duration::from_secs(7 * 24 * 3600));
    let second = node.finished(2).await;
    assert_eq!(
        second.trigger,
        sitesync_node::sync::manager::SyncTrigger::Schedule
    );
    assert_eq!(
        node.clock.next_deadline().await,
        Timestamp(T0.0 + 14 * 24 * 3_600_000)
    );
}

#[tokio::test]
async fn a_request_during_a_sync_is_queued() {
    let upstream = catalog(3_000, 5);
    let mut node = TestNode::start(upstream.path(), "").await;
    let mut watch = node.started.sync.watch();
    tokio::time::timeout(Duration::from_secs(30), async {
        while watch.borrow_and_update().current.is_none() {
            watch.changed().await.unwrap();
        }
    })
    .await
    .unwrap();
    let (full, disposition) = node.run_sync(v1::SyncKind::Full).await;
    assert_eq!(disposition, v1::RunSyncDisposition::Queued);
    // The same request again joins the one already waiting.
    let (again, disposition) = node.run_sync(v1::SyncKind::Full).await;
    assert_eq!((again, disposition), (full, v1::RunSyncDisposition::Queued));
    // No sync has completed under the current settings yet, so a manual request is run as
    // a full one (a manual sync must not leave the stores half-filtered): it joins too.
    let (manual, disposition) = node.run_sync(v1::SyncKind::Manual).await;
    assert_eq!(
        (manual, disposition),
        (full, v1::RunSyncDisposition::Queued)
    );
    let status = node.status().await;
    assert_eq!(status.queued_syncs.len(), 1);
    assert_eq!(status.queued_syncs[0].sync_id, full.to_string());

    // One sync at a time: the queued run starts after the first one finished.
    let first = node.finished(1).await;
    let second = node.finished(full).await;
    assert!(second.started_at >= first.finished_at);
    assert_eq!(second.result, Some(SyncResult::Succeeded));

    // Once settings have been synced, a manual request stays manual and queues on its own.
    let (running, _) = node.run_sync(v1::SyncKind::Full).await;
    let (manual, _) = node.run_sync(v1::SyncKind::Manual).await;
    assert_ne!(manual, running);
    let manual_run = node.finished(manual).await;
    assert_eq!(
        manual_run.kind,
        sitesync_node::sync::manager::SyncKind::Manual
    );
    assert!(manual_run.started_at >= node.finished(running).await.finished_at);
}

#[tokio::test]
async fn a_malformed_document_is_skipped_with_6790_and_the_rest_syncs() {
    let upstream = tempfile::tempdir().unwrap();
    fixtures_into(upstream.path());
    let broken = upstream
        .path()
        .join("0d2e6c6b-3f6e-4d41-9f0c-7d5a0c9b1a10-r100.xml");
    std::fs::write(&broken, b"<upd:Update xmlns:upd=\"http://schemas.microsoft.com/msus/2002/12/Update\"><upd:UpdateIdentity").unwrap();
    let mut node = TestNode::start(upstream.path(), "").await;
    let run = node.finished(1).await;
    assert_eq!(run.result, Some(SyncResult::Succeeded));
    assert_eq!(run.counts.skipped, 1);
    assert_eq!(run.counts.update_server.new, 5);
    let ids = node.message_ids(1).await;
    assert_eq!(ids, vec![6701, 6704, 6790, 6705, 6702]);
    // Only warnings and worse: a full first page, not one thinned out after paging.
    let warning = node
        .admin
        .list_status_messages(v1::ListStatusMessagesRequest {
            min_severity: v1::Severity::Warning as i32,
            page_size: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .messages
        .remove(0);
    assert_eq!(warning.severity(), v1::Severity::Warning);
    assert!(
        warning
            .text
            .contains("0d2e6c6b-3f6e-4d41-9f0c-7d5a0c9b1a10-r100.xml"),
        "{}",
        warning.text
    );

    // Fixed upstream, it is picked up by the next sync.
    std::fs::remove_file(&broken).unwrap();
    let replacement = CatalogSpec::new(60, 3).documents().last().unwrap();
    std::fs::write(
        upstream.path().join(&replacement.file_name),
        &replacement.xml,
    )
    .unwrap();
    let (id, _) = node.run_sync(v1::SyncKind::Full).await;
    let run = node.finished(id).await;
    assert_eq!(run.counts.skipped, 0);
    assert!(run.counts.update_server.new >= 1);
}

#[tokio::test]
async fn settings_choose_what_enters_the_stores_and_a_change_makes_the_next_sync_full() {
    let upstream = catalog(600, 21);
    let mut node = TestNode::start(
        upstream.path(),
        "[sync]\nclassifications = [\"Security Updates\"]\n",
    )
    .await;
    assert_eq!(node.finished(1).await.result, Some(SyncResult::Succeeded));
    let security: Vec<_> = list_all(&mut node, "Security Updates").await;
    let everything = node.started.node.database.update_server().state().updates;
    assert!(!security.is_empty());
    // Only security updates (and the categories, and what they bundle or need) entered.
    let summaries = node
        .started
        .node
        .database
        .update_server()
        .summaries(None, 10_000)
        .unwrap();
    let software_not_security = summaries
        .iter()
        .filter(|s| s.update_type == sitesync_metadata::UpdateType::Software)
        .filter(|s| !security.contains(&s.id.update_id))
        .filter(|s| !s.categories.is_empty())
        .count();
    assert_eq!(
        software_not_security, 0,
        "only security updates should be held"
    );

    // Widen the selection: the next (manual) sync is run as a full sync.
    let settings = node
        .admin
        .get_sync_settings(v1::GetSyncSettingsRequest {})
        .await
        .unwrap()
        .into_inner();
    let mut wider = settings.clone();
    wider.classifications.clear();
    let response = node
        .admin
        .set_sync_settings(v1::SetSyncSettingsRequest {
            settings: Some(wider.clone()),
            expected_revision: settings.revision,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(response.next_sync_full);
    // A second writer holding the old revision is refused.
    let stale = node
        .admin
        .set_sync_settings(v1::SetSyncSettingsRequest {
            settings: Some(wider),
            expected_revision: settings.revision,
        })
        .await
        .unwrap_err();
    assert_eq!(stale.code(), tonic::Code::Aborted);

    let (id, _) = node.run_sync(v1::SyncKind::Manual).await;
    let run = node.finished(id).await;
    assert_eq!(run.kind, sitesync_node::sync::manager::SyncKind::Full);
    assert!(node.started.node.database.update_server().state().updates > everything);
    assert_eq!(
        node.started.node.database.site_database().digest(),
        node.started.node.database.update_server().digest()
    );

    // An unknown product name fails the sync with a reason that names it.
    let current = node
        .admin
        .get_sync_settings(v1::GetSyncSettingsRequest {})
        .await
        .unwrap()
        .into_inner();
    let mut unknown = current.clone();
    unknown.products = vec![v1::CategorySelector {
        by: Some(v1::category_selector::By::Name("Windows 3.11".into())),
    }];
    node.admin
        .set_sync_settings(v1::SetSyncSettingsRequest {
            settings: Some(unknown),
            expected_revision: current.revision,
        })
        .await
        .unwrap();
    let (id, _) = node.run_sync(v1::SyncKind::Full).await;
    let run = node.finished(id).await;
    assert_eq!(run.result, Some(SyncResult::Failed));
    assert!(run.failure_reason.unwrap().contains("Windows 3.11"));
}

/// Every update the site database holds in a classification, through `ListUpdates`.
async fn list_all(node: &mut TestNode, classification: &str) -> Vec<sitesync_metadata::UpdateId> {
    let mut out = Vec::new();
    let mut token = String::new();
    loop {
        let response = node
            .admin
            .list_updates(v1::ListUpdatesRequest {
                filter: Some(v1::UpdateFilter {
                    classifications: vec![v1::CategorySelector {
                        by: Some(v1::category_selector::By::Name(classification.into())),
                    }],
                    ..Default::default()
                }),
                store: v1::StoreSelector::UpdateServer as i32,
                page_size: 50,
                page_token: token,
            })
            .await
            .unwrap()
            .into_inner();
        out.extend(response.updates.into_iter().map(|u| {
            sitesync_metadata::RevisionId::try_from(u.id.unwrap())
                .unwrap()
                .update_id
        }));
        if response.next_page_token.is_empty() {
            return out;
        }
        token = response.next_page_token;
    }
}

/// S6: the product `Local publisher` is built into every top site (the upstream has no such
/// category); choosing it alone takes in no update of the upstream's, only the categories
/// operators choose from. Publishing into it is tested over real processes
/// (`control-plane/tests/publish_nodes.rs`).
#[tokio::test]
async fn the_product_local_publisher_takes_in_no_upstream_update() {
    let upstream = catalog(1_500, 8);
    let node = TestNode::start(
        upstream.path(),
        "[sync]\nproducts = [\"Local publisher\"]\n",
    )
    .await;
    let run = node.finished(1).await;
    assert_eq!(
        run.result,
        Some(SyncResult::Succeeded),
        "{:?}",
        run.failure_reason
    );
    let store = node.started.node.database.update_server();
    let root = store
        .latest(sitesync_metadata::custom::LOCAL_PUBLISHER)
        .unwrap()
        .expect("the built-in Local publisher company is in the update server");
    assert_eq!(root.title, "Local publisher");
    let summaries = store.summaries(None, 10_000).unwrap();
    let updates: Vec<_> = summaries
        .iter()
        .filter(|s| s.update_type != sitesync_metadata::UpdateType::Category)
        .map(|s| &s.title)
        .collect();
    assert!(updates.is_empty(), "upstream updates came in: {updates:?}");
    assert!(summaries.len() > 20, "the categories sync");
}

/// S6: custom updates come only from publishing at the top site. An upstream document
/// posing as one — the Local publisher category, a vendor under it, a sealed document — is
/// skipped with 6790 and never enters the stores; the rest syncs.
#[tokio::test]
async fn upstream_documents_posing_as_custom_updates_are_skipped() {
    use sitesync_metadata::custom::{self, describe};
    let upstream = tempfile::tempdir().unwrap();
    fixtures_into(upstream.path());
    let now = sitesync_metadata::Timestamp(1_790_000_000_000);
    let root = String::from_utf8(custom::local_publisher_document())
        .unwrap()
        .replace("Local publisher", "Local publisher (upstream)");
    let vendor = describe::render_vendor_category("Northwind Traders", now);
    let sealed = custom::seal(
        &describe::render_product_category("Northwind Traders", "Agent", now),
        &custom::Seal {
            publisher: "lob".into(),
            vendor: "Northwind Traders".into(),
            product: "Agent".into(),
            signature: vec![1; 64],
            certificate: vec![2; 300],
            accepted: None,
        },
    )
    .unwrap();
    for (name, document) in [
        ("root.xml", root.into_bytes()),
        ("vendor.xml", vendor),
        ("sealed.xml", sealed),
    ] {
        std::fs::write(upstream.path().join(name), document).unwrap();
    }
    let node = TestNode::start(upstream.path(), "").await;
    let run = node.finished(1).await;
    assert_eq!(
        run.result,
        Some(SyncResult::Succeeded),
        "{:?}",
        run.failure_reason
    );
    assert_eq!(run.counts.skipped, 3);
    assert_eq!(run.counts.update_server.new, 5);
    let store = node.started.node.database.update_server();
    assert!(store.latest(custom::LOCAL_PUBLISHER).unwrap().is_none());
    assert!(
        store
            .latest(custom::vendor_category_id("Northwind Traders"))
            .unwrap()
            .is_none()
    );
}

/// Records another version of the node wrote (or damaged ones) do not keep a node from
/// starting: the last run is forgotten, and an unreadable in-progress marker means a full
/// sync is run again, which is always safe.
#[tokio::test]
async fn unreadable_sync_records_are_forgotten_and_a_full_sync_runs() {
    use sitesync_node::clock::ManualClock;
    use sitesync_node::config::{NodeConfig, Overrides};
    use sitesync_node::store::{NodeDatabase, WriteBatch};

    let upstream = tempfile::tempdir().unwrap();
    sitesync_metadata::sample::write_to(upstream.path()).unwrap();
    let data = tempfile::tempdir().unwrap();
    {
        let database = NodeDatabase::open(&data.path().join("db"), 8 << 20).unwrap();
        let space = database.space("sync-manager").unwrap();
        let mut batch = WriteBatch::default();
        batch.put(b"last-run".to_vec(), vec![0xff; 3]);
        batch.put(b"in-progress".to_vec(), vec![0xff; 3]);
        space.apply(batch).unwrap();
        space.flush().unwrap();
    }
    let config = NodeConfig::load(
        None,
        &Overrides {
            data_dir: Some(data.path().to_owned()),
            upstream_dir: Some(upstream.path().to_owned()),
            listen: Some("127.0.0.1:0".into()),
            ..Overrides::default()
        },
    )
    .unwrap();
    // Not serving: the test reads the node's own state.
    let (started, _thread) =
        common::NodeThread::start(config, ManualClock::new(T0), std::future::ready(None)).await;
    let mut watch = started.sync.watch();
    let run = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let found = watch.borrow_and_update().recent.first().cloned();
            if let Some(run) = found {
                return run;
            }
            watch.changed().await.unwrap();
        }
    })
    .await
    .unwrap();
    assert_eq!(run.kind, sitesync_node::sync::manager::SyncKind::Full);
    assert_eq!(
        run.trigger,
        sitesync_node::sync::manager::SyncTrigger::Restart
    );
    assert_eq!(run.result, Some(SyncResult::Succeeded));
    assert_eq!(started.node.database.site_database().state().revisions, 5);
}
