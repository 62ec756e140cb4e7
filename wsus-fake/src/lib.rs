//! A fake upstream WSUS server: the server side of [MS-WSUSSS] over real HTTP/1.1 on
//! loopback, plain or inside TLS ([`FakeWsusOptions::tls`]), answering exactly in the shapes
//! a Windows Server 2025 WSUS was recorded answering (`wsus/tests/fixtures/wsusss/exchanges/`),
//! from a directory of update documents. The tests and the benchmarks run a top site against
//! it, and so does `sitesyncctl demo --wsus`, so a newcomer sees the real protocol run; it is
//! a crate of its own because `sitesyncctl` cannot depend on the test crate (which re-exports
//! it as `sitesync_tests::wsus_upstream`).
//!
//! **The catalog** is a directory of update documents, one file per revision named
//! `<update id>-r<revision>.xml`, as `sitesync_metadata::generate::write_catalog` writes them;
//! other files are ignored. Each document is parsed once to learn its identity, whether it is a
//! category or detectoid (the category list, `GetConfig` true) or an update, the products and
//! classifications it belongs to (its `IsCategory` prerequisites), the updates it bundles, and
//! its files. The documents themselves stay on disk and are read when served. Every scan is a
//! *generation* (1 at start); [`FakeWsus::reload`] rescans and bumps it, so new, changed and
//! expired revisions (an expiry is a new revision) are "changed in" the new generation, and
//! revisions whose file is gone are no longer listed or served.
//!
//! **How it answers**, by operation (a client's view; see also "What a client must know"):
//! - GetAuthConfig: the `DssTargeting` plug-in with the relative `ServiceUrl`
//!   `DssAuthWebService/DssAuthWebService.asmx`.
//! - GetAuthorizationCookie (on the DSS authorization service): a fresh authorization cookie
//!   for any account name and any GUID.
//! - GetCookie: a session cookie for an authorization cookie this server issued, expiring after
//!   [`FakeWsusOptions::cookie_lifetime`]; protocol version `1.<minor>`. Every later request
//!   must carry an unexpired cookie of this server, else `InvalidCookie`.
//! - GetConfigData: [`FakeWsusOptions::max_updates_per_request`], a config anchor, and a short
//!   language list (empty when the request carries a config anchor, as WSUS does).
//! - GetRevisionIdList: `GetConfig` true lists categories, classifications and detectoids;
//!   false lists updates that belong to a listed product **and** a listed classification (no
//!   list at all: every update; one list without the other: none), plus the updates those
//!   bundle. One revision per update, its highest. The answer's anchor is
//!   `<generation>,<text>`; with an anchor in the request only revisions changed after that
//!   generation are listed, except for updates matched by an `IdAndDelta` whose `Delta` is
//!   false, which are listed whatever their age. An anchor this server cannot have written
//!   gives `InvalidParameters` (`filter`).
//! - GetUpdateData: one item per asked revision (duplicates included), the document as a plain
//!   `XmlUpdateBlob` when its UTF-16 form is at most [`FakeWsusOptions::compress_above`]
//!   bytes, else as `XmlUpdateBlobCompressed` (a Cabinet, MSZIP, one member `blob` holding the
//!   document in UTF-16LE); `FileDigestList` and `fileUrls` for revisions with files. More
//!   ids than the maximum: `InvalidParameters` (`updateIds`); any unknown revision:
//!   `InternalServerError` for the whole batch.
//!
//! **Injection**, methods on the handle, each for the next N requests: a SOAP fault of an
//! operation ([`FakeWsus::fail_next`]), HTTP 503 ([`FakeWsus::unavailable_next`]), the
//! connection closed without an answer ([`FakeWsus::drop_next`]), a [`Hostile`] answer
//! ([`FakeWsus::hostile_next`]); and, until cleared, `InternalServerError` for every
//! GetUpdateData batch holding a given revision ([`FakeWsus::fail_update_data_containing`]),
//! so a client can split batches to isolate it. **Replay**: a [`RecordedAnswer`] is the
//! status, headers and body of a recorded exchange, sent as recorded: for the next N requests
//! of an operation ([`FakeWsus::answer_next_with`]), or whenever the server answers a given
//! fault, injected or its own verdict ([`FakeWsus::replay_fault`]), so a client meets the
//! fault bytes a real WSUS wrote rather than this server's rendering of them. **Counters**:
//! [`FakeWsus::requests`] per operation, [`FakeWsus::served`] for every revision GetUpdateData
//! sent, [`FakeWsus::replayed`] for the recorded answers sent.
//!
//! **Transport**: plain HTTP, or HTTPS with the certificate and key of a [`FakeTls`], as a
//! WSUS serves on 8531: rustls on ring, TLS 1.2 and 1.3, no client certificate, no ALPN (so
//! HTTP/1.1). A client that refuses the certificate ends its connection in the handshake,
//! before any request is read or counted.
//!
//! **Lifetime**: [`FakeWsus::start`] binds `127.0.0.1:0` and serves on the calling Tokio
//! runtime; dropping the handle aborts the server task, which drops the listener and aborts
//! every connection task; [`FakeWsus::shutdown`] does the same and waits until it is done.
//!
//! **What a client must know** (the recordings' rules, which this server enforces): post
//! SOAP 1.1 with the quoted `SOAPAction` of the operation to the service's path (paths are
//! case-insensitive); faults come as HTTP 500 with a `soap:Fault` whose `detail/ErrorCode`
//! classifies them; cookies are opaque and must be echoed verbatim, and a new handshake is the
//! answer to `InvalidCookie`; anchors are opaque and belong to one list kind each; the
//! category list must be fetched before updates that refer to it; an update's list entry is
//! its highest revision only, and a full list (no anchor) is the only way to see that an
//! update is gone.
//!
//! [MS-WSUSSS]: https://learn.microsoft.com/en-us/openspecs/windows_protocols/ms-wsusss/

#![forbid(unsafe_code)]

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::convert::Infallible;
use std::fmt::{self, Write as _};
use std::io::{Cursor, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail, ensure};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt as _, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use quick_xml::events::Event;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sitesync_metadata::{
    ContentHash, DigestAlgorithm, ParseLimits, RevisionId, Timestamp, UpdateId, UpdateType,
    parse_update,
};
use sitesync_wsus::{
    BLOB_MEMBER_NAME, CONTENT_TYPE as SOAP_CONTENT_TYPE, DSS_AUTH_PATH, FaultKind, Limits,
    Operation, SERVER_SYNC_PATH, Service,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

/// How the server behaves where the protocol leaves a choice, and whether it speaks HTTPS.
/// The defaults are WSUS's, over plain HTTP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeWsusOptions {
    /// How long a session cookie from GetCookie is accepted (WSUS: 240 minutes). Zero makes
    /// every cookie expire at once, to test renewal.
    pub cookie_lifetime: Duration,
    /// GetConfigData's `MaxNumberOfUpdatesPerRequest`; GetUpdateData refuses more ids.
    pub max_updates_per_request: u32,
    /// Documents whose UTF-16 form is larger than this many bytes are sent compressed. Windows
    /// compresses above 5,120 bytes; 0 compresses every document, `usize::MAX` none.
    pub compress_above: usize,
    /// List older revisions of categories in the category list too, next to the highest one,
    /// as the recorded WSUS did (`e6cf1350…` r100 and r1). Off by default.
    pub list_older_category_revisions: bool,
    /// Serve HTTPS with this certificate instead of plain HTTP; [`FakeWsus::url`] is then
    /// `https://…`. A client must trust the certificate's CA (a private one, in the tests).
    pub tls: Option<FakeTls>,
}

impl Default for FakeWsusOptions {
    fn default() -> Self {
        Self {
            cookie_lifetime: Duration::from_secs(240 * 60),
            max_updates_per_request: 100,
            compress_above: 5120,
            list_older_category_revisions: false,
            tls: None,
        }
    }
}

/// The certificate an HTTPS fake serves: a chain (leaf first) and its private key, both PEM.
/// The leaf must name `127.0.0.1` (an IP address SAN), the host of [`FakeWsus::url`].
#[derive(Clone, PartialEq, Eq)]
pub struct FakeTls {
    certificate_pem: Vec<u8>,
    key_pem: Vec<u8>,
}

impl FakeTls {
    /// A chain and key in PEM. Fails if either does not parse or the key does not match the
    /// leaf certificate.
    pub fn from_pem(
        certificate_pem: impl Into<Vec<u8>>,
        key_pem: impl Into<Vec<u8>>,
    ) -> anyhow::Result<FakeTls> {
        let tls = FakeTls {
            certificate_pem: certificate_pem.into(),
            key_pem: key_pem.into(),
        };
        // Checked now, so a bad certificate is reported where it is given.
        tls.acceptor()?;
        Ok(tls)
    }

    /// [`FakeTls::from_pem`] with the PEM files at these paths (as
    /// `sitesync_security::pki::Authority::issue` writes them).
    pub fn read(certificate: impl AsRef<Path>, key: impl AsRef<Path>) -> anyhow::Result<FakeTls> {
        let read = |path: &Path| {
            std::fs::read(path).with_context(|| format!("reading {}", path.display()))
        };
        Self::from_pem(read(certificate.as_ref())?, read(key.as_ref())?)
    }

    /// A TLS acceptor on ring, built for this server alone: no process-wide provider is
    /// installed, so a test process may pick its own.
    fn acceptor(&self) -> anyhow::Result<TlsAcceptor> {
        let chain = CertificateDer::pem_slice_iter(&self.certificate_pem)
            .collect::<Result<Vec<_>, _>>()
            .context("the certificate is not PEM")?;
        ensure!(
            !chain.is_empty(),
            "the certificate PEM holds no certificate"
        );
        let key = PrivateKeyDer::from_pem_slice(&self.key_pem)
            .context("the key is not a PEM private key")?;
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("the certificate and key do not make a TLS server configuration")?;
        Ok(TlsAcceptor::from(Arc::new(config)))
    }
}

/// Without the key: options are printed in test failures.
impl fmt::Debug for FakeTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeTls")
            .field("certificate_pem_bytes", &self.certificate_pem.len())
            .finish_non_exhaustive()
    }
}

/// A SOAP fault as WSUS writes it: HTTP 500, `detail/ErrorCode` naming the kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    InvalidCookie,
    InvalidAuthorizationCookie,
    ServerChanged,
    ServerBusy,
    /// `Message` names the refused parameter: `filter`, `updateIds`, …
    InvalidParameters(String),
    InternalServerError,
    IncompatibleProtocolVersion,
}

impl Fault {
    fn error_code(&self) -> &'static str {
        match self {
            Fault::InvalidCookie => "InvalidCookie",
            Fault::InvalidAuthorizationCookie => "InvalidAuthorizationCookie",
            Fault::ServerChanged => "ServerChanged",
            Fault::ServerBusy => "ServerBusy",
            Fault::InvalidParameters(_) => "InvalidParameters",
            Fault::InternalServerError => "InternalServerError",
            Fault::IncompatibleProtocolVersion => "IncompatibleProtocolVersion",
        }
    }

    /// `soap:Client` for what the request got wrong, `soap:Server` for the server's own
    /// trouble, as in the recordings (000017 Server; 000018, 000019 Client).
    fn fault_code(&self) -> &'static str {
        match self {
            Fault::ServerBusy | Fault::InternalServerError => "soap:Server",
            _ => "soap:Client",
        }
    }

    fn message(&self) -> &str {
        match self {
            Fault::InvalidParameters(parameter) => parameter,
            _ => "",
        }
    }

    /// How a client's codec classifies this fault.
    fn kind(&self) -> FaultKind {
        match self {
            Fault::InvalidCookie => FaultKind::InvalidCookie,
            Fault::InvalidAuthorizationCookie => FaultKind::InvalidAuthorizationCookie,
            Fault::ServerChanged => FaultKind::ServerChanged,
            Fault::ServerBusy => FaultKind::ServerBusy,
            Fault::InvalidParameters(parameter) => FaultKind::InvalidParameters {
                message: parameter.clone(),
            },
            Fault::InternalServerError => FaultKind::InternalServerError,
            Fault::IncompatibleProtocolVersion => FaultKind::IncompatibleProtocolVersion,
        }
    }
}

/// An answer exactly as a real server sent it: the status, headers and body of a recorded
/// exchange (`wsus/tests/fixtures/wsusss/exchanges/<n>/`), replayed as they are. Only what
/// HTTP does not distinguish can differ on the wire: header names go out in lower case.
#[derive(Debug, Clone)]
pub struct RecordedAnswer {
    status: StatusCode,
    /// In recorded order, `Content-Length` and `Date` included, so the server adds neither.
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Bytes,
}

impl RecordedAnswer {
    /// Reads the answer of the recorded exchange in `exchange`: `response.headers` (the status
    /// line and the header lines, as received) and `response.body`. Fails if either is
    /// missing or unreadable, or if `Content-Length` does not match the body.
    pub fn read(exchange: impl AsRef<Path>) -> anyhow::Result<RecordedAnswer> {
        let dir = exchange.as_ref();
        let head_path = dir.join("response.headers");
        let head = std::fs::read_to_string(&head_path)
            .with_context(|| format!("reading {}", head_path.display()))?;
        let body_path = dir.join("response.body");
        let body = Bytes::from(
            std::fs::read(&body_path)
                .with_context(|| format!("reading {}", body_path.display()))?,
        );
        let mut lines = head.lines();
        let status_line = lines.next().unwrap_or_default();
        let status = status_line
            .strip_prefix("HTTP/1.1 ")
            .and_then(|rest| rest.get(..3))
            .and_then(|code| code.parse::<u16>().ok())
            .and_then(|code| StatusCode::from_u16(code).ok())
            .with_context(|| {
                format!(
                    "{}: `{status_line}` is not an HTTP/1.1 status line",
                    head_path.display()
                )
            })?;
        let mut headers = Vec::new();
        for line in lines.take_while(|line| !line.is_empty()) {
            let (name, value) = line
                .split_once(':')
                .with_context(|| format!("{}: `{line}` is not a header", head_path.display()))?;
            headers.push((
                HeaderName::from_bytes(name.trim().as_bytes())?,
                HeaderValue::from_str(value.trim())?,
            ));
        }
        if let Some((_, declared)) = headers.iter().find(|(name, _)| name == CONTENT_LENGTH) {
            let declared: usize = declared.to_str()?.parse()?;
            ensure!(
                declared == body.len(),
                "{}: Content-Length {declared} but the body has {} bytes",
                head_path.display(),
                body.len()
            );
        }
        Ok(RecordedAnswer {
            status,
            headers,
            body,
        })
    }

    fn response(&self) -> Response<Body> {
        let mut response = Response::new(Full::new(self.body.clone()).boxed_unsync());
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        for (name, value) in &self.headers {
            headers.append(name.clone(), value.clone());
        }
        response
    }
}

/// Answers a well-behaved server never gives, for the client's defences.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hostile {
    /// The honest answer padded with whitespace inside the envelope to at least `bytes` bytes,
    /// streamed without ever being held whole. With `declare_length` the `Content-Length`
    /// announces the full size; without it the body is chunked, so only counting tells.
    Oversized { bytes: usize, declare_length: bool },
    /// The honest answer cut in the middle (with a `Content-Length` that matches the cut
    /// body): HTTP is fine, the XML is not.
    MalformedSoap,
    /// GetUpdateData only: every document compressed, each Cabinet declaring its member to be
    /// 4 GiB − 1 bytes (a decompression bomb's header).
    HugeCabinet,
    /// GetUpdateData only: each item names the revision asked for but carries the document of
    /// another revision of the catalog.
    DocumentOfAnotherRevision,
    /// GetUpdateData only: an extra item for a revision of the catalog that was not asked for.
    UnaskedRevision,
}

impl Hostile {
    fn only_for_update_data(self) -> bool {
        matches!(
            self,
            Hostile::HugeCabinet | Hostile::DocumentOfAnotherRevision | Hostile::UnaskedRevision
        )
    }
}

/// What one scan of the catalog directory found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CatalogScan {
    /// The generation this scan made current.
    pub generation: u64,
    /// Revision files in the catalog.
    pub revisions: usize,
    /// Revisions new or changed since the previous scan (all of them at start).
    pub new_or_changed: usize,
    /// Revisions of the previous scan whose file is gone.
    pub removed: usize,
}

/// A running fake upstream server. Dropping it stops the server.
pub struct FakeWsus {
    shared: Arc<Shared>,
    /// The bound loopback address; the port stays the server's until it stops.
    address: SocketAddr,
    /// The accept loop, which owns the listener and every connection task: aborting it stops
    /// them all. `None` once [`FakeWsus::shutdown`] has taken it.
    server: Option<JoinHandle<()>>,
}

impl fmt::Debug for FakeWsus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeWsus")
            .field("url", &self.url())
            .field("dir", &self.shared.dir)
            .field("generation", &self.generation())
            .finish()
    }
}

impl FakeWsus {
    /// Scans `dir` and serves its catalog on a free loopback port, on the current Tokio
    /// runtime, over HTTPS if `options.tls` is given. Fails if a revision file does not parse
    /// or is named for another revision.
    pub async fn start(
        dir: impl Into<PathBuf>,
        options: FakeWsusOptions,
    ) -> anyhow::Result<FakeWsus> {
        let dir = dir.into();
        let scan_dir = dir.clone();
        let (catalog, _) =
            tokio::task::spawn_blocking(move || Catalog::scan(&scan_dir, None)).await??;
        let tls = options.tls.as_ref().map(FakeTls::acceptor).transpose()?;
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let shared = Arc::new(Shared {
            url: format!("{scheme}://{address}"),
            dir,
            options,
            started: Timestamp::from_unix_millis(unix_millis(SystemTime::now())),
            catalog: RwLock::new(Arc::new(catalog)),
            reloading: tokio::sync::Mutex::new(()),
            state: Mutex::new(State::default()),
        });
        let server = tokio::spawn(serve(listener, tls, shared.clone()));
        Ok(FakeWsus {
            shared,
            address,
            server: Some(server),
        })
    }

    /// The server root, `http://127.0.0.1:<port>` (`https://` with [`FakeWsusOptions::tls`]),
    /// as a client's upstream setting.
    pub fn url(&self) -> String {
        self.shared.url.clone()
    }

    /// The listening address, to check that the port is closed after a stop.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The current catalog generation (1 after start, one more after each reload).
    pub fn generation(&self) -> u64 {
        self.shared.catalog().generation
    }

    /// Rescans the directory and makes the result the next generation. Requests already
    /// being answered finish on the catalog they started with.
    pub async fn reload(&self) -> anyhow::Result<CatalogScan> {
        // One scan at a time, so no generation is skipped or made twice.
        let _reloading = self.shared.reloading.lock().await;
        let previous = self.shared.catalog();
        let dir = self.shared.dir.clone();
        let (catalog, scan) =
            tokio::task::spawn_blocking(move || Catalog::scan(&dir, Some(&previous))).await??;
        *self.shared.catalog.write().unwrap() = Arc::new(catalog);
        Ok(scan)
    }

    /// Builds now the compressed blob of every document served compressed (a Cabinet
    /// compressed afresh costs milliseconds of CPU), so that answers cost this process little
    /// more than copying, as a WSUS serves the Cabinets it stored. For benchmarks, where this
    /// process shares the machine's cores with the node measured; kept until the documents
    /// change. Returns how many blobs it built.
    pub async fn precompress(&self) -> anyhow::Result<usize> {
        let catalog = self.shared.catalog();
        let compress_above = self.shared.options.compress_above;
        tokio::task::spawn_blocking(move || {
            let revisions: Vec<&CatalogRevision> = catalog.revisions.values().collect();
            let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
            let chunk = revisions.len().div_ceil(threads).max(1);
            std::thread::scope(|scope| {
                let workers: Vec<_> = revisions
                    .chunks(chunk)
                    .map(|part| {
                        let catalog = &catalog;
                        scope.spawn(move || -> anyhow::Result<usize> {
                            let mut built = 0;
                            for revision in part {
                                let document = std::fs::read(&revision.path)?;
                                let text = String::from_utf8_lossy(&document);
                                if text.encode_utf16().count() * 2 <= compress_above {
                                    continue;
                                }
                                let encoded: Arc<str> =
                                    Arc::from(BASE64.encode(blob_cabinet(&text, false)?));
                                catalog
                                    .cabinets
                                    .lock()
                                    .unwrap()
                                    .insert(revision.hash, encoded);
                                built += 1;
                            }
                            Ok(built)
                        })
                    })
                    .collect();
                workers
                    .into_iter()
                    .map(|w| w.join().expect("a precompressing thread panicked"))
                    .sum()
            })
        })
        .await?
    }

    /// The next `count` requests of `operation` answer `fault`.
    pub fn fail_next(&self, operation: Operation, count: usize, fault: Fault) {
        self.shared
            .state()
            .inject(Some(operation), count, Injection::Fault(fault));
    }

    /// The next `count` requests, of any operation, answer HTTP 503 with IIS's text.
    pub fn unavailable_next(&self, count: usize) {
        self.shared
            .state()
            .inject(None, count, Injection::Unavailable);
    }

    /// The next `count` requests, of any operation, get no answer: the connection is closed
    /// once the request head is read.
    pub fn drop_next(&self, count: usize) {
        self.shared
            .state()
            .inject(None, count, Injection::DropConnection);
    }

    /// The next `count` requests of `operation` get the `hostile` answer.
    ///
    /// # Panics
    /// If `hostile` is a GetUpdateData distortion and `operation` is another one.
    pub fn hostile_next(&self, operation: Operation, count: usize, hostile: Hostile) {
        assert!(
            operation == Operation::GetUpdateData || !hostile.only_for_update_data(),
            "{hostile:?} distorts GetUpdateData answers, not {operation}"
        );
        self.shared
            .state()
            .inject(Some(operation), count, Injection::Hostile(hostile));
    }

    /// Every GetUpdateData batch holding `revision` answers `InternalServerError`, as WSUS
    /// does for an id it cannot serve, until [`FakeWsus::clear_failing_revisions`].
    pub fn fail_update_data_containing(&self, revision: RevisionId) {
        self.shared.state().failing_revisions.insert(revision);
    }

    pub fn clear_failing_revisions(&self) {
        self.shared.state().failing_revisions.clear();
    }

    /// The next `count` requests of `operation` get `answer` as it was recorded, whatever
    /// they ask; the request body is not read.
    pub fn answer_next_with(&self, operation: Operation, count: usize, answer: RecordedAnswer) {
        self.shared
            .state()
            .inject(Some(operation), count, Injection::Recorded(answer));
    }

    /// From now on, whenever the server answers `fault` (injected with
    /// [`FakeWsus::fail_next`], or its own verdict: an unknown or failing revision, an expired
    /// cookie, an anchor it did not write), it sends `answer` instead of its own rendering,
    /// undistorted by any [`Hostile`] injection. Replaces an earlier recording for the same
    /// fault. Fails if `answer` is not that fault as the codec reads it.
    pub fn replay_fault(&self, fault: Fault, answer: RecordedAnswer) -> anyhow::Result<()> {
        let recorded = sitesync_wsus::parse_fault(&answer.body, &Limits::default())
            .context("the recorded answer is not a SOAP fault")?;
        ensure!(
            recorded.kind == fault.kind(),
            "the recorded answer is the fault {recorded}, not {fault:?}"
        );
        let mut state = self.shared.state();
        state.replayed_faults.retain(|(known, _)| *known != fault);
        state.replayed_faults.push((fault, answer));
        Ok(())
    }

    /// Requests received for `operation` so far, injected answers included.
    pub fn requests(&self, operation: Operation) -> u64 {
        self.shared
            .state()
            .requests
            .get(&operation)
            .copied()
            .unwrap_or(0)
    }

    /// Every revision whose document GetUpdateData sent, in order, once per time it was sent:
    /// a revision that appears twice was fetched twice.
    pub fn served(&self) -> Vec<RevisionId> {
        self.shared.state().served.clone()
    }

    /// Recorded answers sent so far ([`FakeWsus::answer_next_with`],
    /// [`FakeWsus::replay_fault`]).
    pub fn replayed(&self) -> u64 {
        self.shared.state().replayed
    }

    /// Zeroes the request and replay counters and forgets what was served.
    pub fn reset_counters(&self) {
        let mut state = self.shared.state();
        state.requests.clear();
        state.served.clear();
        state.replayed = 0;
    }

    /// Stops the server and waits until its listener and connections are closed.
    pub async fn shutdown(mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
            // A cancelled task reports `JoinError::Cancelled`; nothing else can come back.
            let _ = server.await;
        }
    }
}

impl Drop for FakeWsus {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The catalog: what the directory held at one scan.
// ---------------------------------------------------------------------------------------------

/// One scan of the catalog directory: every revision file, by revision (so the revisions of
/// one update are adjacent, lowest first).
#[derive(Debug)]
struct Catalog {
    generation: u64,
    revisions: BTreeMap<RevisionId, CatalogRevision>,
    /// Each compressed blob, base64, by its document's content: built once, as a WSUS serves
    /// the Cabinets it stored, so that serving costs this process little of the cores a
    /// benchmark shares with the node it measures.
    cabinets: Mutex<HashMap<ContentHash, Arc<str>>>,
}

/// What the server needs to know of one revision file to list and serve it.
#[derive(Debug, Clone)]
struct CatalogRevision {
    path: PathBuf,
    /// Tells a changed file from an unchanged one at the next scan.
    hash: ContentHash,
    /// The generation in which this revision appeared or its document last changed.
    changed_in: u64,
    /// A category, classification or detectoid: in the category list, not the update list.
    is_config: bool,
    /// The products and classifications the update belongs to (`IsCategory` prerequisites).
    categories: Vec<UpdateId>,
    /// Updates this one bundles; they are listed with it.
    bundled: Vec<UpdateId>,
    /// SHA-1 digests and names of its files, for `FileDigestList` and `fileUrls`.
    files: Vec<CatalogFile>,
}

#[derive(Debug, Clone)]
struct CatalogFile {
    name: String,
    sha1: Vec<u8>,
}

/// GetRevisionIdList's product and classification lists: `(id, Delta)`.
#[derive(Debug, Default)]
struct ListFilter {
    products: Vec<(UpdateId, bool)>,
    classifications: Vec<(UpdateId, bool)>,
}

impl ListFilter {
    /// Whether an update in `categories` is selected, and if so whether it is asked for
    /// whatever its age (a matching entry has `Delta` false).
    fn selects(&self, categories: &[UpdateId]) -> Option<bool> {
        if self.products.is_empty() && self.classifications.is_empty() {
            return Some(false);
        }
        let matching = |list: &[(UpdateId, bool)]| -> Vec<bool> {
            list.iter()
                .filter(|(id, _)| categories.contains(id))
                .map(|&(_, delta)| delta)
                .collect()
        };
        let products = matching(&self.products);
        let classifications = matching(&self.classifications);
        if products.is_empty() || classifications.is_empty() {
            return None;
        }
        Some(products.iter().chain(&classifications).any(|delta| !delta))
    }
}

impl Catalog {
    /// Scans `dir`; `previous` is the last scan, whose unchanged revisions keep their
    /// generation and are not parsed again.
    fn scan(dir: &Path, previous: Option<&Catalog>) -> anyhow::Result<(Catalog, CatalogScan)> {
        let generation = previous.map_or(1, |p| p.generation + 1);
        let limits = ParseLimits::default();
        let mut revisions = BTreeMap::new();
        let mut new_or_changed = 0;
        let entries = std::fs::read_dir(dir)
            .with_context(|| format!("reading the catalog directory {}", dir.display()))?;
        for entry in entries {
            let path = entry?.path();
            let Some(named) = path
                .file_name()
                .and_then(|name| name.to_str())
                .and_then(revision_of_file_name)
            else {
                continue;
            };
            let document = std::fs::read(&path)
                .with_context(|| format!("reading the update document {}", path.display()))?;
            let hash = ContentHash::of(&document);
            let known = previous
                .and_then(|p| p.revisions.get(&named))
                .filter(|known| known.hash == hash);
            let revision = match known {
                Some(known) => CatalogRevision {
                    path,
                    ..known.clone()
                },
                None => {
                    new_or_changed += 1;
                    let parsed = parse_update(&document, &limits)
                        .with_context(|| format!("parsing {}", path.display()))?;
                    if parsed.id != named {
                        bail!(
                            "{} holds the document of {}, not of the revision its name says",
                            path.display(),
                            parsed.id
                        );
                    }
                    CatalogRevision {
                        path,
                        hash,
                        changed_in: generation,
                        is_config: matches!(
                            parsed.update_type,
                            UpdateType::Category | UpdateType::Detectoid
                        ),
                        categories: parsed.categories().collect(),
                        bundled: parsed
                            .bundled
                            .iter()
                            .flat_map(|r| r.members().iter().map(|m| m.update_id))
                            .collect(),
                        files: parsed
                            .files
                            .iter()
                            .filter_map(|file| {
                                let sha1 = file
                                    .digests
                                    .iter()
                                    .find(|d| d.algorithm == DigestAlgorithm::Sha1)?;
                                Some(CatalogFile {
                                    name: file.name.clone(),
                                    sha1: sha1.value.clone(),
                                })
                            })
                            .collect(),
                    }
                }
            };
            revisions.insert(named, revision);
        }
        let removed = previous.map_or(0, |p| {
            p.revisions
                .keys()
                .filter(|id| !revisions.contains_key(id))
                .count()
        });
        let scan = CatalogScan {
            generation,
            revisions: revisions.len(),
            new_or_changed,
            removed,
        };
        Ok((
            Catalog {
                generation,
                revisions,
                // Blobs are by content: those of unchanged documents stay good.
                cabinets: Mutex::new(
                    previous
                        .map(|p| p.cabinets.lock().unwrap().clone())
                        .unwrap_or_default(),
                ),
            },
            scan,
        ))
    }

    /// The highest revision of each update, by update id.
    fn latest(&self) -> BTreeMap<UpdateId, (RevisionId, &CatalogRevision)> {
        // Revisions of one update are adjacent and ascending, so the last one wins.
        self.revisions
            .iter()
            .map(|(id, revision)| (id.update_id, (*id, revision)))
            .collect()
    }

    /// GetRevisionIdList with `GetConfig` true: categories, classifications and detectoids
    /// changed after generation `since` (all without one).
    fn category_list(&self, since: Option<u64>, older_revisions_too: bool) -> Vec<RevisionId> {
        let changed = |revision: &CatalogRevision| since.is_none_or(|g| revision.changed_in > g);
        let mut list = Vec::new();
        for (id, revision) in self.latest().into_values() {
            if !revision.is_config {
                continue;
            }
            if changed(revision) {
                list.push(id);
            }
            if older_revisions_too {
                let older = self
                    .revisions
                    .range(
                        RevisionId {
                            update_id: id.update_id,
                            revision: 0,
                        }..id,
                    )
                    .rev();
                list.extend(older.filter(|(_, r)| changed(r)).map(|(id, _)| *id));
            }
        }
        list
    }

    /// GetRevisionIdList with `GetConfig` false: the updates `filter` selects and the updates
    /// they bundle, each as its highest revision, if changed after generation `since` or
    /// asked for whatever its age.
    fn update_list(&self, since: Option<u64>, filter: &ListFilter) -> Vec<RevisionId> {
        let updates: BTreeMap<UpdateId, (RevisionId, &CatalogRevision)> = self
            .latest()
            .into_iter()
            .filter(|(_, (_, revision))| !revision.is_config)
            .collect();
        // Selected updates, with whether they are asked for whatever their age.
        let mut selected: BTreeMap<UpdateId, bool> = updates
            .iter()
            .filter_map(|(update, (_, revision))| {
                filter
                    .selects(&revision.categories)
                    .map(|full| (*update, full))
            })
            .collect();
        // Bundled updates belong to no product of their own (their category groups are not
        // marked `IsCategory`): they come with their bundle, as a downstream server needs
        // them to install it.
        let mut pending: Vec<(UpdateId, bool)> = selected.iter().map(|(u, f)| (*u, *f)).collect();
        while let Some((update, full)) = pending.pop() {
            for child in &updates[&update].1.bundled {
                if !updates.contains_key(child) {
                    continue;
                }
                match selected.get(child) {
                    Some(&child_full) if child_full || !full => {}
                    _ => {
                        selected.insert(*child, full);
                        pending.push((*child, full));
                    }
                }
            }
        }
        selected
            .into_iter()
            .filter_map(|(update, full)| {
                let (id, revision) = updates[&update];
                (full || since.is_none_or(|g| revision.changed_in > g)).then_some(id)
            })
            .collect()
    }

    /// A revision other than `id` (the next one in the catalog's order), for
    /// [`Hostile::DocumentOfAnotherRevision`].
    fn other_than(&self, id: RevisionId) -> Option<&CatalogRevision> {
        self.revisions
            .range(id..)
            .chain(self.revisions.range(..id))
            .find(|(other, _)| **other != id)
            .map(|(_, revision)| revision)
    }
}

/// The revision a catalog file name says it holds: `<update id>-r<revision>.xml`.
fn revision_of_file_name(name: &str) -> Option<RevisionId> {
    let stem = name.strip_suffix(".xml")?;
    let (update_id, revision) = stem.rsplit_once("-r")?;
    Some(RevisionId {
        update_id: UpdateId::from_str(update_id).ok()?,
        revision: revision.parse().ok()?,
    })
}

// ---------------------------------------------------------------------------------------------
// Shared state: the catalog, sessions, injections, counters.
// ---------------------------------------------------------------------------------------------

/// What the handle and every connection share.
#[derive(Debug)]
struct Shared {
    /// [`FakeWsus::url`]: written into faults' `faultactor`.
    url: String,
    /// The catalog directory, rescanned by [`FakeWsus::reload`].
    dir: PathBuf,
    options: FakeWsusOptions,
    /// GetAuthConfig's `LastChange`.
    started: Timestamp,
    /// The current scan; requests take a reference and answer from it alone.
    catalog: RwLock<Arc<Catalog>>,
    /// Held during a reload, so concurrent reloads make consecutive generations.
    reloading: tokio::sync::Mutex<()>,
    /// Never held across an `.await`.
    state: Mutex<State>,
}

impl Shared {
    fn catalog(&self) -> Arc<Catalog> {
        self.catalog.read().unwrap().clone()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }
}

/// Everything that changes per request.
#[derive(Debug, Default)]
struct State {
    /// What [`FakeWsus::requests`] reports.
    requests: HashMap<Operation, u64>,
    /// What [`FakeWsus::served`] reports.
    served: Vec<RevisionId>,
    /// Injections for any operation; taken before those of the operation.
    any_operation: VecDeque<Pending>,
    per_operation: HashMap<Operation, VecDeque<Pending>>,
    /// GetUpdateData batches holding one of these answer `InternalServerError`.
    failing_revisions: HashSet<RevisionId>,
    /// `CookieData` of the authorization cookies issued.
    authorization_cookies: HashSet<String>,
    /// `EncryptedData` of the session cookies issued, with when each expires.
    sessions: HashMap<String, SystemTime>,
    /// Faults answered with a recording instead of this server's rendering.
    replayed_faults: Vec<(Fault, RecordedAnswer)>,
    /// What [`FakeWsus::replayed`] reports.
    replayed: u64,
}

/// An injection and how many more requests it answers.
#[derive(Debug)]
struct Pending {
    injection: Injection,
    remaining: usize,
}

/// An answer other than the honest one, queued by the handle's injection methods.
#[derive(Debug, Clone)]
enum Injection {
    Fault(Fault),
    Unavailable,
    DropConnection,
    Hostile(Hostile),
    Recorded(RecordedAnswer),
}

impl State {
    fn inject(&mut self, operation: Option<Operation>, count: usize, injection: Injection) {
        if count == 0 {
            return;
        }
        let queue = match operation {
            Some(operation) => self.per_operation.entry(operation).or_default(),
            None => &mut self.any_operation,
        };
        queue.push_back(Pending {
            injection,
            remaining: count,
        });
    }

    /// Counts a request of `operation` and takes the injection that answers it, if any.
    fn admit(&mut self, operation: Operation) -> Option<Injection> {
        *self.requests.entry(operation).or_default() += 1;
        let take = |queue: &mut VecDeque<Pending>| {
            let front = queue.front_mut()?;
            front.remaining -= 1;
            let injection = front.injection.clone();
            if front.remaining == 0 {
                queue.pop_front();
            }
            Some(injection)
        };
        take(&mut self.any_operation)
            .or_else(|| self.per_operation.get_mut(&operation).and_then(take))
    }

    /// The recording that answers `fault`, if one was given, counted as sent.
    fn replay_of(&mut self, fault: &Fault) -> Option<Response<Body>> {
        let (_, answer) = self.replayed_faults.iter().find(|(f, _)| f == fault)?;
        let response = answer.response();
        self.replayed += 1;
        Some(response)
    }

    fn replay(&mut self, answer: &RecordedAnswer) -> Response<Body> {
        self.replayed += 1;
        answer.response()
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP: the accept loop, routing, and the shapes of answers.
// ---------------------------------------------------------------------------------------------

/// Largest request body read; a GetUpdateData of 100 ids is about 10 KB.
const MAX_REQUEST_BYTES: usize = 4 << 20;

type Body = UnsyncBoxBody<Bytes, Infallible>;

/// Returned by the request handler to make hyper close the connection without an answer.
#[derive(Debug)]
struct DropConnection;

impl fmt::Display for DropConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the connection is dropped on purpose (an injected failure)")
    }
}

impl std::error::Error for DropConnection {}

/// Accepts connections until aborted; aborting drops `connections`, which aborts each one.
/// With `tls`, each connection's handshake runs in its own task, so a slow or refusing
/// client holds up no other.
async fn serve(listener: TcpListener, tls: Option<TlsAcceptor>, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        let Ok((stream, _peer)) = listener.accept().await else {
            // Out of file descriptors and the like: wait instead of spinning.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        while connections.try_join_next().is_some() {}
        let shared = shared.clone();
        let tls = tls.clone();
        connections.spawn(async move {
            match tls {
                None => serve_connection(stream, shared).await,
                // A failed handshake (a client that does not trust the certificate) is the
                // client's to report; the connection just ends.
                Some(tls) => {
                    if let Ok(stream) = tls.accept(stream).await {
                        serve_connection(stream, shared).await;
                    }
                }
            }
        });
    }
}

/// HTTP/1.1 on one connection, plain or TLS, until either side closes it.
async fn serve_connection(
    stream: impl AsyncRead + AsyncWrite + Unpin + Send + 'static,
    shared: Arc<Shared>,
) {
    let service = hyper::service::service_fn(move |request| {
        let shared = shared.clone();
        async move { handle(&shared, request).await }
    });
    // A dropped connection (injected or by the client) ends here; nothing to report.
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

/// One request, from routing to the answer on the wire.
async fn handle(
    shared: &Arc<Shared>,
    request: Request<Incoming>,
) -> Result<Response<Body>, DropConnection> {
    let operation = match route(&request) {
        Ok(operation) => operation,
        Err(refusal) => return Ok(refusal.into_response()),
    };
    let injection = shared.state().admit(operation);
    let hostile = match injection {
        None => None,
        Some(Injection::Hostile(hostile)) => Some(hostile),
        Some(Injection::DropConnection) => return Err(DropConnection),
        Some(Injection::Unavailable) => return Ok(service_unavailable()),
        Some(Injection::Recorded(answer)) => return Ok(shared.state().replay(&answer)),
        Some(Injection::Fault(fault)) => {
            let replayed = shared.state().replay_of(&fault);
            return Ok(replayed.unwrap_or_else(|| {
                soap_answer(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    fault_body(shared, operation, &fault),
                )
            }));
        }
    };
    let body = match Limited::new(request.into_body(), MAX_REQUEST_BYTES)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return Ok(plain(StatusCode::PAYLOAD_TOO_LARGE, "Request too large")),
    };
    let (status, body) = match read_request(&body, operation) {
        Err(reason) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            unrecognized_fault(&format!("Server was unable to read request. {reason}")),
        ),
        Ok(element) => match answer(shared, operation, &element, hostile).await {
            Ok(result) => (StatusCode::OK, envelope(operation, &result)),
            Err(fault) => {
                let replayed = shared.state().replay_of(&fault);
                if let Some(response) = replayed {
                    return Ok(response);
                }
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    fault_body(shared, operation, &fault),
                )
            }
        },
    };
    Ok(match hostile {
        Some(Hostile::Oversized {
            bytes,
            declare_length,
        }) => oversized(status, body, bytes, declare_length),
        Some(Hostile::MalformedSoap) => {
            let mut cut = body.len() / 2;
            while !body.is_char_boundary(cut) {
                cut -= 1;
            }
            soap_answer(status, body[..cut].to_owned())
        }
        _ => soap_answer(status, body),
    })
}

/// A request no operation takes, answered before any counting or injection.
enum Refusal {
    NotFound,
    NotPost,
    /// The `SOAPAction` names no operation of the service posted to (ASMX's fault).
    UnknownAction(String),
}

impl Refusal {
    fn into_response(self) -> Response<Body> {
        match self {
            Refusal::NotFound => plain(StatusCode::NOT_FOUND, "Not Found"),
            Refusal::NotPost => plain(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed"),
            Refusal::UnknownAction(action) => soap_answer(
                StatusCode::INTERNAL_SERVER_ERROR,
                unrecognized_fault(&format!(
                    "Server did not recognize the value of HTTP Header SOAPAction: {action}."
                )),
            ),
        }
    }
}

/// The operation a request is for: its path gives the service (case-insensitively, as IIS),
/// its quoted `SOAPAction` the operation of that service.
fn route(request: &Request<Incoming>) -> Result<Operation, Refusal> {
    let path = request.uri().path();
    let service = if path.eq_ignore_ascii_case(SERVER_SYNC_PATH) {
        Service::ServerSync
    } else if path.eq_ignore_ascii_case(DSS_AUTH_PATH) {
        Service::DssAuth
    } else {
        return Err(Refusal::NotFound);
    };
    if request.method() != Method::POST {
        return Err(Refusal::NotPost);
    }
    let action = request
        .headers()
        .get("soapaction")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .trim()
        .trim_matches('"');
    Operation::ALL
        .into_iter()
        .find(|op| op.service() == service && op.soap_action() == action)
        .ok_or_else(|| Refusal::UnknownAction(action.to_owned()))
}

fn soap_answer(status: StatusCode, body: String) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(body)).boxed_unsync());
    *response.status_mut() = status;
    set_soap_headers(&mut response);
    response
}

fn set_soap_headers(response: &mut Response<Body>) {
    let cache = if response.status() == StatusCode::OK {
        "private, max-age=0"
    } else {
        "private"
    };
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(SOAP_CONTENT_TYPE));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static(cache));
}

fn plain(status: StatusCode, text: &'static str) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from_static(text.as_bytes())).boxed_unsync());
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// What IIS answers when the application pool is stopped or overloaded.
fn service_unavailable() -> Response<Body> {
    let mut response = Response::new(
        Full::new(Bytes::from_static(
            b"<!DOCTYPE HTML PUBLIC \"-//W3C//DTD HTML 4.01//EN\"\"http://www.w3.org/TR/html4/strict.dtd\">\r\n\
              <HTML><HEAD><TITLE>Service Unavailable</TITLE></HEAD>\r\n\
              <BODY><h2>Service Unavailable</h2>\r\n<hr><p>HTTP Error 503. The service is unavailable.</p>\r\n</BODY></HTML>\r\n",
        ))
        .boxed_unsync(),
    );
    *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=us-ascii"),
    );
    response
}

/// Spaces streamed as padding, 64 KiB at a time.
static PADDING: [u8; 64 << 10] = [b' '; 64 << 10];

/// `body` padded with whitespace before its closing `</soap:Envelope>` to at least `bytes`
/// bytes, streamed so the padding is never held in memory.
fn oversized(
    status: StatusCode,
    body: String,
    bytes: usize,
    declare_length: bool,
) -> Response<Body> {
    const CLOSE: &str = "</soap:Envelope>";
    let split = body.rfind(CLOSE).unwrap_or(body.len());
    let (head, tail) = body.split_at(split);
    let head = Bytes::from(head.to_owned());
    let tail = Bytes::from(tail.to_owned());
    let padding = bytes.saturating_sub(head.len() + tail.len());
    let total = head.len() + padding + tail.len();
    let chunks = padding.div_ceil(PADDING.len());
    let padding_chunks = (0..chunks).map(move |i| {
        let len = (padding - i * PADDING.len()).min(PADDING.len());
        Bytes::from_static(&PADDING[..len])
    });
    let frames = std::iter::once(head)
        .chain(padding_chunks)
        .chain(std::iter::once(tail))
        .map(|chunk| Ok::<_, Infallible>(Frame::data(chunk)));
    let mut response = Response::new(StreamBody::new(tokio_stream::iter(frames)).boxed_unsync());
    *response.status_mut() = status;
    set_soap_headers(&mut response);
    if declare_length {
        response
            .headers_mut()
            .insert(CONTENT_LENGTH, HeaderValue::from(total));
    }
    response
}

// ---------------------------------------------------------------------------------------------
// SOAP: reading requests, writing answers and faults.
// ---------------------------------------------------------------------------------------------

/// An element of a request, by local name: requests are small, so a tree is simplest.
/// Namespaces are not checked; the .NET server is strict about them, this one is not.
#[derive(Debug, Default)]
struct XmlElement {
    name: String,
    text: String,
    children: Vec<XmlElement>,
}

impl XmlElement {
    fn child(&self, name: &str) -> Option<&XmlElement> {
        self.children.iter().find(|c| c.name == name)
    }

    fn children_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a XmlElement> {
        self.children.iter().filter(move |c| c.name == name)
    }

    fn child_text(&self, name: &str) -> Option<&str> {
        self.child(name).map(|c| c.text.trim())
    }
}

/// Most elements and deepest nesting of a request: far above any real one.
const MAX_REQUEST_ELEMENTS: usize = 100_000;
const MAX_REQUEST_DEPTH: usize = 32;

/// The operation element of a request body (`Envelope/Body/<operation>`).
fn read_request(body: &[u8], operation: Operation) -> Result<XmlElement, String> {
    let envelope = parse_tree(body)?;
    if envelope.name != "Envelope" {
        return Err("The request is not a SOAP envelope.".to_owned());
    }
    let element = envelope
        .children
        .into_iter()
        .find(|child| child.name == "Body")
        .and_then(|body| body.children.into_iter().next())
        .ok_or("The SOAP body holds no operation.")?;
    if element.name != operation.name() {
        return Err(format!(
            "The body holds `{}` where `{}` was expected.",
            element.name,
            operation.name()
        ));
    }
    Ok(element)
}

fn parse_tree(body: &[u8]) -> Result<XmlElement, String> {
    let mut reader = quick_xml::Reader::from_reader(body);
    let mut open: Vec<XmlElement> = Vec::new();
    let mut root = None;
    let mut elements = 0;
    loop {
        let event = reader.read_event().map_err(|e| e.to_string())?;
        match &event {
            Event::Start(start) | Event::Empty(start) => {
                elements += 1;
                if elements > MAX_REQUEST_ELEMENTS || open.len() >= MAX_REQUEST_DEPTH {
                    return Err("The request is too large or too deep.".to_owned());
                }
                let name = std::str::from_utf8(start.local_name().as_ref())
                    .map_err(|e| e.to_string())?
                    .to_owned();
                let element = XmlElement {
                    name,
                    ..XmlElement::default()
                };
                if matches!(event, Event::Start(_)) {
                    open.push(element);
                } else {
                    attach(&mut open, &mut root, element)?;
                }
            }
            Event::End(_) => {
                let element = open.pop().ok_or("An end tag closes nothing.")?;
                attach(&mut open, &mut root, element)?;
            }
            Event::Text(text) => {
                let text = text.xml10_content().map_err(|e| e.to_string())?;
                if let Some(element) = open.last_mut() {
                    element.text.push_str(&text);
                }
            }
            Event::CData(data) => {
                let text = data.xml10_content().map_err(|e| e.to_string())?;
                if let Some(element) = open.last_mut() {
                    element.text.push_str(&text);
                }
            }
            Event::GeneralRef(reference) => {
                let resolved = match reference.resolve_char_ref().map_err(|e| e.to_string())? {
                    Some(ch) => ch.to_string(),
                    None => {
                        let name = reference.decode().map_err(|e| e.to_string())?;
                        quick_xml::escape::resolve_predefined_entity(&name)
                            .ok_or_else(|| format!("Unknown entity `{name}`."))?
                            .to_owned()
                    }
                };
                if let Some(element) = open.last_mut() {
                    element.text.push_str(&resolved);
                }
            }
            Event::DocType(_) => return Err("A DTD is prohibited.".to_owned()),
            Event::Eof => break,
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
        }
    }
    if !open.is_empty() {
        return Err("The request ends inside an element.".to_owned());
    }
    root.ok_or_else(|| "The request has no element.".to_owned())
}

fn attach(
    open: &mut [XmlElement],
    root: &mut Option<XmlElement>,
    element: XmlElement,
) -> Result<(), String> {
    match open.last_mut() {
        Some(parent) => parent.children.push(element),
        None if root.is_none() => *root = Some(element),
        None => return Err("The request has two root elements.".to_owned()),
    }
    Ok(())
}

/// What an operation's handler gives: the content of `<Operation>Result`, or a fault.
type Outcome = Result<String, Fault>;

async fn answer(
    shared: &Arc<Shared>,
    operation: Operation,
    request: &XmlElement,
    hostile: Option<Hostile>,
) -> Outcome {
    match operation {
        Operation::GetAuthConfig => Ok(get_auth_config(shared)),
        Operation::GetAuthorizationCookie => get_authorization_cookie(shared, request),
        Operation::GetCookie => get_cookie(shared, request),
        Operation::GetConfigData => get_config_data(shared, request),
        Operation::GetRevisionIdList => get_revision_id_list(shared, request),
        Operation::GetUpdateData => get_update_data(shared, request, hostile).await,
    }
}

const XML_DECLARATION: &str = "<?xml version=\"1.0\" encoding=\"utf-8\"?>";
const ENVELOPE_OPEN: &str = "<soap:Envelope xmlns:soap=\"http://schemas.xmlsoap.org/soap/envelope/\" \
     xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" \
     xmlns:xsd=\"http://www.w3.org/2001/XMLSchema\"><soap:Body>";
const ENVELOPE_CLOSE: &str = "</soap:Body></soap:Envelope>";

/// A successful answer: `<Operation>Response/<Operation>Result` around `result`.
fn envelope(operation: Operation, result: &str) -> String {
    let name = operation.name();
    let namespace = operation.service().namespace();
    format!(
        "{XML_DECLARATION}{ENVELOPE_OPEN}<{name}Response xmlns=\"{namespace}\">\
         <{name}Result>{result}</{name}Result></{name}Response>{ENVELOPE_CLOSE}"
    )
}

/// A fault in the recorded shape (000017–000019).
fn fault_body(shared: &Shared, operation: Operation, fault: &Fault) -> String {
    let actor = match operation.service() {
        Service::ServerSync => SERVER_SYNC_PATH,
        Service::DssAuth => DSS_AUTH_PATH,
    };
    format!(
        "{XML_DECLARATION}{ENVELOPE_OPEN}<soap:Fault><faultcode>{}</faultcode>\
         <faultstring>Fault occurred</faultstring><faultactor>{}{actor}</faultactor><detail>\
         <ErrorCode>{}</ErrorCode><Message>{}</Message><ID>{}</ID><Method>\"{}\"</Method>\
         </detail></soap:Fault>{ENVELOPE_CLOSE}",
        fault.fault_code(),
        shared.url,
        fault.error_code(),
        escape(fault.message()),
        uuid::Uuid::new_v4(),
        operation.soap_action(),
    )
}

/// A fault without `ErrorCode`, as ASMX writes for a request it cannot dispatch or read.
fn unrecognized_fault(text: &str) -> String {
    format!(
        "{XML_DECLARATION}{ENVELOPE_OPEN}<soap:Fault><faultcode>soap:Client</faultcode>\
         <faultstring>{}</faultstring><detail /></soap:Fault>{ENVELOPE_CLOSE}",
        escape(text)
    )
}

/// Escapes text content as the recorded server does: `&`, `<` and `>` (quotes stay), and
/// carriage returns, which a parser would otherwise turn into line feeds.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 8);
    for ch in text.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\r' => out.push_str("&#xD;"),
            _ => out.push(ch),
        }
    }
    out
}

fn unix_millis(at: SystemTime) -> i64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// An opaque token for a cookie: 32 random bytes in base64.
fn random_token() -> String {
    let mut bytes = [0u8; 32];
    bytes[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    bytes[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    BASE64.encode(bytes)
}

/// Parses an `xs:boolean`.
fn boolean(text: &str) -> Option<bool> {
    match text.trim() {
        "true" | "1" => Some(true),
        "false" | "0" => Some(false),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// The operations.
// ---------------------------------------------------------------------------------------------

/// The plug-in id of the DSS authorization service.
const DSS_TARGETING: &str = "DssTargeting";

fn get_auth_config(shared: &Shared) -> String {
    format!(
        "<LastChange>{}</LastChange><AuthInfo><AuthPlugInInfo><PlugInID>{DSS_TARGETING}</PlugInID>\
         <ServiceUrl>{}</ServiceUrl><Parameter /></AuthPlugInInfo></AuthInfo>",
        shared.started,
        DSS_AUTH_PATH.trim_start_matches('/'),
    )
}

fn get_authorization_cookie(shared: &Shared, request: &XmlElement) -> Outcome {
    let guid = request.child_text("accountGuid").unwrap_or_default();
    if uuid::Uuid::parse_str(guid).is_err() {
        return Err(Fault::InvalidParameters("accountGuid".to_owned()));
    }
    if request
        .child_text("accountName")
        .is_none_or(|name| name.is_empty())
    {
        return Err(Fault::InvalidParameters("accountName".to_owned()));
    }
    let cookie_data = random_token();
    shared
        .state()
        .authorization_cookies
        .insert(cookie_data.clone());
    Ok(format!(
        "<PlugInId>{DSS_TARGETING}</PlugInId><CookieData>{cookie_data}</CookieData>"
    ))
}

fn get_cookie(shared: &Shared, request: &XmlElement) -> Outcome {
    let auth_cookies: Vec<&XmlElement> = request
        .child("authCookies")
        .map(|list| list.children_named("AuthorizationCookie").collect())
        .unwrap_or_default();
    let [auth_cookie] = auth_cookies.as_slice() else {
        return Err(Fault::InvalidAuthorizationCookie);
    };
    let plug_in = auth_cookie.child_text("PlugInId").unwrap_or_default();
    let data = auth_cookie.child_text("CookieData").unwrap_or_default();
    if !plug_in.eq_ignore_ascii_case(DSS_TARGETING)
        || !shared.state().authorization_cookies.contains(data)
    {
        return Err(Fault::InvalidAuthorizationCookie);
    }
    let version = request.child_text("protocolVersion").unwrap_or_default();
    let Some((major, minor)) = version.split_once('.') else {
        return Err(Fault::InvalidParameters("protocolVersion".to_owned()));
    };
    if major.parse::<u32>().is_err() || minor.parse::<u32>().is_err() {
        return Err(Fault::InvalidParameters("protocolVersion".to_owned()));
    }
    if major != "1" {
        return Err(Fault::IncompatibleProtocolVersion);
    }
    let expires = SystemTime::now() + shared.options.cookie_lifetime;
    let encrypted_data = random_token();
    shared
        .state()
        .sessions
        .insert(encrypted_data.clone(), expires);
    Ok(format!(
        "<Expiration>{}</Expiration><EncryptedData>{encrypted_data}</EncryptedData>",
        Timestamp::from_unix_millis(unix_millis(expires))
    ))
}

/// Every operation after GetCookie needs an unexpired session cookie of this server.
fn check_cookie(shared: &Shared, request: &XmlElement) -> Result<(), Fault> {
    let data = request
        .child("cookie")
        .and_then(|cookie| cookie.child_text("EncryptedData"))
        .ok_or(Fault::InvalidCookie)?;
    match shared.state().sessions.get(data) {
        Some(expires) if SystemTime::now() < *expires => Ok(()),
        _ => Err(Fault::InvalidCookie),
    }
}

/// The configuration anchor: the fake's configuration never changes.
const CONFIG_ANCHOR: &str = "1,sitesync fake WSUS configuration";

/// `(LanguageID, ShortLanguage, LongLanguage, Enabled)`: a few of the recorded server's.
const LANGUAGES: [(u32, &str, &str, bool); 5] = [
    (0, "all", "all", false),
    (1031, "de", "German", false),
    (1033, "en", "English", true),
    (1036, "fr", "French", false),
    (1041, "ja", "Japanese", false),
];

fn get_config_data(shared: &Shared, request: &XmlElement) -> Outcome {
    check_cookie(shared, request)?;
    // With an anchor, WSUS leaves out the languages, which have not changed (000004).
    let languages = if request
        .child_text("configAnchor")
        .is_some_and(|a| !a.is_empty())
    {
        "<LanguageUpdateList />".to_owned()
    } else {
        let mut list = String::from("<LanguageUpdateList>");
        for (id, short, long, enabled) in LANGUAGES {
            let _ = write!(
                list,
                "<ServerSyncLanguageData><LanguageID>{id}</LanguageID>\
                 <ShortLanguage>{short}</ShortLanguage><LongLanguage>{long}</LongLanguage>\
                 <Enabled>{enabled}</Enabled></ServerSyncLanguageData>"
            );
        }
        list.push_str("</LanguageUpdateList>");
        list
    };
    let max = shared.options.max_updates_per_request;
    Ok(format!(
        "<CatalogOnlySync>false</CatalogOnlySync><LazySync>true</LazySync>\
         <ServerHostsPsfFiles>false</ServerHostsPsfFiles>\
         <MaxNumberOfComputerIdsInRequest>0</MaxNumberOfComputerIdsInRequest>\
         <MaxNumberOfDriverSetsPerRequest>0</MaxNumberOfDriverSetsPerRequest>\
         <MaxNumberOfPnpHardwareIdsInRequest>0</MaxNumberOfPnpHardwareIdsInRequest>\
         <MaxNumberOfUpdatesPerRequest>{max}</MaxNumberOfUpdatesPerRequest>\
         <NewConfigAnchor>{CONFIG_ANCHOR}</NewConfigAnchor><ProtocolVersion>1.20</ProtocolVersion>\
         {languages}\
         <MaxUpdatesPerRequestInGetUpdateDecryptionData>{max}</MaxUpdatesPerRequestInGetUpdateDecryptionData>"
    ))
}

/// What follows the generation in a revision list's anchor. The whole anchor is opaque to a
/// client; the fake reads back only the generation.
const ANCHOR_SUFFIX: &str = "sitesync fake WSUS";

/// The generation an anchor names; an anchor this server cannot have written is refused as
/// WSUS refuses one (000018).
fn anchor_generation(anchor: &str, current: u64) -> Result<Option<u64>, Fault> {
    if anchor.is_empty() {
        return Ok(None);
    }
    anchor
        .split_once(',')
        .filter(|(_, suffix)| *suffix == ANCHOR_SUFFIX)
        .and_then(|(generation, _)| generation.parse::<u64>().ok())
        .filter(|generation| (1..=current).contains(generation))
        .map(Some)
        .ok_or_else(|| Fault::InvalidParameters("filter".to_owned()))
}

fn get_revision_id_list(shared: &Shared, request: &XmlElement) -> Outcome {
    check_cookie(shared, request)?;
    let refused = || Fault::InvalidParameters("filter".to_owned());
    let filter = request.child("filter").ok_or_else(refused)?;
    let get_config = filter
        .child_text("GetConfig")
        .and_then(boolean)
        .ok_or_else(refused)?;
    let catalog = shared.catalog();
    let since = anchor_generation(
        filter.child_text("Anchor").unwrap_or_default(),
        catalog.generation,
    )?;
    let revisions = if get_config {
        catalog.category_list(since, shared.options.list_older_category_revisions)
    } else {
        let ids_and_deltas = |list: &str| -> Result<Vec<(UpdateId, bool)>, Fault> {
            filter
                .child(list)
                .map(|list| list.children_named("IdAndDelta").collect::<Vec<_>>())
                .unwrap_or_default()
                .into_iter()
                .map(|entry| {
                    let id = entry
                        .child_text("Id")
                        .and_then(|id| UpdateId::from_str(id).ok());
                    let delta = entry.child_text("Delta").and_then(boolean);
                    id.zip(delta).ok_or_else(refused)
                })
                .collect()
        };
        let list_filter = ListFilter {
            products: ids_and_deltas("Categories")?,
            classifications: ids_and_deltas("Classifications")?,
        };
        catalog.update_list(since, &list_filter)
    };
    let mut result = format!("<Anchor>{},{ANCHOR_SUFFIX}</Anchor>", catalog.generation);
    if revisions.is_empty() {
        result.push_str("<NewRevisions />");
    } else {
        result.push_str("<NewRevisions>");
        for id in revisions {
            write_identity(&mut result, "UpdateIdentity", id);
        }
        result.push_str("</NewRevisions>");
    }
    Ok(result)
}

fn write_identity(out: &mut String, element: &str, id: RevisionId) {
    let _ = write!(
        out,
        "<{element}><UpdateID>{}</UpdateID><RevisionNumber>{}</RevisionNumber></{element}>",
        id.update_id, id.revision
    );
}

async fn get_update_data(
    shared: &Arc<Shared>,
    request: &XmlElement,
    hostile: Option<Hostile>,
) -> Outcome {
    check_cookie(shared, request)?;
    let refused = || Fault::InvalidParameters("updateIds".to_owned());
    let list = request.child("updateIds").ok_or_else(refused)?;
    let asked = list
        .children_named("UpdateIdentity")
        .map(|identity| {
            let update_id = identity
                .child_text("UpdateID")
                .and_then(|id| UpdateId::from_str(id).ok());
            let revision = identity
                .child_text("RevisionNumber")
                .and_then(|n| n.parse().ok());
            update_id
                .zip(revision)
                .map(|(update_id, revision)| RevisionId {
                    update_id,
                    revision,
                })
                .ok_or_else(refused)
        })
        .collect::<Result<Vec<_>, _>>()?;
    if asked.len() > shared.options.max_updates_per_request as usize {
        return Err(refused());
    }
    let catalog = shared.catalog();
    {
        let state = shared.state();
        let unknown = asked.iter().any(|id| !catalog.revisions.contains_key(id));
        if unknown || asked.iter().any(|id| state.failing_revisions.contains(id)) {
            return Err(Fault::InternalServerError);
        }
    }
    let compress_above = shared.options.compress_above;
    // Reading and compressing documents is blocking work.
    let (result, served) = tokio::task::spawn_blocking(move || {
        update_data_result(&catalog, &asked, compress_above, hostile)
    })
    .await
    .map_err(|_| Fault::InternalServerError)??;
    shared.state().served.extend(served);
    Ok(result)
}

/// GetUpdateData's result for `asked` (all in the catalog), and the revisions it serves.
fn update_data_result(
    catalog: &Catalog,
    asked: &[RevisionId],
    compress_above: usize,
    hostile: Option<Hostile>,
) -> Result<(String, Vec<RevisionId>), Fault> {
    let mut serve = asked.to_vec();
    if hostile == Some(Hostile::UnaskedRevision)
        && let Some(extra) = catalog.revisions.keys().find(|id| !asked.contains(id))
    {
        serve.push(*extra);
    }
    let mut updates = String::new();
    let mut file_urls = String::new();
    let mut listed_digests = HashSet::new();
    for &id in &serve {
        let revision = catalog
            .revisions
            .get(&id)
            .ok_or(Fault::InternalServerError)?;
        let source = match hostile {
            Some(Hostile::DocumentOfAnotherRevision) => catalog.other_than(id).unwrap_or(revision),
            _ => revision,
        };
        let huge = hostile == Some(Hostile::HugeCabinet);
        // A Cabinet built before is served as stored, without reading the document again.
        let stored = (!huge)
            .then(|| catalog.cabinets.lock().unwrap().get(&source.hash).cloned())
            .flatten();
        let document = match stored {
            Some(_) => Vec::new(),
            // A file removed since the last scan is what WSUS would call an internal error.
            None => std::fs::read(&source.path).map_err(|_| Fault::InternalServerError)?,
        };
        let text = String::from_utf8_lossy(&document);
        let digests = if revision.files.is_empty() {
            String::new()
        } else {
            let mut list = String::from("<FileDigestList>");
            for file in &revision.files {
                let _ = write!(
                    list,
                    "<base64Binary>{}</base64Binary>",
                    BASE64.encode(&file.sha1)
                );
            }
            list.push_str("</FileDigestList>");
            list
        };
        updates.push_str("<ServerSyncUpdateData>");
        write_identity(&mut updates, "Id", id);
        // Schema order: Id, XmlUpdateBlob, FileDigestList, XmlUpdateBlobCompressed.
        if let Some(encoded) = stored {
            let _ = write!(
                updates,
                "{digests}<XmlUpdateBlobCompressed>{encoded}</XmlUpdateBlobCompressed>"
            );
        } else if text.encode_utf16().count() * 2 <= compress_above && !huge {
            let _ = write!(
                updates,
                "<XmlUpdateBlob>{}</XmlUpdateBlob>{digests}",
                escape(&text)
            );
        } else {
            let cabinet = blob_cabinet(&text, huge).map_err(|_| Fault::InternalServerError)?;
            let encoded: Arc<str> = Arc::from(BASE64.encode(cabinet));
            if !huge {
                catalog
                    .cabinets
                    .lock()
                    .unwrap()
                    .insert(source.hash, encoded.clone());
            }
            let _ = write!(
                updates,
                "{digests}<XmlUpdateBlobCompressed>{encoded}</XmlUpdateBlobCompressed>"
            );
        }
        updates.push_str("</ServerSyncUpdateData>");
        for file in &revision.files {
            if listed_digests.insert(file.sha1.clone()) {
                let _ = write!(
                    file_urls,
                    "<ServerSyncUrlData><FileDigest>{}</FileDigest><MUUrl>{}</MUUrl><UssUrl /></ServerSyncUrlData>",
                    BASE64.encode(&file.sha1),
                    escape(&microsoft_update_url(file)),
                );
            }
        }
    }
    let wrap = |name: &str, content: &str| {
        if content.is_empty() {
            format!("<{name} />")
        } else {
            format!("<{name}>{content}</{name}>")
        }
    };
    Ok((
        format!(
            "{}{}",
            wrap("updates", &updates),
            wrap("fileUrls", &file_urls)
        ),
        serve,
    ))
}

/// Where Microsoft Update would offer a file, in the recorded form
/// (`…/msdownload/update/software/<path>/<name>_<sha1 hex>.<extension>`).
fn microsoft_update_url(file: &CatalogFile) -> String {
    let hex: String = file.sha1.iter().map(|b| format!("{b:02x}")).collect();
    let (stem, extension) = file.name.rsplit_once('.').unwrap_or((&file.name, "bin"));
    format!(
        "http://download.windowsupdate.com/c/msdownload/update/software/secu/{}_{hex}.{}",
        stem.to_ascii_lowercase(),
        extension.to_ascii_lowercase()
    )
}

/// The Cabinet of a compressed blob: one MSZIP folder, one member `blob` holding `document`
/// in UTF-16LE without byte-order mark. With `huge`, the member's declared size is patched to
/// 4 GiB − 1.
fn blob_cabinet(document: &str, huge: bool) -> std::io::Result<Vec<u8>> {
    let utf16: Vec<u8> = document.encode_utf16().flat_map(u16::to_le_bytes).collect();
    let mut builder = cab::CabinetBuilder::new();
    builder
        .add_folder(cab::CompressionType::MsZip)
        .add_file(BLOB_MEMBER_NAME)
        // A fixed date keeps the bytes the same from run to run.
        .set_datetime(time::macros::datetime!(2024-01-01 00:00));
    let mut writer = builder.build(Cursor::new(Vec::new()))?;
    while let Some(mut member) = writer.next_file()? {
        member.write_all(&utf16)?;
    }
    let mut cabinet = writer.finish()?.into_inner();
    if huge {
        // CFHEADER's coffFiles (offset 16) locates CFFILE, whose first field is cbFile.
        let files_at = u32::from_le_bytes(cabinet[16..20].try_into().unwrap()) as usize;
        cabinet[files_at..files_at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    }
    Ok(cabinet)
}
