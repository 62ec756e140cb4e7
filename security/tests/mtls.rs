//! Mutual TLS over real TCP: a server and clients with certificates from the hierarchy's CA
//! or from another one, rotation without a restart, and revocation.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use sitesync_security::pki::{Authority, DEFAULT_VALIDITY};
use sitesync_security::{Identity, TlsContext, TlsFiles, Transport, peer_identity, tls_incoming};
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

struct Server {
    address: String,
    context: Arc<TlsContext>,
    seen: Arc<Mutex<Vec<String>>>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// A server for the site `site` of the hierarchy in `pki`.
async fn serve(pki: &std::path::Path, site: &str) -> Server {
    let files = TlsFiles::in_pki_dir(pki, &Identity::site(site).unwrap());
    assert!(
        files.crl.is_some(),
        "the CA writes an empty revocation list at init"
    );
    serve_with(TlsContext::load(files).unwrap()).await
}

fn client(pki: &std::path::Path, identity: &Identity, address: &str) -> (Arc<TlsContext>, Channel) {
    let context = TlsContext::load(TlsFiles::in_pki_dir(pki, identity)).unwrap();
    let channel = Transport::Tls(context.clone())
        .channel(address, |e| e.timeout(Duration::from_secs(10)))
        .unwrap();
    (context, channel)
}

async fn check(channel: Channel) -> Result<(), tonic::Status> {
    HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await
        .map(drop)
}

fn hierarchy() -> (tempfile::TempDir, Authority) {
    let dir = tempfile::tempdir().unwrap();
    let authority = Authority::init(dir.path(), "test").unwrap();
    authority
        .issue(&Identity::site("CEN").unwrap(), &[], DEFAULT_VALIDITY)
        .unwrap();
    authority
        .issue(&Identity::operator("alice").unwrap(), &[], DEFAULT_VALIDITY)
        .unwrap();
    (dir, authority)
}

#[tokio::test]
async fn an_operator_of_the_hierarchy_is_served_and_identified() {
    let (pki, _authority) = hierarchy();
    let server = serve(pki.path(), "CEN").await;
    let (_, channel) = client(
        pki.path(),
        &Identity::operator("alice").unwrap(),
        &server.address,
    );
    check(channel).await.unwrap();
    assert_eq!(
        *server.seen.lock().unwrap(),
        vec!["operator alice".to_owned()]
    );
}

#[tokio::test]
async fn a_publisher_certificate_opens_no_connection() {
    let (pki, authority) = hierarchy();
    let vendor = sitesync_security::Vendor::new("Contoso Ltd").unwrap();
    let expires = time::OffsetDateTime::now_utc() + time::Duration::days(30);
    authority
        .issue_publisher("contoso", &vendor, expires)
        .unwrap();
    let server = serve(pki.path(), "CEN").await;
    let (_, channel) = client(
        pki.path(),
        &Identity::publisher("contoso").unwrap(),
        &server.address,
    );
    // The server refuses the handshake: the certificate is not for client authentication.
    let refused = check(channel).await.unwrap_err();
    assert!(
        format!("{refused:?}").contains("UnsupportedCertificate"),
        "{refused:?}"
    );
    assert!(server.seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_certificate_from_another_authority_is_refused_both_ways() {
    let (pki, _authority) = hierarchy();
    let (other, _other_authority) = hierarchy();
    let server = serve(pki.path(), "CEN").await;
    // A client of another hierarchy.
    let (_, channel) = client(
        other.path(),
        &Identity::operator("alice").unwrap(),
        &server.address,
    );
    let refused = check(channel).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    assert!(server.seen.lock().unwrap().is_empty());
    // A server of another hierarchy, reached by a client of ours.
    let foreign = serve(other.path(), "CEN").await;
    let (_, channel) = client(
        pki.path(),
        &Identity::operator("alice").unwrap(),
        &foreign.address,
    );
    assert!(check(channel).await.is_err());
    assert!(foreign.seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_rotated_certificate_is_used_without_a_restart_and_a_revoked_one_is_refused() {
    let (pki, authority) = hierarchy();
    let server = serve(pki.path(), "CEN").await;
    let alice = Identity::operator("alice").unwrap();
    let (context, channel) = client(pki.path(), &alice, &server.address);
    check(channel.clone()).await.unwrap();

    // Rotation: a new certificate and key for alice and for the server; both reload.
    let rotated = authority.issue(&alice, &[], DEFAULT_VALIDITY).unwrap();
    authority
        .issue(&Identity::site("CEN").unwrap(), &[], DEFAULT_VALIDITY)
        .unwrap();
    assert!(context.reload_if_changed().unwrap());
    assert!(server.context.reload_if_changed().unwrap());
    let (_, fresh) = client(pki.path(), &alice, &server.address);
    check(fresh).await.unwrap();

    // Revocation of the rotated certificate: the server reloads its revocation list. The
    // connection already open is refused on its next call, a new one at the handshake.
    let (_, open) = client(pki.path(), &alice, &server.address);
    check(open.clone()).await.unwrap();
    authority.revoke(&rotated.certificate).unwrap();
    assert!(server.context.reload_if_changed().unwrap());
    let refused = check(open).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    assert!(refused.message().contains("revoked"), "{refused:?}");
    let (_, new_connection) = client(pki.path(), &alice, &server.address);
    // Under TLS 1.3 the client learns of the refusal after its side of the handshake, so
    // the call fails as Unavailable or Unknown; either way the server served nothing.
    let refused = check(new_connection).await.unwrap_err();
    assert!(
        matches!(
            refused.code(),
            tonic::Code::Unavailable | tonic::Code::Unknown
        ),
        "{refused:?}"
    );
    let seen = server.seen.lock().unwrap().len();
    assert_eq!(seen, 3, "only the calls before the revocation were served");
}

/// A health server with mutual TLS that records each caller's identity and refuses calls
/// without a valid one (as the node's authorization does).
async fn serve_with(context: Arc<TlsContext>) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let (_reporter, health) = tonic_health::server::health_reporter();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (record, check) = (seen.clone(), context.clone());
    let interceptor = move |request: tonic::Request<()>| {
        let identity = peer_identity(&request, &check)
            .map_err(|e| tonic::Status::permission_denied(e.to_string()))?;
        record.lock().unwrap().push(identity.to_string());
        Ok(request)
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let incoming = tls_incoming(listener, context.clone());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(tonic::service::interceptor::InterceptedService::new(
                health,
                interceptor,
            ))
            .serve_with_incoming_shutdown(incoming, async {
                let _ = stopped.await;
            }),
    );
    Server {
        address,
        context,
        seen,
        _stop: stop,
    }
}
