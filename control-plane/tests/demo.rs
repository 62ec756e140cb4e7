//! `sitesyncctl demo` end to end: the built `sitesyncctl` starts five real `sitesync-node`
//! processes (CEN; PR1 and PR2 under it; SE1 under PR1; PR1's internet-facing node IN1),
//! syncs a small generated catalog down the tree, and stops every node; with `--wsus` the
//! top site syncs from a fake upstream WSUS server in the demo's process instead.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

mod support;
use sitesync_tests::cluster::node_binary;

/// Runs `sitesyncctl --output json demo ARGS`, with no `SITESYNC_*` setting of the test's
/// environment reaching it.
fn demo(args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sitesyncctl"));
    command.args(["--output", "json", "demo"]).args(args);
    sitesync_supervise::clear_sitesync_environment(&mut command);
    command.output().expect("sitesyncctl runs")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Whether `pid` is a live `sitesync-node` process (a reaped one has no `/proc` entry; a
/// reused pid runs another program).
#[cfg(target_os = "linux")]
fn is_running_node(pid: u64) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .is_ok_and(|cmdline| String::from_utf8_lossy(&cmdline).contains("sitesync-node"))
}

#[cfg(not(target_os = "linux"))]
fn is_running_node(pid: u64) -> bool {
    Command::new("kill")
        .args(["-0", &pid.to_string()])
        .status()
        .is_ok_and(|status| status.success())
}

#[test]
fn every_site_reaches_the_top_sites_catalog_and_no_node_is_left() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("demo");
    let node = node_binary().to_str().unwrap().to_owned();
    let output = demo(&[
        "--updates",
        "200",
        "--timeout",
        "50s",
        "--node-binary",
        &node,
        "--dir",
        dir.to_str().unwrap(),
    ]);
    assert!(
        output.status.success(),
        "the demo failed ({}):\n{}",
        output.status,
        stderr(&output)
    );
    let report: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&output.stdout),
            stderr(&output)
        )
    });

    assert_eq!(report["converged"], true);
    assert_eq!(report["nodes_running"], false);
    assert_eq!(report["work_dir_kept"], true);
    assert_eq!(report["top_site_code"], "CEN");
    assert_eq!(report["upstream"]["kind"], "directory");
    assert_eq!(report["revisions"], 200);
    let update_server = report["update_server_digest"].as_str().unwrap();
    let site_database = report["site_database_digest"].as_str().unwrap();
    assert_eq!(update_server.len(), 64, "{update_server}");
    assert_ne!(update_server, "0".repeat(64), "the top site synced nothing");

    let sites = report["sites"].as_array().unwrap();
    let tree: Vec<(&str, &str, Option<&str>)> = sites
        .iter()
        .map(|s| {
            (
                s["site_code"].as_str().unwrap(),
                s["role"].as_str().unwrap(),
                s["parent_site_code"].as_str(),
            )
        })
        .collect();
    assert_eq!(
        tree,
        vec![
            ("CEN", "site", None),
            ("PR1", "site", Some("CEN")),
            ("PR2", "site", Some("CEN")),
            ("SE1", "site", Some("PR1")),
            ("IN1", "internet", Some("PR1")),
        ]
    );
    for site in sites {
        let code = site["site_code"].as_str().unwrap();
        assert_eq!(
            site["update_server"]["digest"], update_server,
            "{code}: {site:#}"
        );
        assert_eq!(site["update_server"]["revisions"], 200, "{code}: {site:#}");
        assert_eq!(site["sync"]["result"], "succeeded", "{code}: {site:#}");
        if site["role"] == "internet" {
            // An internet-facing node has no site-database phase (S11).
            let database = &site["site_database"];
            assert!(
                database.is_null() || database["revisions"] == 0,
                "{code} has a site database: {database:#}"
            );
        } else {
            assert_eq!(
                site["site_database"]["digest"], site_database,
                "{code}: {site:#}"
            );
        }
        assert_eq!(site["stopped"]["clean"], true, "{code}: {site:#}");
        // Every node served its metrics on loopback, at a port of its own.
        let metrics: std::net::SocketAddr = site["metrics_address"]
            .as_str()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("{code} has no metrics address: {site:#}"));
        assert!(
            metrics.ip().is_loopback() && metrics.port() != 0,
            "{code}: {metrics}"
        );
        assert_ne!(Some(metrics.to_string().as_str()), site["address"].as_str());
        let log = Path::new(site["log"].as_str().unwrap());
        assert!(log.starts_with(&dir), "{}", log.display());
        assert!(
            std::fs::metadata(log).is_ok_and(|m| m.len() > 0),
            "{code}'s log {} is empty",
            log.display()
        );
    }
    let timings = &report["timings"];
    assert!(timings["cascade_seconds"].as_f64().unwrap() >= 0.0);
    assert!(timings["top_sync_seconds"].as_f64().unwrap() > 0.0);

    for site in sites {
        let pid = site["pid"].as_u64().unwrap();
        assert!(
            !is_running_node(pid),
            "the node of {} (pid {pid}) is still running",
            site["site_code"]
        );
    }
}

#[test]
fn with_wsus_the_top_site_syncs_over_the_protocol_and_every_site_follows() {
    let node = node_binary().to_str().unwrap().to_owned();
    let output = demo(&[
        "--wsus",
        "--updates",
        "200",
        "--timeout",
        "50s",
        "--node-binary",
        &node,
    ]);
    assert!(
        output.status.success(),
        "the demo failed ({}):\n{}",
        output.status,
        stderr(&output)
    );
    let report: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\nstderr:\n{}", stderr(&output)));
    assert_eq!(report["converged"], true);

    let upstream = &report["upstream"];
    assert_eq!(upstream["kind"], "wsus", "{upstream:#}");
    let url = upstream["location"].as_str().unwrap();
    let port: u16 = url
        .strip_prefix("http://127.0.0.1:")
        .and_then(|port| port.parse().ok())
        .unwrap_or_else(|| panic!("not a loopback URL: {url}"));
    assert_ne!(port, 0);
    assert!(
        stderr(&output).contains(&format!("--upstream-wsus {url}")),
        "{}",
        stderr(&output)
    );
    // The whole protocol ran: the handshake, both lists (categories, then updates), the data.
    let requests = &upstream["requests"];
    for operation in [
        "GetAuthConfig",
        "GetAuthorizationCookie",
        "GetCookie",
        "GetConfigData",
        "GetUpdateData",
    ] {
        assert!(requests[operation].as_u64() >= Some(1), "{requests:#}");
    }
    assert!(
        requests["GetRevisionIdList"].as_u64() >= Some(2),
        "{requests:#}"
    );

    // WSUS lists each update's highest revision only, so the stores hold at most the
    // generated documents, every one of them sent at least once.
    let revisions = report["revisions"].as_u64().unwrap();
    assert!(0 < revisions && revisions <= 200, "{revisions}");
    assert!(upstream["documents_served"].as_u64() >= Some(revisions));
    let digest = report["update_server_digest"].as_str().unwrap();
    for site in report["sites"].as_array().unwrap() {
        let code = site["site_code"].as_str().unwrap();
        assert_eq!(site["update_server"]["digest"], digest, "{code}: {site:#}");
        assert_eq!(site["stopped"]["clean"], true, "{code}: {site:#}");
        let pid = site["pid"].as_u64().unwrap();
        assert!(!is_running_node(pid), "{code} (pid {pid}) is still running");
    }
}

#[test]
fn a_missing_node_binary_or_a_used_directory_is_refused_before_anything_starts() {
    let work = tempfile::tempdir().unwrap();
    let missing = work.path().join("no-such-node");
    let output = demo(&["--node-binary", missing.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let message = stderr(&output);
    assert!(
        message.contains("--node-binary") && message.contains("no such file"),
        "{message}"
    );
    assert!(output.stdout.is_empty());

    std::fs::write(work.path().join("something"), "x").unwrap();
    let node = node_binary().to_str().unwrap().to_owned();
    let output = demo(&[
        "--node-binary",
        &node,
        "--dir",
        work.path().to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(stderr(&output).contains("not empty"), "{}", stderr(&output));
}
