//! SOAP faults: how an upstream server refuses a request (HTTP 500 with a `soap:Fault` body),
//! classified by the `ErrorCode` in the fault's `detail` so the client can react to each kind.
//!
//! WSUS writes `Fault{faultcode, faultstring "Fault occurred", faultactor, detail{ErrorCode,
//! Message, ID, Method}}`, the children unqualified. Only `ErrorCode` classifies; the
//! `faultcode` (`soap:Client` or `soap:Server`) and `faultstring` say nothing more.

use std::fmt;

use crate::xml::{Element, Ns, Reader, ResponseError};

/// What the upstream server's `ErrorCode` says went wrong, with the client's usual reaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultKind {
    /// The cookie is missing, unreadable or expired: authenticate again from GetAuthConfig, then
    /// resume.
    InvalidCookie,
    /// GetCookie refused the authorization cookie: authenticate again from GetAuthConfig.
    InvalidAuthorizationCookie,
    /// The upstream server is another server than before: drop every anchor and sync in full.
    ServerChanged,
    /// The upstream server is overloaded: back off and try later.
    ServerBusy,
    /// A parameter was refused; `message` names it: `filter` for a bad anchor (drop it and sync
    /// in full), `updateIds` for too many ids (send smaller batches).
    InvalidParameters { message: String },
    /// The server failed. In GetUpdateData also the answer to one unknown id or revision: split
    /// the batch to find it.
    InternalServerError,
    /// The server does not speak the protocol version sent in GetCookie.
    IncompatibleProtocolVersion,
    /// Any other `ErrorCode`, or a fault without one (then `code` is the `faultcode`); `text`
    /// is the `Message`, else the `faultstring`. Stop the run.
    Other { code: String, text: String },
}

impl FaultKind {
    fn classify(
        error_code: Option<&str>,
        message: &str,
        fault_code: &str,
        fault_string: &str,
    ) -> Self {
        let other = |code: &str| FaultKind::Other {
            code: code.to_owned(),
            text: if message.is_empty() {
                fault_string.to_owned()
            } else {
                message.to_owned()
            },
        };
        match error_code {
            Some("InvalidCookie") => FaultKind::InvalidCookie,
            Some("InvalidAuthorizationCookie") => FaultKind::InvalidAuthorizationCookie,
            Some("ServerChanged") => FaultKind::ServerChanged,
            Some("ServerBusy") => FaultKind::ServerBusy,
            Some("InvalidParameters") => FaultKind::InvalidParameters {
                message: message.to_owned(),
            },
            Some("InternalServerError") => FaultKind::InternalServerError,
            Some("IncompatibleProtocolVersion") => FaultKind::IncompatibleProtocolVersion,
            Some(code) => other(code),
            None => other(fault_code),
        }
    }
}

/// A SOAP fault from the upstream server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SoapFault {
    pub kind: FaultKind,
    /// `faultcode` as written (`soap:Client`, `soap:Server`).
    pub fault_code: String,
    pub fault_string: String,
    /// The `ID` of the fault in the server's log, worth quoting to its operator.
    pub id: Option<String>,
    /// The SOAPAction the server was handling, as written (quoted).
    pub method: Option<String>,
}

impl fmt::Display for SoapFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            FaultKind::InvalidParameters { message } if !message.is_empty() => {
                write!(f, "InvalidParameters (parameter `{message}`)")?
            }
            FaultKind::InvalidParameters { .. } => f.write_str("InvalidParameters")?,
            FaultKind::Other { code, text } if text.is_empty() => write!(f, "{code}")?,
            FaultKind::Other { code, text } => write!(f, "{code}: {text}")?,
            kind => write!(f, "{kind:?}")?,
        }
        if let Some(method) = &self.method {
            write!(f, " in {}", method.trim_matches('"'))?;
        }
        if let Some(id) = &self.id {
            write!(f, " (server log id {id})")?;
        }
        Ok(())
    }
}

/// Reads the `Fault` element just opened, up to its end tag.
pub(crate) fn read_fault<'i>(
    reader: &mut Reader<'i, '_>,
    fault: &Element<'i>,
) -> Result<SoapFault, ResponseError> {
    let mut fault_code = None;
    let mut fault_string = None;
    let mut detail = Detail::default();
    reader.children(|reader, child| {
        // SOAP 1.1 leaves the fault's children unqualified; some writers qualify them.
        if !matches!(child.ns, Ns::None | Ns::Soap) {
            return reader.skip();
        }
        match child.local {
            "faultcode" => set_once(reader, &child, &mut fault_code),
            "faultstring" => set_once(reader, &child, &mut fault_string),
            "detail" => reader.children(|reader, item| match item.local {
                "ErrorCode" => set_once(reader, &item, &mut detail.error_code),
                "Message" => set_once(reader, &item, &mut detail.message),
                "ID" => set_once(reader, &item, &mut detail.id),
                "Method" => set_once(reader, &item, &mut detail.method),
                _ => reader.skip(),
            }),
            _ => reader.skip(),
        }
    })?;
    let fault_code = fault_code.ok_or_else(|| ResponseError::MissingElement {
        element: "faultcode",
        at: reader.locate(fault),
    })?;
    let fault_string = fault_string.unwrap_or_default();
    let message = detail.message.unwrap_or_default();
    let kind = FaultKind::classify(
        detail.error_code.as_deref().filter(|c| !c.is_empty()),
        &message,
        &fault_code,
        &fault_string,
    );
    Ok(SoapFault {
        kind,
        fault_code,
        fault_string,
        id: detail.id.filter(|s| !s.is_empty()),
        method: detail.method.filter(|s| !s.is_empty()),
    })
}

#[derive(Default)]
struct Detail {
    error_code: Option<String>,
    message: Option<String>,
    id: Option<String>,
    method: Option<String>,
}

fn set_once(
    reader: &mut Reader<'_, '_>,
    element: &Element<'_>,
    slot: &mut Option<String>,
) -> Result<(), ResponseError> {
    let text = reader.text(element)?.trim().to_owned();
    if slot.replace(text).is_some() {
        return Err(ResponseError::DuplicateElement {
            at: reader.locate(element),
        });
    }
    Ok(())
}
