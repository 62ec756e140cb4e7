//! What the node's configuration says about the upstream WSUS server: plain data with
//! defaults, filled by `config.rs` and read once by [`super::Session::new`].
//!
//! Values that the protocol codec can check are already of its types ([`ServerRoot`],
//! [`ProtocolVersion`]), so a bad URL or version is refused where the configuration is read,
//! not at the first sync.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use sitesync_wsus::{Limits, ProtocolVersion, ServerRoot};
use uuid::Uuid;

/// How the top site reaches its upstream server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsusSettings {
    /// Microsoft Update ([`ServerRoot::microsoft_update`], the default) or a WSUS:
    /// `http://host:8530`, `https://host:8531`.
    pub server: ServerRoot,
    /// A PEM file of the certificate authorities to trust for an `https` server, **instead
    /// of** the system's roots: for a WSUS whose certificate an enterprise CA issued. Without
    /// it the system's roots are trusted (what `SSL_CERT_FILE` / `SSL_CERT_DIR` or the
    /// distribution's bundle hold).
    pub ca_file: Option<PathBuf>,
    pub proxy: ProxySetting,
    /// Sent in GetCookie. WSUS 10 and later speak 1.20 (the default); Microsoft's own client
    /// sends 1.7 to Microsoft Update.
    pub protocol_version: ProtocolVersion,
    /// `accountName` of GetAuthorizationCookie: this server's DNS name. WSUS and Microsoft
    /// Update accept any valid name from an anonymous downstream server.
    pub account_name: String,
    /// `accountGuid` of GetAuthorizationCookie; `None` sends a new random one at each
    /// handshake, as Microsoft's client does.
    pub account_guid: Option<Uuid>,
    /// Longest wait for a TCP connection (and the TLS handshake) to the server or the proxy.
    pub connect_timeout: Duration,
    /// Longest time one request may take, from connecting until its answer is read whole.
    /// Revision lists have no paging, so the whole list of Microsoft Update comes in one
    /// answer: Microsoft's client allows 3 minutes, the default is 5.
    pub request_timeout: Duration,
    /// The session cookie is renewed when less than this is left before it expires, so that
    /// no request carries a cookie that expires on the way (Microsoft's client: 2 minutes).
    pub cookie_renewal_margin: Duration,
    pub retry: RetryPolicy,
    /// Bounds on every answer: its size (checked while reading, whatever `Content-Length`
    /// says), nesting, lists and values.
    pub limits: Limits,
}

impl Default for WsusSettings {
    fn default() -> Self {
        Self {
            server: ServerRoot::microsoft_update(),
            ca_file: None,
            proxy: ProxySetting::default(),
            protocol_version: ProtocolVersion::default(),
            account_name: Self::DEFAULT_ACCOUNT_NAME.to_owned(),
            account_guid: None,
            connect_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(5 * 60),
            cookie_renewal_margin: Duration::from_secs(2 * 60),
            retry: RetryPolicy::default(),
            limits: Limits::default(),
        }
    }
}

impl WsusSettings {
    /// `accountName` when the configuration names none: a valid DNS label, which is all an
    /// upstream checks.
    pub const DEFAULT_ACCOUNT_NAME: &'static str = "sitesync-top-site";

    /// The defaults, for the upstream at `server`.
    pub fn for_server(server: ServerRoot) -> Self {
        Self {
            server,
            ..Self::default()
        }
    }
}

/// Whether requests go through an HTTP proxy.
#[derive(Clone, Default, PartialEq, Eq)]
pub enum ProxySetting {
    /// As the environment says, the way curl reads it: `HTTPS_PROXY` for an `https` server,
    /// `HTTP_PROXY` for an `http` one, `ALL_PROXY` for both, `NO_PROXY` for the hosts to
    /// reach directly (lower-case names too; `HTTP_PROXY` is ignored when `REQUEST_METHOD`
    /// is set, as in a CGI). Direct when none is set.
    #[default]
    FromEnvironment,
    /// Never through a proxy, whatever the environment says.
    Direct,
    /// Every request through this proxy (`http://proxy:3128`, credentials allowed as
    /// `http://user:password@proxy:3128`); the environment is not read.
    Url(String),
}

impl fmt::Debug for ProxySetting {
    /// Without the credentials a proxy URL may carry.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProxySetting::FromEnvironment => f.write_str("FromEnvironment"),
            ProxySetting::Direct => f.write_str("Direct"),
            ProxySetting::Url(url) => f.debug_tuple("Url").field(&without_userinfo(url)).finish(),
        }
    }
}

/// `url` with any `user:password@` taken out, for logs and error messages.
pub(crate) fn without_userinfo(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) if scheme.is_empty() => format!("***@{}", &rest[at + 1..]),
        Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
        None => url.to_owned(),
    }
}

/// How often and how long one request is tried again when the server is busy
/// (`ServerBusy`) or cannot be reached (no connection, a dropped connection, a timeout, an
/// HTTP 5xx that is not a SOAP answer). The waits double from `first_delay` up to
/// `max_delay` ([`crate::clock::Backoff`]). A request that still fails fails the call: the
/// sync is then retried as a whole, 60 minutes later (S9).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Most tries of one request, the first included; 1 never retries.
    pub attempts: u32,
    pub first_delay: Duration,
    pub max_delay: Duration,
    /// Most time waited between the tries of one request, in all: a retry whose wait would
    /// pass it is not made.
    pub budget: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 5,
            first_delay: Duration::from_secs(2),
            max_delay: Duration::from_secs(60),
            budget: Duration::from_secs(3 * 60),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_credentials_never_show() {
        let proxy = ProxySetting::Url("http://alice:secret@proxy.example:3128/".into());
        let shown = format!("{proxy:?}");
        assert!(
            !shown.contains("secret") && !shown.contains("alice"),
            "{shown}"
        );
        assert!(shown.contains("proxy.example:3128"), "{shown}");
        assert_eq!(
            without_userinfo("http://proxy:3128"),
            "http://proxy:3128".to_owned()
        );
        assert_eq!(without_userinfo("u:p@proxy:1"), "***@proxy:1");
    }
}
