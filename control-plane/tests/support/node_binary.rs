//! The `sitesync-node` binary for tests that run real node processes.
//!
//! Cargo builds only this package's binaries for its tests, so the node binary is built here
//! once per test process (`cargo build -p sitesync-node`, the same profile and target
//! directory as the test; a no-op when it is up to date), or taken from `SITESYNC_NODE_BIN`
//! when set.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The `sitesync-node` binary, built once per test process.
pub fn node_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        if let Some(path) = std::env::var_os("SITESYNC_NODE_BIN") {
            return PathBuf::from(path);
        }
        // A test runs as <target>/<profile>/deps/<test>-<hash>.
        let exe = std::env::current_exe().unwrap();
        let profile_dir = exe.parent().and_then(Path::parent).unwrap().to_path_buf();
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut build = Command::new(cargo);
        build
            .args([
                "build",
                "--quiet",
                "-p",
                "sitesync-node",
                "--bin",
                "sitesync-node",
            ])
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        if profile_dir
            .file_name()
            .is_some_and(|name| name == "release")
        {
            build.arg("--release");
        }
        let status = build.status().expect("cargo runs");
        assert!(status.success(), "cargo build -p sitesync-node failed");
        let binary = profile_dir.join(format!("sitesync-node{}", std::env::consts::EXE_SUFFIX));
        assert!(binary.is_file(), "{} was not built", binary.display());
        binary
    })
}
