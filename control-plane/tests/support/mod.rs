//! What the integration tests that talk to a node share: running `sitesyncctl`. Tests that
//! start real nodes take the `sitesync-node` binary from
//! `sitesync_tests::cluster::node_binary`, built once per test process.
// Each test crate uses a part of it.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

/// Runs the built `sitesyncctl` against `node` over plaintext (`--insecure`): for the
/// fake node, which serves plaintext. No `SITESYNC_*` setting of the test's environment
/// chooses the node or its certificates instead.
pub fn sitesyncctl(node: &str, args: &[&str]) -> Output {
    command(node)
        .arg("--insecure")
        .args(args)
        .output()
        .expect("sitesyncctl runs")
}

/// Runs the built `sitesyncctl` against the real node `node` over mutual TLS, as the
/// operator `admin` of the PKI directory `pki_dir`.
pub fn sitesyncctl_tls(node: &str, pki_dir: &Path, args: &[&str]) -> Output {
    command(node)
        .arg("--pki-dir")
        .arg(pki_dir)
        .args(args)
        .output()
        .expect("sitesyncctl runs")
}

fn command(node: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sitesyncctl"));
    command.args(["--node", node]);
    sitesync_supervise::clear_sitesync_environment(&mut command);
    command
}
