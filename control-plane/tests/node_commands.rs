//! The node commands end to end: the built `sitesyncctl` against a real `sitesync-node`
//! process on loopback, syncing a generated catalog.
//!
//! The node binary comes from `sitesync_tests::cluster::node_binary` (built once per test
//! run, or `SITESYNC_NODE_BIN`). The node is started on port 0 by `sitesync-supervise`, and
//! killed when the test ends (a drop guard), also when the test fails.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;

mod support;
use sitesync_supervise::{NodeCommand, SupervisedNode, clear_sitesync_environment};
use sitesync_tests::cluster::node_binary;
use support::sitesyncctl_tls;

/// How long a node may take to start listening (a cold debug build opening its database).
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A node process; its supervisor kills it when dropped.
struct RunningNode {
    process: SupervisedNode,
    address: String,
    /// Holds the node's data directory and log.
    dir: tempfile::TempDir,
}

impl RunningNode {
    fn start(upstream: &Path) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut command = NodeCommand::new(node_binary(), "CEN", dir.path());
        command
            .arg("--upstream-dir")
            .arg(upstream)
            .log_filter("info");
        let mut process = command.spawn().expect("sitesync-node starts");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let address = runtime
            .block_on(process.wait_listening(START_TIMEOUT))
            .unwrap_or_else(|e| panic!("{e}"));
        Self {
            process,
            address: address.to_string(),
            dir,
        }
    }

    /// Where the node made its own CA and the operator `admin` on first start: a top site
    /// with no certificates provisions itself.
    fn pki_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("data").join("pki")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.process.log()).unwrap_or_default()
    }

    fn ctl(&self, args: &[&str]) -> Output {
        sitesyncctl_tls(&self.address, &self.pki_dir(), args)
    }

    /// Runs a command that must succeed with JSON on stdout.
    fn json(&self, args: &[&str]) -> Value {
        let output = self.ctl(&[args, &["--output", "json"]].concat());
        assert!(
            output.status.success(),
            "sitesyncctl {args:?} failed: {}\nnode log:\n{}",
            String::from_utf8_lossy(&output.stderr),
            self.log()
        );
        serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
            panic!(
                "sitesyncctl {args:?}: stdout is not JSON ({e}): {}",
                String::from_utf8_lossy(&output.stdout)
            )
        })
    }

    fn kill(&mut self) {
        self.process.kill();
    }
}

/// A generated catalog of `updates` documents in `dir`.
fn generate_catalog(dir: &Path, updates: usize) {
    let output = Command::new(env!("CARGO_BIN_EXE_sitesyncctl"))
        .args(["catalog", "generate", "--seed", "5", "--updates"])
        .arg(updates.to_string())
        .arg("--out")
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn is_digest(value: &Value) -> bool {
    value
        .as_str()
        .is_some_and(|s| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[test]
fn operator_commands_against_a_real_node() {
    let catalog = tempfile::tempdir().unwrap();
    generate_catalog(catalog.path(), 150);
    let mut node = RunningNode::start(catalog.path());

    // A full sync, followed to its end (possibly queued behind the node's first scheduled
    // sync, which a fresh top site runs at once).
    let run = node.json(&["sync", "--wait"]);
    assert_eq!(run["result"], "succeeded", "{run}\n{}", node.log());
    assert_eq!(run["kind"], "full");
    assert_eq!(run["phase"], "finished");
    let sync_id = run["sync_id"].as_str().unwrap().to_owned();

    let status = node.json(&["status"]);
    assert_eq!(status["site_code"], "CEN");
    assert_eq!(status["role"], "site");
    for store in ["update_server", "site_database"] {
        assert!(is_digest(&status[store]["digest"]), "{store}: {status}");
        assert!(status[store]["revisions"].as_u64().unwrap() > 0, "{status}");
        assert!(status[store]["sequence"].as_u64().unwrap() > 0, "{status}");
    }
    let last = &status["last_sync"];
    assert_eq!(last["result"], "succeeded", "{status}");
    assert!(
        last["kind"].is_string() && last["started"].is_string() && last["finished"].is_string()
    );

    // The run's status messages: started, both phases, done — in that order.
    let messages = node.json(&["messages", "--sync-id", &sync_id]);
    let mut raised: Vec<(u64, i64)> = messages
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["sequence"].as_u64().unwrap(),
                m["message_id"].as_i64().unwrap(),
            )
        })
        .filter(|(_, id)| [6701, 6702, 6703, 6704, 6705].contains(id))
        .collect();
    // In the order raised; the listing order is the node's to choose.
    raised.sort();
    let ids: Vec<i64> = raised.into_iter().map(|(_, id)| id).collect();
    assert_eq!(ids, [6701, 6704, 6705, 6702], "{messages}");
    let limited = node.json(&["messages", "--limit", "2"]);
    assert_eq!(limited.as_array().unwrap().len(), 2);
    let table = node.ctl(&["messages", "--id", "6702"]);
    assert!(table.status.success());
    assert!(String::from_utf8_lossy(&table.stdout).contains("6702"));

    // Updates: a page, the categories, one in full.
    let listed = node.json(&["updates", "list", "--limit", "5"]);
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 5);
    let categories = node.json(&["updates", "list", "--type", "category", "--limit", "0"]);
    assert!(
        categories
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["update_type"] == "Category")
    );
    let software = node.json(&["updates", "list", "--type", "software", "--limit", "1"]);
    let first = &software[0];
    let id = first["update_id"].as_str().unwrap();
    let shown = node.json(&["updates", "show", id]);
    assert_eq!(shown["update_id"], id);
    assert_eq!(shown["revision"], first["revision"]);
    assert!(!shown["revisions_held"].as_array().unwrap().is_empty());
    let document = node.ctl(&["updates", "show", id, "--document"]);
    assert!(document.stdout.starts_with(b"<") || document.stdout.starts_with(b"\xef\xbb\xbf"));

    // Settings: only what is given changes.
    let before = node.json(&["settings", "get"]);
    let after = node.json(&["settings", "set", "--retry", "30m"]);
    assert_eq!(after["retry_delay_seconds"], 1800);
    assert_eq!(after["products"], before["products"]);
    assert_eq!(after["schedule"], before["schedule"]);
    assert!(after["revision"].as_u64() > before["revision"].as_u64());

    // The client policy names the catalog the sync produced.
    let policy = node.json(&["policy"]);
    assert!(policy["version"].as_u64().unwrap() >= 1, "{policy}");
    assert_eq!(policy["catalog_digest"], status["update_server"]["digest"]);
    // As a client reads it, with the top site's signed catalog version, which checks out
    // against the CA and states the digests the node holds.
    let as_client = node.json(&["policy", "--as-client"]);
    let version = &as_client["catalog_version"];
    assert_eq!(version["signature"], "valid", "{as_client}");
    let tree = node.json(&["tree"]);
    assert_eq!(
        tree["sites"][0]["catalog_version"], version["version"],
        "the tree shows the version each site holds: {tree}"
    );
    assert_eq!(version["top_site_code"], "CEN");
    assert_eq!(
        version["update_server_digest"],
        status["update_server"]["digest"]
    );
    assert_eq!(
        version["site_database_digest"],
        status["site_database"]["digest"]
    );

    // A manual sync at the top site is accepted.
    let manual = node.json(&["sync", "--manual"]);
    assert!(["started", "queued"].contains(&manual["disposition"].as_str().unwrap()));

    // Once the node is gone: one line, exit status 2.
    node.kill();
    let output = node.ctl(&["status"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.starts_with("error: cannot reach the node at"),
        "{stderr}"
    );
}

/// sitesyncctl speaks mutual TLS: without a certificate it says how to get one, a
/// certificate of another CA fails the handshake, plaintext is refused by a TLS node, and
/// only operators may change anything.
#[test]
fn the_operator_needs_a_certificate_of_the_nodes_ca() {
    let catalog = tempfile::tempdir().unwrap();
    generate_catalog(catalog.path(), 5);
    let node = RunningNode::start(catalog.path());
    let stderr = |output: &Output| String::from_utf8_lossy(&output.stderr).into_owned();

    // The node's own CA and operator: accepted.
    let ok = node.ctl(&["status"]);
    assert!(ok.status.success(), "{}", stderr(&ok));

    // No certificate: a local error before any connection, with the way out.
    let empty = tempfile::tempdir().unwrap();
    let mut bare = Command::new(env!("CARGO_BIN_EXE_sitesyncctl"));
    bare.args(["--node", &node.address, "status"])
        .current_dir(empty.path());
    clear_sitesync_environment(&mut bare);
    let refused = bare.output().unwrap();
    assert_eq!(refused.status.code(), Some(1), "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains("--pki-dir"),
        "{}",
        stderr(&refused)
    );

    // A certificate from another CA: the handshake fails, and says so (not "unreachable").
    let other = tempfile::tempdir().unwrap();
    let other_pki = other.path().join("pki");
    let authority = sitesync_security::pki::Authority::init(&other_pki, "other").unwrap();
    let admin = sitesync_security::Identity::operator("admin").unwrap();
    authority
        .issue(&admin, &[], sitesync_security::pki::DEFAULT_VALIDITY)
        .unwrap();
    let foreign = support::sitesyncctl_tls(&node.address, &other_pki, &["status"]);
    assert_eq!(foreign.status.code(), Some(1), "{}", stderr(&foreign));
    assert!(
        stderr(&foreign).contains("TLS handshake"),
        "{}",
        stderr(&foreign)
    );

    // Plaintext against a TLS node fails.
    let plaintext = support::sitesyncctl(&node.address, &["status"]);
    assert!(!plaintext.status.success());

    // A site's certificate of the node's own CA may read but not change anything.
    let own = sitesync_security::pki::Authority::open(&node.pki_dir()).unwrap();
    let site = sitesync_security::Identity::site("PR9").unwrap();
    let issued = own
        .issue(&site, &[], sitesync_security::pki::DEFAULT_VALIDITY)
        .unwrap();
    let as_site = |args: &[&str]| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_sitesyncctl"));
        command
            .args(["--node", &node.address, "--ca"])
            .arg(node.pki_dir().join("ca.pem"))
            .arg("--certificate")
            .arg(&issued.certificate)
            .arg("--key")
            .arg(&issued.key)
            .args(args);
        command.output().unwrap()
    };
    let denied = as_site(&["sync"]);
    assert_eq!(denied.status.code(), Some(1), "{}", stderr(&denied));
    assert!(
        stderr(&denied).contains("permission denied") && stderr(&denied).contains("PR9"),
        "{}",
        stderr(&denied)
    );
}

/// `tree --watch --output json` against a real node: one JSON object per line per refresh,
/// each the node's tree; one saying the node cannot be reached once it is gone; and Ctrl-C
/// ends the watch with status 0 and leaves no process behind.
#[cfg(unix)]
#[test]
fn tree_watch_prints_a_json_line_per_refresh_until_interrupted() {
    let catalog = tempfile::tempdir().unwrap();
    generate_catalog(catalog.path(), 5);
    let mut node = RunningNode::start(catalog.path());
    let mut watch = support::Running::start(support::tls_command(
        &node.address,
        &node.pki_dir(),
        &["tree", "--watch", "--interval", "1s", "--output", "json"],
    ));

    let mut refreshed = Vec::new();
    for _ in 0..2 {
        let line = watch
            .next_line(Duration::from_secs(30))
            .unwrap_or_else(|| panic!("stdout closed early\nnode log:\n{}", node.log()));
        let frame: Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        assert_eq!(
            frame["answered"],
            true,
            "{frame}\nnode log:\n{}",
            node.log()
        );
        assert_eq!(frame["node"], node.address.as_str(), "{frame}");
        assert_eq!(frame["interval_seconds"], 1, "{frame}");
        assert_eq!(frame["tree"]["root_site_code"], "CEN", "{frame}");
        assert_eq!(frame["tree"]["sites"][0]["site_code"], "CEN", "{frame}");
        let at = frame["refreshed_at"].as_str().unwrap();
        refreshed.push(sitesync_metadata::Timestamp::parse_iso8601(at).unwrap());
    }
    assert!(
        refreshed[0].unix_millis() < refreshed[1].unix_millis(),
        "{refreshed:?}"
    );

    // The node goes down: the watch goes on, saying so. A refresh in flight at the kill
    // may report the broken call; the ones after say the node cannot be reached.
    node.kill();
    let unanswered = loop {
        let line = watch
            .next_line(Duration::from_secs(30))
            .expect("the watch outlives the node");
        let frame: Value = serde_json::from_str(&line).unwrap();
        if frame["answered"] == false {
            assert_eq!(frame["tree"], Value::Null, "{frame}");
            assert!(frame["last_answer_at"].is_string(), "{frame}");
            let error = frame["error"].as_str().unwrap();
            if error.starts_with("cannot reach the node at") {
                break frame;
            }
            assert!(error.contains("transport error"), "{frame}");
        }
    };
    assert!(
        unanswered["error"]
            .as_str()
            .unwrap()
            .contains(&node.address),
        "{unanswered}"
    );

    watch.interrupt();
    let (status, stderr) = watch.wait(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(stderr.is_empty(), "{stderr}");
    assert!(
        watch.stdout_closed(Duration::from_secs(5)),
        "something still holds sitesyncctl's stdout"
    );
}
