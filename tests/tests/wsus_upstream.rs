//! The fake upstream WSUS server (`sitesync_tests::wsus_upstream`) driven over real HTTP by a
//! minimal client made of `sitesync-wsus`'s request builders and answer parsers: the
//! handshake, revision lists with and without anchors across a catalog reload, update data
//! that decodes to exactly the documents on disk, and every injected failure answered as the
//! codec expects.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use quick_xml::events::Event;
use sitesync_metadata::generate::{CatalogChanges, CatalogSpec, GeneratedDocument, write_catalog};
use sitesync_metadata::{
    CategoryType, ParseLimits, RevisionId, UpdateId, UpdateRevision, UpdateType, parse_update,
};
use sitesync_tests::wsus_upstream::{FakeWsus, FakeWsusOptions, Fault, Hostile};
use sitesync_wsus::{
    Anchor, AuthorizationCookie, BlobError, CONTENT_TYPE, ConfigData, Cookie, FaultKind,
    IdAndDelta, Limits, Operation, ProtocolVersion, ResponseError, RevisionFilter, RevisionIdList,
    ServerRoot, SoapRequest, UpdateBlob, UpdateDataBatch, get_auth_config,
    get_authorization_cookie, get_config_data, get_cookie, get_revision_id_list, get_update_data,
    parse_auth_config, parse_authorization_cookie, parse_config_data, parse_cookie, parse_fault,
    parse_revision_id_list, parse_update_data,
};
use tempfile::TempDir;
use uuid::Uuid;

// ---------------------------------------------------------------------------------------------
// A minimal downstream client: post a request, hand the body to the operation's parser.
// ---------------------------------------------------------------------------------------------

/// One HTTP answer, read whole (up to the limits' answer size).
struct Answer {
    status: u16,
    content_length: Option<u64>,
    body: Bytes,
}

struct Client {
    http: reqwest::Client,
    root: ServerRoot,
    limits: Limits,
}

impl Client {
    fn new(server: &FakeWsus) -> Self {
        // reqwest builds without a crypto provider of its own (the node hands it ring's).
        let _ = rustls::crypto::ring::default_provider().install_default();
        Self {
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
            root: ServerRoot::parse(&server.url()).unwrap(),
            limits: Limits::default(),
        }
    }

    /// Posts `request` as the recordings do; an HTTP error (a dropped connection) is `Err`.
    async fn try_post(&self, url: &str, request: &SoapRequest) -> reqwest::Result<Answer> {
        let response = self
            .http
            .post(url)
            .header("Content-Type", CONTENT_TYPE)
            .header("SOAPAction", request.soap_action_header())
            .body(request.body.clone())
            .send()
            .await?;
        let status = response.status().as_u16();
        let content_length = response.content_length();
        let body = read_capped(response, self.limits.max_response_bytes).await?;
        Ok(Answer {
            status,
            content_length,
            body,
        })
    }

    async fn post(&self, url: &str, request: &SoapRequest) -> Answer {
        self.try_post(url, request).await.expect("an HTTP answer")
    }

    /// An authorization cookie from the auth service at `auth_url`, then a session cookie.
    async fn cookie(&self, auth_url: &str) -> (AuthorizationCookie, Cookie) {
        let request = get_authorization_cookie("downstream.test.invalid", Uuid::new_v4());
        let answer = self.post(auth_url, &request).await;
        let auth = parse_authorization_cookie(&answer.body, &self.limits).unwrap();
        let request = get_cookie(&auth, None, &ProtocolVersion::default());
        let answer = self.server_sync(&request).await;
        let cookie = parse_cookie(&answer.body, &self.limits).unwrap();
        (auth, cookie)
    }

    async fn server_sync(&self, request: &SoapRequest) -> Answer {
        self.post(&self.root.server_sync_url(), request).await
    }
}

/// Reads a body, stopping at `cap` bytes (then the body is cut there): an answer past the
/// limit must never be buffered whole.
async fn read_capped(mut response: reqwest::Response, cap: usize) -> reqwest::Result<Bytes> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        let room = cap + 1 - body.len();
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() > cap {
            break;
        }
    }
    Ok(Bytes::from(body))
}

/// A client that has done the whole handshake.
struct Session {
    client: Client,
    auth: AuthorizationCookie,
    cookie: Cookie,
    config: ConfigData,
}

impl Session {
    async fn start(server: &FakeWsus) -> Session {
        let client = Client::new(server);
        let auth_config = parse_auth_config(
            &client.server_sync(&get_auth_config()).await.body,
            &client.limits,
        )
        .unwrap();
        let plug_in = auth_config.dss_targeting().expect("a DssTargeting plug-in");
        let auth_url = client
            .root
            .resolve_service_url(&plug_in.service_url)
            .unwrap();
        let (auth, cookie) = client.cookie(&auth_url).await;
        let config = parse_config_data(
            &client
                .server_sync(&get_config_data(&cookie, None))
                .await
                .body,
            &client.limits,
        )
        .unwrap();
        Session {
            client,
            auth,
            cookie,
            config,
        }
    }

    async fn list(&self, filter: &RevisionFilter) -> RevisionIdList {
        let answer = self
            .client
            .server_sync(&get_revision_id_list(&self.cookie, filter))
            .await;
        parse_revision_id_list(&answer.body, &self.client.limits).unwrap()
    }

    async fn update_data(&self, revisions: &[RevisionId]) -> Answer {
        self.client
            .server_sync(&get_update_data(&self.cookie, revisions))
            .await
    }

    async fn fetch(&self, revisions: &[RevisionId]) -> UpdateDataBatch {
        let answer = self.update_data(revisions).await;
        assert_eq!(answer.status, 200, "GetUpdateData of {revisions:?}");
        parse_update_data(&answer.body, &self.client.limits).unwrap()
    }
}

/// The fault an HTTP 500 answer carries.
fn fault_of(answer: &Answer) -> FaultKind {
    assert_eq!(answer.status, 500, "a fault comes with HTTP 500");
    parse_fault(&answer.body, &Limits::default()).unwrap().kind
}

// ---------------------------------------------------------------------------------------------
// The catalog as the test sees it on disk.
// ---------------------------------------------------------------------------------------------

/// A generated catalog in a temporary directory, and its parsed documents by revision.
struct DiskCatalog {
    dir: TempDir,
    spec: CatalogSpec,
}

impl DiskCatalog {
    fn generate(documents: usize, seed: u64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let spec = CatalogSpec::new(documents, seed);
        write_catalog(dir.path(), &spec, |_| {}).unwrap();
        Self { dir, spec }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn document(&self, id: RevisionId) -> Vec<u8> {
        std::fs::read(self.path().join(GeneratedDocument::file_name_for(id))).unwrap()
    }

    /// Every revision on disk, parsed.
    fn revisions(&self) -> BTreeMap<RevisionId, UpdateRevision> {
        std::fs::read_dir(self.path())
            .unwrap()
            .map(|entry| {
                let document = std::fs::read(entry.unwrap().path()).unwrap();
                let revision = parse_update(&document, &ParseLimits::default()).unwrap();
                (revision.id, revision)
            })
            .collect()
    }

    /// The highest revision of each update on disk.
    fn latest(&self) -> BTreeMap<UpdateId, UpdateRevision> {
        self.revisions()
            .into_values()
            .map(|revision| (revision.id.update_id, revision))
            .collect()
    }
}

fn is_config(revision: &UpdateRevision) -> bool {
    matches!(
        revision.update_type,
        UpdateType::Category | UpdateType::Detectoid
    )
}

fn sorted(revisions: &[RevisionId]) -> Vec<RevisionId> {
    let mut sorted = revisions.to_vec();
    sorted.sort();
    sorted
}

/// What the update list for `product` ∩ `classification` must hold: the updates in both, and
/// the updates they bundle (recursively).
fn expected_update_list(
    latest: &BTreeMap<UpdateId, UpdateRevision>,
    product: UpdateId,
    classification: UpdateId,
) -> BTreeSet<RevisionId> {
    let mut selected: BTreeSet<UpdateId> = latest
        .values()
        .filter(|r| !is_config(r))
        .filter(|r| {
            let categories: Vec<_> = r.categories().collect();
            categories.contains(&product) && categories.contains(&classification)
        })
        .map(|r| r.id.update_id)
        .collect();
    let mut pending: Vec<UpdateId> = selected.iter().copied().collect();
    while let Some(update) = pending.pop() {
        for member in latest[&update].bundled.iter().flat_map(|b| b.members()) {
            if latest.contains_key(&member.update_id) && selected.insert(member.update_id) {
                pending.push(member.update_id);
            }
        }
    }
    selected.iter().map(|u| latest[u].id).collect()
}

/// The product and classification pair with the most updates in the catalog.
fn busiest_pair(latest: &BTreeMap<UpdateId, UpdateRevision>) -> (UpdateId, UpdateId) {
    let category_type = |id: &UpdateId| latest.get(id).and_then(|r| r.category_type);
    let mut counts: BTreeMap<(UpdateId, UpdateId), usize> = BTreeMap::new();
    for revision in latest.values().filter(|r| !is_config(r)) {
        let categories: Vec<_> = revision.categories().collect();
        for product in &categories {
            for classification in &categories {
                if category_type(product) == Some(CategoryType::Product)
                    && category_type(classification) == Some(CategoryType::UpdateClassification)
                {
                    *counts.entry((*product, *classification)).or_default() += 1;
                }
            }
        }
    }
    counts
        .into_iter()
        .max_by_key(|(_, count)| *count)
        .map(|(pair, _)| pair)
        .expect("the catalog has classified updates")
}

fn delta(id: UpdateId, delta: bool) -> IdAndDelta {
    IdAndDelta { id, delta }
}

// ---------------------------------------------------------------------------------------------
// The tests.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn the_handshake_follows_the_recorded_sequence() {
    let catalog = DiskCatalog::generate(60, 1);
    let server = FakeWsus::start(catalog.path(), FakeWsusOptions::default())
        .await
        .unwrap();
    let before = SystemTime::now();
    let session = Session::start(&server).await;
    let limits = &session.client.limits;

    assert_eq!(session.auth.plug_in_id, "DssTargeting");
    let lifetime_ms = session.cookie.expires_at.unix_millis()
        - i64::try_from(before.duration_since(UNIX_EPOCH).unwrap().as_millis()).unwrap();
    assert!(
        (239 * 60_000..=241 * 60_000).contains(&lifetime_ms),
        "WSUS cookies last 240 minutes; this one {lifetime_ms} ms"
    );
    assert_eq!(session.config.max_updates_per_request, 100);
    assert_eq!(session.config.protocol_version.as_deref(), Some("1.20"));
    assert!(
        session
            .config
            .languages
            .iter()
            .any(|l| l.short_name == "en" && l.enabled)
    );
    let config_anchor = session
        .config
        .new_config_anchor
        .clone()
        .expect("a config anchor");

    // With its anchor, the configuration comes back without languages (recording 000004).
    let again = parse_config_data(
        &session
            .client
            .server_sync(&get_config_data(&session.cookie, Some(&config_anchor)))
            .await
            .body,
        limits,
    )
    .unwrap();
    assert!(again.languages.is_empty());
    assert_eq!(again.max_updates_per_request, 100);

    // Paths are case-insensitive, as on IIS.
    let lower = format!(
        "{}/serversyncwebservice/serversyncwebservice.asmx",
        server.url()
    );
    let answer = session.client.post(&lower, &get_auth_config()).await;
    assert_eq!(answer.status, 200);

    for (operation, count) in [
        (Operation::GetAuthConfig, 2),
        (Operation::GetAuthorizationCookie, 1),
        (Operation::GetCookie, 1),
        (Operation::GetConfigData, 2),
        (Operation::GetRevisionIdList, 0),
        (Operation::GetUpdateData, 0),
    ] {
        assert_eq!(server.requests(operation), count, "{operation}");
    }

    // A cookie this server never issued, and none at all, are refused (recording 000019).
    let forged = Cookie {
        encrypted_data: "AAAA".to_owned(),
        ..session.cookie.clone()
    };
    let answer = session
        .client
        .server_sync(&get_config_data(&forged, None))
        .await;
    assert_eq!(fault_of(&answer), FaultKind::InvalidCookie);
    let without_cookie = SoapRequest {
        operation: Operation::GetRevisionIdList,
        body: "<?xml version=\"1.0\" encoding=\"utf-8\"?><soap:Envelope \
               xmlns:soap=\"http://schemas.xmlsoap.org/soap/envelope/\"><soap:Body>\
               <GetRevisionIdList xmlns=\"http://www.microsoft.com/SoftwareDistribution\">\
               <filter><GetConfig>true</GetConfig></filter></GetRevisionIdList></soap:Body>\
               </soap:Envelope>"
            .to_owned(),
    };
    let answer = session.client.server_sync(&without_cookie).await;
    assert_eq!(fault_of(&answer), FaultKind::InvalidCookie);

    // GetCookie wants an authorization cookie of this server and protocol version 1.x.
    let forged_auth = AuthorizationCookie {
        cookie_data: "AAAA".to_owned(),
        ..session.auth.clone()
    };
    let answer = session
        .client
        .server_sync(&get_cookie(&forged_auth, None, &ProtocolVersion::default()))
        .await;
    assert_eq!(fault_of(&answer), FaultKind::InvalidAuthorizationCookie);
    let mut version_2 = get_cookie(&session.auth, None, &ProtocolVersion::default());
    version_2.body = version_2.body.replace(
        "<protocolVersion>1.20</protocolVersion>",
        "<protocolVersion>2.0</protocolVersion>",
    );
    let answer = session.client.server_sync(&version_2).await;
    assert_eq!(fault_of(&answer), FaultKind::IncompatibleProtocolVersion);

    // An operation posted to the wrong service is not dispatched: a fault without ErrorCode.
    let auth_url = format!("{}/DssAuthWebService/DssAuthWebService.asmx", server.url());
    let answer = session.client.post(&auth_url, &get_auth_config()).await;
    assert!(matches!(fault_of(&answer), FaultKind::Other { .. }));

    server.shutdown().await;
}

/// A recorded exchange's response body (`wsus/tests/fixtures/wsusss/exchanges/<n>/`).
fn recorded_answer(exchange: u32) -> Vec<u8> {
    let path = format!(
        "{}/../wsus/tests/fixtures/wsusss/exchanges/{exchange:06}/response.body",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

/// The element structure of an answer: qualified start and end tags in order, text left out,
/// `<a />` the same as `<a></a>`.
fn skeleton(body: &[u8]) -> Vec<String> {
    let mut reader = quick_xml::Reader::from_reader(body);
    let mut tags = Vec::new();
    loop {
        match reader.read_event().unwrap() {
            Event::Start(start) => {
                tags.push(format!(
                    "<{}",
                    String::from_utf8_lossy(start.name().as_ref())
                ));
            }
            Event::Empty(start) => {
                let name = String::from_utf8_lossy(start.name().as_ref()).into_owned();
                tags.push(format!("<{name}"));
                tags.push(format!("</{name}"));
            }
            Event::End(end) => {
                tags.push(format!(
                    "</{}",
                    String::from_utf8_lossy(end.name().as_ref())
                ));
            }
            Event::Eof => return tags,
            _ => {}
        }
    }
}

/// The text of the first `<name>` element of a flat answer.
fn text_of(body: &[u8], name: &str) -> String {
    let body = std::str::from_utf8(body).unwrap();
    let start = body.find(&format!("<{name}>")).expect(name) + name.len() + 2;
    let end = start + body[start..].find(&format!("</{name}>")).expect(name);
    body[start..end].to_owned()
}

#[tokio::test]
async fn answers_have_the_recorded_shapes() {
    // The recorded update documents themselves as the catalog: the exchanges served them.
    let dir = tempfile::tempdir().unwrap();
    let documents = format!(
        "{}/../wsus/tests/fixtures/update-xml",
        env!("CARGO_MANIFEST_DIR")
    );
    for entry in std::fs::read_dir(documents).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
    }
    let server = FakeWsus::start(dir.path(), FakeWsusOptions::default())
        .await
        .unwrap();
    let session = Session::start(&server).await;
    let client = &session.client;
    let same_shape = |ours: &[u8], exchange: u32| {
        assert_eq!(
            skeleton(ours),
            skeleton(&recorded_answer(exchange)),
            "the shape of exchange {exchange}"
        );
    };

    same_shape(&client.server_sync(&get_auth_config()).await.body, 1);
    let auth_url = client.root.default_dss_auth_url();
    let auth = get_authorization_cookie("downstream.test.invalid", Uuid::new_v4());
    same_shape(&client.post(&auth_url, &auth).await.body, 2);
    let cookie = get_cookie(&session.auth, None, &ProtocolVersion::default());
    same_shape(&client.server_sync(&cookie).await.body, 3);
    let anchor = session.config.new_config_anchor.clone();
    let config = get_config_data(&session.cookie, anchor.as_ref());
    same_shape(&client.server_sync(&config).await.body, 4);
    let product = UpdateId::from_str("8c3fcc84-7410-4a95-8b89-a166a0190486").unwrap();
    let product_only = RevisionFilter::updates(None, [delta(product, false)], []);
    let list = get_revision_id_list(&session.cookie, &product_only);
    same_shape(&client.server_sync(&list).await.body, 7);

    // Update data: the category (compressed), the leaf with a file (compressed, with its
    // digest and file URL), the small bundle (plain, byte for byte the recorded answer).
    let id = |text: &str, revision| RevisionId {
        update_id: UpdateId::from_str(text).unwrap(),
        revision,
    };
    let with_file = id("266f6222-c89d-43f2-9f8a-69340271e677", 200);
    let ours = session.update_data(&[with_file]).await.body;
    same_shape(&ours, 14);
    assert_eq!(
        text_of(&ours, "FileDigest"),
        text_of(&recorded_answer(14), "FileDigest")
    );
    let plain = id("ccb78947-6453-4ecc-9de8-bc0305c98f2d", 200);
    let ours = session.update_data(&[plain]).await.body;
    assert_eq!(ours, recorded_answer(15), "exchange 15 byte for byte");
    let category = id("56309036-4c77-4dd9-951a-99ee9c246a94", 101);
    same_shape(&session.update_data(&[category]).await.body, 16);

    // Faults: shape, codes and texts as recorded.
    let unknown = id("00000000-0000-0000-0000-000000000001", 1);
    let faults = [
        (session.update_data(&[unknown]).await, 17),
        (
            client
                .server_sync(&get_revision_id_list(
                    &session.cookie,
                    &RevisionFilter::updates(Some(Anchor::new("garbage")), [], []),
                ))
                .await,
            18,
        ),
        (
            client
                .server_sync(&get_revision_id_list(
                    &Cookie {
                        encrypted_data: "AAAA".to_owned(),
                        ..session.cookie.clone()
                    },
                    &RevisionFilter::categories(None),
                ))
                .await,
            19,
        ),
    ];
    for (answer, exchange) in faults {
        let recorded = recorded_answer(exchange);
        assert_eq!(answer.status, 500);
        same_shape(&answer.body, exchange);
        for element in ["faultcode", "faultstring", "ErrorCode", "Message", "Method"] {
            assert_eq!(
                text_of(&answer.body, element),
                text_of(&recorded, element),
                "{element} of exchange {exchange}"
            );
        }
    }
}

#[tokio::test]
async fn options_set_the_batch_size_and_the_cookie_lifetime() {
    let catalog = DiskCatalog::generate(60, 2);
    let options = FakeWsusOptions {
        max_updates_per_request: 7,
        cookie_lifetime: Duration::ZERO,
        ..FakeWsusOptions::default()
    };
    let server = FakeWsus::start(catalog.path(), options).await.unwrap();
    let client = Client::new(&server);
    let auth_url = client.root.default_dss_auth_url();
    let (_, cookie) = client.cookie(&auth_url).await;
    // Expired as soon as issued: the client must renew with a new handshake.
    let answer = client.server_sync(&get_config_data(&cookie, None)).await;
    assert_eq!(fault_of(&answer), FaultKind::InvalidCookie);
    drop(server);

    let server = FakeWsus::start(
        catalog.path(),
        FakeWsusOptions {
            max_updates_per_request: 7,
            ..FakeWsusOptions::default()
        },
    )
    .await
    .unwrap();
    let session = Session::start(&server).await;
    assert_eq!(session.config.max_updates_per_request, 7);
    let all = session
        .list(&RevisionFilter::categories(None))
        .await
        .revisions;
    let answer = session.update_data(&all[..8]).await;
    assert_eq!(
        fault_of(&answer),
        FaultKind::InvalidParameters {
            message: "updateIds".to_owned()
        }
    );
    assert_eq!(session.fetch(&all[..7]).await.updates.len(), 7);
}

#[tokio::test]
async fn revision_lists_follow_anchors_and_delta_across_a_reload() {
    let catalog = DiskCatalog::generate(700, 11);
    let server = FakeWsus::start(catalog.path(), FakeWsusOptions::default())
        .await
        .unwrap();
    let session = Session::start(&server).await;
    let latest = catalog.latest();

    // The category list: every category, classification and detectoid, highest revision.
    let categories = session.list(&RevisionFilter::categories(None)).await;
    let expected: Vec<RevisionId> = latest
        .values()
        .filter(|r| is_config(r))
        .map(|r| r.id)
        .collect();
    assert_eq!(sorted(&categories.revisions), expected);

    // No product or classification: every update. One list without the other: none.
    let everything = session.list(&RevisionFilter::updates(None, [], [])).await;
    let expected: Vec<RevisionId> = latest
        .values()
        .filter(|r| !is_config(r))
        .map(|r| r.id)
        .collect();
    assert_eq!(sorted(&everything.revisions), expected);
    let (product, classification) = busiest_pair(&latest);
    let product_only = session
        .list(&RevisionFilter::updates(None, [delta(product, false)], []))
        .await;
    assert!(product_only.revisions.is_empty());

    // Product ∩ classification, with the updates they bundle.
    let filtered = |anchor: Option<&Anchor>, product_delta: bool, classification_delta: bool| {
        RevisionFilter::updates(
            anchor.cloned(),
            [delta(product, product_delta)],
            [delta(classification, classification_delta)],
        )
    };
    let subscribed = session.list(&filtered(None, false, false)).await;
    let expected = expected_update_list(&latest, product, classification);
    assert!(!expected.is_empty());
    assert_eq!(
        subscribed
            .revisions
            .iter()
            .copied()
            .collect::<BTreeSet<_>>(),
        expected
    );
    assert_eq!(subscribed.revisions.len(), expected.len(), "no duplicates");

    // Nothing changed yet: anchored lists with Delta=true are empty.
    let unchanged = session
        .list(&filtered(Some(&subscribed.anchor), true, true))
        .await;
    assert!(unchanged.revisions.is_empty());

    // The upstream publishes: new updates, new revisions, expiries, and withdrawals.
    let changes = CatalogChanges::derive(&catalog.spec, 5, 3);
    changes.apply_to_dir(catalog.path()).unwrap();
    let scan = server.reload().await.unwrap();
    assert_eq!(scan.generation, 2);
    assert_eq!(server.generation(), 2);
    assert_eq!(scan.new_or_changed, changes.documents().count(), "{scan:?}");
    assert!(scan.removed >= changes.deleted.len(), "{scan:?}");
    let latest_after = catalog.latest();

    // With the anchor of the full list, exactly the new and changed revisions.
    let changed: BTreeSet<RevisionId> = changes.documents().map(|d| d.id).collect();
    let since = session
        .list(&RevisionFilter::updates(
            Some(everything.anchor.clone()),
            [],
            [],
        ))
        .await;
    assert_eq!(
        since.revisions.iter().copied().collect::<BTreeSet<_>>(),
        changed
    );
    assert_ne!(since.anchor, everything.anchor);
    let categories_since = session
        .list(&RevisionFilter::categories(Some(categories.anchor.clone())))
        .await;
    assert!(categories_since.revisions.is_empty());

    // The full list after the reload: withdrawn updates are gone, revised ones at their new
    // revision, expired ones still listed.
    let full = session.list(&RevisionFilter::updates(None, [], [])).await;
    let full_ids: BTreeSet<RevisionId> = full.revisions.iter().copied().collect();
    let listed_updates: HashSet<UpdateId> = full_ids.iter().map(|r| r.update_id).collect();
    for deleted in &changes.deleted {
        assert!(!listed_updates.contains(deleted), "{deleted} was withdrawn");
    }
    for document in changes.documents() {
        assert!(full_ids.contains(&document.id), "{} is listed", document.id);
    }
    let expected: BTreeSet<RevisionId> = latest_after
        .values()
        .filter(|r| !is_config(r))
        .map(|r| r.id)
        .collect();
    assert_eq!(full_ids, expected);

    // The subscription after the reload: Delta=true gives what changed in it, Delta=false on
    // one of its lists (a newly added classification, say) gives all of it again.
    let expected_now = expected_update_list(&latest_after, product, classification);
    let delta_since = session
        .list(&filtered(Some(&subscribed.anchor), true, true))
        .await;
    let expected_delta: BTreeSet<RevisionId> =
        expected_now.intersection(&changed).copied().collect();
    assert_eq!(
        delta_since
            .revisions
            .iter()
            .copied()
            .collect::<BTreeSet<_>>(),
        expected_delta
    );
    let resubscribed = session
        .list(&filtered(Some(&subscribed.anchor), true, false))
        .await;
    assert_eq!(
        resubscribed
            .revisions
            .iter()
            .copied()
            .collect::<BTreeSet<_>>(),
        expected_now
    );

    // An anchor this server did not write is refused as WSUS refuses one (recording 000018).
    for bad in ["garbage", "99,sitesync fake WSUS"] {
        let answer = session
            .client
            .server_sync(&get_revision_id_list(
                &session.cookie,
                &RevisionFilter::updates(Some(Anchor::new(bad)), [], []),
            ))
            .await;
        assert_eq!(
            fault_of(&answer),
            FaultKind::InvalidParameters {
                message: "filter".to_owned()
            },
            "anchor {bad}"
        );
    }
}

#[tokio::test]
async fn update_data_decodes_to_exactly_the_documents_on_disk() {
    let catalog = DiskCatalog::generate(400, 5);
    let server = FakeWsus::start(catalog.path(), FakeWsusOptions::default())
        .await
        .unwrap();
    let session = Session::start(&server).await;
    let limits = &session.client.limits;
    let on_disk = catalog.revisions();

    // Categories first, then updates, in batches of the server's maximum: each revision
    // once, each decoding to its file byte for byte.
    let categories = session.list(&RevisionFilter::categories(None)).await;
    let updates = session.list(&RevisionFilter::updates(None, [], [])).await;
    let wanted: Vec<RevisionId> = categories
        .revisions
        .iter()
        .chain(&updates.revisions)
        .copied()
        .collect();
    let batch_size = session.config.max_updates_per_request as usize;
    let (mut plain, mut compressed, mut with_files) = (0, 0, 0);
    for batch in wanted.chunks(batch_size) {
        let answer = session.fetch(batch).await;
        let ids: Vec<RevisionId> = answer.updates.iter().map(|u| u.id).collect();
        assert_eq!(ids, batch, "one item per asked revision, in order");
        for update in &answer.updates {
            let document = update.blob.decode(limits).unwrap();
            assert_eq!(document, catalog.document(update.id), "{}", update.id);
            match update.blob {
                UpdateBlob::Plain(_) => plain += 1,
                UpdateBlob::Compressed(_) => compressed += 1,
            }
            let files = &on_disk[&update.id].files;
            assert_eq!(update.file_digests.len(), files.len(), "{}", update.id);
            if !files.is_empty() {
                with_files += 1;
                for digest in &update.file_digests {
                    assert!(
                        answer.file_urls.iter().any(|u| &u.file_digest == digest),
                        "a file URL for every digest"
                    );
                }
            }
        }
    }
    assert!(
        plain > 0 && compressed > 0,
        "{plain} plain, {compressed} compressed"
    );
    assert!(with_files > 0);
    assert_eq!(server.served(), wanted);
    let distinct: HashSet<_> = server.served().into_iter().collect();
    assert_eq!(distinct.len(), wanted.len(), "no revision fetched twice");
    assert_eq!(
        server.requests(Operation::GetUpdateData),
        wanted.len().div_ceil(batch_size) as u64
    );

    // One unknown revision faults the whole batch (recording 000017).
    let unknown = RevisionId {
        update_id: UpdateId::from_bytes(Uuid::from_u128(1).into_bytes()),
        revision: 1,
    };
    let answer = session.update_data(&[wanted[0], unknown]).await;
    assert_eq!(fault_of(&answer), FaultKind::InternalServerError);
    let wrong_revision = RevisionId {
        revision: wanted[0].revision + 1000,
        ..wanted[0]
    };
    let answer = session.update_data(&[wrong_revision]).await;
    assert_eq!(fault_of(&answer), FaultKind::InternalServerError);

    // A revision the server cannot serve: halving the batch isolates it.
    let bad = wanted[5];
    server.fail_update_data_containing(bad);
    let mut batch: Vec<RevisionId> = wanted[..8].to_vec();
    let answer = session.update_data(&batch).await;
    assert_eq!(fault_of(&answer), FaultKind::InternalServerError);
    while batch.len() > 1 {
        let (low, high) = batch.split_at(batch.len() / 2);
        let (faulty, healthy) = if low.contains(&bad) {
            (low, high)
        } else {
            (high, low)
        };
        assert_eq!(session.fetch(healthy).await.updates.len(), healthy.len());
        let answer = session.update_data(faulty).await;
        assert_eq!(fault_of(&answer), FaultKind::InternalServerError);
        batch = faulty.to_vec();
    }
    assert_eq!(batch, [bad]);
    server.clear_failing_revisions();
    assert_eq!(session.fetch(&[bad]).await.updates[0].id, bad);

    // Duplicates in the request give duplicate items.
    let twice = session.fetch(&[wanted[0], wanted[0]]).await;
    assert_eq!(twice.updates.len(), 2);
}

#[tokio::test]
async fn compression_follows_the_threshold() {
    let catalog = DiskCatalog::generate(80, 6);
    for (compress_above, expect_plain) in [(0, false), (usize::MAX, true)] {
        let options = FakeWsusOptions {
            compress_above,
            ..FakeWsusOptions::default()
        };
        let server = FakeWsus::start(catalog.path(), options).await.unwrap();
        let session = Session::start(&server).await;
        let listed = session.list(&RevisionFilter::updates(None, [], [])).await;
        let batch = &listed.revisions[..20];
        for update in session.fetch(batch).await.updates {
            assert_eq!(matches!(update.blob, UpdateBlob::Plain(_)), expect_plain);
            let document = update.blob.decode(&session.client.limits).unwrap();
            assert_eq!(document, catalog.document(update.id));
        }
    }
}

#[tokio::test]
async fn injected_faults_answer_as_the_codec_expects() {
    let catalog = DiskCatalog::generate(60, 7);
    let server = FakeWsus::start(catalog.path(), FakeWsusOptions::default())
        .await
        .unwrap();
    let session = Session::start(&server).await;
    let filter = RevisionFilter::categories(None);
    let list_request = get_revision_id_list(&session.cookie, &filter);

    let cases = [
        (Fault::InvalidCookie, FaultKind::InvalidCookie),
        (
            Fault::InvalidAuthorizationCookie,
            FaultKind::InvalidAuthorizationCookie,
        ),
        (Fault::ServerChanged, FaultKind::ServerChanged),
        (Fault::ServerBusy, FaultKind::ServerBusy),
        (
            Fault::InvalidParameters("filter".to_owned()),
            FaultKind::InvalidParameters {
                message: "filter".to_owned(),
            },
        ),
        (Fault::InternalServerError, FaultKind::InternalServerError),
        (
            Fault::IncompatibleProtocolVersion,
            FaultKind::IncompatibleProtocolVersion,
        ),
    ];
    let case_count = cases.len() as u64;
    for (fault, kind) in cases {
        server.fail_next(Operation::GetRevisionIdList, 2, fault.clone());
        // Another operation is not affected.
        let config = session
            .client
            .server_sync(&get_config_data(&session.cookie, None))
            .await;
        assert_eq!(config.status, 200);
        for _ in 0..2 {
            let answer = session.client.server_sync(&list_request).await;
            let parsed = parse_fault(&answer.body, &session.client.limits).unwrap();
            assert_eq!(fault_of(&answer), kind, "{fault:?}");
            assert_eq!(
                parsed.method.as_deref(),
                Some("\"http://www.microsoft.com/SoftwareDistribution/GetRevisionIdList\"")
            );
            assert!(parsed.id.is_some());
            // The operation's own parser reports the fault too.
            match parse_revision_id_list(&answer.body, &session.client.limits) {
                Err(ResponseError::Fault(f)) => assert_eq!(f.kind, kind),
                other => panic!("expected a fault, got {other:?}"),
            }
        }
        let answer = session.client.server_sync(&list_request).await;
        assert_eq!(answer.status, 200, "{fault:?} answered twice only");
    }
    assert_eq!(
        server.requests(Operation::GetRevisionIdList),
        3 * case_count
    );

    // HTTP 503 and a dropped connection, for the next request of any operation.
    server.unavailable_next(1);
    let answer = session.client.server_sync(&list_request).await;
    assert_eq!(answer.status, 503);
    assert!(parse_fault(&answer.body, &session.client.limits).is_err());
    assert_eq!(session.client.server_sync(&list_request).await.status, 200);

    server.drop_next(2);
    let url = session.client.root.server_sync_url();
    for _ in 0..2 {
        let dropped = session.client.try_post(&url, &list_request).await;
        assert!(dropped.is_err(), "the connection closes without an answer");
    }
    assert_eq!(session.client.server_sync(&list_request).await.status, 200);
    assert_eq!(
        server.requests(Operation::GetRevisionIdList),
        3 * case_count + 5
    );
}

#[tokio::test]
async fn hostile_answers_trip_the_codec() {
    let catalog = DiskCatalog::generate(200, 9);
    let server = FakeWsus::start(catalog.path(), FakeWsusOptions::default())
        .await
        .unwrap();
    let session = Session::start(&server).await;
    let small = Limits {
        max_response_bytes: 256 << 10,
        ..Limits::default()
    };
    let list_request = get_revision_id_list(&session.cookie, &RevisionFilter::categories(None));

    // Past a size, announced or not: the client stops reading at its limit.
    for declare_length in [true, false] {
        server.hostile_next(
            Operation::GetRevisionIdList,
            1,
            Hostile::Oversized {
                bytes: 4 << 20,
                declare_length,
            },
        );
        let client = Client {
            limits: small,
            ..Client::new(&server)
        };
        let answer = client.server_sync(&list_request).await;
        assert_eq!(answer.status, 200);
        assert_eq!(
            answer.content_length,
            declare_length.then_some(4 << 20),
            "declare_length {declare_length}"
        );
        assert_eq!(answer.body.len(), small.max_response_bytes + 1);
        assert!(matches!(
            parse_revision_id_list(&answer.body, &small),
            Err(ResponseError::TooLarge { .. })
        ));
    }
    // Read whole, the padded answer is still the honest one.
    server.hostile_next(
        Operation::GetRevisionIdList,
        1,
        Hostile::Oversized {
            bytes: 1 << 20,
            declare_length: true,
        },
    );
    let answer = session.client.server_sync(&list_request).await;
    assert_eq!(answer.body.len(), 1 << 20);
    let padded = parse_revision_id_list(&answer.body, &session.client.limits).unwrap();
    assert!(!padded.revisions.is_empty());

    // Malformed SOAP: not a fault, an unreadable answer.
    server.hostile_next(Operation::GetConfigData, 1, Hostile::MalformedSoap);
    let answer = session
        .client
        .server_sync(&get_config_data(&session.cookie, None))
        .await;
    assert_eq!(answer.status, 200);
    match parse_config_data(&answer.body, &session.client.limits) {
        Err(ResponseError::Fault(_)) | Ok(_) => panic!("a cut answer must not parse"),
        Err(_) => {}
    }

    let updates = session.list(&RevisionFilter::updates(None, [], [])).await;
    let batch = &updates.revisions[..4];

    // A Cabinet declaring a huge member: refused from its header.
    server.hostile_next(Operation::GetUpdateData, 1, Hostile::HugeCabinet);
    for update in session.fetch(batch).await.updates {
        assert!(matches!(update.blob, UpdateBlob::Compressed(_)));
        assert!(
            matches!(
                update.blob.decode(&session.client.limits),
                Err(BlobError::MemberTooLarge { .. })
            ),
            "{:?}",
            update.blob.decode(&session.client.limits)
        );
    }

    // A document served under another revision's id: only its own identity tells.
    server.hostile_next(
        Operation::GetUpdateData,
        1,
        Hostile::DocumentOfAnotherRevision,
    );
    for update in session.fetch(batch).await.updates {
        let document = update.blob.decode(&session.client.limits).unwrap();
        let parsed = parse_update(&document, &ParseLimits::default()).unwrap();
        assert_ne!(parsed.id, update.id);
    }

    // A revision that was not asked for.
    server.reset_counters();
    server.hostile_next(Operation::GetUpdateData, 1, Hostile::UnaskedRevision);
    let answer = session.fetch(batch).await;
    assert_eq!(answer.updates.len(), batch.len() + 1);
    let extra = answer.updates.last().unwrap().id;
    assert!(!batch.contains(&extra));
    assert_eq!(server.served().len(), batch.len() + 1);

    // And then honest again.
    for update in session.fetch(batch).await.updates {
        let document = update.blob.decode(&session.client.limits).unwrap();
        assert_eq!(document, catalog.document(update.id));
    }
}

#[tokio::test]
async fn stopping_the_server_closes_its_port() {
    let catalog = DiskCatalog::generate(10, 1);
    let server = FakeWsus::start(catalog.path(), FakeWsusOptions::default())
        .await
        .unwrap();
    let address = server.address();
    // A kept-alive connection, so that there is a connection task to end too.
    let session = Session::start(&server).await;
    server.shutdown().await;
    assert!(tokio::net::TcpStream::connect(address).await.is_err());
    let after = session
        .client
        .try_post(&session.client.root.server_sync_url(), &get_auth_config())
        .await;
    assert!(after.is_err(), "no connection survives the server");

    // Dropping the handle stops it too.
    let server = FakeWsus::start(catalog.path(), FakeWsusOptions::default())
        .await
        .unwrap();
    let address = server.address();
    drop(server);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(address).await.is_ok() {
        assert!(tokio::time::Instant::now() < deadline, "still listening");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
