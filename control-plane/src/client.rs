//! Talking to a node: the connection, the runtime node commands run on, and what a gRPC
//! failure means to an operator.
//!
//! [`connect`] is the only place a channel is built, so certificates (issue 5) join the
//! connection there and nowhere else. Every call goes through [`unary`] (a deadline) and its
//! failure through [`call_failed`], which turns a status code into one sentence an operator
//! can act on. A node that cannot be reached becomes [`NodeUnreachable`], which the binary
//! reports with exit status 2 so scripts can tell "the node is down" from "the node said no".

use std::error::Error as _;
use std::fmt;
use std::time::Duration;

use anyhow::bail;
use sitesync_proto::MAX_MESSAGE_BYTES;
use sitesync_proto::v1::admin_client::AdminClient;
use sitesync_proto::v1::client_policy_client::ClientPolicyClient;
use tonic::transport::{Channel, Uri};
use tonic::{Code, Request, Status};

use std::path::Path;

use sitesync_security::transport::ConnectError;
use sitesync_security::{Identity, TlsContext, TlsFiles, Transport};

use crate::cli::{ClientTlsArgs, DEFAULT_NODE_PKI_DIR, NodeArgs};

/// The port of a node address given without one: the update server's HTTP port, as WSUS 3.0
/// uses it and as the node listens by default.
pub const DEFAULT_PORT: u16 = 8530;

/// How long connecting may take before the node counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a unary call may take. Generous: listings of large stores page, so no single
/// call should come near it, and a node that does not answer in this time is stuck.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// HTTP/2 pings while a stream (`WatchSync`) is idle, so a node that vanished without
/// closing the connection is noticed instead of waited on forever.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(20);
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// The node at `address` could not be reached (connection refused, no route, timed out,
/// connection lost). The binary exits with status 2 on this error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeUnreachable {
    /// The address as dialled (with its scheme).
    pub address: String,
    /// The innermost cause, such as `Connection refused (os error 111)`.
    pub reason: String,
}

impl fmt::Display for NodeUnreachable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot reach the node at {}: {}; is it running? set --node or SITESYNC_NODE",
            self.address, self.reason
        )
    }
}

impl std::error::Error for NodeUnreachable {}

/// Whether `error` is, or was caused by, [`NodeUnreachable`].
pub fn is_unreachable(error: &anyhow::Error) -> bool {
    error
        .chain()
        .any(|cause| cause.downcast_ref::<NodeUnreachable>().is_some())
}

/// A current-thread runtime for one node command: the CLI does one thing at a time.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

/// The URI `--node` names: `host:port` gains `http://`, a missing port is
/// [`DEFAULT_PORT`], and anything but a bare `http://host[:port]` is refused with a reason.
pub fn node_uri(address: &str) -> anyhow::Result<Uri> {
    let address = address.trim();
    if address.is_empty() {
        bail!("--node is empty: give the node's address as host:port, such as 127.0.0.1:8530");
    }
    let with_scheme = match address.split_once("://") {
        Some(("http", _)) => address.to_owned(),
        Some(("https", rest)) => format!("http://{rest}"),
        Some((scheme, _)) => {
            bail!("`{address}`: unknown scheme `{scheme}`; give host:port or http://host:port")
        }
        None => format!("http://{address}"),
    };
    let uri: Uri = with_scheme.parse().map_err(|e| {
        anyhow::anyhow!(
            "`{address}` is not a node address ({e}); give host:port, such as 127.0.0.1:8530"
        )
    })?;
    let Some(authority) = uri.authority() else {
        bail!("`{address}` names no host; give host:port, such as 127.0.0.1:8530");
    };
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        bail!("`{address}`: a node address has no path; give host:port, such as 127.0.0.1:8530");
    }
    if authority.port().is_some() {
        return Ok(uri);
    }
    format!("http://{}:{DEFAULT_PORT}", authority.host())
        .parse()
        .map_err(|e| anyhow::anyhow!("`{address}` is not a node address ({e})"))
}

/// How sitesyncctl reaches nodes, from its TLS flags: mutual TLS with the operator's
/// certificate, or plaintext with `--insecure`.
pub fn transport(tls: &ClientTlsArgs) -> anyhow::Result<Transport> {
    let explicit = [&tls.ca, &tls.certificate, &tls.key];
    let any_file = explicit.iter().any(|file| file.is_some());
    if tls.insecure {
        if tls.pki_dir.is_some() || any_file {
            bail!(
                "--insecure asks for plaintext, and certificates are given too: drop --insecure \
                 to use them (or unset SITESYNC_PKI_DIR / SITESYNC_CA)"
            );
        }
        return Ok(Transport::Plaintext);
    }
    let files = match (&tls.pki_dir, &tls.ca, &tls.certificate, &tls.key) {
        (Some(_), _, _, _) if any_file => {
            bail!("give either --pki-dir or --ca, --certificate and --key, not both")
        }
        (Some(dir), ..) => operator_files(dir, &tls.operator)?,
        (None, Some(ca), Some(certificate), Some(key)) => TlsFiles {
            ca: ca.clone(),
            certificate: certificate.clone(),
            key: key.clone(),
            crl: None,
        },
        (None, ..) if any_file => bail!("give all three of --ca, --certificate and --key"),
        (None, ..) => {
            let dir = Path::new(DEFAULT_NODE_PKI_DIR);
            if !dir.join("ca.pem").exists() {
                bail!(
                    "sitesyncctl speaks mutual TLS to nodes and has no certificate: give \
                     --pki-dir DIR (made by `sitesyncctl pki`, or a top site's <data dir>/pki) \
                     or --ca, --certificate and --key; --insecure for a node started with \
                     --insecure"
                );
            }
            operator_files(dir, &tls.operator)?
        }
    };
    let context = TlsContext::load(files)
        .map_err(|e| anyhow::anyhow!("cannot load the operator's certificate: {e}"))?;
    Ok(Transport::Tls(context))
}

/// The files of operator `name` in the PKI directory `dir`, which must exist.
fn operator_files(dir: &Path, name: &str) -> anyhow::Result<TlsFiles> {
    let identity = Identity::operator(name)?;
    let files = TlsFiles::in_pki_dir(dir, &identity);
    for (what, path) in [
        ("CA certificate", &files.ca),
        ("certificate", &files.certificate),
        ("key", &files.key),
    ] {
        if !path.exists() {
            bail!(
                "{} has no {what} for {identity} ({}): issue one with `sitesyncctl pki issue \
                 operator {name} --dir {}`, or pick another with --operator",
                dir.display(),
                path.display(),
                dir.display()
            );
        }
    }
    Ok(files)
}

/// Connects to the node `--node` names, with the operator's certificate unless
/// `--insecure`. The one place a channel is set up: certificates, timeouts and keep-alive.
pub async fn connect(node: &NodeArgs) -> anyhow::Result<(Channel, String, Transport)> {
    let transport = transport(&node.tls)?;
    let uri = node_uri(&node.address)?;
    let scheme = if transport.is_tls() { "https" } else { "http" };
    let address = format!(
        "{scheme}://{}",
        uri.authority().map(|a| a.as_str()).unwrap_or_default()
    );
    let channel = transport
        .connect(&uri.to_string(), |endpoint| {
            endpoint
                .connect_timeout(CONNECT_TIMEOUT)
                .tcp_nodelay(true)
                .http2_keep_alive_interval(KEEP_ALIVE_INTERVAL)
                .keep_alive_timeout(KEEP_ALIVE_TIMEOUT)
                .keep_alive_while_idle(true)
        })
        .await
        .map_err(|error| connect_failed(&address, &error))?;
    Ok((channel, address, transport))
}

/// The innermost cause of `error` when it is a failed TLS exchange (rustls reports those
/// as invalid data): a certificate refused on either side.
fn tls_failure(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cause = Some(error);
    while let Some(current) = cause {
        if current
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::InvalidData)
        {
            return Some(innermost_cause(current));
        }
        cause = current.source();
    }
    None
}

/// A failed connection: unreachable (exit status 2), unless the TLS handshake failed, which
/// is the node or its certificate saying no.
fn connect_failed(address: &str, error: &ConnectError) -> anyhow::Error {
    let reason = innermost_cause(error);
    if tls_failure(error).is_some() {
        anyhow::anyhow!(
            "the TLS handshake with the node at {address} failed: {reason}; are the node and \
             this certificate from the same CA, and is the certificate valid and not revoked?"
        )
    } else {
        NodeUnreachable {
            address: address.to_owned(),
            reason,
        }
        .into()
    }
}

/// A connected node: the clients of the services operators use, over one channel.
#[derive(Debug, Clone)]
pub struct Node {
    /// The address dialled (`http://host:port`), for messages.
    pub address: String,
    /// `sitesync.v1.Admin`, the operator's surface.
    pub admin: AdminClient<Channel>,
    /// `sitesync.v1.ClientPolicy`, what clients read (`policy --as-client`).
    pub client_policy: ClientPolicyClient<Channel>,
    /// The CA material the operator trusts, to check signed catalog versions with; `None`
    /// over plaintext.
    pub trust: Option<std::sync::Arc<TlsContext>>,
}

impl Node {
    /// Connects and prepares the clients, with [`MAX_MESSAGE_BYTES`] as the limit both ways:
    /// an update with a maximal document must fit in one `GetUpdate` response.
    pub async fn connect(args: &NodeArgs) -> anyhow::Result<Self> {
        let (channel, address, transport) = connect(args).await?;
        Ok(Self {
            address,
            admin: AdminClient::new(channel.clone())
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
            client_policy: ClientPolicyClient::new(channel)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
            trust: match transport {
                Transport::Tls(context) => Some(context),
                Transport::Plaintext => None,
            },
        })
    }

    /// What a failed call of `rpc` (`Admin.GetSiteStatus`) means; see [`call_failed`].
    pub fn failed(&self, rpc: &str, status: Status) -> anyhow::Error {
        call_failed(&self.address, rpc, status)
    }
}

/// A unary request with the call deadline.
pub fn unary<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.set_timeout(CALL_TIMEOUT);
    request
}

/// One sentence for a failed call of `rpc` at the node at `address`.
///
/// UNAVAILABLE (the connection failed or was lost) becomes [`NodeUnreachable`]. Refusals
/// that carry the node's reason (FAILED_PRECONDITION: "manual sync is refused at a child
/// site"; PERMISSION_DENIED and UNAUTHENTICATED: the rule that refused us) print that reason,
/// since the node wrote it for the operator.
pub fn call_failed(address: &str, rpc: &str, status: Status) -> anyhow::Error {
    // With TLS 1.3 the node checks the operator's certificate after the client finished
    // its side of the handshake, so a refusal arrives as the first call's failure.
    if let Some(source) = status.source()
        && let Some(reason) = tls_failure(source)
    {
        return anyhow::anyhow!(
            "the node at {address} refused the TLS connection ({reason}): is this certificate \
             from the node's CA, valid and not revoked?"
        );
    }
    let message = printable(status.message());
    let message = if message.is_empty() {
        "(the node gave no reason)".to_owned()
    } else {
        message
    };
    match status.code() {
        Code::Unavailable => {
            let reason = status
                .source()
                .map(innermost_cause)
                .unwrap_or_else(|| message.clone());
            NodeUnreachable {
                address: address.to_owned(),
                reason,
            }
            .into()
        }
        Code::FailedPrecondition | Code::NotFound | Code::AlreadyExists | Code::OutOfRange => {
            anyhow::anyhow!("{message}")
        }
        Code::PermissionDenied => {
            anyhow::anyhow!("the node refused {rpc}: permission denied: {message}")
        }
        Code::Unauthenticated => {
            anyhow::anyhow!("the node refused {rpc}: not authenticated: {message}")
        }
        Code::InvalidArgument => anyhow::anyhow!("the node refused {rpc}: {message}"),
        Code::Unimplemented => anyhow::anyhow!(
            "the node at {address} does not offer {rpc} ({message}); is it a sitesync node of \
             this version?"
        ),
        Code::DeadlineExceeded => {
            anyhow::anyhow!("the node at {address} did not answer {rpc} in time ({message})")
        }
        Code::ResourceExhausted => anyhow::anyhow!("{rpc}: {message}"),
        code => anyhow::anyhow!("{rpc} failed: {code:?}: {message}"),
    }
}

/// Whether a failed call would fail the same way if made again, so a command that retries
/// (`tree --watch`) should stop: the node refused the operator (permission,
/// authentication, the TLS exchange), the request, or does not offer the call. A node that
/// is down, slow or failing for a while is worth asking again.
pub fn is_lasting(status: &Status) -> bool {
    if status.source().and_then(tls_failure).is_some() {
        return true;
    }
    matches!(
        status.code(),
        Code::PermissionDenied
            | Code::Unauthenticated
            | Code::InvalidArgument
            | Code::Unimplemented
    )
}

/// The innermost cause of an error chain, which is where transport errors keep the useful
/// part (`Connection refused (os error 111)` under `transport error`).
fn innermost_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(next) = cause.source() {
        cause = next;
    }
    printable(&cause.to_string())
}

/// Text from the node with control characters replaced, so a reason or title cannot move the
/// cursor or recolour the operator's terminal.
pub fn printable(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() && c != '\n' {
                '�'
            } else {
                c
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_addresses() {
        let uri = |a: &str| node_uri(a).map(|u| u.to_string());
        assert_eq!(uri("127.0.0.1:8530").unwrap(), "http://127.0.0.1:8530/");
        assert_eq!(
            uri("http://node.example:9000").unwrap(),
            "http://node.example:9000/"
        );
        assert_eq!(uri(" cen.example ").unwrap(), "http://cen.example:8530/");
        assert_eq!(uri("[::1]:8530").unwrap(), "http://[::1]:8530/");
        assert_eq!(uri("http://[::1]").unwrap(), "http://[::1]:8530/");
        for bad in ["", "ftp://a:1", "a:1/path", "http://", "a b:1"] {
            assert!(node_uri(bad).is_err(), "{bad:?} accepted");
        }
        // TLS is chosen by the flags; an https:// address says the same.
        assert_eq!(uri("https://a:1").unwrap(), "http://a:1/");
    }

    #[test]
    fn unavailable_means_unreachable() {
        let error = call_failed(
            "http://127.0.0.1:1",
            "Admin.GetSiteStatus",
            Status::unavailable("connection reset"),
        );
        let unreachable = error.downcast_ref::<NodeUnreachable>().unwrap();
        assert_eq!(
            unreachable.to_string(),
            "cannot reach the node at http://127.0.0.1:1: connection reset; is it running? set \
             --node or SITESYNC_NODE"
        );
    }

    #[test]
    fn refusals_carry_the_nodes_reason() {
        let failed = |status| call_failed("http://n:1", "Admin.RunSync", status).to_string();
        assert_eq!(
            failed(Status::failed_precondition(
                "manual sync is refused at a child site"
            )),
            "manual sync is refused at a child site"
        );
        assert_eq!(
            failed(Status::permission_denied(
                "rule `operators-only`: CN=x is not an operator"
            )),
            "the node refused Admin.RunSync: permission denied: rule `operators-only`: CN=x is \
             not an operator"
        );
        assert!(
            failed(Status::unauthenticated("no client certificate")).contains("not authenticated")
        );
        assert!(failed(Status::unimplemented("")).contains("does not offer Admin.RunSync"));
        assert!(failed(Status::internal("\u{1b}[31mboom")).contains("�[31mboom"));
    }

    #[test]
    fn only_refusals_are_lasting() {
        assert!(is_lasting(&Status::permission_denied("operators only")));
        assert!(is_lasting(&Status::unauthenticated("no certificate")));
        assert!(is_lasting(&Status::unimplemented("")));
        assert!(!is_lasting(&Status::unavailable("connection refused")));
        assert!(!is_lasting(&Status::deadline_exceeded("slow")));
        assert!(!is_lasting(&Status::internal("the store is busy")));
    }
}
