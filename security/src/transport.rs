//! How sitesync connections are made: mutual TLS by default, plaintext only when an
//! operator asked for it explicitly.
//!
//! - [`Transport::channel`]: a lazily connecting tonic channel to `host:port`; with TLS,
//!   each new connection uses the newest [`TlsMaterial`](crate::tls::TlsMaterial).
//! - [`tls_incoming`]: accepted TCP connections after a TLS handshake, for
//!   `tonic::transport::Server::serve_with_incoming_shutdown`. Handshakes run concurrently
//!   with a time limit, so one slow or hostile peer holds back nobody;
//!   [`tls_incoming_observed`] also tells a caller of each failed handshake (the node counts
//!   them for its metrics).
//! - [`peer_identity`]: the identity of the peer of a call, from its certificate.

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint, Uri};
use tracing::{debug, warn};

use crate::identity::Identity;
use crate::tls::TlsContext;

/// How long a TLS handshake may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once; more connections wait to be accepted.
const MAX_HANDSHAKES: usize = 256;

/// Plaintext or mutual TLS.
#[derive(Debug, Clone)]
pub enum Transport {
    Tls(Arc<TlsContext>),
    /// Only behind an explicit insecure flag.
    Plaintext,
}

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("`{address}` is not an address to connect to ({reason}): give host:port")]
    Address { address: String, reason: String },
}

impl Transport {
    pub fn is_tls(&self) -> bool {
        matches!(self, Self::Tls(_))
    }

    /// A channel to `address` (`host:port`, an `http://` or `https://` prefix is dropped)
    /// that connects on first use; `configure` sets time limits and the like.
    pub fn channel(
        &self,
        address: &str,
        configure: impl FnOnce(Endpoint) -> Endpoint,
    ) -> Result<Channel, TransportError> {
        let endpoint = configure(endpoint(address)?);
        Ok(match self {
            Self::Plaintext => endpoint.connect_lazy(),
            Self::Tls(context) => endpoint.connect_with_connector_lazy(tls_connector(context)),
        })
    }

    /// [`Transport::channel`], connected now: a peer that cannot be reached, or that
    /// refuses the handshake, is an error here rather than on the first call.
    pub async fn connect(
        &self,
        address: &str,
        configure: impl FnOnce(Endpoint) -> Endpoint,
    ) -> Result<Channel, ConnectError> {
        let endpoint = configure(endpoint(address)?);
        Ok(match self {
            Self::Plaintext => endpoint.connect().await?,
            Self::Tls(context) => {
                endpoint
                    .connect_with_connector(tls_connector(context))
                    .await?
            }
        })
    }
}

/// Why [`Transport::connect`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(transparent)]
    Address(#[from] TransportError),
    #[error(transparent)]
    Connect(#[from] tonic::transport::Error),
}

/// The endpoint of `address`. The scheme is only a label: TLS, when on, is done by the
/// connector.
fn endpoint(address: &str) -> Result<Endpoint, TransportError> {
    let bare = address
        .strip_prefix("https://")
        .or_else(|| address.strip_prefix("http://"))
        .unwrap_or(address)
        .trim_end_matches('/');
    Endpoint::from_shared(format!("http://{bare}")).map_err(|e| TransportError::Address {
        address: address.to_owned(),
        reason: e.to_string(),
    })
}

/// Dials TCP and completes a TLS handshake with the newest material of `context`.
fn tls_connector(
    context: &Arc<TlsContext>,
) -> impl tower::Service<
    Uri,
    Response = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>,
    Error = std::io::Error,
    Future = impl Future + Send,
> + Clone
+ Send
+ 'static {
    let context = context.clone();
    tower::service_fn(move |uri: Uri| {
        let context = context.clone();
        async move { connect_tls(&context, &uri).await }
    })
}

async fn connect_tls(
    context: &TlsContext,
    uri: &Uri,
) -> Result<TokioIo<tokio_rustls::client::TlsStream<TcpStream>>, std::io::Error> {
    let invalid = |reason: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, reason);
    let host = uri
        .host()
        .ok_or_else(|| invalid(format!("`{uri}` has no host")))?;
    let port = uri
        .port_u16()
        .ok_or_else(|| invalid(format!("`{uri}` has no port")))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let server_name = ServerName::try_from(host.to_owned())
        .map_err(|e| invalid(format!("`{host}` is not a server name: {e}")))?;
    let tcp = TcpStream::connect((host, port)).await?;
    tcp.set_nodelay(true)?;
    let connector = tokio_rustls::TlsConnector::from(context.current().client.clone());
    let stream = tokio::time::timeout(HANDSHAKE_TIMEOUT, connector.connect(server_name, tcp))
        .await
        .map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!(
                    "the TLS handshake with {host}:{port} took longer than {HANDSHAKE_TIMEOUT:?}"
                ),
            )
        })??;
    Ok(TokioIo::new(stream))
}

/// Why an incoming TLS handshake failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeFailure {
    /// The peer had no valid certificate of the hierarchy, or broke the protocol.
    Refused,
    /// The handshake did not finish within [`HANDSHAKE_TIMEOUT`].
    TimedOut,
}

impl HandshakeFailure {
    /// A word for the failure, as logs and metrics label it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Refused => "refused",
            Self::TimedOut => "timeout",
        }
    }
}

/// The connections of `listener` that completed a TLS handshake with a certificate of the
/// hierarchy's CA. Refused handshakes are logged with the peer's address and the reason.
/// Ends when the returned stream is dropped.
pub fn tls_incoming(
    listener: TcpListener,
    context: Arc<TlsContext>,
) -> ReceiverStream<Result<TlsStream<TcpStream>, std::io::Error>> {
    tls_incoming_observed(listener, context, |_| {})
}

/// [`tls_incoming`], calling `on_failure` for each handshake that fails.
pub fn tls_incoming_observed(
    listener: TcpListener,
    context: Arc<TlsContext>,
    on_failure: impl Fn(HandshakeFailure) + Send + Sync + 'static,
) -> ReceiverStream<Result<TlsStream<TcpStream>, std::io::Error>> {
    let on_failure = Arc::new(on_failure);
    let (sender, receiver) = tokio::sync::mpsc::channel(64);
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
    tokio::spawn(async move {
        loop {
            let Ok(permit) = permits.clone().acquire_owned().await else {
                return;
            };
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = sender.closed() => return,
            };
            let (tcp, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = tokio_rustls::TlsAcceptor::from(context.current().server.clone());
            let sender = sender.clone();
            let on_failure = on_failure.clone();
            tokio::spawn(async move {
                let _permit = permit;
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let _ = sender.send(Ok(stream)).await;
                    }
                    Ok(Err(e)) => {
                        warn!(%peer, reason = %e, "TLS handshake refused");
                        on_failure(HandshakeFailure::Refused);
                    }
                    Err(_) => {
                        debug!(%peer, "TLS handshake timed out");
                        on_failure(HandshakeFailure::TimedOut);
                    }
                }
            });
        }
    });
    ReceiverStream::new(receiver)
}

/// Why a call has no usable peer identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerError {
    #[error("the call came without a client certificate")]
    NoCertificate,
    #[error("the client certificate is revoked")]
    Revoked,
    #[error("{0}")]
    Identity(String),
}

/// The identity of the peer of `request`, from its TLS certificate, checked against the
/// newest revocation list of `context`.
pub fn peer_identity<T>(
    request: &tonic::Request<T>,
    context: &TlsContext,
) -> Result<Identity, PeerError> {
    let certificates = request.peer_certs().ok_or(PeerError::NoCertificate)?;
    let leaf = certificates.first().ok_or(PeerError::NoCertificate)?;
    if context.current().is_revoked(leaf) {
        return Err(PeerError::Revoked);
    }
    Identity::from_certificate(leaf).map_err(|e| PeerError::Identity(e.to_string()))
}
