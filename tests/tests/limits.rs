//! Hostile input against a real node process (issue 5, SPEC invariant 5): a message larger
//! than the contract's limit is refused without the node's memory growing by its size, and
//! the node goes on serving.

use sitesync_proto::v1;
use sitesync_tests::cluster::Hierarchy;

/// The node's resident memory in KiB, from `/proc`.
fn resident_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_message_is_refused_without_memory_growth() {
    let mut hierarchy = Hierarchy::new().unwrap();
    let top = hierarchy.start_top("CEN").await.unwrap();
    let pid = top.pid().unwrap();
    // Settled after start: one ordinary call first.
    top.status().await.unwrap();
    let before = resident_kib(pid);

    // Ten messages of 64 MiB each, four times the limit: 640 MiB offered in all.
    const MESSAGE: usize = 64 << 20;
    let oversized = "x".repeat(MESSAGE);
    let mut admin = top.admin().max_encoding_message_size(usize::MAX);
    for _ in 0..10 {
        let refused = admin
            .list_status_messages(v1::ListStatusMessagesRequest {
                sync_id: oversized.clone(),
                ..Default::default()
            })
            .await
            .expect_err("a 64 MiB message is refused");
        assert!(
            matches!(
                refused.code(),
                tonic::Code::OutOfRange | tonic::Code::ResourceExhausted
            ),
            "{refused:?}"
        );
        assert!(
            refused.message().contains("too large") || refused.message().contains("limit"),
            "the refusal says why: {refused:?}"
        );
    }
    let after = resident_kib(pid);
    let growth_mib = after.saturating_sub(before) / 1024;
    eprintln!("node resident memory: {before} KiB before, {after} KiB after; offered 640 MiB");
    assert!(
        growth_mib < 32,
        "the node grew by {growth_mib} MiB while refusing oversized messages"
    );

    // It still serves.
    let status = top.status().await.unwrap();
    assert_eq!(status.site.unwrap().site_code, "CEN");
}
