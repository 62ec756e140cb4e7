//! Export and import between real `sitesync-node` processes (S12): a disconnected node's
//! update server reaches the exporter's digests by files alone, incremental files apply
//! only in order, hostile files change nothing, a killed import completes when run again,
//! and a disconnected top site of a second hierarchy cascades what it imports to its own
//! children.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sitesync_metadata::generate::{CatalogChanges, CatalogSpec, write_catalog};
use sitesync_proto::v1;
use sitesync_tests::cluster::{Hierarchy, NodeProcess, Role, digest_hex};

/// One sync, or a cascade of a small catalog, in debug builds on a loaded machine.
const SYNC: Duration = Duration::from_secs(240);

fn site(status: &v1::SiteStatus) -> &v1::SiteState {
    status.site.as_ref().expect("a status names its site")
}

fn update_server(status: &v1::SiteStatus) -> v1::StoreInfo {
    site(status)
        .update_server
        .clone()
        .expect("an update server")
}

fn idle_after_success(status: &v1::SiteStatus) -> bool {
    let site = site(status);
    site.current_sync.is_none()
        && site
            .last_sync
            .as_ref()
            .is_some_and(|r| r.result() == v1::SyncResult::Succeeded)
}

/// The top site `CEN` of `hierarchy` with a generated catalog of `documents`, synced.
async fn synced_top(hierarchy: &mut Hierarchy, documents: usize) -> v1::SiteStatus {
    write_catalog(
        hierarchy.catalog(),
        &CatalogSpec::new(documents, 17),
        |_| {},
    )
    .unwrap();
    let top = hierarchy.start_top("CEN").await.unwrap();
    top.wait_status("its first sync", SYNC, idle_after_success)
        .await
        .unwrap()
}

/// Changes the top site's catalog and syncs it; returns its status after.
async fn change_and_sync(hierarchy: &Hierarchy, documents: usize, round: u64) -> v1::SiteStatus {
    let spec = CatalogSpec::new(documents, 17);
    CatalogChanges::derive(&spec, 5, round)
        .apply_to_dir(hierarchy.catalog())
        .unwrap();
    let top = hierarchy.node("CEN");
    let sync_id = top.run_sync(v1::SyncKind::Full).await.unwrap();
    let end = top.sync_finished(&sync_id, SYNC).await.unwrap();
    assert_eq!(
        end.message_id(),
        v1::StatusMessageId::SyncDone,
        "{}",
        end.text
    );
    top.wait_status("idle after its sync", SYNC, idle_after_success)
        .await
        .unwrap()
}

fn file(hierarchy: &Hierarchy, name: &str) -> PathBuf {
    hierarchy.dir().join(name)
}

/// The store's digest and position: what "unchanged" means.
fn fingerprint(info: &v1::StoreInfo) -> (String, u64) {
    (
        digest_hex(Some(info)),
        info.latest.as_ref().map_or(0, |a| a.sequence),
    )
}

async fn store_of(node: &NodeProcess) -> v1::StoreInfo {
    update_server(&node.status().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_internet_node_with_no_link_to_its_site_syncs_by_export_files() {
    let mut hierarchy = Hierarchy::new().unwrap();
    let top = synced_top(&mut hierarchy, 300).await;
    let export = file(&hierarchy, "full.ssx");
    let header = hierarchy.node("CEN").export(&export, None).await.unwrap();
    assert_eq!(header.kind(), v1::ArchiveKind::Full);
    assert_eq!(header.source_site, "CEN");

    hierarchy
        .start_importer("IN1", Role::Internet)
        .await
        .unwrap();
    let internet = hierarchy.node("IN1");
    // Read-only media: the importer never needs to write the file.
    let mut permissions = std::fs::metadata(&export).unwrap().permissions();
    permissions.set_readonly(true);
    std::fs::set_permissions(&export, permissions).unwrap();
    let before = std::fs::read(&export).unwrap();

    let imported = internet.import(&export, false).await.unwrap();
    assert!(!imported.already_held);
    assert_eq!(
        digest_hex(imported.update_server.as_ref()),
        digest_hex(Some(&update_server(&top)))
    );
    let sync_id = imported.sync_id.to_string();
    let messages = internet
        .messages(
            &[
                v1::StatusMessageId::SyncStarted,
                v1::StatusMessageId::SyncUpdateServer,
                v1::StatusMessageId::SyncDone,
            ],
            &sync_id,
        )
        .await
        .unwrap();
    let ids: Vec<_> = messages.iter().map(v1::StatusMessage::message_id).collect();
    assert_eq!(
        ids,
        [
            v1::StatusMessageId::SyncStarted,
            v1::StatusMessageId::SyncUpdateServer,
            v1::StatusMessageId::SyncDone
        ]
    );
    let status = internet.status().await.unwrap();
    let run = site(&status).last_sync.clone().unwrap();
    assert_eq!(run.trigger(), v1::SyncTrigger::Import);
    assert_eq!(
        std::fs::read(&export).unwrap(),
        before,
        "the file was changed"
    );

    // The same file again: held already, nothing changes.
    let again = internet.import(&export, false).await.unwrap();
    assert!(again.already_held);
    assert_eq!(
        fingerprint(again.update_server.as_ref().unwrap()),
        fingerprint(imported.update_server.as_ref().unwrap())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_files_apply_in_order_only() {
    let mut hierarchy = Hierarchy::new().unwrap();
    synced_top(&mut hierarchy, 200).await;
    let top = hierarchy.node("CEN");
    let full = file(&hierarchy, "full.ssx");
    let mut previous = top.export(&full, None).await.unwrap();
    let mut chain = Vec::new();
    for round in 1..=3 {
        change_and_sync(&hierarchy, 200, round).await;
        let path = file(&hierarchy, &format!("inc-{round}.ssx"));
        let header = hierarchy
            .node("CEN")
            .export(&path, previous.target.clone())
            .await
            .unwrap();
        assert_eq!(header.kind(), v1::ArchiveKind::Incremental);
        assert_eq!(header.base, previous.target);
        previous = header;
        chain.push(path);
    }
    let reference = store_of(hierarchy.node("CEN")).await;

    hierarchy
        .start_importer("IN1", Role::Internet)
        .await
        .unwrap();
    let internet = hierarchy.node("IN1");
    internet.import(&full, false).await.unwrap();
    // Out of order: the second file before the first is refused, naming the base it needs.
    let held = store_of(internet).await;
    let error = internet.import(&chain[1], false).await.unwrap_err();
    assert_eq!(error.code(), tonic::Code::FailedPrecondition, "{error}");
    assert!(
        error.message().contains("starts at") && error.message().contains("stands at"),
        "{error}"
    );
    assert_eq!(fingerprint(&store_of(internet).await), fingerprint(&held));
    for path in &chain {
        internet.import(path, false).await.unwrap();
    }
    assert_eq!(
        digest_hex(Some(&store_of(internet).await)),
        digest_hex(Some(&reference))
    );
}

/// Writes `bytes` next to the hierarchy's files as `name`.
fn write(hierarchy: &Hierarchy, name: &str, bytes: &[u8]) -> PathBuf {
    let path = file(hierarchy, name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// Imports `path` at `node`, expecting a refusal whose message contains `names`, and the
/// store unchanged.
async fn refused(node: &NodeProcess, path: &Path, names: &str) {
    let before = fingerprint(&store_of(node).await);
    let error = node.import(path, false).await.unwrap_err();
    assert!(
        error.message().contains(names),
        "{}: expected a refusal naming {names:?}, got {:?}: {}",
        path.display(),
        error.code(),
        error.message()
    );
    assert_eq!(
        fingerprint(&store_of(node).await),
        before,
        "{} changed the store",
        path.display()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_files_are_refused_and_change_nothing() {
    let mut hierarchy = Hierarchy::new().unwrap();
    synced_top(&mut hierarchy, 120).await;
    let full = file(&hierarchy, "full.ssx");
    let first = hierarchy.node("CEN").export(&full, None).await.unwrap();
    change_and_sync(&hierarchy, 120, 1).await;
    let newer_full = file(&hierarchy, "newer.ssx");
    hierarchy
        .node("CEN")
        .export(&newer_full, None)
        .await
        .unwrap();
    let incremental = file(&hierarchy, "inc.ssx");
    hierarchy
        .node("CEN")
        .export(&incremental, first.target.clone())
        .await
        .unwrap();

    hierarchy
        .start_importer("IN1", Role::Internet)
        .await
        .unwrap();
    let internet = hierarchy.node("IN1");
    let bytes = std::fs::read(&full).unwrap();

    // A flipped byte in the header, in a chunk, in the manifest, in the trailer.
    for (at, names) in [
        (20, "header"),
        (bytes.len() / 2, "chunk"),
        (bytes.len() - 40, "manifest"),
        (bytes.len() - 3, "truncated"),
    ] {
        let mut damaged = bytes.clone();
        damaged[at] ^= 0x01;
        let path = write(&hierarchy, &format!("flipped-{at}.ssx"), &damaged);
        refused(internet, &path, names).await;
    }
    // Truncated anywhere.
    for len in [10, 300, bytes.len() / 2, bytes.len() - 1] {
        let path = write(&hierarchy, &format!("cut-{len}.ssx"), &bytes[..len]);
        refused(internet, &path, "truncated").await;
    }
    // An incremental file on a node that holds nothing: the base is wrong.
    refused(internet, &incremental, "starts at").await;
    // The same file signed by a site of another hierarchy.
    let foreign = resigned_elsewhere(&hierarchy, &full);
    refused(internet, &foreign, "signature").await;
    // The newer file, then the older: a rollback.
    internet.import(&newer_full, false).await.unwrap();
    refused(internet, &full, "older than").await;
}

/// `path` re-signed by the site `CEN` of another hierarchy (a CA this one does not trust),
/// its contents unchanged.
fn resigned_elsewhere(hierarchy: &Hierarchy, path: &Path) -> PathBuf {
    use rustls::pki_types::CertificateDer;
    use sitesync_archive::{Archive, Writer};
    use sitesync_security::pki::{Authority, DEFAULT_VALIDITY, first_certificate};
    use sitesync_security::signing::Signer;
    use sitesync_security::{Identity, TlsFiles};

    let ca = first_certificate(&std::fs::read(hierarchy.pki_dir().join("ca.pem")).unwrap());
    let cas = [CertificateDer::from(ca.unwrap())];
    let mut archive = Archive::open(std::fs::File::open(path).unwrap()).unwrap();
    archive
        .verify_signature(&cas, |_| false, std::time::SystemTime::now())
        .unwrap();
    let header = archive.header().clone();
    let batches: Vec<_> = archive.batches(0).map(Result::unwrap).collect();
    let other = hierarchy.dir().join("other-pki");
    let authority = Authority::init(&other, "another hierarchy").unwrap();
    let cen = Identity::site("CEN").unwrap();
    authority.issue(&cen, &[], DEFAULT_VALIDITY).unwrap();
    let signer = Signer::load(&TlsFiles::in_pki_dir(&other, &cen)).unwrap();
    let mut writer = Writer::start(Vec::new(), &header).unwrap();
    for batch in &batches {
        writer.chunk(batch).unwrap();
    }
    write(hierarchy, "foreign.ssx", &writer.finish(&signer).unwrap())
}
