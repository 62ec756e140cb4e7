//! HTTP under the session: the client (rustls on ring with the configured trust roots, the
//! configured proxy, no redirects) and one POST of a SOAP request whose answer is read up to
//! the size limit and handed to the operation's parser.
//!
//! An attempt ends in an answer or an [`AttemptError`] that says whether trying again can
//! help; the session decides whether to.

use std::error::Error as StdError;
use std::sync::Arc;

use reqwest::header::{CONTENT_TYPE, HeaderValue};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;
use rustls_platform_verifier::BuilderVerifierExt as _;
use sitesync_wsus::{FaultKind, Limits, ResponseError, SoapRequest};

use super::settings::{ProxySetting, WsusSettings, without_userinfo};

/// How one attempt at a request failed.
#[derive(Debug)]
pub(super) enum AttemptError {
    /// No connection, or it closed before the answer was complete.
    Connection(String),
    /// The request timeout (or the connect timeout) passed.
    TimedOut,
    /// The TLS handshake failed: an untrusted or wrong certificate.
    Tls(String),
    /// An HTTP status that carries no SOAP answer (anything but 200, or a 500 that is not
    /// XML).
    Status(u16),
    /// The parser's verdict on the body: a SOAP fault, or a refused answer.
    Answer(ResponseError),
}

impl AttemptError {
    /// Whether the same request may succeed if tried again shortly.
    pub(super) fn is_retriable(&self) -> bool {
        match self {
            AttemptError::Connection(_) | AttemptError::TimedOut => true,
            AttemptError::Status(status) => *status >= 500,
            AttemptError::Answer(ResponseError::Fault(fault)) => {
                fault.kind == FaultKind::ServerBusy
            }
            AttemptError::Tls(_) | AttemptError::Answer(_) => false,
        }
    }

    /// A short description for the retry log (never a body).
    pub(super) fn summary(&self) -> String {
        match self {
            AttemptError::Connection(reason) | AttemptError::Tls(reason) => reason.clone(),
            AttemptError::TimedOut => "timed out".to_owned(),
            AttemptError::Status(status) => format!("HTTP {status}"),
            AttemptError::Answer(ResponseError::Fault(fault)) => fault.to_string(),
            AttemptError::Answer(refused) => refused.to_string(),
        }
    }
}

/// The HTTP client for one upstream server. Built once per session: it keeps connections
/// alive between requests.
pub(super) fn client(settings: &WsusSettings) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder()
        .tls_backend_preconfigured(tls_config(settings)?)
        .connect_timeout(settings.connect_timeout)
        .timeout(settings.request_timeout)
        // A redirect would turn the POST into a GET, or carry the cookie to another server.
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("sitesync/", env!("CARGO_PKG_VERSION")));
    builder = match &settings.proxy {
        // reqwest reads the environment's proxy variables unless told otherwise.
        ProxySetting::FromEnvironment => builder,
        ProxySetting::Direct => builder.no_proxy(),
        ProxySetting::Url(url) => {
            let proxy = reqwest::Proxy::all(url.as_str()).map_err(|e| {
                format!(
                    "the proxy `{}` is not a usable URL: {e}",
                    without_userinfo(url)
                )
            })?;
            builder.proxy(proxy)
        }
    };
    builder
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {}", error_chain(&e)))
}

/// TLS 1.2 and 1.3 with ring, trusting the configured CA file or else the system's roots.
fn tls_config(settings: &WsusSettings) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("cannot set up TLS: {e}"))?;
    if let Some(path) = &settings.ca_file {
        let unreadable =
            |e: &dyn std::fmt::Display| format!("cannot read the CA file {}: {e}", path.display());
        let mut roots = rustls::RootCertStore::empty();
        for certificate in CertificateDer::pem_file_iter(path).map_err(|e| unreadable(&e))? {
            let certificate = certificate.map_err(|e| unreadable(&e))?;
            roots.add(certificate).map_err(|e| {
                format!(
                    "the CA file {} holds a certificate that cannot be a trust root: {e}",
                    path.display()
                )
            })?;
        }
        if roots.is_empty() {
            return Err(format!(
                "the CA file {} holds no PEM certificate",
                path.display()
            ));
        }
        return Ok(builder.with_root_certificates(roots).with_no_client_auth());
    }
    match builder.clone().with_platform_verifier() {
        Ok(builder) => Ok(builder.with_no_client_auth()),
        // A plain-HTTP upstream needs no roots; a system without any must not stop it.
        Err(_) if is_plain_http(settings) => Ok(builder
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth()),
        Err(e) => Err(format!(
            "cannot load the system's trust roots ({e}); install the distribution's CA \
             certificates, or configure the CA file of the server's certificate"
        )),
    }
}

fn is_plain_http(settings: &WsusSettings) -> bool {
    let plain = |url: &str| {
        url.get(..7)
            .is_some_and(|scheme| scheme.eq_ignore_ascii_case("http://"))
    };
    plain(settings.server.as_str())
        && match &settings.proxy {
            ProxySetting::Url(proxy) => plain(proxy),
            ProxySetting::FromEnvironment | ProxySetting::Direct => true,
        }
}

/// Posts `request` to `url` and hands the answer to `parse`. The body is read only for HTTP
/// 200 and 500 (faults come with 500), and never past `limits.max_response_bytes`, whatever
/// `Content-Length` says.
pub(super) async fn post<T>(
    client: &reqwest::Client,
    url: &str,
    request: &SoapRequest,
    limits: &Limits,
    parse: fn(&[u8], &Limits) -> Result<T, ResponseError>,
) -> Result<T, AttemptError> {
    let response = client
        .post(url)
        .header(
            CONTENT_TYPE,
            HeaderValue::from_static(sitesync_wsus::CONTENT_TYPE),
        )
        .header("SOAPAction", request.soap_action_header())
        .body(request.body.clone())
        .send()
        .await
        .map_err(|e| transport_error(&e))?;
    let status = response.status().as_u16();
    let xml = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.to_ascii_lowercase().contains("xml"));
    // IIS answers its own errors (a stopped pool, a crashed handler) in HTML.
    if status != 200 && !(status == 500 && xml) {
        return Err(AttemptError::Status(status));
    }
    let body = read_capped(response, limits.max_response_bytes).await?;
    parse(&body, limits).map_err(|e| match e {
        ResponseError::Empty | ResponseError::NotSoap { .. } if status == 500 => {
            AttemptError::Status(status)
        }
        e => AttemptError::Answer(e),
    })
}

/// The body, refused as soon as it is known to exceed `limit`: from `Content-Length` when
/// that announces more, else by counting, so a body that lies or announces nothing is never
/// buffered past the limit.
async fn read_capped(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, AttemptError> {
    let too_large = |size: usize| AttemptError::Answer(ResponseError::TooLarge { size, limit });
    let declared = response.content_length();
    if let Some(declared) = declared
        && declared > limit as u64
    {
        return Err(too_large(usize::try_from(declared).unwrap_or(usize::MAX)));
    }
    // The declared size may be a lie in the other direction too: reserve at most 1 MiB.
    let reserve = declared.map_or(0, |d| usize::try_from(d).unwrap_or(0).min(1 << 20));
    let mut body = Vec::with_capacity(reserve);
    while let Some(chunk) = response.chunk().await.map_err(|e| transport_error(&e))? {
        let size = body.len().saturating_add(chunk.len());
        if size > limit {
            return Err(too_large(size));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn transport_error(error: &reqwest::Error) -> AttemptError {
    if let Some(tls) = tls_cause(error) {
        return AttemptError::Tls(tls.to_string());
    }
    if error.is_timeout() {
        return AttemptError::TimedOut;
    }
    // reqwest's own words for a failed request ("error sending request for url (…)") repeat
    // the URL; its causes say what happened.
    let cause = match error.source() {
        Some(cause) if error.is_request() || error.is_connect() => cause,
        _ => error,
    };
    AttemptError::Connection(error_chain(cause))
}

/// The rustls error somewhere under `error`. hyper-rustls wraps it in an `io::Error`, and
/// the connector that in another: an `io::Error`'s `source` skips the error it wraps, so
/// those are unwrapped by hand.
fn tls_cause<'e>(error: &'e (dyn StdError + 'static)) -> Option<&'e rustls::Error> {
    let mut next = Some(error);
    while let Some(current) = next {
        if let Some(tls) = current.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        next = match current
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(wrapped) => Some(wrapped as &(dyn StdError + 'static)),
            None => current.source(),
        };
    }
    None
}

/// `error` and its causes, each once: reqwest's own text says little ("error sending
/// request"), the cause says what happened ("connection refused").
fn error_chain(error: &(dyn StdError + 'static)) -> String {
    let mut text = error.to_string();
    let mut next = error.source();
    while let Some(cause) = next {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        next = cause.source();
    }
    text
}
