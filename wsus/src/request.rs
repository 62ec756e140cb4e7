//! Request bodies: one function per operation, each returning the SOAP 1.1 envelope and the
//! operation it is for (which gives the SOAPAction and the service to post it to).
//!
//! Bodies follow the recorded requests: an XML declaration, `soap:Envelope` and `soap:Body`, no
//! SOAP header, and the operation element with a default namespace that its children inherit.
//! Children come in schema order, because the .NET serializer on the server reads
//! `xs:sequence`s in order.

use std::fmt::{self, Write as _};

use quick_xml::escape::escape;
use sitesync_metadata::{RevisionId, UpdateId};
use uuid::Uuid;

use crate::model::{Anchor, AuthorizationCookie, Cookie};
use crate::service::Operation;
use crate::xml::SOAP_ENVELOPE_NAMESPACE;

/// A request ready to post: `Content-Type: text/xml; charset=utf-8`
/// ([`crate::CONTENT_TYPE`]), `SOAPAction: <operation.soap_action_header()>`, this body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SoapRequest {
    pub operation: Operation,
    pub body: String,
}

impl SoapRequest {
    /// The `SOAPAction` header value, quoted.
    pub fn soap_action_header(&self) -> String {
        self.operation.soap_action_header()
    }
}

/// The Server Sync protocol version sent in GetCookie: `major.minor`, major 1.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ProtocolVersion(String);

/// The text given is not a protocol version this client may send.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{0}` is not a Server Sync protocol version; expected `1.<minor>` such as 1.20 (WSUS 10 and \
     later) or 1.8 (WSUS 3.0 SP2)"
)]
pub struct InvalidProtocolVersion(pub String);

impl ProtocolVersion {
    /// What Windows Server WSUS 10 and later speak, and what the recordings used. Microsoft's own
    /// client sends `1.7` to Microsoft Update; whether Microsoft Update accepts 1.20 is not known.
    pub const DEFAULT: &'static str = "1.20";

    /// Accepts `1.<minor>`: the server refuses another major version
    /// (`IncompatibleProtocolVersion`).
    pub fn parse(text: &str) -> Result<Self, InvalidProtocolVersion> {
        let invalid = || InvalidProtocolVersion(crate::xml::excerpt(text));
        let (major, minor) = text.split_once('.').ok_or_else(invalid)?;
        let digits =
            |s: &str| !s.is_empty() && s.len() <= 4 && s.bytes().all(|b| b.is_ascii_digit());
        if major != "1" || !digits(minor) {
            return Err(invalid());
        }
        Ok(Self(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for ProtocolVersion {
    fn default() -> Self {
        Self(Self::DEFAULT.to_owned())
    }
}

impl fmt::Display for ProtocolVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A product or classification in a revision list's filter, with its `Delta` flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IdAndDelta {
    /// The category update's id.
    pub id: UpdateId,
    /// With an anchor: `true` asks only for revisions changed since the anchor, `false` for all
    /// of this category's revisions again. Send `true` for categories already subscribed at the
    /// last sync and `false` for newly added ones. Without an anchor it is sent as `false`.
    pub delta: bool,
}

/// A language in a revision list's filter (`LanguageAndDelta`), by LCID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LanguageAndDelta {
    pub id: u32,
    pub delta: bool,
}

/// GetRevisionIdList's `filter` (`ServerSyncFilter`).
///
/// With `get_config` the server lists categories, classifications and detectoids, and ignores
/// the category lists. Without it, it lists the updates that belong to at least one listed
/// product **and** at least one listed classification: one list without the other gives nothing,
/// neither gives everything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevisionFilter {
    /// What changed since this anchor; `None` for the complete list (the only way to learn of
    /// revisions withdrawn upstream, by their absence).
    pub anchor: Option<Anchor>,
    pub get_config: bool,
    /// `Get63LanguageOnly`: `Some(false)` by default, as the specification requires from
    /// protocol 1.2 on; `None` leaves the element out, which WSUS also accepts and which
    /// Microsoft's own client does.
    pub get_63_language_only: Option<bool>,
    /// Products (or other categories) to list updates of.
    pub categories: Vec<IdAndDelta>,
    pub classifications: Vec<IdAndDelta>,
    /// Languages to list updates of; none sends no `Languages` element, which WSUS accepts.
    pub languages: Vec<LanguageAndDelta>,
}

impl RevisionFilter {
    /// The category list: categories, classifications and detectoids changed since `anchor`
    /// (all of them without one). Fetch and store these before updates, which refer to them.
    pub fn categories(anchor: Option<Anchor>) -> Self {
        Self {
            anchor,
            get_config: true,
            get_63_language_only: Some(false),
            categories: Vec::new(),
            classifications: Vec::new(),
            languages: Vec::new(),
        }
    }

    /// The update list for the given products and classifications.
    pub fn updates(
        anchor: Option<Anchor>,
        products: impl IntoIterator<Item = IdAndDelta>,
        classifications: impl IntoIterator<Item = IdAndDelta>,
    ) -> Self {
        Self {
            anchor,
            get_config: false,
            get_63_language_only: Some(false),
            categories: products.into_iter().collect(),
            classifications: classifications.into_iter().collect(),
            languages: Vec::new(),
        }
    }
}

/// GetAuthConfig: which authorization plug-in to use and where. Needs no cookie.
pub fn get_auth_config() -> SoapRequest {
    envelope(Operation::GetAuthConfig, |_| {})
}

/// GetAuthorizationCookie, posted to the DSS authorization service. `account_name` should be
/// a valid DNS name (this server's); WSUS accepts any such name and GUID from an anonymous
/// downstream server, and Microsoft's client sends a random GUID.
pub fn get_authorization_cookie(account_name: &str, account_guid: Uuid) -> SoapRequest {
    envelope(Operation::GetAuthorizationCookie, |w| {
        w.text("accountName", account_name);
        w.text("accountGuid", &account_guid.hyphenated().to_string());
    })
}

/// GetCookie: exchanges the authorization cookie for a session cookie. `old_cookie` is the last
/// cookie, if any, as the specification asks when renewing.
pub fn get_cookie(
    auth: &AuthorizationCookie,
    old_cookie: Option<&Cookie>,
    version: &ProtocolVersion,
) -> SoapRequest {
    envelope(Operation::GetCookie, |w| {
        w.open("authCookies");
        w.open("AuthorizationCookie");
        w.text("PlugInId", &auth.plug_in_id);
        w.text("CookieData", &auth.cookie_data);
        w.close("AuthorizationCookie");
        w.close("authCookies");
        if let Some(old) = old_cookie {
            w.cookie("oldCookie", old);
        }
        w.text("protocolVersion", version.as_str());
    })
}

/// GetConfigData, with the `NewConfigAnchor` of the last answer if there was one.
pub fn get_config_data(cookie: &Cookie, config_anchor: Option<&Anchor>) -> SoapRequest {
    envelope(Operation::GetConfigData, |w| {
        w.cookie("cookie", cookie);
        if let Some(anchor) = config_anchor {
            w.text("configAnchor", anchor.as_str());
        }
    })
}

/// GetRevisionIdList with `filter`.
pub fn get_revision_id_list(cookie: &Cookie, filter: &RevisionFilter) -> SoapRequest {
    envelope(Operation::GetRevisionIdList, |w| {
        w.cookie("cookie", cookie);
        w.open("filter");
        if let Some(anchor) = &filter.anchor {
            w.text("Anchor", anchor.as_str());
        }
        w.text("GetConfig", bool_text(filter.get_config));
        if let Some(only) = filter.get_63_language_only {
            w.text("Get63LanguageOnly", bool_text(only));
        }
        let with_anchor = filter.anchor.is_some();
        for (list, ids) in [
            ("Categories", &filter.categories),
            ("Classifications", &filter.classifications),
        ] {
            if ids.is_empty() {
                continue;
            }
            w.open(list);
            for entry in ids {
                w.open("IdAndDelta");
                w.text("Id", &entry.id.to_string());
                w.text("Delta", bool_text(with_anchor && entry.delta));
                w.close("IdAndDelta");
            }
            w.close(list);
        }
        if !filter.languages.is_empty() {
            w.open("Languages");
            for language in &filter.languages {
                w.open("LanguageAndDelta");
                w.text("Id", &language.id.to_string());
                w.text("Delta", bool_text(with_anchor && language.delta));
                w.close("LanguageAndDelta");
            }
            w.close("Languages");
        }
        w.close("filter");
    })
}

/// GetUpdateData for `revisions`. Send at most [`crate::ConfigData::max_updates_per_request`]
/// at a time. One unknown id or revision makes the server refuse the whole request with
/// `InternalServerError`, so split a refused batch to find the one at fault.
pub fn get_update_data(cookie: &Cookie, revisions: &[RevisionId]) -> SoapRequest {
    envelope(Operation::GetUpdateData, |w| {
        w.cookie("cookie", cookie);
        w.open("updateIds");
        for revision in revisions {
            w.open("UpdateIdentity");
            w.text("UpdateID", &revision.update_id.to_string());
            w.text("RevisionNumber", &revision.revision.to_string());
            w.close("UpdateIdentity");
        }
        w.close("updateIds");
    })
}

fn bool_text(value: bool) -> &'static str {
    if value { "true" } else { "false" }
}

/// Writes one envelope around the operation element; `content` writes its children.
fn envelope(operation: Operation, content: impl FnOnce(&mut Writer)) -> SoapRequest {
    let mut w = Writer(String::with_capacity(1024));
    let _ = write!(
        w.0,
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\
         <soap:Envelope xmlns:soap=\"{SOAP_ENVELOPE_NAMESPACE}\"><soap:Body><{} xmlns=\"{}\">",
        operation.name(),
        operation.service().namespace()
    );
    content(&mut w);
    let _ = write!(w.0, "</{}></soap:Body></soap:Envelope>", operation.name());
    SoapRequest {
        operation,
        body: w.0,
    }
}

/// The few writing steps request bodies need. Element names are this module's constants;
/// only text is escaped.
struct Writer(String);

impl Writer {
    fn open(&mut self, name: &str) {
        let _ = write!(self.0, "<{name}>");
    }

    fn close(&mut self, name: &str) {
        let _ = write!(self.0, "</{name}>");
    }

    fn text(&mut self, name: &str, value: &str) {
        let _ = write!(self.0, "<{name}>{}</{name}>", escape(value));
    }

    /// A cookie, echoed exactly as the server sent it.
    fn cookie(&mut self, name: &str, cookie: &Cookie) {
        self.open(name);
        self.text("Expiration", &cookie.expiration);
        self.text("EncryptedData", &cookie.encrypted_data);
        self.close(name);
    }
}
