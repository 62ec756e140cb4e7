//! The node's WSUS client (`Session`, `WsusUpstream`) against the recorded answers of a real
//! Windows Server 2025 WSUS, replayed byte for byte (status, headers, body) by the fake
//! upstream server over HTTP on loopback.
//!
//! The recordings are the project's copies in `wsus/tests/fixtures/wsusss/exchanges/`; the
//! codec's own tests (`wsus/tests/`) parse every one of them. Here they reach the node's
//! client through its real HTTP stack: first a whole recorded session answered from the
//! recordings alone (and, checked apart, a replayed answer is the recording on the wire), then
//! each of the three recorded faults in the middle of a scan of a generated catalog, where the
//! fake answers everything else itself:
//! - `InvalidCookie` (000019): a new handshake, and the call goes on;
//! - `InvalidParameters` naming `filter` (000018): the anchor dropped, the list asked in full;
//! - `InternalServerError` on GetUpdateData (000017): the batch split down to the one revision
//!   the server fails on, which is skipped with the server's reason; the rest is kept.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sitesync_metadata::generate::{CatalogSpec, write_catalog};
use sitesync_metadata::{ParseLimits, RevisionId, Timestamp, UpdateId, parse_update};
use sitesync_node::clock::{ManualClock, SystemClock};
use sitesync_node::store::NodeDatabase;
use sitesync_node::upstream::ScanProgress;
use sitesync_node::upstream::wsus::{
    Session, WsusError, WsusScanReport, WsusSettings, WsusUpstream,
};
use sitesync_tests::wsus_upstream::{FakeWsus, FakeWsusOptions, Fault, RecordedAnswer};
use sitesync_wsus::{
    Anchor, IdAndDelta, Limits, Operation, RevisionFilter, ServerRoot, UpdateBlob,
};
use tempfile::TempDir;

// ---------------------------------------------------------------------------------------------
// Set-up.
// ---------------------------------------------------------------------------------------------

/// The codec crate's fixtures, inside this repository.
fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../wsus/tests/fixtures")
}

/// The answer of a recorded exchange, as the server sent it.
fn recorded(exchange: u32) -> RecordedAnswer {
    RecordedAnswer::read(fixtures().join(format!("wsusss/exchanges/{exchange:06}"))).unwrap()
}

/// An update document of the `update-xml` fixtures (UTF-8, as the catalog directory holds it).
fn update_xml(name: &str) -> Vec<u8> {
    std::fs::read(fixtures().join("update-xml").join(name)).unwrap()
}

fn revision(id: &str, revision: u32) -> RevisionId {
    RevisionId {
        update_id: UpdateId::from_str(id).unwrap(),
        revision,
    }
}

/// Settings for `url` with waits short enough for tests.
fn settings(url: &str) -> WsusSettings {
    sitesync_tests::fast_wsus_settings(url, 2, Duration::from_millis(10))
}

const HANDSHAKE: [Operation; 3] = [
    Operation::GetAuthConfig,
    Operation::GetAuthorizationCookie,
    Operation::GetCookie,
];

fn handshakes(server: &FakeWsus) -> [u64; 3] {
    HANDSHAKE.map(|operation| server.requests(operation))
}

/// The next handshake is answered from the recordings 000001–000003.
fn replay_handshake(server: &FakeWsus) {
    for (operation, exchange) in HANDSHAKE.into_iter().zip(1..) {
        server.answer_next_with(operation, 1, recorded(exchange));
    }
}

/// A generated catalog served by the fake, and a node database for the tracker.
struct Fixture {
    catalog: TempDir,
    server: FakeWsus,
    data: TempDir,
    database: NodeDatabase,
}

impl Fixture {
    /// Batches of at most 7 revisions, so a scan makes several and a split shows.
    async fn start(updates: usize) -> Self {
        let catalog = tempfile::tempdir().unwrap();
        let spec = CatalogSpec::new(CatalogSpec::category_documents() + updates, 7);
        write_catalog(catalog.path(), &spec, |_| {}).unwrap();
        let options = FakeWsusOptions {
            max_updates_per_request: 7,
            ..FakeWsusOptions::default()
        };
        let server = FakeWsus::start(catalog.path(), options).await.unwrap();
        let data = tempfile::tempdir().unwrap();
        let database = NodeDatabase::open(&data.path().join("db"), 8 << 20).unwrap();
        Self {
            catalog,
            server,
            data,
            database,
        }
    }

    fn upstream(&self) -> WsusUpstream {
        let session =
            Session::new(settings(&self.server.url()), Arc::new(SystemClock::new())).unwrap();
        WsusUpstream::open(
            session,
            self.database.space("wsus").unwrap(),
            &self.data.path().join("wsus"),
            ParseLimits::default(),
        )
        .unwrap()
    }

    /// What the catalog offers: the highest revision of every update in the directory.
    fn offered(&self) -> BTreeSet<RevisionId> {
        sitesync_tests::highest_revisions(self.catalog.path()).unwrap()
    }
}

async fn scan(upstream: &WsusUpstream, full: bool) -> WsusScanReport {
    upstream.scan(full, &[], &[], &mut |_| {}).await.unwrap()
}

fn tracked(upstream: &WsusUpstream) -> BTreeSet<RevisionId> {
    upstream.revisions().map(|r| r.unwrap().id).collect()
}

// ---------------------------------------------------------------------------------------------
// A whole recorded session.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn the_recorded_session_replays_through_the_node_s_session() {
    // An empty catalog: every answer below comes from a recording, none from the fake.
    let empty = tempfile::tempdir().unwrap();
    let server = FakeWsus::start(empty.path(), FakeWsusOptions::default())
        .await
        .unwrap();
    // The recorded cookie expires at 20:33:26Z; the recording was made at 16:33:26Z. On
    // that clock the session never renews it.
    let clock = ManualClock::new(Timestamp::parse_iso8601("2026-10-04T16:33:26Z").unwrap());
    let session = Session::new(settings(&server.url()), Arc::new(clock)).unwrap();

    // The handshake (000001–000003) under the first call, GetConfigData without an anchor
    // (000005).
    replay_handshake(&server);
    server.answer_next_with(Operation::GetConfigData, 1, recorded(5));
    let config = session.config(None).await.unwrap();
    assert_eq!(handshakes(&server), [1, 1, 1]);
    assert_eq!(config.max_updates_per_request, 100);
    assert_eq!(config.languages.len(), 39);
    assert_eq!(
        config.new_config_anchor,
        Some(Anchor::new("9438,2026-10-04 16:33:26.670"))
    );

    // The category list (000006) and the update list of Defender × Definition Updates
    // (000009), each trimmed upstream to 30 revisions.
    server.answer_next_with(Operation::GetRevisionIdList, 1, recorded(6));
    server.answer_next_with(Operation::GetRevisionIdList, 1, recorded(9));
    let categories = session
        .revision_list(&RevisionFilter::categories(None))
        .await
        .unwrap();
    assert_eq!(
        categories.anchor,
        Anchor::new("9438,2026-10-04 16:33:26.671")
    );
    assert_eq!(categories.revisions.len(), 30);
    assert!(
        categories
            .revisions
            .contains(&revision("56309036-4c77-4dd9-951a-99ee9c246a94", 101))
    );
    let all = |id: &str| IdAndDelta {
        id: UpdateId::from_str(id).unwrap(),
        delta: false,
    };
    let updates = session
        .revision_list(&RevisionFilter::updates(
            None,
            [all("8c3fcc84-7410-4a95-8b89-a166a0190486")],
            [all("e0789628-ce08-4437-be74-2495b842f43b")],
        ))
        .await
        .unwrap();
    assert_eq!(updates.anchor, Anchor::new("9438,2026-10-04 16:33:26.750"));
    assert_eq!(updates.revisions.len(), 30);

    // The three compressed blobs and the plain one decode to the update-xml documents, UTF-8.
    let served = [
        (13, "a2fef9b0-7951-4c2c-a42b-9e351dd1c1fe", 200, true),
        (14, "266f6222-c89d-43f2-9f8a-69340271e677", 200, true),
        (15, "ccb78947-6453-4ecc-9de8-bc0305c98f2d", 200, false),
        (16, "56309036-4c77-4dd9-951a-99ee9c246a94", 101, true),
    ];
    for (exchange, id, number, compressed) in served {
        let id = revision(id, number);
        server.answer_next_with(Operation::GetUpdateData, 1, recorded(exchange));
        let mut batch = session.update_data(&[id]).await.unwrap();
        assert_eq!(batch.updates.len(), 1, "exchange {exchange}");
        let update = batch.updates.remove(0);
        // Only 266f6222 has a file: its digest and Microsoft Update location.
        assert_eq!(update.file_digests.len(), usize::from(exchange == 14));
        assert_eq!(batch.file_urls.len(), usize::from(exchange == 14));
        for url in &batch.file_urls {
            assert_eq!(url.file_digest, update.file_digests[0]);
            let location = url.mu_url.as_deref().unwrap_or_default();
            assert!(location.starts_with("http://download.windowsupdate.com/"));
        }
        assert_eq!(update.id, id, "exchange {exchange}");
        assert_eq!(
            matches!(update.blob, UpdateBlob::Compressed(_)),
            compressed,
            "exchange {exchange}"
        );
        let document = update.blob.decode(&Limits::default()).unwrap();
        let fixture = update_xml(&format!("{}-r{}.xml", id.update_id, id.revision));
        if exchange == 13 {
            // The served original has three no-break spaces in its French title where the
            // fixture copy has plain spaces (fixtures/README.md); nothing else differs.
            let text = String::from_utf8(document.clone()).unwrap();
            assert_eq!(text.matches('\u{a0}').count(), 3);
            assert!(text.replace('\u{a0}', " ").into_bytes() == fixture);
        } else {
            assert!(document == fixture, "exchange {exchange}: not the fixture");
        }
        let parsed = parse_update(&document, &ParseLimits::default()).unwrap();
        assert_eq!(parsed.id, id, "exchange {exchange}");
    }

    // 000019: the session's cookie refused. One new handshake (replayed again), and the call
    // is repeated and answered.
    server.answer_next_with(Operation::GetRevisionIdList, 1, recorded(19));
    replay_handshake(&server);
    server.answer_next_with(Operation::GetRevisionIdList, 1, recorded(6));
    let again = session
        .revision_list(&RevisionFilter::categories(None))
        .await
        .unwrap();
    assert_eq!(again, categories);
    assert_eq!(handshakes(&server), [2, 2, 2]);

    // 000018: a garbage anchor refused, naming the filter, as the catalog expects to drop it.
    server.answer_next_with(Operation::GetRevisionIdList, 1, recorded(18));
    let refused = session
        .revision_list(&RevisionFilter::categories(Some(Anchor::new("garbage"))))
        .await
        .unwrap_err();
    assert!(
        matches!(
            &refused,
            WsusError::InvalidParameters { operation: Operation::GetRevisionIdList, message, .. }
                if message == "filter"
        ),
        "{refused}"
    );

    // 000017: an id the server does not know, as the catalog expects to split the batch.
    server.answer_next_with(Operation::GetUpdateData, 1, recorded(17));
    let unknown = revision("00000000-0000-0000-0000-000000000001", 1);
    let failed = session.update_data(&[unknown]).await.unwrap_err();
    assert!(
        matches!(
            &failed,
            WsusError::InternalServerError { operation: Operation::GetUpdateData, fault_id, .. }
                if fault_id.as_deref() == Some("b6114a8d-9939-41e0-ad7f-0d9a72260804")
        ),
        "{failed}"
    );

    // Every request was answered from a recording: two handshakes, GetConfigData, five
    // lists (000019 and the repeat among them), five GetUpdateData.
    let requests: u64 = Operation::ALL.iter().map(|&op| server.requests(op)).sum();
    assert_eq!(requests, 3 * 2 + 1 + 5 + 5);
    assert_eq!(server.replayed(), requests);
    assert!(server.served().is_empty());
    server.shutdown().await;
}

/// What the fake sends for a recording is the recording: the recorded request of 000018
/// gets exactly its recorded status line, headers (no more, no fewer) and body.
#[tokio::test]
async fn a_replayed_answer_is_the_recording_on_the_wire() {
    let empty = tempfile::tempdir().unwrap();
    let server = FakeWsus::start(empty.path(), FakeWsusOptions::default())
        .await
        .unwrap();
    server.answer_next_with(Operation::GetRevisionIdList, 1, recorded(18));
    let exchange = fixtures().join("wsusss/exchanges/000018");
    let read = |name: &str| std::fs::read(exchange.join(name)).unwrap();

    // reqwest builds without a crypto provider of its own (the node hands it ring's).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let response = client
        .post(ServerRoot::parse(&server.url()).unwrap().server_sync_url())
        .header("Content-Type", sitesync_wsus::CONTENT_TYPE)
        .header(
            "SOAPAction",
            format!("\"{}\"", Operation::GetRevisionIdList.soap_action()),
        )
        .body(read("request.body"))
        .send()
        .await
        .unwrap();

    let head = String::from_utf8(read("response.headers")).unwrap();
    let mut lines = head.lines();
    assert_eq!(lines.next(), Some("HTTP/1.1 500 Internal Server Error"));
    assert_eq!(response.status().as_u16(), 500);
    let recorded: Vec<(&str, &str)> = lines
        .take_while(|line| !line.is_empty())
        .map(|line| line.split_once(": ").unwrap())
        .collect();
    let received: Vec<(String, String)> = response
        .headers()
        .iter()
        .map(|(name, value)| (name.to_string(), value.to_str().unwrap().to_owned()))
        .collect();
    assert_eq!(received.len(), recorded.len(), "{received:?}");
    for (name, value) in recorded {
        assert!(
            received
                .iter()
                .any(|(n, v)| n.eq_ignore_ascii_case(name) && v == value),
            "{name}: {value} not in {received:?}"
        );
    }
    assert!(response.bytes().await.unwrap() == read("response.body"));
    assert_eq!(server.replayed(), 1);
}

// ---------------------------------------------------------------------------------------------
// The three recorded faults in a scan.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_recorded_invalid_cookie_costs_one_new_handshake_and_the_scan_goes_on() {
    let fixture = Fixture::start(30).await;
    let server = &fixture.server;
    server
        .replay_fault(Fault::InvalidCookie, recorded(19))
        .unwrap();
    let upstream = fixture.upstream();

    // Once the category list is known (its documents not yet all stored), the server forgets
    // the cookie: the next list request, the update list's, is answered 000019.
    let mut injected = false;
    let mut forget_the_cookie = |_: ScanProgress| {
        if !injected {
            server.fail_next(Operation::GetRevisionIdList, 1, Fault::InvalidCookie);
            injected = true;
        }
    };
    let report = upstream
        .scan(true, &[], &[], &mut forget_the_cookie)
        .await
        .unwrap();

    assert_eq!(server.replayed(), 1, "the recorded fault was sent");
    assert_eq!(handshakes(server), [2, 2, 2], "one new handshake");
    // The update list was asked again after the handshake: 2 + 1 requests.
    assert_eq!(server.requests(Operation::GetRevisionIdList), 3);
    assert!(report.complete && report.skipped.is_empty(), "{report:?}");
    assert_eq!(tracked(&upstream), fixture.offered());
}

#[tokio::test]
async fn a_recorded_invalid_parameters_drops_the_anchor_and_the_list_is_asked_in_full() {
    let fixture = Fixture::start(30).await;
    let server = &fixture.server;
    server
        .replay_fault(Fault::InvalidParameters("filter".to_owned()), recorded(18))
        .unwrap();
    let upstream = fixture.upstream();
    let first = scan(&upstream, true).await;
    let offered = fixture.offered();
    assert_eq!(first.listed, offered.len());

    // Nothing changed: with their anchors both lists are empty.
    server.reset_counters();
    let unchanged = scan(&upstream, false).await;
    assert_eq!((unchanged.listed, unchanged.complete), (0, false));

    // The server refuses both stored anchors, each with the recorded fault: the category
    // list's at once, the update list's once the category list is known.
    server.reset_counters();
    server.fail_next(
        Operation::GetRevisionIdList,
        1,
        Fault::InvalidParameters("filter".to_owned()),
    );
    let mut injected = false;
    let mut refuse_the_next_anchor = |_: ScanProgress| {
        if !injected {
            server.fail_next(
                Operation::GetRevisionIdList,
                1,
                Fault::InvalidParameters("filter".to_owned()),
            );
            injected = true;
        }
    };
    let report = upstream
        .scan(false, &[], &[], &mut refuse_the_next_anchor)
        .await
        .unwrap();
    assert_eq!(server.replayed(), 2, "the recorded fault was sent twice");
    // Each list asked twice: with the anchor (refused), then without.
    assert_eq!(server.requests(Operation::GetRevisionIdList), 4);
    // Asked in full, both lists name everything again, all of it already held.
    assert!(report.complete, "both lists were asked without an anchor");
    assert_eq!(report.listed, offered.len());
    assert_eq!(report.unchanged, offered.len());
    assert_eq!(report.fetched, 0);
    assert!(server.served().is_empty(), "nothing held was fetched again");
    assert_eq!(tracked(&upstream), offered);

    // The anchors the full lists brought replaced the refused ones.
    server.reset_counters();
    let next = scan(&upstream, false).await;
    assert_eq!((next.listed, next.complete), (0, false));
    assert_eq!(server.replayed(), 0);
}

#[tokio::test]
async fn a_recorded_internal_server_error_is_split_down_to_the_one_bad_revision() {
    let fixture = Fixture::start(60).await;
    let server = &fixture.server;
    server
        .replay_fault(Fault::InternalServerError, recorded(17))
        .unwrap();
    let upstream = fixture.upstream();

    // The fourth revision of the update list: in its first batch of 7, so the batch is split
    // 7 → 4 → 2 → 1 and four requests get the recorded fault.
    let list = upstream
        .session()
        .revision_list(&RevisionFilter::updates(None, [], []))
        .await
        .unwrap();
    let bad = list.revisions[3];
    server.fail_update_data_containing(bad);

    let report = scan(&upstream, true).await;
    assert_eq!(server.replayed(), 4, "one recorded fault per split level");
    assert_eq!(report.skipped.len(), 1, "{:?}", report.skipped);
    let skipped = &report.skipped[0];
    assert_eq!(skipped.revision, bad);
    // The reason names the fault and the recorded server log id.
    assert!(
        skipped.reason.contains("InternalServerError")
            && skipped
                .reason
                .contains("b6114a8d-9939-41e0-ad7f-0d9a72260804"),
        "{}",
        skipped.reason
    );
    assert!(upstream.revision(bad).unwrap().is_none());

    let mut rest = fixture.offered();
    rest.remove(&bad);
    assert_eq!(tracked(&upstream), rest);
    assert_eq!(report.fetched, rest.len());
    // Each good revision was served exactly once: the split re-asked only failed halves.
    let served = server.served();
    assert_eq!(served.len(), rest.len());
    assert_eq!(served.into_iter().collect::<BTreeSet<_>>(), rest);
}

#[tokio::test]
async fn a_recording_of_another_fault_is_refused_for_replay() {
    let empty = tempfile::tempdir().unwrap();
    let server = FakeWsus::start(empty.path(), FakeWsusOptions::default())
        .await
        .unwrap();
    let error = server
        .replay_fault(Fault::InvalidCookie, recorded(17))
        .unwrap_err();
    assert!(error.to_string().contains("InternalServerError"), "{error}");
    // 000018 names `filter`, not `updateIds`.
    assert!(
        server
            .replay_fault(Fault::InvalidParameters("updateIds".into()), recorded(18))
            .is_err()
    );
    // A success is no fault at all.
    assert!(
        server
            .replay_fault(Fault::InternalServerError, recorded(13))
            .is_err()
    );
}
