//! Why a call to the upstream server failed, one variant per reaction the sync has to choose,
//! each naming the server and the operation so that its text can go into a status message
//! (6703) as it is.

use std::time::Duration;

use sitesync_wsus::{Operation, ResponseError, ServerRoot, SoapFault};

#[derive(Debug, thiserror::Error)]
pub enum WsusError {
    /// The settings cannot be used (an unreadable CA file, a malformed proxy URL, no trust
    /// roots on this system). Nothing was sent.
    #[error("cannot set up the connection to the upstream server {server}: {reason}")]
    Setup { server: ServerRoot, reason: String },

    /// The server is another one than before: the caller drops every anchor and syncs in
    /// full.
    #[error(
        "{operation} at the upstream server {server}: the server reports that it has changed \
         (ServerChanged); every anchor is dropped and the next sync is a full one"
    )]
    ServerChanged {
        server: ServerRoot,
        operation: Operation,
    },

    /// The server kept answering `ServerBusy` through every retry.
    #[error(
        "{operation} at the upstream server {server}: the server is busy (ServerBusy), still \
         after {attempts} attempts; the sync is tried again later"
    )]
    ServerBusy {
        server: ServerRoot,
        operation: Operation,
        attempts: u32,
    },

    /// A parameter was refused; `message` names it: `filter` for an anchor the server no
    /// longer accepts (the caller may drop it and list in full), `updateIds` for a batch
    /// larger than `MaxNumberOfUpdatesPerRequest`.
    #[error(
        "{operation} at the upstream server {server}: the server refused a parameter \
         (InvalidParameters{})",
        if message.is_empty() { String::new() } else { format!(", `{message}`") }
    )]
    InvalidParameters {
        server: ServerRoot,
        operation: Operation,
        message: String,
    },

    /// The server failed. In GetUpdateData this is also the answer to a batch that holds one
    /// revision the server cannot serve: the caller splits the batch to find it.
    #[error(
        "{operation} at the upstream server {server}: the server failed \
         (InternalServerError{})",
        fault_id.as_ref().map(|id| format!(", server log id {id}")).unwrap_or_default()
    )]
    InternalServerError {
        server: ServerRoot,
        operation: Operation,
        fault_id: Option<String>,
    },

    /// The server refused this server's authorization although it was just obtained anew:
    /// `InvalidCookie` again after a new handshake, or `InvalidAuthorizationCookie` for a
    /// fresh authorization cookie.
    #[error(
        "{operation} at the upstream server {server}: the server refuses this server's \
         authorization ({fault}) even after a new handshake; check the server's clock and \
         whether it accepts downstream servers"
    )]
    NotAuthorized {
        server: ServerRoot,
        operation: Operation,
        fault: String,
    },

    #[error(
        "GetCookie at the upstream server {server}: the server does not speak protocol version \
         {version} (IncompatibleProtocolVersion); configure another version"
    )]
    IncompatibleProtocolVersion { server: ServerRoot, version: String },

    /// Any other fault; the text says what the server said.
    #[error(
        "{operation} at the upstream server {server}: the server answered with a fault: {fault}"
    )]
    Fault {
        server: ServerRoot,
        operation: Operation,
        fault: Box<SoapFault>,
    },

    /// No answer through every retry: the connection could not be made or was dropped.
    #[error(
        "{operation} at the upstream server {server}: no answer after {attempts} attempts: \
         {reason}"
    )]
    Unreachable {
        server: ServerRoot,
        operation: Operation,
        attempts: u32,
        reason: String,
    },

    /// No complete answer within the request timeout, through every retry.
    #[error(
        "{operation} at the upstream server {server}: no complete answer within {timeout:?}, \
         {attempts} attempts"
    )]
    TimedOut {
        server: ServerRoot,
        operation: Operation,
        attempts: u32,
        timeout: Duration,
    },

    /// An HTTP status that carries no SOAP answer: a 5xx through every retry (a stopped
    /// application pool answers 503), or a 4xx (a wrong server root gives 404), which is not
    /// retried.
    #[error(
        "{operation} at the upstream server {server}: HTTP {status} without a SOAP answer, \
         after {attempts} attempts{}",
        if *status == 404 { "; is the server root right?" } else { "" }
    )]
    Http {
        server: ServerRoot,
        operation: Operation,
        status: u16,
        attempts: u32,
    },

    /// The TLS handshake failed: the server's certificate is not trusted (configure the CA
    /// file) or does not name the server. Not retried.
    #[error(
        "{operation} at the upstream server {server}: the TLS handshake failed: {reason}; if \
         the server's certificate comes from a private CA, configure that CA's certificate file"
    )]
    Tls {
        server: ServerRoot,
        operation: Operation,
        reason: String,
    },

    /// The answer was refused unread or unparsed: too large, not well-formed, a DOCTYPE, not
    /// the answer asked for. The server is not trusted to have meant anything by it.
    #[error("{operation} at the upstream server {server}: the answer is refused: {reason}")]
    Refused {
        server: ServerRoot,
        operation: Operation,
        reason: ResponseError,
    },

    /// GetAuthConfig named no usable authorization service.
    #[error("GetAuthConfig at the upstream server {server}: {reason}")]
    AuthConfig { server: ServerRoot, reason: String },
}

impl WsusError {
    /// The operation that failed (for a failed handshake, the handshake's step).
    pub fn operation(&self) -> Option<Operation> {
        match self {
            WsusError::Setup { .. } => None,
            WsusError::IncompatibleProtocolVersion { .. } => Some(Operation::GetCookie),
            WsusError::AuthConfig { .. } => Some(Operation::GetAuthConfig),
            WsusError::ServerChanged { operation, .. }
            | WsusError::ServerBusy { operation, .. }
            | WsusError::InvalidParameters { operation, .. }
            | WsusError::InternalServerError { operation, .. }
            | WsusError::NotAuthorized { operation, .. }
            | WsusError::Fault { operation, .. }
            | WsusError::Unreachable { operation, .. }
            | WsusError::TimedOut { operation, .. }
            | WsusError::Http { operation, .. }
            | WsusError::Tls { operation, .. }
            | WsusError::Refused { operation, .. } => Some(*operation),
        }
    }

    /// Whether the same call may well succeed later unchanged: the server was busy or could
    /// not be reached. The others need a change (of anchors, batch, settings) or an operator.
    pub fn is_transient(&self) -> bool {
        match self {
            WsusError::ServerBusy { .. }
            | WsusError::Unreachable { .. }
            | WsusError::TimedOut { .. } => true,
            WsusError::Http { status, .. } => *status >= 500,
            _ => false,
        }
    }
}
