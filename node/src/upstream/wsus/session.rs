//! The node's session with one upstream server: the three calls a sync makes, each behind the
//! authorization it needs, retried where retrying can help.
//!
//! Authorization is lazy and kept: the first call does the handshake (GetAuthConfig, then
//! GetAuthorizationCookie at the service GetAuthConfig names, then GetCookie) and keeps the
//! authorization cookie and the session cookie. A call made when the session cookie has less
//! than [`WsusSettings::cookie_renewal_margin`] left renews it first with GetCookie, sending
//! the old cookie while it is still valid (the specification asks for it; an expired one must
//! not be sent), and falls back to a whole handshake if the server refuses. A call answered
//! `InvalidCookie` (the server forgot the cookie, or its clock runs ahead) drops the
//! authorization, does a whole handshake and is repeated once.
//!
//! Every request is tried up to [`RetryPolicy::attempts`] times while the server is busy or
//! cannot be reached, waiting as the project's [`Backoff`] says and never more than
//! [`RetryPolicy::budget`] in all. Everything else fails the call at once as a
//! [`WsusError`] that names the server and the operation.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use sitesync_metadata::RevisionId;
use sitesync_wsus::{
    Anchor, AuthorizationCookie, ConfigData, Cookie, FaultKind, Limits, Operation, ResponseError,
    RevisionFilter, RevisionIdList, ServerRoot, SoapFault, SoapRequest, UpdateDataBatch,
};
use tokio::sync::Mutex;
use tracing::Instrument as _;
use uuid::Uuid;

use super::error::WsusError;
use super::http::{self, AttemptError};
use super::settings::{RetryPolicy, WsusSettings};
use crate::clock::{Backoff, Clock, TimestampExt as _};

/// A session with the upstream server of [`WsusSettings::server`]. Calls may run
/// concurrently; they share the authorization, and only one of them renews it at a time.
pub struct Session {
    settings: WsusSettings,
    http: reqwest::Client,
    /// The Server Sync service's URL, where every operation but GetAuthorizationCookie goes.
    server_sync_url: String,
    /// Cookie expiry is judged on this clock, and retries wait on it.
    clock: Arc<dyn Clock>,
    /// `None` before the first call and after the server refused the cookie. Held during a
    /// handshake, so concurrent calls wait for one handshake instead of making their own.
    authorization: Mutex<Option<Authorization>>,
}

impl fmt::Debug for Session {
    /// Without cookies: they are credentials.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("server", &self.settings.server.as_str())
            .finish_non_exhaustive()
    }
}

/// What the handshake bought.
struct Authorization {
    /// Exchanged for a new session cookie at renewal, without a whole handshake.
    authorization_cookie: AuthorizationCookie,
    /// Carried by every call.
    cookie: Cookie,
}

/// How a request failed after its retries, before it is put into a [`WsusError`].
enum Failure {
    /// A SOAP fault other than `ServerBusy`: the caller decides what it means where.
    Fault(Box<SoapFault>),
    Error(WsusError),
}

impl From<WsusError> for Failure {
    fn from(error: WsusError) -> Self {
        Failure::Error(error)
    }
}

impl Session {
    /// A session with the upstream server the settings name. Sends nothing: the first call
    /// authenticates.
    pub fn new(settings: WsusSettings, clock: Arc<dyn Clock>) -> Result<Self, WsusError> {
        let http = http::client(&settings).map_err(|reason| WsusError::Setup {
            server: settings.server.clone(),
            reason,
        })?;
        Ok(Self {
            server_sync_url: settings.server.server_sync_url(),
            settings,
            http,
            clock,
            authorization: Mutex::new(None),
        })
    }

    pub fn server(&self) -> &ServerRoot {
        &self.settings.server
    }

    /// GetConfigData: the server's configuration, with `MaxNumberOfUpdatesPerRequest` (the
    /// largest batch for [`Session::update_data`]). With the `NewConfigAnchor` of the last
    /// answer the server leaves out what did not change.
    pub async fn config(&self, config_anchor: Option<&Anchor>) -> Result<ConfigData, WsusError> {
        self.call(
            Operation::GetConfigData,
            |cookie| sitesync_wsus::get_config_data(cookie, config_anchor),
            sitesync_wsus::parse_config_data,
        )
        .await
    }

    /// GetRevisionIdList: the revisions new or changed since the filter's anchor (all without
    /// one), and the anchor to keep once they are stored.
    pub async fn revision_list(
        &self,
        filter: &RevisionFilter,
    ) -> Result<RevisionIdList, WsusError> {
        self.call(
            Operation::GetRevisionIdList,
            |cookie| sitesync_wsus::get_revision_id_list(cookie, filter),
            sitesync_wsus::parse_revision_id_list,
        )
        .await
    }

    /// GetUpdateData: the documents of `revisions`, at most `MaxNumberOfUpdatesPerRequest`
    /// of them. The blobs come still encoded: decode each with `UpdateBlob::decode`, so a
    /// bad one costs only its own revision. Nothing is sent for no revisions.
    pub async fn update_data(
        &self,
        revisions: &[RevisionId],
    ) -> Result<UpdateDataBatch, WsusError> {
        if revisions.is_empty() {
            return Ok(UpdateDataBatch {
                updates: Vec::new(),
                file_urls: Vec::new(),
            });
        }
        self.call(
            Operation::GetUpdateData,
            |cookie| sitesync_wsus::get_update_data(cookie, revisions),
            sitesync_wsus::parse_update_data,
        )
        .await
    }

    /// One call with the session cookie: authorized first if need be, and repeated once
    /// after a new handshake if the server refuses the cookie.
    async fn call<T>(
        &self,
        operation: Operation,
        build: impl Fn(&Cookie) -> SoapRequest,
        parse: fn(&[u8], &Limits) -> Result<T, ResponseError>,
    ) -> Result<T, WsusError> {
        let span = tracing::info_span!(
            "wsus.call",
            otel.name = format!("{operation} (upstream WSUS)"),
            otel.kind = "client",
            operation = operation.name(),
            server = self.settings.server.as_str(),
            otel.status_code = tracing::field::Empty,
        );
        async {
            let mut handshake_redone = false;
            loop {
                let cookie = self.cookie().await?;
                let request = build(&cookie);
                match self.exchange(&self.server_sync_url, &request, parse).await {
                    Ok(answer) => return Ok(answer),
                    Err(Failure::Fault(fault))
                        if fault.kind == FaultKind::InvalidCookie && !handshake_redone =>
                    {
                        tracing::info!(
                            "the server refused the session cookie; authenticating again"
                        );
                        self.forget(&cookie).await;
                        handshake_redone = true;
                    }
                    // Refused again after a new handshake: `NotAuthorized`.
                    Err(failure) => return Err(self.error(operation, failure)),
                }
            }
        }
        .instrument(span.clone())
        .await
        .inspect_err(|error| {
            span.record("otel.status_code", "ERROR");
            tracing::warn!(parent: &span, %error, "call to the upstream server failed");
        })
    }

    /// A session cookie good for a call now: the kept one, a renewed one, or one from a new
    /// handshake.
    async fn cookie(&self) -> Result<Cookie, WsusError> {
        let mut kept = self.authorization.lock().await;
        let now = self.clock.now();
        if let Some(authorization) = kept.as_mut() {
            let expires_at = authorization.cookie.expires_at;
            if now.saturating_add(self.settings.cookie_renewal_margin) < expires_at {
                return Ok(authorization.cookie.clone());
            }
            // An expired cookie must not be sent, not even as `oldCookie`.
            let old = (now < expires_at).then_some(&authorization.cookie);
            let request = sitesync_wsus::get_cookie(
                &authorization.authorization_cookie,
                old,
                &self.settings.protocol_version,
            );
            match self
                .exchange(&self.server_sync_url, &request, sitesync_wsus::parse_cookie)
                .await
            {
                Ok(cookie) => {
                    tracing::debug!("renewed the session cookie");
                    authorization.cookie = cookie.clone();
                    return Ok(cookie);
                }
                Err(Failure::Fault(fault))
                    if matches!(
                        fault.kind,
                        FaultKind::InvalidAuthorizationCookie | FaultKind::InvalidCookie
                    ) =>
                {
                    tracing::info!(
                        fault = %fault,
                        "the server refused to renew the session cookie; authenticating again"
                    );
                }
                Err(failure) => return Err(self.error(Operation::GetCookie, failure)),
            }
        }
        *kept = None;
        let authorization = self
            .handshake()
            .instrument(tracing::info_span!(
                "wsus.handshake",
                otel.name = "handshake (upstream WSUS)",
                server = self.settings.server.as_str(),
            ))
            .await?;
        let cookie = authorization.cookie.clone();
        *kept = Some(authorization);
        Ok(cookie)
    }

    /// GetAuthConfig, GetAuthorizationCookie at the service it names, GetCookie.
    async fn handshake(&self) -> Result<Authorization, WsusError> {
        let server = &self.settings.server;
        let auth_config = self
            .exchange(
                &self.server_sync_url,
                &sitesync_wsus::get_auth_config(),
                sitesync_wsus::parse_auth_config,
            )
            .await
            .map_err(|failure| self.error(Operation::GetAuthConfig, failure))?;
        let plug_in = auth_config
            .dss_targeting()
            .ok_or_else(|| WsusError::AuthConfig {
                server: server.clone(),
                reason: "the server offers no DssTargeting authorization: it does not serve \
                         downstream servers"
                    .to_owned(),
            })?;
        let auth_url = server
            .resolve_service_url(&plug_in.service_url)
            .map_err(|e| WsusError::AuthConfig {
                server: server.clone(),
                reason: e.to_string(),
            })?;
        let guid = self.settings.account_guid.unwrap_or_else(Uuid::new_v4);
        let authorization_cookie = self
            .exchange(
                &auth_url,
                &sitesync_wsus::get_authorization_cookie(&self.settings.account_name, guid),
                sitesync_wsus::parse_authorization_cookie,
            )
            .await
            .map_err(|failure| self.error(Operation::GetAuthorizationCookie, failure))?;
        let request =
            sitesync_wsus::get_cookie(&authorization_cookie, None, &self.settings.protocol_version);
        let cookie = self
            .exchange(&self.server_sync_url, &request, sitesync_wsus::parse_cookie)
            .await
            .map_err(|failure| match failure {
                // Refused although just issued: the server will not take this server.
                Failure::Fault(fault)
                    if matches!(
                        fault.kind,
                        FaultKind::InvalidAuthorizationCookie | FaultKind::InvalidCookie
                    ) =>
                {
                    WsusError::NotAuthorized {
                        server: server.clone(),
                        operation: Operation::GetCookie,
                        fault: fault.to_string(),
                    }
                }
                failure => self.error(Operation::GetCookie, failure),
            })?;
        tracing::info!(
            expires_at = %cookie.expires_at,
            "authenticated with the upstream server"
        );
        Ok(Authorization {
            authorization_cookie,
            cookie,
        })
    }

    /// Drops the authorization if it still holds `refused`, so the next call authenticates
    /// anew; a concurrent call may already have replaced it.
    async fn forget(&self, refused: &Cookie) {
        let mut kept = self.authorization.lock().await;
        if kept
            .as_ref()
            .is_some_and(|a| a.cookie.encrypted_data == refused.encrypted_data)
        {
            *kept = None;
        }
    }

    /// One request, tried again while the server is busy or unreachable, within the retry
    /// policy.
    async fn exchange<T>(
        &self,
        url: &str,
        request: &SoapRequest,
        parse: fn(&[u8], &Limits) -> Result<T, ResponseError>,
    ) -> Result<T, Failure> {
        let RetryPolicy {
            attempts: max_attempts,
            first_delay,
            max_delay,
            budget,
        } = self.settings.retry;
        let mut backoff = Backoff::new(first_delay, max_delay);
        let mut waited = Duration::ZERO;
        let mut attempts = 0;
        loop {
            attempts += 1;
            let error =
                match http::post(&self.http, url, request, &self.settings.limits, parse).await {
                    Ok(answer) => return Ok(answer),
                    Err(error) => error,
                };
            let delay = backoff.next_delay();
            if !error.is_retriable()
                || attempts >= max_attempts.max(1)
                || waited.saturating_add(delay) > budget
            {
                return Err(self.failure(request.operation, attempts, error));
            }
            tracing::warn!(
                operation = request.operation.name(),
                attempt = attempts,
                retry_in = ?delay,
                reason = %error.summary(),
                "the upstream server did not answer; trying again"
            );
            self.clock.sleep(delay).await;
            waited += delay;
        }
    }

    /// What an attempt's error means once no retry is left.
    fn failure(&self, operation: Operation, attempts: u32, error: AttemptError) -> Failure {
        let server = self.settings.server.clone();
        Failure::Error(match error {
            AttemptError::Answer(ResponseError::Fault(fault)) => {
                if fault.kind == FaultKind::ServerBusy {
                    WsusError::ServerBusy {
                        server,
                        operation,
                        attempts,
                    }
                } else {
                    return Failure::Fault(fault);
                }
            }
            AttemptError::Answer(reason) => WsusError::Refused {
                server,
                operation,
                reason,
            },
            AttemptError::Connection(reason) => WsusError::Unreachable {
                server,
                operation,
                attempts,
                reason,
            },
            AttemptError::TimedOut => WsusError::TimedOut {
                server,
                operation,
                attempts,
                timeout: self.settings.request_timeout,
            },
            AttemptError::Tls(reason) => WsusError::Tls {
                server,
                operation,
                reason,
            },
            AttemptError::Status(status) => WsusError::Http {
                server,
                operation,
                status,
                attempts,
            },
        })
    }

    /// The error a failure of `operation` is for the caller.
    fn error(&self, operation: Operation, failure: Failure) -> WsusError {
        let fault = match failure {
            Failure::Error(error) => return error,
            Failure::Fault(fault) => fault,
        };
        let server = self.settings.server.clone();
        match &fault.kind {
            FaultKind::ServerChanged => WsusError::ServerChanged { server, operation },
            FaultKind::ServerBusy => WsusError::ServerBusy {
                server,
                operation,
                attempts: 1,
            },
            FaultKind::InvalidParameters { message } => WsusError::InvalidParameters {
                server,
                operation,
                message: message.clone(),
            },
            FaultKind::InternalServerError => WsusError::InternalServerError {
                server,
                operation,
                fault_id: fault.id.clone(),
            },
            FaultKind::IncompatibleProtocolVersion => WsusError::IncompatibleProtocolVersion {
                server,
                version: self.settings.protocol_version.to_string(),
            },
            FaultKind::InvalidCookie | FaultKind::InvalidAuthorizationCookie => {
                WsusError::NotAuthorized {
                    server,
                    operation,
                    fault: fault.to_string(),
                }
            }
            FaultKind::Other { .. } => WsusError::Fault {
                server,
                operation,
                fault,
            },
        }
    }
}
