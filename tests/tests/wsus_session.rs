//! The node's session with an upstream WSUS (`sitesync_node::upstream::wsus::Session`) against
//! the fake upstream server over real HTTP: one handshake for many calls, cookie renewal and
//! re-authentication, retries of busy and unreachable servers within their bounds, faults as
//! typed errors, hostile answers refused without harm to the session, and the transport
//! around it: an HTTP proxy, and HTTPS with a private CA (the fake serving HTTPS itself).
//!
//! The proxy is a small relay on loopback threads (below), each request forwarded to the
//! fake server on a connection of its own.

use std::io::{self, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use sitesync_metadata::generate::{CatalogSpec, GeneratedDocument, write_catalog};
use sitesync_metadata::{RevisionId, Timestamp};
use sitesync_node::clock::{Clock, ManualClock, SystemClock};
use sitesync_node::upstream::wsus::{ProxySetting, RetryPolicy, Session, WsusError, WsusSettings};
use sitesync_security::Identity;
use sitesync_security::pki::{Authority, DEFAULT_VALIDITY};
use sitesync_tests::wsus_upstream::{FakeTls, FakeWsus, FakeWsusOptions, Fault, Hostile};
use sitesync_wsus::{
    Anchor, BlobError, Limits, Operation, ResponseError, RevisionFilter, ServerRoot, UpdateBlob,
};
use tempfile::TempDir;

// ---------------------------------------------------------------------------------------------
// Set-up.
// ---------------------------------------------------------------------------------------------

/// A generated catalog in a temporary directory.
struct DiskCatalog {
    dir: TempDir,
}

impl DiskCatalog {
    /// The category documents every catalog opens with, then `updates` more.
    fn generate(updates: usize, seed: u64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let documents = CatalogSpec::category_documents() + updates;
        write_catalog(dir.path(), &CatalogSpec::new(documents, seed), |_| {}).unwrap();
        Self { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn document(&self, id: RevisionId) -> Vec<u8> {
        std::fs::read(self.path().join(GeneratedDocument::file_name_for(id))).unwrap()
    }
}

/// The handshake's requests and the session's calls, as the fake counts them.
const HANDSHAKE: [Operation; 3] = [
    Operation::GetAuthConfig,
    Operation::GetAuthorizationCookie,
    Operation::GetCookie,
];

/// Settings for `url` with waits short enough for tests: 4 attempts, 5 ms doubling to 20 ms,
/// one second in all.
fn settings(url: &str) -> WsusSettings {
    sitesync_tests::fast_wsus_settings(url, 4, Duration::from_millis(20))
}

fn session(settings: WsusSettings) -> Session {
    Session::new(settings, Arc::new(SystemClock::new())).unwrap()
}

async fn start(updates: usize, options: FakeWsusOptions) -> (DiskCatalog, FakeWsus) {
    let catalog = DiskCatalog::generate(updates, 7);
    let server = FakeWsus::start(catalog.path(), options).await.unwrap();
    (catalog, server)
}

fn handshakes(server: &FakeWsus) -> [u64; 3] {
    HANDSHAKE.map(|operation| server.requests(operation))
}

/// The update list (every update: no product or classification filter).
fn all_updates() -> RevisionFilter {
    RevisionFilter::updates(None, [], [])
}

// ---------------------------------------------------------------------------------------------
// Authorization.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn one_handshake_serves_every_call_of_a_sync() {
    let (catalog, server) = start(40, FakeWsusOptions::default()).await;
    let session = session(settings(&server.url()));
    assert_eq!(
        handshakes(&server),
        [0, 0, 0],
        "nothing is sent before a call"
    );

    let config = session.config(None).await.unwrap();
    assert_eq!(config.max_updates_per_request, 100);
    let again = session
        .config(config.new_config_anchor.as_ref())
        .await
        .unwrap();
    assert!(
        again.languages.is_empty(),
        "with the anchor, nothing changed"
    );

    let categories = session
        .revision_list(&RevisionFilter::categories(None))
        .await
        .unwrap();
    let updates = session.revision_list(&all_updates()).await.unwrap();
    assert!(!categories.revisions.is_empty() && !updates.revisions.is_empty());
    let mut fetched = 0;
    for ids in [&categories.revisions, &updates.revisions] {
        for batch in ids.chunks(16) {
            let answer = session.update_data(batch).await.unwrap();
            assert_eq!(answer.updates.len(), batch.len());
            for update in answer.updates {
                let document = update.blob.decode(&Limits::default()).unwrap();
                assert_eq!(document, catalog.document(update.id));
                fetched += 1;
            }
        }
    }
    assert_eq!(
        fetched,
        categories.revisions.len() + updates.revisions.len()
    );
    assert!(session.update_data(&[]).await.unwrap().updates.is_empty());

    // Concurrent calls share the session too.
    let filter = all_updates();
    let (a, b, c) = tokio::join!(
        session.config(None),
        session.revision_list(&filter),
        session.update_data(&updates.revisions[..3]),
    );
    a.unwrap();
    b.unwrap();
    c.unwrap();

    assert_eq!(handshakes(&server), [1, 1, 1]);
    assert_eq!(server.requests(Operation::GetConfigData), 3);
    assert_eq!(server.requests(Operation::GetRevisionIdList), 3);

    // A new session's first calls, concurrent, still make one handshake.
    let fresh = self::session(settings(&server.url()));
    let (a, b) = tokio::join!(fresh.config(None), fresh.config(None));
    a.unwrap();
    b.unwrap();
    assert_eq!(handshakes(&server), [2, 2, 2]);
}

#[tokio::test]
async fn a_cookie_near_its_expiry_is_renewed_with_get_cookie() {
    let (_catalog, server) = start(10, FakeWsusOptions::default()).await;
    // The session judges expiry on its own clock, which the test moves; the fake's cookies
    // last their 240 real minutes, so it accepts every renewed cookie.
    let clock = ManualClock::new(SystemClock::new().now());
    let margin = Duration::from_secs(2 * 60);
    let session = Session::new(
        WsusSettings {
            cookie_renewal_margin: margin,
            ..settings(&server.url())
        },
        Arc::new(clock.clone()),
    )
    .unwrap();

    session.config(None).await.unwrap();
    assert_eq!(handshakes(&server), [1, 1, 1]);
    clock.advance(Duration::from_secs(200 * 60));
    session.config(None).await.unwrap();
    assert_eq!(handshakes(&server), [1, 1, 1], "40 minutes left: kept");

    // Inside the margin: renewed with GetCookie (the old cookie still valid), no handshake.
    clock.advance(Duration::from_secs(39 * 60));
    session.config(None).await.unwrap();
    assert_eq!(handshakes(&server), [1, 1, 2]);
    // The renewed cookie lasts 240 minutes from the server's now: with the session's clock
    // back at the real time, it is kept.
    clock.set(SystemClock::new().now());
    session.config(None).await.unwrap();
    assert_eq!(handshakes(&server), [1, 1, 2], "the renewed cookie is kept");

    // Past the renewed cookie's expiry: renewed again (without the expired cookie).
    clock.advance(Duration::from_secs(241 * 60));
    session.revision_list(&all_updates()).await.unwrap();
    assert_eq!(handshakes(&server), [1, 1, 3]);
    assert_eq!(server.requests(Operation::GetConfigData), 4);
}

#[tokio::test]
async fn a_cookie_the_server_let_expire_costs_one_new_handshake() {
    // The session's clock never reaches the expiry; the server's does.
    let lifetime = Duration::from_secs(1);
    let (_catalog, server) = start(
        10,
        FakeWsusOptions {
            cookie_lifetime: lifetime,
            ..FakeWsusOptions::default()
        },
    )
    .await;
    let clock = ManualClock::new(SystemClock::new().now());
    let session = Session::new(
        WsusSettings {
            cookie_renewal_margin: Duration::ZERO,
            ..settings(&server.url())
        },
        Arc::new(clock),
    )
    .unwrap();
    session.config(None).await.unwrap();
    tokio::time::sleep(lifetime + Duration::from_millis(200)).await;
    session.revision_list(&all_updates()).await.unwrap();
    assert_eq!(handshakes(&server), [2, 2, 2]);
    assert_eq!(server.requests(Operation::GetRevisionIdList), 2);
}

#[tokio::test]
async fn a_server_whose_cookies_are_always_expired_fails_after_one_new_handshake() {
    // A cookie lifetime of zero: the server refuses every cookie it issues. The session
    // renews, then authenticates once more, then gives up: no loop.
    let (_catalog, server) = start(
        10,
        FakeWsusOptions {
            cookie_lifetime: Duration::ZERO,
            ..FakeWsusOptions::default()
        },
    )
    .await;
    let session = session(settings(&server.url()));
    let error = session.config(None).await.unwrap_err();
    assert!(
        matches!(
            &error,
            WsusError::NotAuthorized {
                operation: Operation::GetConfigData,
                ..
            }
        ),
        "{error:?}"
    );
    assert_eq!(handshakes(&server), [2, 2, 2]);
    assert_eq!(server.requests(Operation::GetConfigData), 2);

    // The next call starts over: its expired cookie is renewed first.
    session.config(None).await.unwrap_err();
    assert_eq!(handshakes(&server), [3, 3, 4]);
    assert_eq!(server.requests(Operation::GetConfigData), 4);
}

#[tokio::test]
async fn an_invalid_cookie_fault_costs_one_new_handshake_and_the_call_succeeds() {
    let (_catalog, server) = start(10, FakeWsusOptions::default()).await;
    let session = session(settings(&server.url()));
    session.config(None).await.unwrap();

    server.fail_next(Operation::GetRevisionIdList, 1, Fault::InvalidCookie);
    let list = session.revision_list(&all_updates()).await.unwrap();
    assert!(!list.revisions.is_empty());
    assert_eq!(handshakes(&server), [2, 2, 2]);
    assert_eq!(server.requests(Operation::GetRevisionIdList), 2);

    // Refused twice in a row: the call fails after the one new handshake.
    server.fail_next(Operation::GetUpdateData, 2, Fault::InvalidCookie);
    let error = session.update_data(&list.revisions[..1]).await.unwrap_err();
    assert!(
        matches!(
            &error,
            WsusError::NotAuthorized {
                operation: Operation::GetUpdateData,
                ..
            }
        ),
        "{error:?}"
    );
    assert_eq!(handshakes(&server), [3, 3, 3]);
    session.update_data(&list.revisions[..1]).await.unwrap();
    assert_eq!(handshakes(&server), [3, 3, 3]);
}

// ---------------------------------------------------------------------------------------------
// Retries.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_busy_server_is_tried_again_within_the_retry_bounds() {
    let (_catalog, server) = start(10, FakeWsusOptions::default()).await;
    let session = session(settings(&server.url()));
    session.config(None).await.unwrap();

    server.fail_next(Operation::GetConfigData, 3, Fault::ServerBusy);
    session.config(None).await.unwrap();
    assert_eq!(server.requests(Operation::GetConfigData), 1 + 4);

    server.fail_next(Operation::GetConfigData, 4, Fault::ServerBusy);
    let error = session.config(None).await.unwrap_err();
    assert!(
        matches!(
            &error,
            WsusError::ServerBusy {
                operation: Operation::GetConfigData,
                attempts: 4,
                ..
            }
        ),
        "{error:?}"
    );
    assert!(error.is_transient());
    assert_eq!(server.requests(Operation::GetConfigData), 1 + 4 + 4);
    assert!(error.to_string().contains(&server.url()), "{error}");

    // The time budget stops retrying before the attempts run out: 50 ms, then 100 ms would
    // pass 120 ms.
    let patient = self::session(WsusSettings {
        retry: RetryPolicy {
            attempts: 10,
            first_delay: Duration::from_millis(50),
            max_delay: Duration::from_secs(1),
            budget: Duration::from_millis(120),
        },
        ..settings(&server.url())
    });
    patient.config(None).await.unwrap();
    server.reset_counters();
    server.fail_next(Operation::GetConfigData, 10, Fault::ServerBusy);
    let error = patient.config(None).await.unwrap_err();
    assert!(
        matches!(&error, WsusError::ServerBusy { attempts: 2, .. }),
        "{error:?}"
    );
    assert_eq!(server.requests(Operation::GetConfigData), 2);
}

#[tokio::test]
async fn unavailable_and_dropped_connections_are_tried_again_then_named() {
    let (_catalog, server) = start(10, FakeWsusOptions::default()).await;
    let session = session(settings(&server.url()));
    session.config(None).await.unwrap();

    // Any operation's next requests: two HTTP 503, one connection closed unanswered.
    server.unavailable_next(2);
    server.drop_next(1);
    session.revision_list(&all_updates()).await.unwrap();
    assert_eq!(server.requests(Operation::GetRevisionIdList), 4);

    server.unavailable_next(4);
    let error = session.revision_list(&all_updates()).await.unwrap_err();
    assert!(
        matches!(
            &error,
            WsusError::Http {
                status: 503,
                attempts: 4,
                operation: Operation::GetRevisionIdList,
                ..
            }
        ),
        "{error:?}"
    );
    assert!(error.is_transient());
    let text = error.to_string();
    assert!(
        text.contains(&server.url()) && text.contains("GetRevisionIdList"),
        "{text}"
    );

    server.drop_next(4);
    let error = session.revision_list(&all_updates()).await.unwrap_err();
    assert!(
        matches!(
            &error,
            WsusError::Unreachable {
                attempts: 4,
                operation: Operation::GetRevisionIdList,
                ..
            }
        ),
        "{error:?}"
    );
    assert!(error.to_string().contains(&server.url()), "{error}");
    assert_eq!(server.requests(Operation::GetRevisionIdList), 4 + 4 + 4);

    // And the session goes on, on the authorization it had.
    session.revision_list(&all_updates()).await.unwrap();
    assert_eq!(handshakes(&server), [1, 1, 1]);

    // A port nothing listens on: the handshake's first step is what failed.
    let address = server.address();
    server.shutdown().await;
    let gone = self::session(settings(&format!("http://{address}")));
    let error = gone.config(None).await.unwrap_err();
    assert!(
        matches!(
            &error,
            WsusError::Unreachable {
                operation: Operation::GetAuthConfig,
                attempts: 4,
                ..
            }
        ),
        "{error:?}"
    );
    assert!(error.to_string().contains(&address.to_string()), "{error}");
}

#[tokio::test]
async fn a_request_that_outlasts_its_timeout_is_tried_again_then_reported() {
    // A listener that accepts and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = silent.local_addr().unwrap();
    let base = settings(&format!("http://{address}"));
    let session = self::session(WsusSettings {
        request_timeout: Duration::from_millis(200),
        retry: RetryPolicy {
            attempts: 2,
            ..base.retry
        },
        ..base
    });
    let error = session.config(None).await.unwrap_err();
    assert!(
        matches!(
            &error,
            WsusError::TimedOut {
                operation: Operation::GetAuthConfig,
                attempts: 2,
                ..
            }
        ),
        "{error:?}"
    );
    drop(silent);
}

// ---------------------------------------------------------------------------------------------
// Faults and hostile answers.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn faults_surface_as_typed_errors() {
    let (_catalog, server) = start(
        20,
        FakeWsusOptions {
            max_updates_per_request: 5,
            ..FakeWsusOptions::default()
        },
    )
    .await;
    let session = session(settings(&server.url()));
    let list = session.revision_list(&all_updates()).await.unwrap();
    let batch = &list.revisions[..5];

    // One revision the server cannot serve fails its whole batch; the caller splits it.
    server.fail_update_data_containing(batch[2]);
    let error = session.update_data(batch).await.unwrap_err();
    assert!(
        matches!(
            &error,
            WsusError::InternalServerError {
                operation: Operation::GetUpdateData,
                fault_id: Some(_),
                ..
            }
        ),
        "{error:?}"
    );
    assert!(!error.is_transient());
    session.update_data(&batch[..2]).await.unwrap();
    server.clear_failing_revisions();

    // Too many ids, and an anchor the server never wrote: the parameter is named.
    let error = session.update_data(&list.revisions[..6]).await.unwrap_err();
    assert!(
        matches!(&error, WsusError::InvalidParameters { message, .. } if message == "updateIds"),
        "{error:?}"
    );
    let error = session
        .revision_list(&RevisionFilter::updates(
            Some(Anchor::new("not an anchor of this server")),
            [],
            [],
        ))
        .await
        .unwrap_err();
    assert!(
        matches!(
            &error,
            WsusError::InvalidParameters {
                message,
                operation: Operation::GetRevisionIdList,
                ..
            } if message == "filter"
        ),
        "{error:?}"
    );
    assert!(error.to_string().contains("`filter`"), "{error}");

    server.fail_next(Operation::GetConfigData, 1, Fault::ServerChanged);
    let error = session.config(None).await.unwrap_err();
    assert!(
        matches!(
            &error,
            WsusError::ServerChanged {
                operation: Operation::GetConfigData,
                ..
            }
        ),
        "{error:?}"
    );

    // None of it cost the authorization.
    session.update_data(batch).await.unwrap();
    assert_eq!(handshakes(&server), [1, 1, 1]);

    // The handshake's own faults.
    let fresh = self::session(settings(&server.url()));
    server.fail_next(Operation::GetCookie, 1, Fault::IncompatibleProtocolVersion);
    let error = fresh.config(None).await.unwrap_err();
    assert!(
        matches!(&error, WsusError::IncompatibleProtocolVersion { version, .. } if version == "1.20"),
        "{error:?}"
    );
    server.fail_next(Operation::GetCookie, 1, Fault::InvalidAuthorizationCookie);
    let error = fresh.config(None).await.unwrap_err();
    assert!(
        matches!(
            &error,
            WsusError::NotAuthorized {
                operation: Operation::GetCookie,
                ..
            }
        ),
        "{error:?}"
    );
    fresh.config(None).await.unwrap();
}

#[tokio::test]
async fn hostile_answers_are_refused_and_the_session_goes_on() {
    let (catalog, server) = start(20, FakeWsusOptions::default()).await;
    let limits = Limits {
        max_response_bytes: 256 << 10,
        ..Limits::default()
    };
    let session = session(WsusSettings {
        limits,
        ..settings(&server.url())
    });
    let list = session.revision_list(&all_updates()).await.unwrap();

    // Past the size limit, announced or not.
    for declare_length in [true, false] {
        server.hostile_next(
            Operation::GetRevisionIdList,
            1,
            Hostile::Oversized {
                bytes: 4 << 20,
                declare_length,
            },
        );
        let error = session.revision_list(&all_updates()).await.unwrap_err();
        assert!(
            matches!(
                &error,
                WsusError::Refused {
                    operation: Operation::GetRevisionIdList,
                    reason: ResponseError::TooLarge { limit, .. },
                    ..
                } if *limit == 256 << 10
            ),
            "declare_length {declare_length}: {error:?}"
        );
        assert!(!error.is_transient());
        session.revision_list(&all_updates()).await.unwrap();
    }

    // A cut answer: refused, not retried, not taken for a fault.
    server.hostile_next(Operation::GetConfigData, 1, Hostile::MalformedSoap);
    let error = session.config(None).await.unwrap_err();
    assert!(
        matches!(
            &error,
            WsusError::Refused {
                operation: Operation::GetConfigData,
                reason: ResponseError::Truncated { .. } | ResponseError::Malformed { .. },
                ..
            }
        ),
        "{error:?}"
    );
    assert_eq!(server.requests(Operation::GetConfigData), 1);
    session.config(None).await.unwrap();

    // A Cabinet declaring a 4 GiB member: the batch parses, and each of its blobs is refused
    // from its header by the codec, one by one, as the documents are decoded.
    let batch = &list.revisions[..4];
    server.hostile_next(Operation::GetUpdateData, 1, Hostile::HugeCabinet);
    let answer = session.update_data(batch).await.unwrap();
    assert_eq!(answer.updates.len(), batch.len());
    for update in &answer.updates {
        assert!(matches!(update.blob, UpdateBlob::Compressed(_)));
        let refused = update.blob.decode(&limits).unwrap_err();
        assert!(
            matches!(refused, BlobError::MemberTooLarge { .. }),
            "{refused:?}"
        );
    }

    // Then honest again, on the same authorization.
    for update in session.update_data(batch).await.unwrap().updates {
        assert_eq!(
            update.blob.decode(&limits).unwrap(),
            catalog.document(update.id)
        );
    }
    assert_eq!(handshakes(&server), [1, 1, 1]);
}

// ---------------------------------------------------------------------------------------------
// Transport: a proxy, HTTPS.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_configured_proxy_carries_every_request() {
    let (_catalog, server) = start(10, FakeWsusOptions::default()).await;
    let proxy = Relay::forward_proxy();
    let session = session(WsusSettings {
        proxy: ProxySetting::Url(format!("http://{}", proxy.address)),
        ..settings(&server.url())
    });
    session.config(None).await.unwrap();
    let list = session.revision_list(&all_updates()).await.unwrap();
    session.update_data(&list.revisions[..2]).await.unwrap();
    let sent: u64 = Operation::ALL.iter().map(|op| server.requests(*op)).sum();
    assert_eq!(sent, 6);
    assert_eq!(proxy.forwarded(), 6, "every request went through the proxy");
    assert_eq!(
        proxy.targets(),
        vec![server.address().to_string()],
        "to the server"
    );

    // Direct: the proxy sees nothing more.
    let direct = self::session(settings(&server.url()));
    direct.config(None).await.unwrap();
    assert_eq!(proxy.forwarded(), 6);

    let error = Session::new(
        WsusSettings {
            proxy: ProxySetting::Url("http://user:secret@[bad".to_owned()),
            ..settings(&server.url())
        },
        Arc::new(SystemClock::new()),
    )
    .unwrap_err();
    assert!(matches!(&error, WsusError::Setup { .. }), "{error:?}");
    assert!(!error.to_string().contains("secret"), "{error}");
}

#[tokio::test]
async fn https_works_with_the_configured_ca_and_fails_as_tls_without_it() {
    // A private CA's certificate for the site `WSU`, which names 127.0.0.1.
    let pki = tempfile::tempdir().unwrap();
    let authority = Authority::init(pki.path(), "upstream").unwrap();
    let issued = authority
        .issue(&Identity::site("WSU").unwrap(), &[], DEFAULT_VALIDITY)
        .unwrap();
    let (_catalog, server) = start(
        10,
        FakeWsusOptions {
            tls: Some(FakeTls::read(&issued.certificate, &issued.key).unwrap()),
            ..FakeWsusOptions::default()
        },
    )
    .await;
    let url = server.url();
    assert_eq!(url, format!("https://{}", server.address()));
    // Material the fake cannot serve with is refused where it is given.
    FakeTls::from_pem("not a certificate", "not a key").unwrap_err();
    let other = authority
        .issue(&Identity::site("OTH").unwrap(), &[], DEFAULT_VALIDITY)
        .unwrap();
    FakeTls::read(&issued.certificate, &other.key).unwrap_err();

    let trusting = session(WsusSettings {
        ca_file: Some(authority.certificate_path()),
        ..settings(&url)
    });
    let list = trusting.revision_list(&all_updates()).await.unwrap();
    trusting.update_data(&list.revisions[..2]).await.unwrap();
    assert_eq!(handshakes(&server), [1, 1, 1]);
    assert_eq!(server.requests(Operation::GetRevisionIdList), 1);
    assert_eq!(server.requests(Operation::GetUpdateData), 1);

    // The system's roots do not know the private CA: a TLS error, not retried, and no
    // request reached the server.
    let untrusting = session(settings(&url));
    let error = untrusting.config(None).await.unwrap_err();
    assert!(
        matches!(
            &error,
            WsusError::Tls {
                operation: Operation::GetAuthConfig,
                ..
            }
        ),
        "{error:?}"
    );
    assert!(!error.is_transient());
    assert!(error.to_string().contains(&url), "{error}");
    assert_eq!(handshakes(&server), [1, 1, 1]);

    // A CA file that is not there is refused before anything is sent.
    let error = Session::new(
        WsusSettings {
            ca_file: Some(pki.path().join("missing.pem")),
            ..settings(&url)
        },
        Arc::new(SystemClock::new()),
    )
    .unwrap_err();
    assert!(
        matches!(&error, WsusError::Setup { reason, .. } if reason.contains("missing.pem")),
        "{error:?}"
    );
    assert_eq!(handshakes(&server), [1, 1, 1]);

    // Plain HTTP to the HTTPS port gets no SOAP answer.
    let plain = session(settings(&format!("http://{}", server.address())));
    plain.config(None).await.unwrap_err();
    assert_eq!(handshakes(&server), [1, 1, 1]);
}

#[test]
fn the_defaults_are_microsoft_update_over_the_environment_s_proxy() {
    let defaults = WsusSettings::default();
    assert_eq!(defaults.server.as_str(), "https://sws.update.microsoft.com");
    assert_eq!(defaults.proxy, ProxySetting::FromEnvironment);
    assert_eq!(defaults.protocol_version.as_str(), "1.20");
    assert!(defaults.retry.attempts > 1);
    // Built with the system's roots (or without, for plain HTTP), sending nothing.
    let _ = Session::new(
        WsusSettings::for_server(ServerRoot::parse("http://wsus.invalid:8530").unwrap()),
        Arc::new(ManualClock::new(Timestamp::from_unix_millis(0))),
    )
    .unwrap();
}

// ---------------------------------------------------------------------------------------------
// The proxy: a forward proxy on loopback threads. Each request is read whole (head and
// `Content-Length` body), sent to the host it names on a new connection with
// `Connection: close`, and its answer, read to the end, written back as it came.
// ---------------------------------------------------------------------------------------------

struct Relay {
    address: SocketAddr,
    forwarded: Arc<AtomicUsize>,
    targets: Arc<std::sync::Mutex<Vec<String>>>,
}

impl Relay {
    /// An HTTP forward proxy: requests in absolute form (`POST http://host:port/path`), sent
    /// on to that host in origin form.
    fn forward_proxy() -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let relay = Relay {
            address: listener.local_addr().unwrap(),
            forwarded: Arc::default(),
            targets: Arc::default(),
        };
        let (forwarded, targets) = (relay.forwarded.clone(), relay.targets.clone());
        // Runs until the test process ends.
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let (forwarded, targets) = (forwarded.clone(), targets.clone());
                std::thread::spawn(move || {
                    let mut client = BufReader::new(stream);
                    // Ends at the client's end of the connection, or any error.
                    while let Ok(Some(request)) = read_request(&mut client) {
                        let Ok((target, request)) = route(request) else {
                            return;
                        };
                        targets.lock().unwrap().push(target.clone());
                        let Ok(answer) = forward(&target, &request) else {
                            return;
                        };
                        forwarded.fetch_add(1, Ordering::SeqCst);
                        if client.get_mut().write_all(&answer).is_err() {
                            return;
                        }
                        let _ = client.get_mut().flush();
                    }
                });
            }
        });
        relay
    }

    fn forwarded(&self) -> usize {
        self.forwarded.load(Ordering::SeqCst)
    }

    /// The distinct hosts requests were sent to.
    fn targets(&self) -> Vec<String> {
        let mut targets = self.targets.lock().unwrap().clone();
        targets.dedup();
        targets
    }
}

/// One request: its head's lines (without line ends) and its body.
struct RawRequest {
    lines: Vec<String>,
    body: Vec<u8>,
}

/// The next request on the connection; `None` when the client has closed it.
fn read_request(client: &mut impl io::BufRead) -> io::Result<Option<RawRequest>> {
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        if client.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        let line = line.trim_end_matches(['\r', '\n']).to_owned();
        if line.is_empty() {
            break;
        }
        lines.push(line);
    }
    let length = lines
        .iter()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0; length];
    client.read_exact(&mut body)?;
    Ok(Some(RawRequest { lines, body }))
}

/// Where a proxy request goes (the host of its absolute-form target) and its head as sent
/// there, in origin form.
fn route(mut request: RawRequest) -> io::Result<(String, RawRequest)> {
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "not an HTTP proxy request");
    let mut parts = request.lines.first().ok_or_else(bad)?.split(' ');
    let (method, target, version) = (
        parts.next().ok_or_else(bad)?.to_owned(),
        parts.next().ok_or_else(bad)?.to_owned(),
        parts.next().ok_or_else(bad)?.to_owned(),
    );
    let rest = target.strip_prefix("http://").ok_or_else(bad)?;
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    request.lines[0] = format!("{method} {path} {version}");
    request.lines.retain(|line| {
        let name = line.split(':').next().unwrap_or_default().trim();
        !name.eq_ignore_ascii_case("connection") && !name.eq_ignore_ascii_case("proxy-connection")
    });
    request.lines.push("Connection: close".to_owned());
    Ok((host.to_owned(), request))
}

fn forward(target: &str, request: &RawRequest) -> io::Result<Vec<u8>> {
    let mut upstream = TcpStream::connect(target)?;
    let mut head = request.lines.join("\r\n");
    head.push_str("\r\n\r\n");
    upstream.write_all(head.as_bytes())?;
    upstream.write_all(&request.body)?;
    let mut answer = Vec::new();
    upstream.read_to_end(&mut answer)?;
    Ok(answer)
}
