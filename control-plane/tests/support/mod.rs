//! What the integration tests that talk to a node share: running `sitesyncctl`. Tests that
//! start real nodes take the `sitesync-node` binary from
//! `sitesync_tests::cluster::node_binary`, built once per test process.
// Each test crate uses a part of it.
#![allow(dead_code)]

use std::process::{Command, Output};

/// Runs the built `sitesyncctl` against `node`; a `SITESYNC_NODE` in the test's environment
/// must not choose the node instead.
pub fn sitesyncctl(node: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sitesyncctl"))
        .args(["--node", node])
        .args(args)
        .env_remove("SITESYNC_NODE")
        .output()
        .expect("sitesyncctl runs")
}
