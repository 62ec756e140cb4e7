//! `sitesyncctl export`, `export inspect --verify` and `import` end to end (S12): the built
//! binary against real `sitesync-node` processes of a `sitesync_tests::cluster::Hierarchy`
//! over mutual TLS, as the harness's operator. The top site `CEN` exports a full file and
//! then an incremental one after a change; a disconnected internet-facing node `IN1`
//! (`--upstream import`) refuses the incremental file first, then imports both in order
//! and reaches CEN's update-server digest.

use std::time::Duration;

use serde_json::Value;
use sitesync_metadata::generate::{CatalogChanges, CatalogSpec, write_catalog};
use sitesync_tests::cluster::{Hierarchy, Role, idle_after_success};

mod support;

use support::sitesyncctl_as_harness as sitesyncctl;

/// Documents in CEN's generated catalog.
const DOCUMENTS: usize = 200;
/// The generated catalog's seed.
const SEED: u64 = 17;
/// One sync of a small catalog, in a debug build on a loaded machine.
const SYNC: Duration = Duration::from_secs(240);

fn is_digest(value: &Value) -> bool {
    value
        .as_str()
        .is_some_and(|s| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Changes CEN's catalog and syncs it, to the end.
async fn change_and_sync(hierarchy: &Hierarchy, round: u64) {
    let spec = CatalogSpec::new(DOCUMENTS, SEED);
    CatalogChanges::derive(&spec, 5, round)
        .apply_to_dir(hierarchy.catalog())
        .unwrap();
    hierarchy.node("CEN").sync_to_the_end(SYNC).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_inspect_and_import_between_real_nodes() {
    let mut hierarchy = Hierarchy::new().unwrap();
    write_catalog(
        hierarchy.catalog(),
        &CatalogSpec::new(DOCUMENTS, SEED),
        |_| {},
    )
    .unwrap();
    hierarchy
        .start_top("CEN")
        .await
        .unwrap()
        .wait_status("its first sync", SYNC, idle_after_success)
        .await
        .unwrap();
    let pki = hierarchy.pki_dir().to_path_buf();
    let cen = hierarchy.node("CEN").address();
    let files = hierarchy.dir().join("exports");
    std::fs::create_dir_all(&files).unwrap();
    let full = files.join("full.ssx");
    let full_arg = full.to_str().unwrap().to_owned();

    // A full export, as `export inspect` shows the written file.
    let cen_status = sitesyncctl(&cen, &pki, &["status", "--output", "json"])
        .await
        .json();
    let exported = sitesyncctl(
        &cen,
        &pki,
        &["export", "--out", &full_arg, "--output", "json"],
    )
    .await;
    let view = exported.json();
    let context = exported.describe();
    assert_eq!(view["file"], full_arg.as_str(), "{context}");
    assert_eq!(view["format_version"], 1, "{context}");
    assert_eq!(view["kind"], "full", "{context}");
    assert_eq!(view["source_site"], "CEN", "{context}");
    assert_eq!(view["base"], Value::Null, "{context}");
    let full_target = view["target"]
        .as_str()
        .unwrap_or_else(|| panic!("no target:\n{context}"))
        .to_owned();
    assert!(full_target.contains(':'), "{context}");
    assert_eq!(
        view["update_server_digest"], cen_status["update_server"]["digest"],
        "the file holds CEN's store as it was\n{context}"
    );
    assert!(is_digest(&view["update_server_digest"]), "{context}");
    let full_digest = view["update_server_digest"].clone();
    assert!(
        view["revisions"]["snapshot"].as_u64().unwrap_or(0) > 0,
        "{context}"
    );
    assert_eq!(
        view["bytes"],
        std::fs::metadata(&full).unwrap().len(),
        "{context}"
    );
    assert_eq!(view["catalog_version"]["top_site_code"], "CEN", "{context}");
    assert_eq!(view["verified"], Value::Null, "{context}");
    assert_eq!(view["signer"], Value::Null, "{context}");
    assert_eq!(view["error"], Value::Null, "{context}");
    // Only the file itself is left in the directory: no partial file.
    let entries: Vec<_> = std::fs::read_dir(&files)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(entries, ["full.ssx"], "{context}");

    // The file verifies against the hierarchy's CA, signed by CEN.
    let inspected = sitesyncctl(
        &cen,
        &pki,
        &[
            "export", "inspect", &full_arg, "--verify", "--output", "json",
        ],
    )
    .await;
    let verified = inspected.json();
    let context = inspected.describe();
    assert_eq!(verified["verified"], true, "{context}");
    assert_eq!(verified["signer"], "CEN", "{context}");
    assert_eq!(verified["error"], Value::Null, "{context}");
    assert_eq!(verified["target"], full_target.as_str(), "{context}");
    assert_eq!(verified["kind"], "full", "{context}");

    // An existing file is refused without --force, and left as it was.
    let before = std::fs::read(&full).unwrap();
    let modified = std::fs::metadata(&full).unwrap().modified().unwrap();
    let refused = sitesyncctl(&cen, &pki, &["export", "--out", &full_arg]).await;
    assert!(
        !refused.output.status.success(),
        "an existing --out was replaced:\n{}",
        refused.describe()
    );
    assert!(
        refused
            .stderr()
            .contains("exists: pass --force to replace it"),
        "{}",
        refused.describe()
    );
    assert!(refused.output.stdout.is_empty(), "{}", refused.describe());
    assert_eq!(
        std::fs::read(&full).unwrap(),
        before,
        "the file changed\n{}",
        refused.describe()
    );
    assert_eq!(
        std::fs::metadata(&full).unwrap().modified().unwrap(),
        modified,
        "{}",
        refused.describe()
    );

    // A change at CEN, exported as the changes since the full file.
    change_and_sync(&hierarchy, 1).await;
    let cen_status = sitesyncctl(&cen, &pki, &["status", "--output", "json"])
        .await
        .json();
    let cen_digest = cen_status["update_server"]["digest"].clone();
    assert!(is_digest(&cen_digest), "{cen_status}");
    let incremental = files.join("inc-1.ssx");
    let incremental_arg = incremental.to_str().unwrap().to_owned();
    let exported = sitesyncctl(
        &cen,
        &pki,
        &[
            "export",
            "--out",
            &incremental_arg,
            "--since",
            &full_arg,
            "--output",
            "json",
        ],
    )
    .await;
    let view = exported.json();
    let context = exported.describe();
    assert_eq!(view["kind"], "incremental", "{context}");
    assert_eq!(view["source_site"], "CEN", "{context}");
    assert_eq!(view["base"], full_target.as_str(), "{context}");
    let incremental_target = view["target"].as_str().unwrap().to_owned();
    assert_ne!(incremental_target, full_target, "{context}");
    assert_eq!(view["update_server_digest"], cen_digest, "{context}");
    let changes: u64 = ["new", "changed", "expired", "deleted"]
        .iter()
        .map(|kind| view["revisions"][kind].as_u64().unwrap_or(0))
        .sum();
    assert!(changes > 0, "the change is in the file\n{context}");
    let inspected = sitesyncctl(
        &cen,
        &pki,
        &[
            "export",
            "inspect",
            &incremental_arg,
            "--verify",
            "--output",
            "json",
        ],
    )
    .await;
    let verified = inspected.json();
    assert_eq!(verified["verified"], true, "{}", inspected.describe());
    assert_eq!(verified["signer"], "CEN", "{}", inspected.describe());

    // The disconnected node.
    hierarchy
        .start_importer("IN1", Role::Internet)
        .await
        .unwrap();
    let in1 = hierarchy.node("IN1").address();

    // The incremental file first: refused, naming where the file starts; nothing changes.
    let held_before = sitesyncctl(&in1, &pki, &["status", "--output", "json"])
        .await
        .json()["update_server"]
        .clone();
    let refused = sitesyncctl(&in1, &pki, &["import", &incremental_arg]).await;
    assert_eq!(refused.code(), Some(1), "{}", refused.describe());
    let stderr = refused.stderr();
    assert!(
        stderr.contains(&format!("this incremental file starts at {full_target}"))
            && stderr.contains("import a full file first"),
        "{}",
        refused.describe()
    );
    assert!(refused.output.stdout.is_empty(), "{}", refused.describe());
    let held_after = sitesyncctl(&in1, &pki, &["status", "--output", "json"])
        .await
        .json()["update_server"]
        .clone();
    assert_eq!(held_after, held_before, "{}", refused.describe());

    // The full file, then the incremental one.
    let imported = sitesyncctl(&in1, &pki, &["import", &full_arg, "--output", "json"]).await;
    let view = imported.json();
    let context = imported.describe();
    assert_eq!(view["dry_run"], false, "{context}");
    assert_eq!(view["already_held"], false, "{context}");
    assert!(view["sync_id"].is_u64(), "{context}");
    assert_eq!(view["kind"], "full", "{context}");
    assert_eq!(view["source_site"], "CEN", "{context}");
    assert_eq!(view["target"], full_target.as_str(), "{context}");
    assert!(view["counts"]["new"].as_u64().unwrap_or(0) > 0, "{context}");
    assert_eq!(
        view["update_server"]["digest"], full_digest,
        "IN1 holds what CEN held at the full export\n{context}"
    );

    let imported = sitesyncctl(
        &in1,
        &pki,
        &["import", &incremental_arg, "--output", "json"],
    )
    .await;
    let view = imported.json();
    let context = imported.describe();
    assert_eq!(view["already_held"], false, "{context}");
    assert!(view["sync_id"].is_u64(), "{context}");
    assert_eq!(view["kind"], "incremental", "{context}");
    assert_eq!(view["base"], full_target.as_str(), "{context}");
    assert_eq!(view["target"], incremental_target.as_str(), "{context}");
    assert_eq!(view["update_server"]["digest"], cen_digest, "{context}");
    let in1_status = sitesyncctl(&in1, &pki, &["status", "--output", "json"])
        .await
        .json();
    assert_eq!(
        in1_status["update_server"]["digest"], cen_digest,
        "IN1 reached CEN's update server: {in1_status}\nCEN: {cen_status}"
    );

    // The same file again: already held, nothing changes.
    let again = sitesyncctl(
        &in1,
        &pki,
        &["import", &incremental_arg, "--output", "json"],
    )
    .await;
    let view = again.json();
    let context = again.describe();
    assert_eq!(view["already_held"], true, "{context}");
    assert_eq!(view["sync_id"], Value::Null, "{context}");
    assert_eq!(view["update_server"]["digest"], cen_digest, "{context}");
    assert_eq!(
        view["update_server"]["sequence"], in1_status["update_server"]["sequence"],
        "{context}"
    );
}
