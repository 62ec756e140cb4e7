//! The node commands end to end: the built `sitesyncctl` against a real `sitesync-node`
//! process on loopback, syncing a generated catalog.
//!
//! The node binary comes from `sitesync_tests::cluster::node_binary` (built once per test
//! run, or `SITESYNC_NODE_BIN`). The node is started on port 0 with `--address-file`, and killed
//! when the test ends (a drop guard), also when the test fails.

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

mod support;
use sitesync_tests::cluster::node_binary;
use support::sitesyncctl;

/// How long a node may take to start listening (a cold debug build opening its database).
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A node process, killed when dropped.
struct RunningNode {
    child: Child,
    address: String,
    /// Its stderr (the log), for failure messages.
    log: Arc<Mutex<String>>,
    _data: tempfile::TempDir,
}

impl RunningNode {
    fn start(upstream: &Path) -> Self {
        let data = tempfile::tempdir().unwrap();
        let address_file = data.path().join("address");
        let mut command = Command::new(node_binary());
        command
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(data.path().join("node"))
            .arg("--upstream-dir")
            .arg(upstream)
            .arg("--address-file")
            .arg(&address_file)
            // sitesyncctl speaks plaintext to nodes until it gains certificates.
            .arg("--insecure")
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for variable in [
            "SITESYNC_CONFIG",
            "SITESYNC_SITE_CODE",
            "SITESYNC_ROLE",
            "SITESYNC_DATA_DIR",
            "SITESYNC_LISTEN",
            "SITESYNC_UPSTREAM_DIR",
            "SITESYNC_CACHE_MIB",
        ] {
            command.env_remove(variable);
        }
        let mut child = command.spawn().expect("sitesync-node starts");
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        // Drained continuously, so the node never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let mut node = Self {
            child,
            address: String::new(),
            log,
            _data: data,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(address) = std::fs::read_to_string(&address_file) {
                node.address = address.trim().to_owned();
                return node;
            }
            if let Some(status) = node.child.try_wait().unwrap() {
                panic!("sitesync-node exited with {status}:\n{}", node.log());
            }
            assert!(
                Instant::now() < deadline,
                "sitesync-node did not listen within {START_TIMEOUT:?}:\n{}",
                node.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    fn ctl(&self, args: &[&str]) -> Output {
        sitesyncctl(&self.address, args)
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
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RunningNode {
    fn drop(&mut self) {
        self.kill();
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
