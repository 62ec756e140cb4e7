//! The [MS-WSUSSS] server-to-server sync protocol as a downstream server speaks it to an
//! upstream server (Microsoft Update or a WSUS): request bodies out, typed answers in.
//!
//! A top site syncs update metadata in this order, each step one SOAP 1.1 POST:
//!
//! ```text
//! GetAuthConfig ─► GetAuthorizationCookie (DSS auth service) ─► GetCookie ─► GetConfigData
//!   ─► GetRevisionIdList(categories) ─► GetUpdateData(batches)   // categories first
//!   ─► GetRevisionIdList(products ∩ classifications) ─► GetUpdateData(batches)
//! ```
//!
//! GetAuthConfig names the authorization service; its cookie buys a session [`Cookie`] that
//! every later request carries; GetConfigData gives the batch size for GetUpdateData;
//! GetRevisionIdList lists the revisions new since an [`Anchor`] (all without one);
//! GetUpdateData returns each revision's update document, which `sitesync_metadata::parse_update`
//! reads once [`UpdateBlob::decode`] has turned it into UTF-8.
//!
//! Modules, in the order a request and its answer pass through them:
//! - [`service`]: the two web services, their namespaces and SOAPAction values, and the URLs of
//!   an upstream server ([`ServerRoot`], including the relative `ServiceUrl` of GetAuthConfig).
//! - [`request`]: one function per operation building its body ([`SoapRequest`]).
//! - [`response`]: one parser per operation, from the HTTP body to the typed answer in
//!   [`model`]; a SOAP fault in any body becomes [`ResponseError::Fault`], classified by
//!   [`fault`] into a [`FaultKind`].
//! - [`xml`]: the streaming reader under the parsers, which enforces the [`Limits`] and refuses
//!   a DOCTYPE and unknown entities.
//! - [`blob`]: update blobs to UTF-8 documents: plain text, or base64 → Cabinet (LZX) → UTF-16LE.
//!
//! What this crate does not do: HTTP, TLS, timeouts, retries, cookie renewal, batching and
//! anchors' storage. It performs no I/O and keeps no state; the HTTP client and the sync logic
//! that drive it live in the node. The client must post with `Content-Type`
//! [`CONTENT_TYPE`] and the quoted `SOAPAction` of [`Operation::soap_action_header`], must not
//! ask for `Accept-Encoding: xpress`, and should hand every answer body (HTTP 200 or 500) to the
//! parser of the operation it called, stopping to read a body at [`Limits::max_response_bytes`].
//!
//! [MS-WSUSSS]: https://learn.microsoft.com/en-us/openspecs/windows_protocols/ms-wsusss/
#![forbid(unsafe_code)]

pub mod blob;
pub mod fault;
pub mod model;
pub mod request;
pub mod response;
pub mod service;
pub mod xml;

pub use blob::{
    BLOB_MEMBER_NAME, BlobError, decode_cabinet, decode_compressed_blob, decode_plain_blob,
    utf16le_to_utf8,
};
pub use fault::{FaultKind, SoapFault};
pub use model::{
    Anchor, AuthConfig, AuthPlugIn, AuthorizationCookie, ConfigData, Cookie, FileUrl, LanguageData,
    RevisionIdList, UpdateBlob, UpdateData, UpdateDataBatch,
};
pub use request::{
    IdAndDelta, InvalidProtocolVersion, LanguageAndDelta, ProtocolVersion, RevisionFilter,
    SoapRequest, get_auth_config, get_authorization_cookie, get_config_data, get_cookie,
    get_revision_id_list, get_update_data,
};
pub use response::{
    parse_auth_config, parse_authorization_cookie, parse_config_data, parse_cookie, parse_fault,
    parse_revision_id_list, parse_update_data,
};
pub use service::{
    CONTENT_TYPE, DSS_AUTH_NAMESPACE, DSS_AUTH_PATH, MICROSOFT_UPDATE_ROOT, Operation,
    SERVER_SYNC_NAMESPACE, SERVER_SYNC_PATH, ServerRoot, Service, UrlError,
};
pub use xml::{Limits, ResponseError, SOAP_ENVELOPE_NAMESPACE};
