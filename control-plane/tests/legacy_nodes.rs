//! The legacy scan catalog (S13) with the built `sitesyncctl` against a real
//! `sitesync-node` process over mutual TLS: `catalog build-legacy`, `legacy-status`,
//! `download` and `verify`. A damaged shard, a truncated shard, an older index and an
//! expired index are each refused by `catalog download` and by `catalog verify` with a
//! specific error, and the directory keeps the catalog it held.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use sitesync_legacy::build::{IndexMeta, ShardPolicy, build};
use sitesync_metadata::Timestamp;
use sitesync_metadata::generate::{CatalogChanges, CatalogSpec, write_catalog};
use sitesync_security::signing::Signer;
use sitesync_tests::cluster::{Hierarchy, idle_after_success};

mod support;

use support::{Run, sitesyncctl_as_harness};

const CONVERGE: Duration = Duration::from_secs(240);

struct Lab {
    hierarchy: Hierarchy,
    pki: PathBuf,
    spec: CatalogSpec,
}

impl Lab {
    /// A top site `CEN` hosting the legacy catalog, synced once, holding build 1.
    async fn new() -> Self {
        let mut hierarchy = Hierarchy::new().unwrap();
        let spec = CatalogSpec::new(1_500, 61);
        write_catalog(hierarchy.catalog(), &spec, |_| {}).unwrap();
        hierarchy.set_config("[legacy_catalog]\nhost = true\nshard_updates = 8\n");
        let pki = hierarchy.pki_dir().to_owned();
        hierarchy.start_top("CEN").await.unwrap();
        let lab = Self {
            hierarchy,
            pki,
            spec,
        };
        lab.hierarchy
            .node("CEN")
            .wait_status("first sync", CONVERGE, idle_after_success)
            .await
            .unwrap();
        lab.wait_build(1).await;
        lab
    }

    async fn ctl(&self, args: &[&str]) -> Run {
        sitesyncctl_as_harness(&self.hierarchy.node("CEN").address(), &self.pki, args).await
    }

    async fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["--output", "json"]);
        self.ctl(&all).await.json()
    }

    async fn wait_build(&self, build: u64) -> Value {
        let deadline = tokio::time::Instant::now() + CONVERGE;
        loop {
            let status = self.json(&["catalog", "legacy-status"]).await;
            if status["index"]["build"].as_u64() == Some(build) {
                return status;
            }
            assert!(tokio::time::Instant::now() < deadline, "{status}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The node's catalog directory.
    fn served(&self) -> PathBuf {
        self.hierarchy.node("CEN").data_dir.join("legacy-catalog")
    }

    async fn download(&self, dir: &Path) -> Run {
        self.ctl(&[
            "catalog",
            "download",
            "--out",
            &dir.display().to_string(),
            "--output",
            "json",
        ])
        .await
    }

    async fn verify(&self, dir: &Path) -> Run {
        self.ctl(&[
            "catalog",
            "verify",
            &dir.display().to_string(),
            "--output",
            "json",
        ])
        .await
    }

    /// Asserts `dir` verifies and holds build `build`.
    async fn holds(&self, dir: &Path, build: u64) {
        let run = self.verify(dir).await;
        assert_eq!(run.json()["index"]["build"], build, "{}", run.describe());
    }
}

/// Runs `run`, expecting failure with `expected` in its error.
fn refused(run: &Run, expected: &str) {
    assert_eq!(run.code(), Some(1), "{}", run.describe());
    assert!(run.stderr().contains(expected), "{}", run.describe());
}

/// The shards `dir`'s index names that `other`'s does not, as file names.
fn new_shards(dir: &Path, other: &Path) -> Vec<String> {
    let names = |dir: &Path| -> Vec<String> {
        use prost::Message as _;
        let signed = sitesync_legacy::verify::read_index(dir).unwrap();
        let index = sitesync_legacy::Index::decode(signed.index.as_slice()).unwrap();
        index
            .shards
            .iter()
            .map(|s| sitesync_legacy::shard_file_name(&s.sha256))
            .collect()
    };
    let old = names(other);
    names(dir)
        .into_iter()
        .filter(|name| !old.contains(name))
        .collect()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.join("shards")).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
    for entry in std::fs::read_dir(from.join("shards")).unwrap().flatten() {
        std::fs::copy(entry.path(), to.join("shards").join(entry.file_name())).unwrap();
    }
}

fn flip_a_byte(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(path, bytes).unwrap();
}

fn truncate(path: &Path) {
    let bytes = std::fs::read(path).unwrap();
    std::fs::write(path, &bytes[..bytes.len() - 100]).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn download_and_verify_refuse_a_damaged_truncated_older_or_expired_catalog() {
    let lab = Lab::new().await;
    let work = tempfile::tempdir().unwrap();
    let client = work.path().join("client");

    // A first download, then a second that fetches nothing.
    let first = lab.download(&client).await.json();
    assert_eq!(first["index"]["build"], 1);
    assert!(first["shards_fetched"].as_u64().unwrap() > 1, "{first}");
    let again = lab.download(&client).await.json();
    assert_eq!(again["shards_fetched"], 0, "{again}");
    assert_eq!(again["bytes_fetched"], 0);
    lab.holds(&client, 1).await;
    let build_1 = work.path().join("build-1");
    copy_dir(&lab.served(), &build_1);

    // Build 2 after changes: new shards at the node.
    CatalogChanges::derive(&lab.spec, 5, 7)
        .apply_to_dir(lab.hierarchy.catalog())
        .unwrap();
    let synced = lab.ctl(&["sync", "--manual", "--wait"]).await;
    assert!(synced.output.status.success(), "{}", synced.describe());
    let built = lab.json(&["catalog", "build-legacy"]).await;
    assert_eq!(built["index"]["build"], 2, "{built}");
    let written = built["shards_written"].as_u64().unwrap();
    assert!(written >= 2, "{built}");
    let fresh = new_shards(&lab.served(), &build_1);
    assert_eq!(fresh.len() as u64, written);
    let damaged = lab.served().join("shards").join(&fresh[0]);
    let keep = std::fs::read(&damaged).unwrap();

    // A flipped byte in a shard the node serves: refused by its SHA-256.
    flip_a_byte(&damaged);
    let run = lab.download(&client).await;
    refused(
        &run,
        &format!("shard {} does not have the SHA-256", fresh[0]),
    );
    refused(&run, "keeps the catalog it held");
    lab.holds(&client, 1).await;
    std::fs::write(&damaged, &keep).unwrap();

    // A truncated shard (the same one: the client does not hold it, while others fetched
    // beside it were kept): refused by its length.
    let cut = lab.served().join("shards").join(&fresh[0]);
    let keep_cut = std::fs::read(&cut).unwrap();
    truncate(&cut);
    let run = lab.download(&client).await;
    refused(&run, "it is truncated or padded");
    lab.holds(&client, 1).await;
    std::fs::write(&cut, &keep_cut).unwrap();

    // Whole again: build 2 arrives. Of its new shards, the one that arrived whole in the
    // attempt refused for the truncated one was kept: only the rest is fetched.
    let second = lab.download(&client).await.json();
    assert_eq!(second["index"]["build"], 2, "{second}");
    assert_eq!(
        second["shards_fetched"].as_u64().unwrap(),
        written - 1,
        "{second}"
    );
    lab.holds(&client, 2).await;

    // An older index served again (build 1 put back at the node): a rollback, refused.
    let build_2 = work.path().join("build-2");
    copy_dir(&lab.served(), &build_2);
    std::fs::copy(build_1.join("index.bin"), lab.served().join("index.bin")).unwrap();
    let run = lab.download(&client).await;
    refused(&run, "is build 1, older than build 2 already held");
    lab.holds(&client, 2).await;
    std::fs::copy(build_2.join("index.bin"), lab.served().join("index.bin")).unwrap();

    // An expired index, signed by the top site: a frozen catalog, refused.
    let expired = work.path().join("expired");
    let signer = Signer::from_files(
        &lab.pki.join("sites").join("CEN.pem"),
        &lab.pki.join("sites").join("CEN.key"),
    )
    .unwrap();
    let an_hour_ago = Timestamp(
        i64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis(),
        )
        .unwrap()
            - 3_600_000,
    );
    let document = std::fs::read_dir(lab.hierarchy.catalog())
        .unwrap()
        .flatten()
        .next()
        .unwrap()
        .path();
    let id = sitesync_metadata::parse_update(
        &std::fs::read(&document).unwrap(),
        &sitesync_metadata::ParseLimits::default(),
    )
    .unwrap()
    .id;
    build(
        &expired,
        [Ok::<_, std::io::Error>((
            id,
            std::fs::read(&document).unwrap(),
        ))],
        IndexMeta {
            top_site_code: "CEN".into(),
            build: 99,
            catalog_version: 1,
            built_at: Timestamp(an_hour_ago.0 - 86_400_000),
            expires_at: an_hour_ago,
        },
        &signer,
        ShardPolicy::default(),
    )
    .unwrap();
    copy_dir(&expired, &lab.served());
    let run = lab.download(&client).await;
    refused(&run, "(build 99) expired at");
    refused(&run, "a frozen catalog is refused");
    lab.holds(&client, 2).await;
    std::fs::copy(build_2.join("index.bin"), lab.served().join("index.bin")).unwrap();

    // `catalog verify`, offline, refuses each of the four in a copy of the directory.
    let case = |name: &str| {
        let dir = work.path().join(name);
        copy_dir(&client, &dir);
        dir
    };
    let shard = new_shards(&client, &build_1)[0].clone();
    let dir = case("verify-flipped");
    flip_a_byte(&dir.join("shards").join(&shard));
    refused(
        &lab.verify(&dir).await,
        &format!("shard {shard} does not have the SHA-256"),
    );
    let dir = case("verify-truncated");
    truncate(&dir.join("shards").join(&shard));
    refused(&lab.verify(&dir).await, "it is truncated or padded");
    let dir = case("verify-older");
    std::fs::copy(build_1.join("index.bin"), dir.join("index.bin")).unwrap();
    refused(
        &lab.verify(&dir).await,
        "is build 1, older than build 2 already held",
    );
    let dir = case("verify-expired");
    std::fs::copy(expired.join("index.bin"), dir.join("index.bin")).unwrap();
    refused(&lab.verify(&dir).await, "(build 99) expired at");
    lab.holds(&client, 2).await;
}
