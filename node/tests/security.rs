//! Mutual TLS and authorization over real TCP (SPEC invariant 6): a certificate from
//! another CA is refused at the handshake; every call is authorized by the identity in the
//! caller's certificate (operators change a site, only the configured parent asks a child
//! to sync, only registered children pull or replicate); a caller without a certificate
//! reads only the client policy; a rotated certificate is taken without a restart and a
//! revoked one is refused on its next call. A node told to run plaintext still works, and
//! plaintext together with certificates is refused at start.

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use sitesync_metadata::generate::{CatalogSpec, write_catalog};
use sitesync_node::config::{NodeConfig, Overrides, SecurityConfig};
use sitesync_node::sync::manager::SyncResult;
use sitesync_proto::v1;
use sitesync_proto::v1::admin_client::AdminClient;
use sitesync_proto::v1::client_policy_client::ClientPolicyClient;
use sitesync_proto::v1::hierarchy_client::HierarchyClient;
use sitesync_proto::v1::site_replication_client::SiteReplicationClient;
use sitesync_proto::v1::update_server_client::UpdateServerClient;
use sitesync_security::pki::{Authority, DEFAULT_VALIDITY, first_certificate};
use sitesync_security::{Identity, TlsContext, TlsFiles, Transport};
use tokio_stream::StreamExt as _;
use tonic::transport::{Channel, Endpoint, Uri};

mod common;

use common::TestNode;

/// A synced top site `CEN` on a small generated catalog.
async fn top() -> (tempfile::TempDir, TestNode) {
    let upstream = tempfile::tempdir().unwrap();
    write_catalog(upstream.path(), &CatalogSpec::new(20, 91), |_| {}).unwrap();
    let top = TestNode::start(upstream.path(), "").await;
    assert_eq!(top.finished(1).await.result, Some(SyncResult::Succeeded));
    (upstream, top)
}

/// A channel to `address` with the TLS material in `files`.
fn channel_with(files: TlsFiles, address: &str) -> Channel {
    Transport::Tls(TlsContext::load(files).unwrap())
        .channel(address, |e| e.timeout(Duration::from_secs(30)))
        .unwrap()
}

/// A TLS channel to `address` that trusts the tests' CA and presents no certificate.
fn without_certificate(address: &str) -> Channel {
    let mut roots = rustls::RootCertStore::empty();
    let ca = std::fs::read(common::pki::authority_dir().join("ca.pem")).unwrap();
    for certificate in CertificateDer::pem_slice_iter(&ca) {
        roots.add(certificate.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let address = address.to_owned();
    Endpoint::from_shared(format!("http://{address}"))
        .unwrap()
        .timeout(Duration::from_secs(30))
        .connect_with_connector_lazy(tower::service_fn(move |_: Uri| {
            let (connector, address) = (connector.clone(), address.clone());
            async move {
                let tcp = tokio::net::TcpStream::connect(&address).await?;
                let server = ServerName::try_from("127.0.0.1").unwrap();
                let stream = connector.connect(server, tcp).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        }))
}

/// Asserts `status` has `code` and a message holding each of `needles`.
fn assert_refused(status: &tonic::Status, code: tonic::Code, needles: &[&str]) {
    assert_eq!(status.code(), code, "{status:?}");
    for needle in needles {
        assert!(
            status.message().contains(needle),
            "`{}` lacks `{needle}`",
            status.message()
        );
    }
}

fn run_sync() -> v1::RunSyncRequest {
    v1::RunSyncRequest {
        kind: v1::SyncKind::Full as i32,
    }
}

/// The node's own TLS material, which it watches.
fn node_tls(node: &TestNode) -> (Arc<TlsContext>, TlsFiles) {
    let Transport::Tls(context) = &node.started.node.transport else {
        panic!("the node runs without TLS");
    };
    let SecurityConfig::Tls { files, .. } = &node.started.node.config.security else {
        panic!("the node has no certificate files");
    };
    (context.clone(), files.clone())
}

fn leaf(files: &TlsFiles) -> Vec<u8> {
    first_certificate(&std::fs::read(&files.certificate).unwrap()).unwrap()
}

/// A connection refused at the TLS handshake. In TLS 1.3 the client has finished its side
/// before the node checks the client's certificate, so the node's alert reaches the call
/// as a failed connection or as one closed under the request.
fn assert_refused_at_handshake(refused: &tonic::Status) {
    assert!(
        matches!(
            refused.code(),
            tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled
        ),
        "{refused:?}"
    );
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused() {
    let (_upstream, top) = top().await;
    // A CA of its own, and an operator certificate from it; the caller trusts the real CA,
    // so only the node's check of the caller's certificate can fail.
    let elsewhere = tempfile::tempdir().unwrap();
    let authority = Authority::init(elsewhere.path(), "elsewhere").unwrap();
    let mallory = Identity::operator("mallory").unwrap();
    let issued = authority.issue(&mallory, &[], DEFAULT_VALIDITY).unwrap();
    let files = TlsFiles {
        ca: common::pki::authority_dir().join("ca.pem"),
        certificate: issued.certificate,
        key: issued.key,
        crl: None,
    };
    let channel = channel_with(files, &top.address());
    let refused = AdminClient::new(channel.clone())
        .run_sync(run_sync())
        .await
        .unwrap_err();
    // Refused at the handshake: the call never reaches the rules.
    assert_refused_at_handshake(&refused);
    let refused = ClientPolicyClient::new(channel)
        .get_machine_policy(v1::GetMachinePolicyRequest {})
        .await
        .unwrap_err();
    assert_refused_at_handshake(&refused);
    assert_eq!(top.started.sync.watch().borrow().recent.len(), 1);
}

#[tokio::test]
async fn a_site_may_read_but_not_change_a_site_and_an_operator_may() {
    let (_upstream, mut top) = top().await;
    let (_pki, child) = common::registered_child(&top, "PR1", v1::SiteRole::Site).await;
    let mut as_child = AdminClient::new(child);

    let refused = as_child.run_sync(run_sync()).await.unwrap_err();
    assert_refused(
        &refused,
        tonic::Code::PermissionDenied,
        &["RunSync", "site PR1", "only operators may change a site"],
    );
    let settings = top
        .admin
        .get_sync_settings(v1::GetSyncSettingsRequest {})
        .await
        .unwrap()
        .into_inner();
    let refused = as_child
        .set_sync_settings(v1::SetSyncSettingsRequest {
            settings: Some(settings.clone()),
            expected_revision: 0,
        })
        .await
        .unwrap_err();
    assert_refused(
        &refused,
        tonic::Code::PermissionDenied,
        &[
            "SetSyncSettings",
            "site PR1",
            "only operators may change a site",
        ],
    );
    // Reads are open to every identity of the hierarchy.
    let status = as_child
        .get_site_status(v1::GetSiteStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.site.unwrap().site_code, "CEN");
    // Nothing was started by the refused calls; an operator starts a sync.
    assert_eq!(top.started.sync.watch().borrow().recent.len(), 1);
    let (id, _) = top.run_sync(v1::SyncKind::Full).await;
    assert_eq!(top.finished(id).await.result, Some(SyncResult::Succeeded));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn only_the_configured_parent_may_ask_a_child_to_sync() {
    let (_upstream, top) = top().await;
    let child = TestNode::start_child(&top.address(), "PR1").await;
    // Registered (it learned its parent is CEN) and caught up.
    assert_eq!(child.finished(1).await.result, Some(SyncResult::Succeeded));
    let request = |id: &str, parent: &str| v1::SyncRequest {
        request_id: id.into(),
        parent_site_code: parent.into(),
        kind: v1::SyncKind::Full as i32,
        reason: v1::SyncRequestReason::Cascade as i32,
        ..Default::default()
    };

    // Another site, whatever it claims to be, and an operator are refused.
    let (_pki, pr2) = common::site_channel(&child.address(), "PR2");
    for parent in ["PR2", "CEN"] {
        let refused = HierarchyClient::new(pr2.clone())
            .request_sync(request("5d2a7c10-0000-4000-8000-000000000001", parent))
            .await
            .unwrap_err();
        assert_refused(
            &refused,
            tonic::Code::PermissionDenied,
            &["RequestSync", "site PR2", "only the configured parent"],
        );
    }
    let refused = HierarchyClient::new(child.channel.clone())
        .request_sync(request("5d2a7c10-0000-4000-8000-000000000002", "CEN"))
        .await
        .unwrap_err();
    assert_refused(
        &refused,
        tonic::Code::PermissionDenied,
        &["operator tester", "only the configured parent"],
    );
    // The parent itself, naming another site as the sender, is refused too.
    let (_pki, cen) = common::site_channel(&child.address(), "CEN");
    let refused = HierarchyClient::new(cen.clone())
        .request_sync(request("5d2a7c10-0000-4000-8000-000000000003", "PR2"))
        .await
        .unwrap_err();
    assert_refused(
        &refused,
        tonic::Code::PermissionDenied,
        &["site CEN", "acts only for itself"],
    );
    let view = child.started.sync.watch().borrow().clone();
    assert_eq!(view.recent.len() + view.queued.len(), 1, "{view:?}");

    // The configured parent is heard.
    let receipt = HierarchyClient::new(cen)
        .request_sync(request("5d2a7c10-0000-4000-8000-000000000004", "CEN"))
        .await
        .unwrap()
        .into_inner();
    let run = child.finished(receipt.sync_id.parse().unwrap()).await;
    assert_eq!(run.result, Some(SyncResult::Succeeded));
}

/// Opens `Replicate` with a `Subscribe` naming `site_code`; the call's first answer.
async fn subscribe(
    channel: Channel,
    site_code: &str,
) -> Result<tonic::Streaming<v1::ReplicationMessage>, tonic::Status> {
    let subscribe = v1::ReplicationRequest {
        kind: Some(v1::replication_request::Kind::Subscribe(v1::Subscribe {
            site_code: site_code.into(),
            ..Default::default()
        })),
    };
    // The request side stays open as long as the test needs an answer.
    let requests = tokio_stream::iter([subscribe]).chain(tokio_stream::pending());
    SiteReplicationClient::new(channel)
        .replicate(requests)
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test]
async fn only_registered_children_pull_and_only_child_sites_replicate() {
    let (_upstream, top) = top().await;
    let changes = v1::GetChangesRequest {
        since: None,
        max_batch_bytes: 0,
        accept_lz4: true,
    };

    // A site of the hierarchy that is not a registered child.
    let (_pki, stranger) = common::site_channel(&top.address(), "PR9");
    let refused = UpdateServerClient::new(stranger.clone())
        .get_changes(changes.clone())
        .await
        .unwrap_err();
    assert_refused(
        &refused,
        tonic::Code::PermissionDenied,
        &["GetChanges", "site PR9", "only registered child sites"],
    );
    let refused = subscribe(stranger, "PR9").await.unwrap_err();
    assert_refused(
        &refused,
        tonic::Code::PermissionDenied,
        &["Replicate", "site PR9", "only registered child sites"],
    );

    // The site's internet-facing node pulls the update server but has no site database
    // to replicate into.
    let (_pki, internet) = common::registered_child(&top, "PI1", v1::SiteRole::Internet).await;
    let mut pulled = UpdateServerClient::new(internet.clone())
        .get_changes(changes.clone())
        .await
        .unwrap()
        .into_inner();
    assert!(pulled.message().await.unwrap().is_some());
    let refused = subscribe(internet, "PI1").await.unwrap_err();
    assert_refused(
        &refused,
        tonic::Code::PermissionDenied,
        &["Replicate", "site PI1", "only registered child sites"],
    );

    // A registered child site replicates, as itself only.
    let (_pki, child) = common::registered_child(&top, "PR1", v1::SiteRole::Site).await;
    let mut stream = subscribe(child.clone(), "PR1").await.unwrap();
    assert!(stream.message().await.unwrap().is_some());
    let refused = match subscribe(child, "PR2").await {
        Err(status) => status,
        Ok(mut stream) => stream.message().await.unwrap_err(),
    };
    assert_refused(
        &refused,
        tonic::Code::PermissionDenied,
        &["site PR1", "acts only for itself"],
    );
    // The operator is no child either.
    let refused = UpdateServerClient::new(top.channel.clone())
        .get_changes(changes)
        .await
        .unwrap_err();
    assert_refused(
        &refused,
        tonic::Code::PermissionDenied,
        &["operator tester"],
    );
}

#[tokio::test]
async fn without_a_certificate_only_the_client_policy_and_health_answer() {
    let (_upstream, top) = top().await;
    let anonymous = without_certificate(&top.address());
    let refused = AdminClient::new(anonymous.clone())
        .get_site_status(v1::GetSiteStatusRequest {})
        .await
        .unwrap_err();
    assert_refused(
        &refused,
        tonic::Code::Unauthenticated,
        &["GetSiteStatus", "without a client certificate"],
    );
    let refused = AdminClient::new(anonymous.clone())
        .run_sync(run_sync())
        .await
        .unwrap_err();
    assert_refused(
        &refused,
        tonic::Code::Unauthenticated,
        &["RunSync", "only operators"],
    );
    let refused = UpdateServerClient::new(anonymous.clone())
        .get_catalog_info(v1::GetCatalogInfoRequest {})
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");

    let policy = ClientPolicyClient::new(anonymous.clone())
        .get_machine_policy(v1::GetMachinePolicyRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(policy, {
        let mut own = ClientPolicyClient::new(top.channel.clone());
        own.get_machine_policy(v1::GetMachinePolicyRequest {})
            .await
            .unwrap()
            .into_inner()
    });
    let health = tonic_health::pb::health_client::HealthClient::new(anonymous)
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        health.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
}

#[tokio::test]
async fn a_rotated_certificate_is_taken_without_a_restart() {
    let (_upstream, top) = top().await;
    let (node_context, node_files) = node_tls(&top);
    let dir = tempfile::tempdir().unwrap();
    let operator = Identity::operator("rotating").unwrap();
    let files = common::pki::issue_into(dir.path(), &operator);
    let first = leaf(&files);
    AdminClient::new(channel_with(files.clone(), &top.address()))
        .get_site_status(v1::GetSiteStatusRequest {})
        .await
        .unwrap();

    // Both sides get new certificates and keys in place: the node's own, which it finds
    // by watching its files, and the operator's, which the operator's tool loads anew.
    let node_before = node_context.current();
    common::pki::reissue(&node_files, &Identity::site("CEN").unwrap());
    common::pki::reissue(&files, &operator);
    assert_ne!(leaf(&files), first);
    tokio::time::timeout(Duration::from_secs(30), async {
        while Arc::ptr_eq(&node_context.current(), &node_before) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the node did not reload its rotated certificate");
    assert_eq!(
        node_context.current().identity,
        Identity::site("CEN").unwrap()
    );

    let mut rotated = AdminClient::new(channel_with(files, &top.address()));
    let response = rotated.run_sync(run_sync()).await.unwrap().into_inner();
    let id = response.sync_id.parse().unwrap();
    assert_eq!(top.finished(id).await.result, Some(SyncResult::Succeeded));
}

#[tokio::test]
async fn a_revoked_certificate_is_refused_on_its_next_call() {
    let (_upstream, top) = top().await;
    let (_, node_files) = node_tls(&top);
    let dir = tempfile::tempdir().unwrap();
    let files = common::pki::issue_into(dir.path(), &Identity::operator("leaving").unwrap());
    let channel = channel_with(files.clone(), &top.address());
    let mut leaving = AdminClient::new(channel);
    leaving
        .get_site_status(v1::GetSiteStatusRequest {})
        .await
        .unwrap();

    // Revoked at the CA; the new list is handed to the node, which watches its copy.
    let crl = common::pki::revoke(&files.certificate);
    let node_crl = node_files
        .crl
        .clone()
        .expect("the node reads a revocation list");
    std::fs::copy(&crl, &node_crl).unwrap();

    // The connection made before stays open; its next call after the node has read the
    // list is refused.
    let refused = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match leaving.get_site_status(v1::GetSiteStatusRequest {}).await {
                Ok(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                Err(status) => return status,
            }
        }
    })
    .await
    .expect("the node did not refuse the revoked certificate");
    assert_refused(
        &refused,
        tonic::Code::Unauthenticated,
        &["GetSiteStatus", "revoked"],
    );
    // A new connection with it fails at the handshake; other operators carry on.
    let refused = AdminClient::new(channel_with(files, &top.address()))
        .get_site_status(v1::GetSiteStatusRequest {})
        .await
        .unwrap_err();
    assert_refused_at_handshake(&refused);
    AdminClient::new(top.channel.clone())
        .get_site_status(v1::GetSiteStatusRequest {})
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_plaintext_hierarchy_still_syncs_when_asked_for() {
    let upstream = tempfile::tempdir().unwrap();
    write_catalog(upstream.path(), &CatalogSpec::new(30, 92), |_| {}).unwrap();
    let mut top = TestNode::start_with(
        Overrides {
            upstream_dir: Some(upstream.path().to_owned()),
            insecure: true,
            ..Overrides::default()
        },
        "",
    )
    .await;
    assert_eq!(top.started.node.config.security, SecurityConfig::Insecure);
    assert!(!top.started.node.transport.is_tls());
    top.finished(1).await;
    let child = TestNode::start_with(
        Overrides {
            parent: Some(top.address()),
            site_code: Some("PR1".into()),
            insecure: true,
            ..Overrides::default()
        },
        "",
    )
    .await;
    assert_eq!(child.finished(1).await.result, Some(SyncResult::Succeeded));
    assert_eq!(
        child.started.node.database.update_server().digest(),
        top.started.node.database.update_server().digest()
    );
    // Over plaintext, with no certificate, an operator's call goes through.
    let (id, _) = top.run_sync(v1::SyncKind::Full).await;
    assert_eq!(top.finished(id).await.result, Some(SyncResult::Succeeded));
}

#[test]
fn plaintext_together_with_certificates_is_refused_at_start() {
    let pki = tempfile::tempdir().unwrap();
    let pki = common::site_pki_dir(pki.path(), "CEN");
    let error = NodeConfig::load(
        None,
        &Overrides {
            pki_dir: Some(pki.clone()),
            insecure: true,
            ..Overrides::default()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(error.starts_with("tls.insecure"), "{error}");

    // The node binary stops at once with that error, before it listens.
    let data = tempfile::tempdir().unwrap();
    let node = std::process::Command::new(env!("CARGO_BIN_EXE_sitesync-node"))
        .arg("--data-dir")
        .arg(data.path())
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--pki-dir")
        .arg(&pki)
        .arg("--insecure")
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let output = wait_with_deadline(node, Duration::from_secs(30));
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("tls.insecure"), "{stderr}");
    assert!(!data.path().join("db").exists(), "nothing was created");
}

/// Waits for `child` to exit, killing it (and failing) if it runs past `deadline`.
fn wait_with_deadline(mut child: std::process::Child, deadline: Duration) -> std::process::Output {
    let until = std::time::Instant::now() + deadline;
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > until {
            let _ = child.kill();
            panic!("the node kept running with --insecure and --pki-dir");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// A site that declares its children (`children`) refuses any other site of the CA that
/// tries to register, and so to pull from it; a declared one registers.
#[tokio::test]
async fn only_declared_children_may_register_when_children_are_declared() {
    let upstream = tempfile::tempdir().unwrap();
    write_catalog(upstream.path(), &CatalogSpec::new(10, 92), |_| {}).unwrap();
    let top = TestNode::start(upstream.path(), "children = [\"PR1\", \"in1\"]\n").await;
    let register = |code: &'static str| {
        let address = top.address();
        async move {
            let (_dir, channel) = common::site_channel(&address, code);
            HierarchyClient::new(channel)
                .register_child(v1::RegisterChildRequest {
                    site_code: code.to_owned(),
                    role: v1::SiteRole::Site as i32,
                    address: "127.0.0.1:9".to_owned(),
                    ..Default::default()
                })
                .await
        }
    };
    let refused = register("PR2").await.unwrap_err();
    assert_refused(
        &refused,
        tonic::Code::PermissionDenied,
        &["PR2", "not a declared child", "children"],
    );
    register("PR1").await.unwrap();
}
