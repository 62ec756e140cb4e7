//! Custom updates end to end (S6): the built `sitesyncctl` publishes, revises and expires
//! custom updates at a top site of real `sitesync-node` processes over mutual TLS, and every
//! site of the hierarchy holds the same revisions with equal digests; deselecting `Local
//! publisher` takes them out of every site database. Publisher keys are rotated and
//! revoked; a middle site that alters a custom document, or serves one signed with an
//! undelegated key or outside the publisher's vendor, is refused by its child, which keeps
//! its catalog; hostile documents never enter the top site.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use sitesync_metadata::custom::{self, Seal};
use sitesync_metadata::generate::{CatalogSpec, write_catalog};
use sitesync_metadata::{ParseLimits, RevisionId, UpdateId};
use sitesync_proto::v1;
use sitesync_security::signing::Signer;
use sitesync_tests::cluster::{Hierarchy, NodeProcess, digest_hex, idle_after_success};

mod support;

use support::{Run, sitesyncctl_as_harness};

/// A sync and the cascade of a small catalog, in a debug build on a loaded machine.
const CONVERGE: Duration = Duration::from_secs(240);
/// The vendor the tests publish for (not a vendor of the generated catalog).
const VENDOR: &str = "Northwind Traders";
const PRODUCT: &str = "Northwind Inventory Agent";
/// A Microsoft product of the generated catalog (its category always syncs).
const WINDOWS_7: &str = "bfe5b177-a086-47a0-b102-097e4fa1f807";

/// The hierarchy and its PKI directory, with `sitesyncctl` against one of its nodes.
struct Lab {
    hierarchy: Hierarchy,
    pki: PathBuf,
}

impl Lab {
    /// A top site `CEN` with a small generated catalog, synced once.
    async fn new(seed: u64) -> Self {
        Self::with_top_config(seed, "").await
    }

    /// [`Lab::new`] with `config` for the top site only.
    async fn with_top_config(seed: u64, config: &str) -> Self {
        let mut hierarchy = Hierarchy::new().unwrap();
        write_catalog(hierarchy.catalog(), &CatalogSpec::new(120, seed), |_| {}).unwrap();
        let pki = hierarchy.pki_dir().to_owned();
        hierarchy.set_config(config);
        let mut lab = Self { hierarchy, pki };
        lab.hierarchy.start_top("CEN").await.unwrap();
        lab.hierarchy.set_config("");
        lab.node("CEN")
            .wait_status("first sync", CONVERGE, idle_after_success)
            .await
            .unwrap();
        lab
    }

    /// Builds the legacy scan catalog at `CEN`, downloads it, and says whether it holds
    /// update `id` (reading every shard one revision at a time).
    async fn legacy_catalog_holds(&self, id: &str) -> bool {
        let built = self.json("CEN", &["catalog", "build-legacy"]).await;
        assert!(built["index"]["build"].as_u64().is_some(), "{built}");
        let dir = self.hierarchy.dir().join("legacy-client");
        let downloaded = self
            .json(
                "CEN",
                &["catalog", "download", "--out", &dir.display().to_string()],
            )
            .await;
        assert_eq!(downloaded["index"]["build"], built["index"]["build"]);
        let id: UpdateId = id.parse().unwrap();
        let signed = sitesync_legacy::verify::read_index(&dir).unwrap();
        let index =
            <sitesync_legacy::Index as prost::Message>::decode(signed.index.as_slice()).unwrap();
        index.shards.iter().any(|shard| {
            let path = dir
                .join("shards")
                .join(sitesync_legacy::shard_file_name(&shard.sha256));
            let mut reader =
                sitesync_legacy::shard::ShardReader::new(std::fs::File::open(path).unwrap());
            std::iter::from_fn(|| reader.next_revision().unwrap())
                .any(|(revision, _)| revision.update_id == id)
        })
    }

    fn node(&self, site: &str) -> &NodeProcess {
        self.hierarchy.node(site)
    }

    async fn ctl(&self, site: &str, args: &[&str]) -> Run {
        sitesyncctl_as_harness(&self.node(site).address(), &self.pki, args).await
    }

    /// Runs `args` at `site`, expects success, returns stdout as JSON.
    async fn json(&self, site: &str, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["--output", "json"]);
        self.ctl(site, &all).await.json()
    }

    /// Issues publisher `name` for `vendor` in the PKI directory.
    async fn issue_publisher(&self, name: &str, vendor: &str) {
        let pki = self.pki.display().to_string();
        let run = self
            .ctl(
                "CEN",
                &[
                    "pki",
                    "issue",
                    "--dir",
                    &pki,
                    "publisher",
                    name,
                    "--vendor",
                    vendor,
                ],
            )
            .await;
        assert!(run.output.status.success(), "{}", run.describe());
    }

    /// Delegates publisher `name`'s vendor to its current key.
    async fn delegate(&self, name: &str) -> Value {
        let certificate = arg(&self.publisher_file(name, "pem"));
        self.json("CEN", &["publishers", "add", &certificate]).await
    }

    /// Publishes a new update described in `file` with title `title`, as `lob`.
    async fn publish_new(&self, file: &str, title: &str) -> Value {
        let description = arg(&self.description(file, title));
        self.json("CEN", &["publish", &description, "--publisher", "lob"])
            .await
    }

    /// The software updates `site`'s site database holds of publisher `lob`, as listed.
    async fn software_of_lob(&self, site: &str) -> Value {
        self.json(
            site,
            &[
                "updates",
                "list",
                "--publisher",
                "lob",
                "--type",
                "software",
            ],
        )
        .await
    }

    /// Publisher `name`'s key from the PKI directory.
    fn signer(&self, name: &str) -> Signer {
        Signer::from_files(
            &self.publisher_file(name, "pem"),
            &self.publisher_file(name, "key"),
        )
        .unwrap()
    }

    fn publisher_file(&self, name: &str, extension: &str) -> PathBuf {
        self.pki
            .join("publishers")
            .join(format!("{name}.{extension}"))
    }

    /// A full sync at the top site, to the end; then waits until every other site holds
    /// its catalog. Returns the top site's status.
    async fn sync_everywhere(&self, sites: &[&str]) -> v1::SiteStatus {
        let top = self.node("CEN").sync_to_the_end(CONVERGE).await.unwrap();
        self.converge(&top, sites).await;
        top
    }

    /// Waits until every one of `sites` holds `top`'s digests and is idle.
    async fn converge(&self, top: &v1::SiteStatus, sites: &[&str]) {
        let (u, s) = digests(top);
        for site in sites {
            self.node(site)
                .wait_status(&format!("CEN's catalog ({u}, {s})"), CONVERGE, |status| {
                    idle_after_success(status) && digests(status) == (u.clone(), s.clone())
                })
                .await
                .unwrap();
        }
    }

    /// Waits for the sync a publication started at the top site, then the cascade.
    async fn after_publication(&self, published: &Value, sites: &[&str]) -> v1::SiteStatus {
        let sync_id = published["sync_id"]
            .as_u64()
            .unwrap_or_else(|| panic!("the publication started no sync: {published}"));
        let end = self
            .node("CEN")
            .sync_finished(&sync_id.to_string(), CONVERGE)
            .await
            .unwrap();
        assert_eq!(
            end.message_id(),
            v1::StatusMessageId::SyncDone,
            "{}",
            end.text
        );
        let top = self
            .node("CEN")
            .wait_status("idle", CONVERGE, idle_after_success)
            .await
            .unwrap();
        self.converge(&top, sites).await;
        top
    }

    /// Writes a description file and returns its path.
    fn description(&self, name: &str, title: &str) -> PathBuf {
        let path = self.hierarchy.dir().join(name);
        std::fs::write(
            &path,
            format!(
                r#"product = "{PRODUCT}"
classification = "Security Updates"
kb_article = "KB5012345"
msrc_severity = "Important"

[title]
en = "{title}"
de = "{title} (Deutsch)"

[description]
en = "Fixes a flaw in the inventory agent."

[[files]]
name = "agent-4.2.1.msi"
size = 2097152
sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
url = "https://files.northwind.example/agent-4.2.1.msi"
"#
            ),
        )
        .unwrap();
        path
    }
}

fn digests(status: &v1::SiteStatus) -> (String, String) {
    let site = status.site.as_ref();
    (
        digest_hex(site.and_then(|s| s.update_server.as_ref())),
        digest_hex(site.and_then(|s| s.site_database.as_ref())),
    )
}

fn arg(path: &Path) -> String {
    path.display().to_string()
}

/// The ids of the updates `updates list` prints.
fn listed(list: &Value) -> Vec<String> {
    list.as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .map(|u| u["update_id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_updates_are_published_revised_expired_and_deselected_at_every_site() {
    // The top site also hosts the legacy scan catalog (S13), which follows the custom
    // update in and, once it is expired, out.
    let mut lab = Lab::with_top_config(23, "[legacy_catalog]\nhost = true\n").await;
    lab.issue_publisher("lob", VENDOR).await;
    let added = lab
        .json(
            "CEN",
            &["publishers", "add", &arg(&lab.publisher_file("lob", "pem"))],
        )
        .await;
    assert_eq!(added[0]["vendor"], VENDOR, "{added}");
    assert_eq!(added[0]["state"], "active", "{added}");
    lab.json(
        "CEN",
        &[
            "settings",
            "set",
            "--products",
            &format!("Local publisher,{WINDOWS_7}"),
        ],
    )
    .await;
    lab.node("CEN").sync_to_the_end(CONVERGE).await.unwrap();
    lab.hierarchy.start_child("PR1", "CEN").await.unwrap();
    lab.hierarchy.start_child("SE1", "PR1").await.unwrap();
    let sites = ["PR1", "SE1"];

    // Publish: a new update reaches every site database with the sync it starts.
    let description = lab.description("agent.toml", "Inventory Agent 4.2.1 security fix");
    let published = lab
        .json(
            "CEN",
            &["publish", &arg(&description), "--publisher", "lob"],
        )
        .await;
    assert_eq!(published["kind"], "new", "{published}");
    assert_eq!(published["revision"], 100, "{published}");
    let id = published["update_id"].as_str().unwrap().to_owned();
    lab.after_publication(&published, &sites).await;
    for site in ["CEN", "PR1", "SE1"] {
        let shown = lab.json(site, &["updates", "show", &id]).await;
        assert_eq!(shown["custom"]["publisher"], "lob", "{site}: {shown}");
        assert_eq!(shown["custom"]["vendor"], VENDOR, "{site}: {shown}");
        assert_eq!(shown["custom"]["signature"], "valid", "{site}: {shown}");
        let listed_here = lab.software_of_lob(site).await;
        assert_eq!(listed(&listed_here), std::slice::from_ref(&id), "{site}");
    }
    assert!(
        lab.legacy_catalog_holds(&id).await,
        "a published security update is in the next legacy catalog"
    );
    let table = lab.ctl("SE1", &["updates", "show", &id]).await;
    assert!(
        table.stdout().contains("publisher key"),
        "{}",
        table.describe()
    );

    // Revise: the new revision is in every update server at once, in the site databases
    // after the next full sync.
    let revised = lab.description("agent-2.toml", "Inventory Agent 4.2.2 security fix");
    let published = lab
        .json(
            "CEN",
            &[
                "publish",
                "revise",
                &id,
                &arg(&revised),
                "--publisher",
                "lob",
            ],
        )
        .await;
    assert_eq!(published["revision"], 101, "{published}");
    lab.after_publication(&published, &sites).await;
    lab.sync_everywhere(&sites).await;
    for site in ["CEN", "PR1", "SE1"] {
        let shown = lab.json(site, &["updates", "show", &id]).await;
        assert_eq!(shown["revision"], 101, "{site}: {shown}");
        assert_eq!(
            shown["title"], "Inventory Agent 4.2.2 security fix",
            "{site}"
        );
    }

    // Expire: with only the publisher's key.
    let expired = lab
        .json("CEN", &["publish", "expire", &id, "--publisher", "lob"])
        .await;
    assert_eq!(expired["kind"], "expired", "{expired}");
    lab.after_publication(&expired, &sites).await;
    lab.sync_everywhere(&sites).await;
    for site in ["CEN", "PR1", "SE1"] {
        let shown = lab.json(site, &["updates", "show", &id]).await;
        assert_eq!(shown["publication_state"], "Expired", "{site}: {shown}");
        assert_eq!(shown["custom"]["signature"], "valid", "{site}: {shown}");
    }
    assert!(
        !lab.legacy_catalog_holds(&id).await,
        "an expired custom update is gone from the next legacy catalog"
    );
    // An expired update takes no further revision.
    let refused = lab
        .ctl(
            "CEN",
            &[
                "publish",
                "revise",
                &id,
                &arg(&revised),
                "--publisher",
                "lob",
            ],
        )
        .await;
    assert_eq!(refused.code(), Some(1), "{}", refused.describe());
    assert!(
        refused.stderr().contains("is expired"),
        "{}",
        refused.describe()
    );

    // Deselect `Local publisher`: the custom updates leave every site database (and the
    // update servers below the top), and stay published at the top site.
    lab.json("CEN", &["settings", "set", "--products", WINDOWS_7])
        .await;
    lab.sync_everywhere(&sites).await;
    for site in ["CEN", "PR1", "SE1"] {
        let here = lab.software_of_lob(site).await;
        assert!(listed(&here).is_empty(), "{site} still holds {here}");
        let gone = lab.ctl(site, &["updates", "show", &id]).await;
        assert_eq!(gone.code(), Some(1), "{site}: {}", gone.describe());
    }
    let kept = lab
        .json(
            "CEN",
            &[
                "updates",
                "list",
                "--store",
                "publications",
                "--publisher",
                "lob",
                "--type",
                "software",
            ],
        )
        .await;
    assert_eq!(listed(&kept), std::slice::from_ref(&id));
}

/// A publisher's key is rotated, then the publisher revoked: new revisions need a key in
/// force, and what was accepted stays valid everywhere without being signed again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_and_revoked_publisher_keys() {
    let mut lab = Lab::new(29).await;
    lab.issue_publisher("lob", VENDOR).await;
    lab.delegate("lob").await;
    lab.hierarchy.start_child("PR1", "CEN").await.unwrap();
    let sites = ["PR1"];
    let first = lab.publish_new("a.toml", "Agent A").await;
    lab.after_publication(&first, &sites).await;
    let first_id = first["update_id"].as_str().unwrap().to_owned();

    // The old key is kept aside; a new certificate replaces it and the delegation rotates.
    let old_pem = lab.hierarchy.dir().join("lob-old.pem");
    let old_key = lab.hierarchy.dir().join("lob-old.key");
    std::fs::copy(lab.publisher_file("lob", "pem"), &old_pem).unwrap();
    std::fs::copy(lab.publisher_file("lob", "key"), &old_key).unwrap();
    lab.issue_publisher("lob", VENDOR).await;
    let rotated = lab
        .json(
            "CEN",
            &[
                "publishers",
                "rotate",
                &arg(&lab.publisher_file("lob", "pem")),
            ],
        )
        .await;
    let states: Vec<&str> = rotated
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["active", "retired"], "{rotated}");
    let second = lab.publish_new("b.toml", "Agent B").await;
    lab.after_publication(&second, &sites).await;
    let second_id = second["update_id"].as_str().unwrap().to_owned();

    // The retired key publishes no more.
    let description = arg(&lab.description("c.toml", "Agent C"));
    let with_old = lab
        .ctl(
            "CEN",
            &[
                "publish",
                &description,
                "--publisher-cert",
                &arg(&old_pem),
                "--publisher-key",
                &arg(&old_key),
            ],
        )
        .await;
    assert_eq!(with_old.code(), Some(1), "{}", with_old.describe());
    assert!(
        with_old.stderr().contains("was not in force") && with_old.stderr().contains(VENDOR),
        "{}",
        with_old.describe()
    );

    // Revoked: the new key publishes no more either.
    let revoked = lab.json("CEN", &["publishers", "revoke", "lob"]).await;
    assert_eq!(revoked[0]["state"], "retired", "{revoked}");
    let after_revocation = lab
        .ctl("CEN", &["publish", &description, "--publisher", "lob"])
        .await;
    assert_eq!(
        after_revocation.code(),
        Some(1),
        "{}",
        after_revocation.describe()
    );

    // What was accepted stays verifiable against the versions that carry the retired keys.
    lab.sync_everywhere(&sites).await;
    for site in ["CEN", "PR1"] {
        for id in [&first_id, &second_id] {
            let shown = lab.json(site, &["updates", "show", id]).await;
            assert_eq!(
                shown["custom"]["signature"], "valid",
                "{site} {id}: {shown}"
            );
        }
    }
    let list = lab.json("PR1", &["publishers", "list"]).await;
    assert_eq!(list.as_array().unwrap().len(), 2, "{list}");
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .all(|d| d["state"] == "retired"),
        "{list}"
    );
}

/// Hostile documents handed to the top site directly (not through `sitesyncctl publish`,
/// which refuses them before sending): each refused with its reason, nothing published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_custom_documents_are_refused_at_the_top_site() {
    let lab = Lab::new(31).await;
    lab.issue_publisher("lob", VENDOR).await;
    lab.issue_publisher("rogue", VENDOR).await;
    lab.delegate("lob").await;
    // The names of the upstream catalog's categories are never a vendor to delegate.
    for (name, vendor) in [("windows", "windows 7"), ("classes", "Security Updates")] {
        lab.issue_publisher(name, vendor).await;
        let certificate = arg(&lab.publisher_file(name, "pem"));
        let refused = lab.ctl("CEN", &["publishers", "add", &certificate]).await;
        assert_eq!(refused.code(), Some(1), "{}", refused.describe());
        assert!(
            refused.stderr().contains("no publisher may take"),
            "{}",
            refused.describe()
        );
    }
    let lob = lab.signer("lob");
    let rogue = lab.signer("rogue");
    let update = |product_category: &str| {
        let checked = toml::from_str::<custom::describe::Description>(
            &std::fs::read_to_string(lab.description("h.toml", "Hostile")).unwrap(),
        )
        .unwrap()
        .check(VENDOR)
        .unwrap();
        let id = RevisionId {
            update_id: "0d3c2b1a-0000-4000-8000-00000000beef"
                .parse::<UpdateId>()
                .unwrap(),
            revision: 100,
        };
        let document =
            custom::describe::render_update(&checked, id, sitesync_metadata::Timestamp(0));
        let own = custom::product_category_id(VENDOR, PRODUCT).to_string();
        String::from_utf8(document)
            .unwrap()
            .replace(&own, product_category)
            .into_bytes()
    };
    let own_product = custom::product_category_id(VENDOR, PRODUCT).to_string();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "a Microsoft product",
            sealed(&lob, "lob", VENDOR, PRODUCT, &update(WINDOWS_7)),
            "custom updates belong only to their own vendor's products",
        ),
        (
            "an undelegated key",
            sealed(&rogue, "rogue", VENDOR, PRODUCT, &update(&own_product)),
            "which no delegation of the catalog version allows",
        ),
        (
            "Microsoft's vendor name",
            sealed(
                &lob,
                "lob",
                "Microsoft Corporation",
                PRODUCT,
                &update(&own_product),
            ),
            "no delegation of the catalog version allows",
        ),
        (
            "no seal",
            update(&own_product),
            "carries no publisher signature",
        ),
        (
            "an altered document",
            {
                let good = sealed(&lob, "lob", VENDOR, PRODUCT, &update(&own_product));
                String::from_utf8(good)
                    .unwrap()
                    .replace("Hostile", "Altered")
                    .into_bytes()
            },
            "signature does not match",
        ),
        (
            "a document past the size limit",
            {
                let mut huge = update(&own_product);
                let at = huge.len() - "</upd:Update>".len();
                let padding = format!(
                    "<!--{}-->",
                    "x".repeat(ParseLimits::default().max_document_bytes)
                );
                huge.splice(at..at, padding.into_bytes());
                huge
            },
            "",
        ),
        ("a document that is not XML", b"{\"title\": 1}".to_vec(), ""),
    ];
    let mut admin = lab.node("CEN").admin().max_encoding_message_size(16 << 20);
    for (what, document, reason) in cases {
        let error = admin
            .publish_update(v1::PublishUpdateRequest {
                documents: vec![document],
            })
            .await
            .expect_err(what);
        assert_eq!(
            error.code(),
            tonic::Code::InvalidArgument,
            "{what}: {error:?}"
        );
        assert!(
            error.message().contains(reason),
            "{what}: {}",
            error.message()
        );
    }
    let published = lab
        .json("CEN", &["updates", "list", "--store", "publications"])
        .await;
    assert!(listed(&published).is_empty(), "{published}");

    // Refused before anything is sent: a description with a missing field or another
    // vendor, a document outside the vendor's products.
    let missing = lab.hierarchy.dir().join("missing.toml");
    std::fs::write(&missing, "product = \"P\"\n[title]\nen = \"t\"\n").unwrap();
    let run = lab
        .ctl("CEN", &["publish", &arg(&missing), "--publisher", "lob"])
        .await;
    assert_eq!(run.code(), Some(1), "{}", run.describe());
    assert!(
        run.stderr().contains("classification"),
        "{}",
        run.describe()
    );
    let other_vendor = lab.hierarchy.dir().join("vendor.json");
    std::fs::write(
        &other_vendor,
        r#"{"vendor": "Microsoft Corporation", "product": "Windows", "classification": "Updates", "title": {"en": "t"}}"#,
    )
    .unwrap();
    let run = lab
        .ctl(
            "CEN",
            &["publish", &arg(&other_vendor), "--publisher", "lob"],
        )
        .await;
    assert_eq!(run.code(), Some(1), "{}", run.describe());
    assert!(
        run.stderr().contains("not the publisher's vendor"),
        "{}",
        run.describe()
    );
    let xml = lab.hierarchy.dir().join("windows.xml");
    std::fs::write(&xml, update(WINDOWS_7)).unwrap();
    let run = lab
        .ctl(
            "CEN",
            &[
                "publish",
                &arg(&xml),
                "--product",
                PRODUCT,
                "--publisher",
                "lob",
            ],
        )
        .await;
    assert_eq!(run.code(), Some(1), "{}", run.describe());
    assert!(run.stderr().contains(WINDOWS_7), "{}", run.describe());

    // A well-formed update document of the vendor's product is published as it is, under
    // its own identity; the same document as its next revision is refused.
    let good = lab.hierarchy.dir().join("agent.xml");
    std::fs::write(&good, update(&own_product)).unwrap();
    let published = lab
        .json(
            "CEN",
            &[
                "publish",
                &arg(&good),
                "--product",
                PRODUCT,
                "--publisher",
                "lob",
            ],
        )
        .await;
    assert_eq!(
        published["update_id"],
        "0d3c2b1a-0000-4000-8000-00000000beef"
    );
    assert_eq!(published["revision"], 100);
    let same = "0d3c2b1a-0000-4000-8000-00000000beef";
    let run = lab
        .ctl(
            "CEN",
            &[
                "publish",
                "revise",
                same,
                &arg(&good),
                "--product",
                PRODUCT,
                "--publisher",
                "lob",
            ],
        )
        .await;
    assert_eq!(run.code(), Some(1), "{}", run.describe());
    assert!(
        run.stderr().contains("at revision 101 or above"),
        "{}",
        run.describe()
    );
}

/// `unsealed` sealed by `signer` as publisher `name` for `vendor` and `product`.
fn sealed(signer: &Signer, name: &str, vendor: &str, product: &str, unsealed: &[u8]) -> Vec<u8> {
    let (_, signature, certificate) = signer
        .sign(&custom::sealed_message(vendor, product, unsealed))
        .unwrap();
    custom::seal(
        unsealed,
        &Seal {
            publisher: name.to_owned(),
            vendor: vendor.to_owned(),
            product: product.to_owned(),
            signature,
            certificate,
            accepted: None,
        },
    )
    .unwrap()
}

/// Replaces the stored bytes of custom revision `id` at a stopped node, underneath its
/// stores, with what `change` makes of them; returns the original.
fn replace_custom(
    node: &NodeProcess,
    id: RevisionId,
    change: impl FnOnce(&[u8]) -> Vec<u8>,
) -> Vec<u8> {
    use sitesync_node::store::{DOCUMENTS_TREE, document_from_stored, keys, stored_document_form};
    let db = sled::open(node.data_dir.join("db")).unwrap();
    let documents = db.open_tree(DOCUMENTS_TREE).unwrap();
    let held: Vec<_> = documents
        .iter()
        .map(Result::unwrap)
        .filter(|(key, _)| keys::parse_document_key(key).is_some_and(|(_, held)| held == id))
        .collect();
    assert!(!held.is_empty(), "{id} is not stored");
    let original = document_from_stored(held[0].1.to_vec()).unwrap();
    let altered = change(&original);
    for (key, _) in held {
        documents
            .insert(key, stored_document_form(&altered))
            .unwrap();
    }
    db.flush().unwrap();
    original
}

/// The reason of the failed sync at `node` whose reason names `reason`, once there is one.
async fn failure_naming(node: &NodeProcess, reason: &str) -> String {
    let status = node
        .wait_status(
            &format!("a sync failed for: {reason}"),
            CONVERGE,
            |status| {
                let site = status.site.as_ref();
                site.is_some_and(|s| s.current_sync.is_none())
                    && site.and_then(|s| s.last_sync.as_ref()).is_some_and(|r| {
                        r.result() == v1::SyncResult::Failed && r.failure_reason.contains(reason)
                    })
            },
        )
        .await
        .unwrap();
    status.site.unwrap().last_sync.unwrap().failure_reason
}

/// A middle site serves a forged custom revision three ways — altered on its disk, signed
/// with an undelegated key, signed by the delegated key outside its vendor's products —
/// and each time the child refuses it, reports why and keeps the catalog it had.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_middle_site_cannot_pass_forged_custom_updates_to_its_child() {
    let mut lab = Lab::new(37).await;
    lab.issue_publisher("lob", VENDOR).await;
    lab.issue_publisher("rogue", VENDOR).await;
    lab.delegate("lob").await;
    lab.hierarchy.start_child("PR1", "CEN").await.unwrap();
    lab.hierarchy.start_child("SE1", "PR1").await.unwrap();
    let first = lab.publish_new("a.toml", "Agent A").await;
    let before = lab.after_publication(&first, &["PR1", "SE1"]).await;

    // A second custom update reaches PR1 while SE1 is away.
    lab.hierarchy.node_mut("SE1").stop().await;
    let second = lab.publish_new("b.toml", "Agent B").await;
    lab.after_publication(&second, &["PR1"]).await;
    let id = RevisionId {
        update_id: second["update_id"].as_str().unwrap().parse().unwrap(),
        revision: 100,
    };
    let lob = lab.signer("lob");
    let rogue = lab.signer("rogue");
    // Re-seals `unsealed` with `signer`, keeping the top site's acceptance of `original`.
    let reseal = |original: &[u8], unsealed: &[u8], signer: &Signer, name: &str| {
        let (seal, _) = custom::unseal(original).unwrap().unwrap();
        let (_, signature, certificate) = signer
            .sign(&custom::sealed_message(
                &seal.vendor,
                &seal.product,
                unsealed,
            ))
            .unwrap();
        custom::seal(
            unsealed,
            &Seal {
                publisher: name.to_owned(),
                signature,
                certificate,
                ..seal
            },
        )
        .unwrap()
    };
    let own_product = custom::product_category_id(VENDOR, PRODUCT).to_string();
    type Forge<'a> = Box<dyn Fn(&[u8]) -> Vec<u8> + 'a>;
    let forgeries: Vec<(&str, Forge, &str)> = vec![
        (
            "altered on disk",
            Box::new(|original: &[u8]| {
                String::from_utf8(original.to_vec())
                    .unwrap()
                    .replace("Agent B", "Agent X")
                    .into_bytes()
            }),
            "signature does not match",
        ),
        (
            "signed with an undelegated key",
            Box::new(|original: &[u8]| {
                let (_, unsealed) = custom::unseal(original).unwrap().unwrap();
                reseal(original, &unsealed, &rogue, "rogue")
            }),
            "which no delegation of the catalog version allows",
        ),
        (
            "outside the vendor's products",
            Box::new(|original: &[u8]| {
                let (_, unsealed) = custom::unseal(original).unwrap().unwrap();
                let moved = String::from_utf8(unsealed)
                    .unwrap()
                    .replace(&own_product, WINDOWS_7)
                    .into_bytes();
                reseal(original, &moved, &lob, "lob")
            }),
            "custom updates belong only to their own vendor's products",
        ),
    ];
    let mut first_round = true;
    for (what, forge, reason) in forgeries {
        lab.hierarchy.node_mut("PR1").stop().await;
        let original = replace_custom(lab.node("PR1"), id, |bytes| forge(bytes));
        lab.hierarchy.node_mut("PR1").restart().await.unwrap();
        if first_round {
            lab.hierarchy.node_mut("SE1").restart().await.unwrap();
            first_round = false;
        } else {
            lab.hierarchy.node_mut("SE1").stop().await;
            lab.hierarchy.node_mut("SE1").restart().await.unwrap();
        }
        let failure = failure_naming(lab.node("SE1"), reason).await;
        assert!(
            failure.contains("custom update") && failure.contains(VENDOR),
            "{what}: {failure}"
        );
        let kept = lab.node("SE1").status().await.unwrap();
        assert_eq!(
            digests(&kept),
            digests(&before),
            "{what}: SE1 kept its catalog"
        );
        // PR1's disk is repaired for the next forgery.
        lab.hierarchy.node_mut("PR1").stop().await;
        replace_custom(lab.node("PR1"), id, |_| original.clone());
        lab.hierarchy.node_mut("PR1").restart().await.unwrap();
    }
    // Repaired, PR1 passes the genuine revision on.
    lab.hierarchy.node_mut("SE1").stop().await;
    lab.hierarchy.node_mut("SE1").restart().await.unwrap();
    let top = lab.node("CEN").status().await.unwrap();
    lab.converge(&top, &["SE1"]).await;
}

/// Custom updates travel in export files (S12) and are checked on import: a disconnected
/// internet-facing node imports a file holding one, checks it against the delegations of
/// the file's catalog version, and judges its seal valid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_updates_in_export_files_are_checked_on_import() {
    let mut lab = Lab::new(41).await;
    lab.issue_publisher("lob", VENDOR).await;
    lab.delegate("lob").await;
    let published = lab.publish_new("a.toml", "Agent A").await;
    lab.after_publication(&published, &[]).await;
    let id = published["update_id"].as_str().unwrap().to_owned();
    let file = lab.hierarchy.dir().join("full.ssx");
    lab.json("CEN", &["export", "--out", &arg(&file)]).await;

    lab.hierarchy
        .start_importer("IN1", sitesync_tests::cluster::Role::Internet)
        .await
        .unwrap();
    let imported = lab.json("IN1", &["import", &arg(&file)]).await;
    assert_eq!(imported["already_held"], false, "{imported}");
    let shown = lab
        .json("IN1", &["updates", "show", &id, "--store", "update-server"])
        .await;
    assert_eq!(shown["custom"]["signature"], "valid", "{shown}");
    assert_eq!(shown["custom"]["vendor"], VENDOR, "{shown}");
}
