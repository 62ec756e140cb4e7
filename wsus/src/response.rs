//! Response parsers: one function per operation, from the HTTP body to the typed answer.
//!
//! Each parser walks the envelope (`Envelope/Body/<Operation>Response/<Operation>Result`) and
//! reads the result's children by local name, in any order, skipping elements it does not
//! know so that newer servers still parse. The operation's elements must be in the operation's
//! namespace, or in none; elements of other namespaces are extensions and skipped.
//!
//! A body holding a `soap:Fault` instead gives [`ResponseError::Fault`], whatever the parser:
//! the HTTP client can hand every body (status 200 or 500) to the parser of the operation it
//! called. [`parse_fault`] reads a fault on its own.

use std::borrow::Cow;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use sitesync_metadata::{RevisionId, Timestamp, UpdateId};

use crate::fault::{SoapFault, read_fault};
use crate::model::{
    Anchor, AuthConfig, AuthPlugIn, AuthorizationCookie, ConfigData, Cookie, FileUrl, LanguageData,
    RevisionIdList, UpdateBlob, UpdateData, UpdateDataBatch,
};
use crate::service::Operation;
use crate::xml::{Element, Limits, Ns, Reader, ResponseError, SOAP_ENVELOPE_NAMESPACE, excerpt};

/// GetAuthConfig's answer.
pub fn parse_auth_config(body: &[u8], limits: &Limits) -> Result<AuthConfig, ResponseError> {
    read_answer(body, limits, Operation::GetAuthConfig, |r, _result| {
        let mut last_change = None;
        let mut plug_ins = Vec::new();
        r.children(|r, child| match our(&child, Ns::ServerSync) {
            Some("LastChange") => set_once(r, &child, &mut last_change, text_of),
            Some("AuthInfo") => r.children(|r, info| match our(&info, Ns::ServerSync) {
                Some("AuthPlugInInfo") => {
                    room_for_one_more(r, &child, plug_ins.len())?;
                    let plug_in = read_plug_in(r, &info)?;
                    plug_ins.push(plug_in);
                    Ok(())
                }
                _ => r.skip(),
            }),
            _ => r.skip(),
        })?;
        Ok(AuthConfig {
            last_change: last_change.filter(|s: &String| !s.is_empty()),
            plug_ins,
        })
    })
}

fn read_plug_in(r: &mut Reader<'_, '_>, info: &Element<'_>) -> Result<AuthPlugIn, ResponseError> {
    let mut plug_in_id = None;
    let mut service_url = None;
    let mut parameter = None;
    r.children(|r, field| match our(&field, Ns::ServerSync) {
        // `PlugInID` here, `PlugInId` in the authorization cookie: both are accepted in both.
        Some("PlugInID" | "PlugInId") => set_once(r, &field, &mut plug_in_id, text_of),
        Some("ServiceUrl") => set_once(r, &field, &mut service_url, text_of),
        Some("Parameter") => set_once(r, &field, &mut parameter, text_of),
        _ => r.skip(),
    })?;
    Ok(AuthPlugIn {
        plug_in_id: required(r, info, plug_in_id, "PlugInID")?,
        service_url: required(r, info, service_url, "ServiceUrl")?,
        parameter: parameter.filter(|s: &String| !s.is_empty()),
    })
}

/// GetAuthorizationCookie's answer (the DSS authorization service).
pub fn parse_authorization_cookie(
    body: &[u8],
    limits: &Limits,
) -> Result<AuthorizationCookie, ResponseError> {
    read_answer(
        body,
        limits,
        Operation::GetAuthorizationCookie,
        |r, result| {
            let mut plug_in_id = None;
            let mut cookie_data = None;
            r.children(|r, child| match our(&child, Ns::DssAuth) {
                Some("PlugInId" | "PlugInID") => set_once(r, &child, &mut plug_in_id, text_of),
                Some("CookieData") => set_once(r, &child, &mut cookie_data, text_of),
                _ => r.skip(),
            })?;
            Ok(AuthorizationCookie {
                plug_in_id: required(r, result, plug_in_id, "PlugInId")?,
                cookie_data: required(r, result, cookie_data, "CookieData")?,
            })
        },
    )
}

/// GetCookie's answer: the session cookie.
pub fn parse_cookie(body: &[u8], limits: &Limits) -> Result<Cookie, ResponseError> {
    read_answer(body, limits, Operation::GetCookie, |r, result| {
        let mut expiration = None;
        let mut encrypted_data = None;
        r.children(|r, child| match our(&child, Ns::ServerSync) {
            Some("Expiration") => set_once(r, &child, &mut expiration, |r, e| {
                let text = text_of(r, e)?;
                let at = Timestamp::parse_iso8601(&text).ok_or_else(|| {
                    invalid(
                        r,
                        e,
                        &text,
                        "a date-time such as 2026-10-04T20:33:26.65455Z",
                    )
                })?;
                Ok((text, at))
            }),
            Some("EncryptedData") => set_once(r, &child, &mut encrypted_data, text_of),
            _ => r.skip(),
        })?;
        let (expiration, expires_at) = required(r, result, expiration, "Expiration")?;
        Ok(Cookie {
            expires_at,
            expiration,
            encrypted_data: required(r, result, encrypted_data, "EncryptedData")?,
        })
    })
}

/// GetConfigData's answer.
pub fn parse_config_data(body: &[u8], limits: &Limits) -> Result<ConfigData, ResponseError> {
    read_answer(body, limits, Operation::GetConfigData, |r, result| {
        let mut max_updates = None;
        let mut anchor = None;
        let mut catalog_only = None;
        let mut lazy = None;
        let mut psf = None;
        let mut version = None;
        let mut languages = Vec::new();
        r.children(|r, child| match our(&child, Ns::ServerSync) {
            Some("MaxNumberOfUpdatesPerRequest") => {
                set_once(r, &child, &mut max_updates, |r, e| {
                    let text = text_of(r, e)?;
                    parse_u32(&text)
                        .filter(|n| *n >= 1)
                        .ok_or_else(|| invalid(r, e, &text, "a positive integer"))
                })
            }
            Some("NewConfigAnchor") => set_once(r, &child, &mut anchor, text_of),
            Some("CatalogOnlySync") => set_once(r, &child, &mut catalog_only, bool_of),
            Some("LazySync") => set_once(r, &child, &mut lazy, bool_of),
            Some("ServerHostsPsfFiles") => set_once(r, &child, &mut psf, bool_of),
            Some("ProtocolVersion") => set_once(r, &child, &mut version, text_of),
            Some("LanguageUpdateList") => r.children(|r, item| match our(&item, Ns::ServerSync) {
                Some("ServerSyncLanguageData") => {
                    room_for_one_more(r, &child, languages.len())?;
                    let language = read_language(r, &item)?;
                    languages.push(language);
                    Ok(())
                }
                _ => r.skip(),
            }),
            _ => r.skip(),
        })?;
        Ok(ConfigData {
            max_updates_per_request: required(
                r,
                result,
                max_updates,
                "MaxNumberOfUpdatesPerRequest",
            )?,
            new_config_anchor: anchor.filter(|s: &String| !s.is_empty()).map(Anchor::new),
            catalog_only_sync: catalog_only.unwrap_or(false),
            lazy_sync: lazy.unwrap_or(false),
            server_hosts_psf_files: psf.unwrap_or(false),
            protocol_version: version.filter(|s: &String| !s.is_empty()),
            languages,
        })
    })
}

fn read_language(
    r: &mut Reader<'_, '_>,
    item: &Element<'_>,
) -> Result<LanguageData, ResponseError> {
    let mut id = None;
    let mut short_name = None;
    let mut long_name = None;
    let mut enabled = None;
    r.children(|r, field| match our(&field, Ns::ServerSync) {
        Some("LanguageID") => set_once(r, &field, &mut id, |r, e| {
            let text = text_of(r, e)?;
            parse_u32(&text).ok_or_else(|| invalid(r, e, &text, "a language id (LCID)"))
        }),
        Some("ShortLanguage") => set_once(r, &field, &mut short_name, text_of),
        Some("LongLanguage") => set_once(r, &field, &mut long_name, text_of),
        Some("Enabled") => set_once(r, &field, &mut enabled, bool_of),
        _ => r.skip(),
    })?;
    Ok(LanguageData {
        id: required(r, item, id, "LanguageID")?,
        short_name: required(r, item, short_name, "ShortLanguage")?,
        long_name: long_name.unwrap_or_default(),
        enabled: enabled.unwrap_or(false),
    })
}

/// GetRevisionIdList's answer.
pub fn parse_revision_id_list(
    body: &[u8],
    limits: &Limits,
) -> Result<RevisionIdList, ResponseError> {
    read_answer(body, limits, Operation::GetRevisionIdList, |r, result| {
        let mut anchor = None;
        let mut revisions = None;
        r.children(|r, child| match our(&child, Ns::ServerSync) {
            Some("Anchor") => set_once(r, &child, &mut anchor, text_of),
            Some("NewRevisions") => set_once(r, &child, &mut revisions, |r, list| {
                let mut revisions = Vec::new();
                r.children(|r, item| match our(&item, Ns::ServerSync) {
                    Some("UpdateIdentity") => {
                        room_for_one_more(r, list, revisions.len())?;
                        revisions.push(read_identity(r, &item)?);
                        Ok(())
                    }
                    _ => r.skip(),
                })?;
                Ok(revisions)
            }),
            _ => r.skip(),
        })?;
        let anchor: String = required(r, result, anchor, "Anchor")?;
        if anchor.is_empty() {
            return Err(ResponseError::InvalidValue {
                at: format!("{}/Anchor", r.locate(result)),
                value: String::new(),
                expected: "an anchor (the server must name the point this list runs up to)",
            });
        }
        Ok(RevisionIdList {
            anchor: Anchor::new(anchor),
            revisions: required(r, result, revisions, "NewRevisions")?,
        })
    })
}

/// Reads an `UpdateIdentity`-shaped element (`UpdateID`, `RevisionNumber`) just opened.
fn read_identity(
    r: &mut Reader<'_, '_>,
    element: &Element<'_>,
) -> Result<RevisionId, ResponseError> {
    let mut update_id = None;
    let mut revision = None;
    r.children(|r, field| match our(&field, Ns::ServerSync) {
        Some("UpdateID") => set_once(r, &field, &mut update_id, |r, e| {
            let text = text_of(r, e)?;
            UpdateId::from_str(&text).map_err(|_| invalid(r, e, &text, "a GUID"))
        }),
        Some("RevisionNumber") => set_once(r, &field, &mut revision, |r, e| {
            let text = text_of(r, e)?;
            parse_u32(&text).ok_or_else(|| invalid(r, e, &text, "a revision number"))
        }),
        _ => r.skip(),
    })?;
    Ok(RevisionId {
        update_id: required(r, element, update_id, "UpdateID")?,
        revision: required(r, element, revision, "RevisionNumber")?,
    })
}

/// GetUpdateData's answer. Blobs are returned still encoded: decode each with
/// [`UpdateBlob::decode`], so that one bad blob costs only its own update.
pub fn parse_update_data(body: &[u8], limits: &Limits) -> Result<UpdateDataBatch, ResponseError> {
    read_answer(body, limits, Operation::GetUpdateData, |r, _result| {
        let mut updates = Vec::new();
        let mut file_urls = Vec::new();
        let mut seen_updates = false;
        r.children(|r, child| match our(&child, Ns::ServerSync) {
            Some("updates") => {
                if std::mem::replace(&mut seen_updates, true) {
                    return Err(ResponseError::DuplicateElement {
                        at: r.locate(&child),
                    });
                }
                r.children(|r, item| match our(&item, Ns::ServerSync) {
                    Some("ServerSyncUpdateData") => {
                        room_for_one_more(r, &child, updates.len())?;
                        updates.push(read_update(r, &item)?);
                        Ok(())
                    }
                    _ => r.skip(),
                })
            }
            Some("fileUrls") => r.children(|r, item| match our(&item, Ns::ServerSync) {
                Some("ServerSyncUrlData") => {
                    room_for_one_more(r, &child, file_urls.len())?;
                    file_urls.push(read_file_url(r, &item)?);
                    Ok(())
                }
                _ => r.skip(),
            }),
            _ => r.skip(),
        })?;
        Ok(UpdateDataBatch { updates, file_urls })
    })
}

fn read_update(r: &mut Reader<'_, '_>, item: &Element<'_>) -> Result<UpdateData, ResponseError> {
    let mut id = None;
    let mut plain = None;
    let mut compressed = None;
    let mut digests = None;
    r.children(|r, field| match our(&field, Ns::ServerSync) {
        Some("Id") => set_once(r, &field, &mut id, read_identity),
        Some("XmlUpdateBlob") => set_once(r, &field, &mut plain, |r, e| {
            Ok(r.text_within(e, r.limits.max_document_bytes)?.into_owned())
        }),
        Some("XmlUpdateBlobCompressed") => set_once(r, &field, &mut compressed, |r, e| {
            let limit = r.limits.max_compressed_text_bytes();
            Ok(r.text_within(e, limit)?.into_owned())
        }),
        Some("FileDigestList") => set_once(r, &field, &mut digests, |r, list| {
            let mut digests = Vec::new();
            r.children(|r, digest| match our(&digest, Ns::ServerSync) {
                Some("base64Binary") => {
                    room_for_one_more(r, list, digests.len())?;
                    digests.push(base64_of(r, &digest)?);
                    Ok(())
                }
                _ => r.skip(),
            })?;
            Ok(digests)
        }),
        _ => r.skip(),
    })?;
    let id = required(r, item, id, "Id")?;
    let blob = match (plain, compressed) {
        (Some(text), None) => UpdateBlob::Plain(text),
        (None, Some(text)) => UpdateBlob::Compressed(text),
        (None, None) => {
            return Err(ResponseError::BlobCount {
                at: format!("{} ({id})", r.locate(item)),
                found: "neither",
            });
        }
        (Some(_), Some(_)) => {
            return Err(ResponseError::BlobCount {
                at: format!("{} ({id})", r.locate(item)),
                found: "both",
            });
        }
    };
    Ok(UpdateData {
        id,
        blob,
        file_digests: digests.unwrap_or_default(),
    })
}

fn read_file_url(r: &mut Reader<'_, '_>, item: &Element<'_>) -> Result<FileUrl, ResponseError> {
    let mut digest = None;
    let mut mu_url = None;
    let mut uss_url = None;
    r.children(|r, field| match our(&field, Ns::ServerSync) {
        Some("FileDigest") => set_once(r, &field, &mut digest, base64_of),
        Some("MUUrl") => set_once(r, &field, &mut mu_url, text_of),
        Some("UssUrl") => set_once(r, &field, &mut uss_url, text_of),
        _ => r.skip(),
    })?;
    Ok(FileUrl {
        file_digest: required(r, item, digest, "FileDigest")?,
        mu_url: mu_url.filter(|s: &String| !s.is_empty()),
        uss_url: uss_url.filter(|s: &String| !s.is_empty()),
    })
}

/// Reads a SOAP fault body (the HTTP 500 answer to any operation).
pub fn parse_fault(body: &[u8], limits: &Limits) -> Result<SoapFault, ResponseError> {
    let mut r = Reader::new(body, limits)?;
    let envelope = r.root()?;
    check_envelope(&envelope)?;
    let mut fault = None;
    let mut seen_body = false;
    r.children(|r, child| {
        if child.ns == Ns::Soap && child.local == "Body" {
            seen_body = true;
            return r.children(|r, inner| {
                if fault.is_some() {
                    return Err(ResponseError::UnexpectedAnswer {
                        expected: "Fault",
                        found: format!("a second element, {}", describe(&inner)),
                    });
                }
                if !(inner.ns == Ns::Soap && inner.local == "Fault") {
                    return Err(ResponseError::UnexpectedAnswer {
                        expected: "Fault",
                        found: describe(&inner),
                    });
                }
                fault = Some(read_fault(r, &inner)?);
                Ok(())
            });
        }
        r.skip()
    })?;
    r.finish()?;
    if !seen_body {
        return Err(ResponseError::NoBody);
    }
    fault.ok_or(ResponseError::UnexpectedAnswer {
        expected: "Fault",
        found: "an empty `Body`".to_owned(),
    })
}

/// Walks `Envelope/Body/<op>Response/<op>Result` and hands the result element to `read`,
/// which must consume it. A fault in the body becomes [`ResponseError::Fault`].
fn read_answer<'i, T>(
    body: &'i [u8],
    limits: &Limits,
    operation: Operation,
    read: impl FnOnce(&mut Reader<'i, '_>, &Element<'i>) -> Result<T, ResponseError>,
) -> Result<T, ResponseError> {
    let ns = match operation.service() {
        crate::service::Service::ServerSync => Ns::ServerSync,
        crate::service::Service::DssAuth => Ns::DssAuth,
    };
    let mut r = Reader::new(body, limits)?;
    let envelope = r.root()?;
    check_envelope(&envelope)?;
    let mut read = Some(read);
    let mut answer = None;
    let mut seen_body = false;
    r.children(|r, child| {
        if !(child.ns == Ns::Soap && child.local == "Body") {
            // `Header` and extensions: nothing this client needs.
            return r.skip();
        }
        if std::mem::replace(&mut seen_body, true) {
            return Err(ResponseError::DuplicateElement {
                at: r.locate(&child),
            });
        }
        r.children(|r, inner| {
            if answer.is_some() {
                return Err(ResponseError::UnexpectedAnswer {
                    expected: operation.response_name(),
                    found: format!("a second element, {}", describe(&inner)),
                });
            }
            if inner.ns == Ns::Soap && inner.local == "Fault" {
                return Err(ResponseError::Fault(Box::new(read_fault(r, &inner)?)));
            }
            if !(inner.ns == ns && inner.local == operation.response_name()) {
                return Err(ResponseError::UnexpectedAnswer {
                    expected: operation.response_name(),
                    found: describe(&inner),
                });
            }
            let response = inner;
            let mut result = None;
            r.children(|r, child| {
                if our(&child, ns) != Some(operation.result_name()) {
                    return r.skip();
                }
                if result.is_some() {
                    return Err(ResponseError::DuplicateElement {
                        at: r.locate(&child),
                    });
                }
                // A second result or response element is refused above, so this runs once.
                let read = read.take().ok_or_else(|| ResponseError::DuplicateElement {
                    at: r.locate(&child),
                })?;
                result = Some(read(r, &child)?);
                Ok(())
            })?;
            answer = Some(result.ok_or_else(|| ResponseError::MissingElement {
                element: operation.result_name(),
                at: r.locate(&response),
            })?);
            Ok(())
        })
    })?;
    r.finish()?;
    if !seen_body {
        return Err(ResponseError::NoBody);
    }
    answer.ok_or(ResponseError::UnexpectedAnswer {
        expected: operation.response_name(),
        found: "an empty `Body`".to_owned(),
    })
}

fn check_envelope(envelope: &Element<'_>) -> Result<(), ResponseError> {
    if envelope.ns == Ns::Soap && envelope.local == "Envelope" {
        return Ok(());
    }
    Err(ResponseError::NotSoap {
        found: describe(envelope),
    })
}

fn describe(element: &Element<'_>) -> String {
    let namespace = match element.ns {
        Ns::Soap => format!("in namespace {SOAP_ENVELOPE_NAMESPACE}"),
        Ns::ServerSync => format!("in namespace {}", crate::SERVER_SYNC_NAMESPACE),
        Ns::DssAuth => format!("in namespace {}", crate::DSS_AUTH_NAMESPACE),
        Ns::None => "in no namespace".to_owned(),
        Ns::Other => "in another namespace".to_owned(),
    };
    format!(
        "`{}` {namespace} (byte {})",
        excerpt(element.local),
        element.byte
    )
}

/// The local name of `element` if it is one of the operation's own: in its namespace, or in
/// none (a server that writes the children unqualified).
fn our<'i>(element: &Element<'i>, ns: Ns) -> Option<&'i str> {
    (element.ns == ns || element.ns == Ns::None).then_some(element.local)
}

/// Reads `element` with `read` into `slot`, refusing a second occurrence.
fn set_once<'i, 'l, T>(
    r: &mut Reader<'i, 'l>,
    element: &Element<'i>,
    slot: &mut Option<T>,
    read: impl FnOnce(&mut Reader<'i, 'l>, &Element<'i>) -> Result<T, ResponseError>,
) -> Result<(), ResponseError> {
    if slot.is_some() {
        return Err(ResponseError::DuplicateElement {
            at: r.locate(element),
        });
    }
    *slot = Some(read(r, element)?);
    Ok(())
}

/// Refuses one more entry in `list` (the element holding `len` entries so far) beyond the
/// limit; checked before the entry is read.
fn room_for_one_more(
    r: &Reader<'_, '_>,
    list: &Element<'_>,
    len: usize,
) -> Result<(), ResponseError> {
    if len >= r.limits.max_list_items {
        return Err(ResponseError::TooManyItems {
            limit: r.limits.max_list_items,
            at: r.locate(list),
        });
    }
    Ok(())
}

fn required<T>(
    r: &Reader<'_, '_>,
    parent: &Element<'_>,
    value: Option<T>,
    element: &'static str,
) -> Result<T, ResponseError> {
    value.ok_or_else(|| ResponseError::MissingElement {
        element,
        at: r.locate(parent),
    })
}

fn text_of(r: &mut Reader<'_, '_>, element: &Element<'_>) -> Result<String, ResponseError> {
    Ok(trimmed(r.text(element)?))
}

fn bool_of(r: &mut Reader<'_, '_>, element: &Element<'_>) -> Result<bool, ResponseError> {
    let text = text_of(r, element)?;
    match text.as_str() {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(invalid(r, element, &text, "`true` or `false`")),
    }
}

fn base64_of(r: &mut Reader<'_, '_>, element: &Element<'_>) -> Result<Vec<u8>, ResponseError> {
    let text = text_of(r, element)?;
    BASE64
        .decode(text.as_bytes())
        .map_err(|_| invalid(r, element, &text, "base64"))
}

fn parse_u32(text: &str) -> Option<u32> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

fn invalid(
    r: &Reader<'_, '_>,
    element: &Element<'_>,
    value: &str,
    expected: &'static str,
) -> ResponseError {
    ResponseError::InvalidValue {
        at: r.locate(element),
        value: excerpt(value),
        expected,
    }
}

/// XSD whitespace around a simple value is not part of it.
fn trimmed(text: Cow<'_, str>) -> String {
    let trim = text.trim_matches(|c| matches!(c, ' ' | '\t' | '\r' | '\n'));
    if trim.len() == text.len() {
        text.into_owned()
    } else {
        trim.to_owned()
    }
}
