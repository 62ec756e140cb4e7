//! The node binary runs on jemalloc with the settings `node/src/allocator.rs` gives, built in
//! from the workspace's `.cargo/config.toml`: a build that lost them would run with
//! jemalloc's defaults, whose peak memory is higher (see that module).

use std::process::Command;

#[test]
fn the_node_binary_runs_with_the_built_in_allocator_settings() {
    // jemalloc prints its settings and statistics at exit when asked to.
    let output = Command::new(env!("CARGO_BIN_EXE_sitesync-node"))
        .arg("--version")
        .env("_RJEM_MALLOC_CONF", "stats_print:true")
        .output()
        .expect("the node binary runs");
    assert!(output.status.success(), "{output:?}");
    let stats = String::from_utf8_lossy(&output.stderr);
    let settings = stats
        .lines()
        .find_map(|line| line.trim().strip_prefix("config.malloc_conf: "))
        .unwrap_or_else(|| panic!("no jemalloc statistics at exit:\n{stats}"));
    assert_eq!(
        settings, "\"narenas:2,dirty_decay_ms:250,muzzy_decay_ms:0\"",
        "the settings built into jemalloc"
    );
    assert!(stats.contains("opt.narenas: 2"), "{stats}");
    assert!(stats.contains("opt.dirty_decay_ms: 250"), "{stats}");
}
