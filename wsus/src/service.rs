//! Where each operation is sent and how it is named: the two web services a downstream server
//! uses, their namespaces, the SOAPAction values, and the service URLs of an upstream server.

use std::fmt;

/// The namespace of the Server Sync web service: its operations, their children and types.
pub const SERVER_SYNC_NAMESPACE: &str = "http://www.microsoft.com/SoftwareDistribution";

/// The namespace of the DSS authorization web service (GetAuthorizationCookie).
pub const DSS_AUTH_NAMESPACE: &str =
    "http://www.microsoft.com/SoftwareDistribution/Server/DssAuthWebService";

/// The Server Sync service, relative to the server root.
pub const SERVER_SYNC_PATH: &str = "/ServerSyncWebService/ServerSyncWebService.asmx";

/// The DSS authorization service, relative to the server root. Upstream servers name it in
/// GetAuthConfig's `ServiceUrl`; resolve that with [`ServerRoot::resolve_service_url`] and use
/// this only as the conventional value.
pub const DSS_AUTH_PATH: &str = "/DssAuthWebService/DssAuthWebService.asmx";

/// The root of Microsoft Update's server-to-server endpoint.
pub const MICROSOFT_UPDATE_ROOT: &str = "https://sws.update.microsoft.com";

/// The `Content-Type` of every request. Do not also send `Accept-Encoding: xpress`: WSUS would
/// answer with Xpress-compressed bodies, which this crate does not decode.
pub const CONTENT_TYPE: &str = "text/xml; charset=utf-8";

/// The web service an operation belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Service {
    ServerSync,
    DssAuth,
}

impl Service {
    pub fn namespace(self) -> &'static str {
        match self {
            Service::ServerSync => SERVER_SYNC_NAMESPACE,
            Service::DssAuth => DSS_AUTH_NAMESPACE,
        }
    }
}

/// The operations a top site's downstream server uses, in the order of a sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    GetAuthConfig,
    GetAuthorizationCookie,
    GetCookie,
    GetConfigData,
    GetRevisionIdList,
    GetUpdateData,
}

impl Operation {
    pub const ALL: [Operation; 6] = [
        Operation::GetAuthConfig,
        Operation::GetAuthorizationCookie,
        Operation::GetCookie,
        Operation::GetConfigData,
        Operation::GetRevisionIdList,
        Operation::GetUpdateData,
    ];

    /// The operation's element name in the request body.
    pub fn name(self) -> &'static str {
        match self {
            Operation::GetAuthConfig => "GetAuthConfig",
            Operation::GetAuthorizationCookie => "GetAuthorizationCookie",
            Operation::GetCookie => "GetCookie",
            Operation::GetConfigData => "GetConfigData",
            Operation::GetRevisionIdList => "GetRevisionIdList",
            Operation::GetUpdateData => "GetUpdateData",
        }
    }

    pub fn service(self) -> Service {
        match self {
            Operation::GetAuthorizationCookie => Service::DssAuth,
            _ => Service::ServerSync,
        }
    }

    /// The SOAPAction URI, unquoted: the service namespace, `/`, the operation.
    pub fn soap_action(self) -> &'static str {
        match self {
            Operation::GetAuthConfig => {
                "http://www.microsoft.com/SoftwareDistribution/GetAuthConfig"
            }
            Operation::GetAuthorizationCookie => {
                "http://www.microsoft.com/SoftwareDistribution/Server/DssAuthWebService/GetAuthorizationCookie"
            }
            Operation::GetCookie => "http://www.microsoft.com/SoftwareDistribution/GetCookie",
            Operation::GetConfigData => {
                "http://www.microsoft.com/SoftwareDistribution/GetConfigData"
            }
            Operation::GetRevisionIdList => {
                "http://www.microsoft.com/SoftwareDistribution/GetRevisionIdList"
            }
            Operation::GetUpdateData => {
                "http://www.microsoft.com/SoftwareDistribution/GetUpdateData"
            }
        }
    }

    /// The `SOAPAction` header value: the URI in double quotes, as SOAP 1.1 and WSUS expect.
    pub fn soap_action_header(self) -> String {
        format!("\"{}\"", self.soap_action())
    }

    /// The element name of the answer (`<Operation>Response`).
    pub(crate) fn response_name(self) -> &'static str {
        match self {
            Operation::GetAuthConfig => "GetAuthConfigResponse",
            Operation::GetAuthorizationCookie => "GetAuthorizationCookieResponse",
            Operation::GetCookie => "GetCookieResponse",
            Operation::GetConfigData => "GetConfigDataResponse",
            Operation::GetRevisionIdList => "GetRevisionIdListResponse",
            Operation::GetUpdateData => "GetUpdateDataResponse",
        }
    }

    /// The element name of the result inside the answer (`<Operation>Result`).
    pub(crate) fn result_name(self) -> &'static str {
        match self {
            Operation::GetAuthConfig => "GetAuthConfigResult",
            Operation::GetAuthorizationCookie => "GetAuthorizationCookieResult",
            Operation::GetCookie => "GetCookieResult",
            Operation::GetConfigData => "GetConfigDataResult",
            Operation::GetRevisionIdList => "GetRevisionIdListResult",
            Operation::GetUpdateData => "GetUpdateDataResult",
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a server root or a service URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error(
        "`{0}` is not an upstream server root; expected `http://host[:port]` or \
         `https://host[:port]`, optionally with a path, without query or fragment"
    )]
    InvalidRoot(String),

    #[error("the upstream server's GetAuthConfig names no DSS authorization service URL")]
    EmptyServiceUrl,

    #[error(
        "the upstream server's authorization service URL `{0}` is not usable: expected a path \
         relative to the server root (such as `DssAuthWebService/DssAuthWebService.asmx`) or \
         an http(s) URL on the same server, without `..`, query or fragment"
    )]
    InvalidServiceUrl(String),

    #[error(
        "the upstream server's authorization service URL `{url}` is on another server than \
         `{root}`; refused so that the upstream cannot send this server's requests elsewhere"
    )]
    OtherServer { url: String, root: String },
}

/// The root URL of an upstream server (`http://wsus:8530`, [`MICROSOFT_UPDATE_ROOT`]), from
/// which the service URLs are formed. Kept without a trailing `/`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServerRoot {
    url: String,
}

impl ServerRoot {
    /// Checks `text` as a server root: an http or https URL with a host, optionally a path
    /// prefix (an upstream behind a reverse proxy), no query, fragment, or whitespace.
    pub fn parse(text: &str) -> Result<Self, UrlError> {
        let invalid = || UrlError::InvalidRoot(crate::xml::excerpt(text));
        let url = text.trim().trim_end_matches('/');
        let rest = strip_http_scheme(url).ok_or_else(invalid)?;
        let authority = rest.split('/').next().unwrap_or_default();
        if authority.is_empty()
            || authority.contains('@')
            || url.contains(['?', '#'])
            || url.chars().any(|c| c.is_whitespace() || c.is_control())
            || has_dot_segment(rest)
        {
            return Err(invalid());
        }
        Ok(Self {
            url: url.to_owned(),
        })
    }

    pub fn microsoft_update() -> Self {
        Self {
            url: MICROSOFT_UPDATE_ROOT.to_owned(),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.url
    }

    /// The URL of the Server Sync service (every operation but GetAuthorizationCookie).
    pub fn server_sync_url(&self) -> String {
        format!("{}{SERVER_SYNC_PATH}", self.url)
    }

    /// The conventional URL of the DSS authorization service; prefer the one GetAuthConfig
    /// names ([`ServerRoot::resolve_service_url`]).
    pub fn default_dss_auth_url(&self) -> String {
        format!("{}{DSS_AUTH_PATH}", self.url)
    }

    /// The URL of the service GetAuthConfig names in `ServiceUrl`. WSUS gives a path relative
    /// to the **server root** (`DssAuthWebService/DssAuthWebService.asmx`): it is joined to the
    /// root with one `/`, as Microsoft's client does, and not resolved RFC 3986-style against
    /// the Server Sync URL (that would give `/ServerSyncWebService/DssAuthWebService/…`). An
    /// absolute http(s) URL is accepted only on the root's own scheme, host and port.
    pub fn resolve_service_url(&self, service_url: &str) -> Result<String, UrlError> {
        let url = service_url.trim();
        if url.is_empty() {
            return Err(UrlError::EmptyServiceUrl);
        }
        let invalid = || UrlError::InvalidServiceUrl(crate::xml::excerpt(url));
        if url.contains(['?', '#', '\\'])
            || url.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(invalid());
        }
        if let Some(rest) = strip_http_scheme(url) {
            if has_dot_segment(rest) {
                return Err(invalid());
            }
            let origin = |u: &str| {
                let rest = strip_http_scheme(u).unwrap_or_default();
                let authority = rest.split('/').next().unwrap_or_default();
                let scheme = &u[..u.len() - rest.len()];
                (scheme.to_ascii_lowercase(), authority.to_ascii_lowercase())
            };
            if origin(url) != origin(&self.url) {
                return Err(UrlError::OtherServer {
                    url: crate::xml::excerpt(url),
                    root: self.url.clone(),
                });
            }
            return Ok(url.to_owned());
        }
        // A scheme other than http(s), or a network-path reference (`//host/…`).
        let first_segment = url.split('/').next().unwrap_or_default();
        if first_segment.contains(':') || url.starts_with("//") || has_dot_segment(url) {
            return Err(invalid());
        }
        Ok(format!("{}/{}", self.url, url.trim_start_matches('/')))
    }
}

impl fmt::Display for ServerRoot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.url)
    }
}

/// What follows `http://` or `https://` (scheme case-insensitive), or `None`.
fn strip_http_scheme(url: &str) -> Option<&str> {
    ["http://", "https://"].iter().find_map(|scheme| {
        url.get(..scheme.len())
            .filter(|head| head.eq_ignore_ascii_case(scheme))
            .map(|_| &url[scheme.len()..])
    })
}

/// Whether a path has a `.` or `..` segment, which would climb out of the server root.
fn has_dot_segment(path: &str) -> bool {
    path.split('/')
        .any(|segment| segment == "." || segment == "..")
}
