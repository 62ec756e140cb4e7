//! Against the live Microsoft Update (`https://sws.update.microsoft.com`): opt-in, never run
//! in CI (which has no route to it). Run it from a machine that reaches Microsoft Update:
//!
//! ```sh
//! SITESYNC_LIVE_MU=1 cargo nextest run -p sitesync-tests --test wsus_live --run-ignored all
//! ```
//!
//! It speaks the protocol exactly as a top site's sync does — the node's own `Session`, with
//! the system's trust roots and the proxy of `HTTPS_PROXY`/`NO_PROXY` — through the handshake,
//! GetConfigData, the category list and GetUpdateData for a batch of categories, whose
//! documents must decode and parse under the node's limits as the revisions they were asked
//! for. `SITESYNC_LIVE_MU_URL` points it at another server (a WSUS: `http://host:8530`) and
//! `SITESYNC_LIVE_MU_PROTOCOL` changes the protocol version sent (default `1.20`; Microsoft's
//! own client sends `1.7`).

use std::sync::Arc;

use sitesync_metadata::{ParseLimits, parse_update};
use sitesync_node::clock::SystemClock;
use sitesync_node::upstream::wsus::{Session, WsusSettings};
use sitesync_wsus::{Limits, ProtocolVersion, RevisionFilter, ServerRoot};

#[tokio::test]
#[ignore = "needs Microsoft Update over the network: SITESYNC_LIVE_MU=1 and --run-ignored all"]
async fn microsoft_update_answers_the_protocol_as_a_sync_speaks_it() {
    assert_eq!(
        std::env::var("SITESYNC_LIVE_MU").as_deref(),
        Ok("1"),
        "set SITESYNC_LIVE_MU=1 to run this test against the live Microsoft Update"
    );
    // The node installs one crypto provider at start; so does this test.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut settings = WsusSettings::default();
    if let Ok(url) = std::env::var("SITESYNC_LIVE_MU_URL") {
        settings.server = ServerRoot::parse(&url).expect("SITESYNC_LIVE_MU_URL");
    }
    if let Ok(version) = std::env::var("SITESYNC_LIVE_MU_PROTOCOL") {
        settings.protocol_version =
            ProtocolVersion::parse(&version).expect("SITESYNC_LIVE_MU_PROTOCOL");
    }
    let server = settings.server.to_string();
    let session = Session::new(settings, Arc::new(SystemClock::new())).expect("a session");

    let config = session
        .config(None)
        .await
        .unwrap_or_else(|e| panic!("the handshake and GetConfigData with {server}: {e}"));
    assert!(config.max_updates_per_request >= 1);
    eprintln!(
        "{server}: MaxNumberOfUpdatesPerRequest {}, protocol {:?}",
        config.max_updates_per_request, config.protocol_version
    );

    let list = session
        .revision_list(&RevisionFilter::categories(None))
        .await
        .unwrap_or_else(|e| panic!("the category list of {server}: {e}"));
    let latest = list.latest_revisions();
    assert!(!latest.is_empty(), "{server} lists no category");
    eprintln!("{server}: {} categories and detectoids", latest.len());

    let batch: Vec<_> = latest
        .iter()
        .copied()
        .take((config.max_updates_per_request as usize).min(20))
        .collect();
    let answer = session
        .update_data(&batch)
        .await
        .unwrap_or_else(|e| panic!("GetUpdateData from {server}: {e}"));
    assert_eq!(
        answer.updates.len(),
        batch.len(),
        "one item per revision asked"
    );
    let limits = ParseLimits::default();
    for update in &answer.updates {
        assert!(
            batch.contains(&update.id),
            "{} was not asked for",
            update.id
        );
        let document = update
            .blob
            .decode(&Limits::default())
            .unwrap_or_else(|e| panic!("the blob of {}: {e}", update.id));
        let revision = parse_update(&document, &limits)
            .unwrap_or_else(|e| panic!("the document of {}: {e}", update.id));
        assert_eq!(revision.id, update.id, "served under its own identity");
    }
}
