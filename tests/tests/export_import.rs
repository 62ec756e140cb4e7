//! Export and import between real `sitesync-node` processes (S12): a disconnected node's
//! update server reaches the exporter's digests by files alone, incremental files apply
//! only in order, hostile files change nothing, a killed import completes when run again,
//! and a disconnected top site of a second hierarchy cascades what it imports to its own
//! children.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sitesync_metadata::generate::{CatalogChanges, CatalogSpec, write_catalog};
use sitesync_proto::v1;
use sitesync_tests::cluster::{Hierarchy, NodeProcess, Role, digest_hex, idle_after_success};

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

/// The top site `CEN` synced with `documents`, its whole catalog exported to `full.ssx`, and
/// an internet-facing node `IN1` whose upstream is export files: the top's status and the
/// file.
async fn exported_beside_an_importer(
    hierarchy: &mut Hierarchy,
    documents: usize,
) -> (v1::SiteStatus, PathBuf) {
    let top = synced_top(hierarchy, documents).await;
    let full = file(hierarchy, "full.ssx");
    hierarchy.node("CEN").export(&full, None).await.unwrap();
    hierarchy
        .start_importer("IN1", Role::Internet)
        .await
        .unwrap();
    (top, full)
}

/// Changes the top site's catalog and syncs it; returns its status after.
async fn change_and_sync(hierarchy: &Hierarchy, documents: usize, round: u64) -> v1::SiteStatus {
    let spec = CatalogSpec::new(documents, 17);
    CatalogChanges::derive(&spec, 5, round)
        .apply_to_dir(hierarchy.catalog())
        .unwrap();
    hierarchy.node("CEN").sync_to_the_end(SYNC).await.unwrap()
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

/// A file put together by hand from a header and chunk payloads, with a manifest signed by
/// the hierarchy's top site `CEN`: what only a holder of a trusted key could make.
struct Forgery {
    header: v1::ArchiveHeader,
    /// Each chunk's compressed payload and the decompressed size it declares.
    chunks: Vec<(Vec<u8>, u32)>,
}

impl Forgery {
    /// The parts of a genuine file.
    fn of(hierarchy: &Hierarchy, path: &Path) -> Self {
        use prost::Message as _;
        let mut archive = trusted_archive(hierarchy, path);
        let header = archive.header().clone();
        let chunks = archive
            .batches(0)
            .map(|batch| {
                let plain = batch.unwrap().encode_to_vec();
                (lz4_flex::block::compress(&plain), plain.len() as u32)
            })
            .collect();
        Self { header, chunks }
    }

    fn write(&self, hierarchy: &Hierarchy, name: &str) -> PathBuf {
        use prost::Message as _;
        use sha2::{Digest as _, Sha256};
        let frame = |out: &mut Vec<u8>, kind: u8, payload: &[u8]| {
            out.push(kind);
            out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            out.extend_from_slice(payload);
        };
        let mut out = sitesync_archive::MAGIC.to_vec();
        let header = self.header.encode_to_vec();
        frame(&mut out, b'H', &header);
        let mut entries = Vec::new();
        for (stored, plain_bytes) in &self.chunks {
            entries.push(v1::ArchiveChunk {
                offset: out.len() as u64,
                stored_bytes: stored.len() as u32,
                plain_bytes: *plain_bytes,
                sha256: Sha256::digest(stored).to_vec(),
            });
            frame(&mut out, b'C', stored);
        }
        let manifest = v1::ArchiveManifest {
            format_version: sitesync_archive::FORMAT_VERSION,
            header_sha256: Sha256::digest(&header).to_vec(),
            chunks: entries,
        }
        .encode_to_vec();
        let (_, signature, certificate) = top_signer(hierarchy)
            .sign(&sitesync_archive::manifest_signed_bytes(&manifest))
            .unwrap();
        let signed = v1::SignedArchiveManifest {
            manifest,
            algorithm: v1::SignatureAlgorithm::EcdsaP256Sha256 as i32,
            signature,
            signer_certificate: certificate,
        }
        .encode_to_vec();
        let manifest_offset = out.len() as u64;
        frame(&mut out, b'M', &signed);
        out.extend_from_slice(&manifest_offset.to_le_bytes());
        out.extend_from_slice(sitesync_archive::END_MAGIC);
        write(hierarchy, name, &out)
    }
}

fn top_signer(hierarchy: &Hierarchy) -> sitesync_security::signing::Signer {
    use sitesync_security::{Identity, TlsFiles};
    let cen = Identity::site("CEN").unwrap();
    sitesync_security::signing::Signer::load(&TlsFiles::in_pki_dir(hierarchy.pki_dir(), &cen))
        .unwrap()
}

/// `path` opened and its signature checked with the hierarchy's CA.
fn trusted_archive(hierarchy: &Hierarchy, path: &Path) -> sitesync_archive::Archive<std::fs::File> {
    use rustls::pki_types::CertificateDer;
    use sitesync_security::pki::first_certificate;
    let ca = first_certificate(&std::fs::read(hierarchy.pki_dir().join("ca.pem")).unwrap());
    let cas = [CertificateDer::from(ca.unwrap())];
    let mut archive = sitesync_archive::Archive::open(std::fs::File::open(path).unwrap()).unwrap();
    archive
        .verify_signature(&cas, |_| false, std::time::SystemTime::now())
        .unwrap();
    archive
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_forged_with_a_trusted_key_are_refused_for_what_is_wrong() {
    let mut hierarchy = Hierarchy::new().unwrap();
    // Enough revisions for several snapshot parts (chunks).
    let (_, full) = exported_beside_an_importer(&mut hierarchy, 1_500).await;
    let internet = hierarchy.node("IN1");
    let genuine = Forgery::of(&hierarchy, &full);
    assert!(genuine.chunks.len() >= 3, "{} chunks", genuine.chunks.len());
    // Forged but faithful: accepted by a dry run, which shows the forging is sound.
    let faithful = genuine.write(&hierarchy, "faithful.ssx");
    internet.import(&faithful, true).await.unwrap();

    let mut duplicated = Forgery::of(&hierarchy, &full);
    let first = duplicated.chunks[0].clone();
    duplicated.chunks.insert(1, first);
    let mut missing = Forgery::of(&hierarchy, &full);
    missing.chunks.remove(1);
    let mut reordered = Forgery::of(&hierarchy, &full);
    reordered.chunks.swap(1, 2);
    for (forgery, name) in [
        (duplicated, "duplicated"),
        (missing, "missing"),
        (reordered, "reordered"),
    ] {
        let path = forgery.write(&hierarchy, &format!("{name}.ssx"));
        refused(internet, &path, "do not follow each other").await;
    }

    let mut lying = Forgery::of(&hierarchy, &full);
    let counts = lying.header.counts.as_mut().unwrap();
    counts.snapshot += 1;
    let path = lying.write(&hierarchy, "lying.ssx");
    refused(internet, &path, "lies about its counts").await;

    let mut inflating = Forgery::of(&hierarchy, &full);
    inflating.chunks[1].1 -= 100;
    let path = inflating.write(&hierarchy, "inflating.ssx");
    refused(internet, &path, "past its declared size").await;

    // A catalog version the top site signed that has expired.
    let mut expired = Forgery::of(&hierarchy, &full);
    let signed = expired.header.catalog_version.clone().unwrap();
    let mut version = signed.decode_catalog_version().unwrap();
    version.issued_at = Some(prost_types::Timestamp {
        seconds: 1_000_000_000,
        nanos: 0,
    });
    version.expires_at = Some(prost_types::Timestamp {
        seconds: 1_000_086_400,
        nanos: 0,
    });
    let (message, encoded) = version.encode_for_signing();
    let (_, signature, certificate) = top_signer(&hierarchy).sign(&message).unwrap();
    expired.header.catalog_version = Some(v1::SignedCatalogVersion {
        catalog_version: encoded,
        signature,
        signer_certificate: certificate,
        ..signed
    });
    let path = expired.write(&hierarchy, "expired.ssx");
    refused(internet, &path, "expired").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_killed_midway_completes_when_run_again() {
    let mut hierarchy = Hierarchy::new().unwrap();
    let (top, full) = exported_beside_an_importer(&mut hierarchy, 4_000).await;

    let internet = hierarchy.node("IN1");
    // The import call returns only when the sync ends; it runs beside the kill.
    let import = tokio::spawn(import_with(internet.admin(), full.clone()));
    // Killed once the import has applied some batches and not all.
    internet
        .wait_status("part of the import applied", SYNC, |status| {
            site(status)
                .current_sync
                .as_ref()
                .and_then(|run| run.progress.as_ref())
                .is_some_and(|p| p.done >= 1)
        })
        .await
        .unwrap();
    hierarchy.node_mut("IN1").kill();
    assert!(
        import.await.unwrap().is_err(),
        "the import outlived its node"
    );
    let partial = store_of_stopped(hierarchy.node("IN1"));
    assert_ne!(partial, digest_hex(Some(&update_server(&top))));

    hierarchy.node_mut("IN1").restart().await.unwrap();
    let internet = hierarchy.node("IN1");
    let completed = internet.import(&full, false).await.unwrap();
    assert!(!completed.already_held);
    assert_eq!(
        digest_hex(completed.update_server.as_ref()),
        digest_hex(Some(&update_server(&top)))
    );
    hierarchy.node_mut("IN1").stop().await;
    let db = sitesync_node::store::NodeDatabase::open(
        &hierarchy.node("IN1").data_dir.join("db"),
        sitesync_node::store::DEFAULT_CACHE_BYTES,
    )
    .unwrap();
    assert_log_without_gap_or_duplicate(db.update_server(), "IN1's update server");
}

/// Imports `path` over `admin`, as `NodeProcess::import` does, from a task of its own.
async fn import_with(
    mut admin: v1::admin_client::AdminClient<tonic::transport::Channel>,
    path: PathBuf,
) -> Result<v1::ImportCatalogResponse, tonic::Status> {
    let bytes = std::fs::read(&path).unwrap();
    let mut messages = vec![v1::ImportCatalogChunk {
        kind: Some(v1::import_catalog_chunk::Kind::Header(v1::ImportHeader {
            file_name: "full.ssx".into(),
            total_bytes: bytes.len() as u64,
            dry_run: false,
        })),
    }];
    for (index, data) in bytes.chunks(sitesync_proto::FILE_CHUNK_BYTES).enumerate() {
        messages.push(v1::ImportCatalogChunk {
            kind: Some(v1::import_catalog_chunk::Kind::Chunk(v1::FileChunk {
                offset: (index * sitesync_proto::FILE_CHUNK_BYTES) as u64,
                data: data.to_vec(),
            })),
        });
    }
    admin
        .import_catalog(tokio_stream::iter(messages))
        .await
        .map(tonic::Response::into_inner)
}

/// The digest of a stopped node's update server.
fn store_of_stopped(node: &NodeProcess) -> String {
    let db = sitesync_node::store::NodeDatabase::open(
        &node.data_dir.join("db"),
        sitesync_node::store::DEFAULT_CACHE_BYTES,
    )
    .unwrap();
    db.update_server().digest().to_string()
}

/// Every sequence number from 1 to the newest exactly once, each revision logged once, and
/// the store's own consistency check passing.
fn assert_log_without_gap_or_duplicate(store: &sitesync_node::store::CatalogStore, what: &str) {
    use sitesync_node::store::ChangeKind;
    let state = store.state();
    let log = store.changes_since(0, usize::MAX).unwrap();
    let sequences: Vec<u64> = log.iter().map(|c| c.sequence).collect();
    let expected: Vec<u64> = (1..=state.last_sequence).collect();
    assert_eq!(sequences, expected, "{what}: the log has a gap");
    let mut seen = std::collections::BTreeSet::new();
    for change in log.iter().filter(|c| c.kind != ChangeKind::Deleted) {
        assert!(
            seen.insert(change.revision),
            "{what}: {:?} logged twice",
            change.revision
        );
    }
    let report = store.verify().unwrap();
    assert!(report.is_consistent(), "{what}: {:?}", report.problems);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disconnected_top_site_of_a_second_hierarchy_cascades_what_it_imports() {
    let mut connected = Hierarchy::new().unwrap();
    let top = synced_top(&mut connected, 300).await;
    let full = file(&connected, "full.ssx");
    connected.node("CEN").export(&full, None).await.unwrap();

    // A second hierarchy with a CA of its own, whose top site trusts the first one's for
    // imports only.
    let mut disconnected = Hierarchy::new().unwrap();
    let trusted = connected.pki_dir().join("ca.pem");
    disconnected.set_config(&format!(
        "[import]\ntrust = [{:?}]\n",
        trusted.display().to_string()
    ));
    disconnected
        .start_importer("TOP", Role::Site)
        .await
        .unwrap();
    disconnected.set_config("");
    disconnected.start_child("PR2", "TOP").await.unwrap();
    let imported = disconnected.node("TOP").import(&full, false).await.unwrap();
    assert_eq!(
        digest_hex(imported.update_server.as_ref()),
        digest_hex(Some(&update_server(&top)))
    );
    // At a site, the import is a sync of both phases.
    let messages = disconnected
        .node("TOP")
        .messages(&[], &imported.sync_id.to_string())
        .await
        .unwrap();
    let ids: Vec<_> = messages.iter().map(v1::StatusMessage::message_id).collect();
    for id in [
        v1::StatusMessageId::SyncStarted,
        v1::StatusMessageId::SyncUpdateServer,
        v1::StatusMessageId::SyncSiteDatabase,
        v1::StatusMessageId::SyncDone,
    ] {
        assert!(ids.contains(&id), "{id:?} missing from {ids:?}");
    }
    let status = disconnected.node("TOP").status().await.unwrap();
    let reference = site(&status).clone();
    let child = disconnected
        .node("PR2")
        .wait_status("the catalog TOP imported", SYNC, |status| {
            let s = site(status);
            idle_after_success(status)
                && digest_hex(s.update_server.as_ref())
                    == digest_hex(reference.update_server.as_ref())
                && digest_hex(s.site_database.as_ref())
                    == digest_hex(reference.site_database.as_ref())
        })
        .await
        .unwrap();
    assert_eq!(
        site(&child).last_sync.as_ref().unwrap().trigger(),
        v1::SyncTrigger::ParentRequest
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_node_imports_from_the_command_line_and_others_refuse_imports() {
    let mut hierarchy = Hierarchy::new().unwrap();
    let top = synced_top(&mut hierarchy, 200).await;
    let full = file(&hierarchy, "full.ssx");
    hierarchy.node("CEN").export(&full, None).await.unwrap();

    // A node whose upstream is not export files refuses an import before taking the file.
    let error = hierarchy
        .node("CEN")
        .import(&full, false)
        .await
        .unwrap_err();
    assert_eq!(error.code(), tonic::Code::FailedPrecondition, "{error}");
    assert!(error.message().contains("--upstream import"), "{error}");

    hierarchy
        .start_importer("IN1", Role::Internet)
        .await
        .unwrap();
    // A dry run verifies and changes nothing.
    let before = fingerprint(&store_of(hierarchy.node("IN1")).await);
    let dry = hierarchy.node("IN1").import(&full, true).await.unwrap();
    assert_eq!(dry.sync_id, 0);
    assert_eq!(fingerprint(&store_of(hierarchy.node("IN1")).await), before);

    let data_dir = hierarchy.node("IN1").data_dir.clone();
    let pki_dir = hierarchy.pki_dir().to_owned();
    let offline = |extra: &[&str]| {
        let mut command = std::process::Command::new(sitesync_tests::cluster::node_binary());
        command
            .arg("import")
            .args([
                "--site-code",
                "IN1",
                "--role",
                "internet",
                "--upstream",
                "import",
            ])
            .arg("--pki-dir")
            .arg(&pki_dir)
            .arg("--data-dir")
            .arg(&data_dir)
            .args(extra)
            .arg(&full)
            .env("RUST_LOG", "warn");
        command.output().unwrap()
    };
    // While the node runs, its data directory is not for another process.
    let running = offline(&[]);
    assert!(!running.status.success());
    let stderr = String::from_utf8_lossy(&running.stderr);
    assert!(stderr.contains("sitesyncctl import"), "{stderr}");

    hierarchy.node_mut("IN1").stop().await;
    let output = offline(&["--output", "json"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(summary["already_held"], false, "{summary}");
    assert_eq!(summary["kind"], "full", "{summary}");
    assert!(summary["sync_id"].as_u64().is_some(), "{summary}");

    hierarchy.node_mut("IN1").restart().await.unwrap();
    let status = hierarchy.node("IN1").status().await.unwrap();
    assert_eq!(
        digest_hex(Some(&update_server(&status))),
        digest_hex(Some(&update_server(&top)))
    );
    assert_eq!(
        site(&status).last_sync.as_ref().unwrap().trigger(),
        v1::SyncTrigger::Import
    );
}
