//! What the integration tests that talk to a node share: running `sitesyncctl`, and
//! ([`node_binary`]) the `sitesync-node` binary for tests that start real nodes.
// Each test crate uses a part of it.
#![allow(dead_code)]

pub mod node_binary;

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
