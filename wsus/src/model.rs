//! The values the protocol carries, as the rest of sitesync uses them: what the parsers return
//! and the request builders take.
//!
//! Opaque values (anchors, cookies) are kept exactly as the upstream server wrote them, because
//! they are echoed back verbatim and the server alone interprets them.

use std::collections::HashMap;
use std::fmt;

use sitesync_metadata::{RevisionId, Timestamp, UpdateId};

/// A synchronization anchor: an opaque string the upstream server returns and expects back
/// unchanged to answer "what changed since". WSUS writes `<counter>,<date time>`, Microsoft's
/// sample server `DateTime.Now`; never parse one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Anchor(String);

impl Anchor {
    pub fn new(text: impl Into<String>) -> Self {
        Self(text.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for Anchor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The DSS authorization service's answer: the plug-in's cookie, exchanged for a server
/// [`Cookie`] with GetCookie. Worth keeping: when the cookie expires, Microsoft's client gets a
/// new one with this auth cookie and repeats the whole handshake only if it is refused
/// (`InvalidAuthorizationCookie`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizationCookie {
    /// `DssTargeting` from WSUS (spelt `PlugInId` here, `PlugInID` in GetAuthConfig).
    pub plug_in_id: String,
    /// Base64 text, opaque; sent back unchanged.
    pub cookie_data: String,
}

/// The session cookie GetCookie returns; every later request carries it verbatim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cookie {
    /// When the server stops accepting the cookie (WSUS: 240 minutes after GetCookie). Renew
    /// before then: a server refuses an expired cookie with `InvalidCookie`.
    pub expires_at: Timestamp,
    /// `Expiration` as the server wrote it (seven fraction digits or fewer), echoed unchanged
    /// so that no rounding of ours can change what the server compares.
    pub expiration: String,
    /// Base64 text, opaque.
    pub encrypted_data: String,
}

/// One authorization plug-in of GetAuthConfig. WSUS and Microsoft Update offer one,
/// `DssTargeting`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthPlugIn {
    pub plug_in_id: String,
    /// Where to call GetAuthorizationCookie, usually relative to the server root: resolve it
    /// with [`crate::ServerRoot::resolve_service_url`].
    pub service_url: String,
    pub parameter: Option<String>,
}

/// GetAuthConfig's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthConfig {
    /// When the server's authorization configuration last changed, as written.
    pub last_change: Option<String>,
    pub plug_ins: Vec<AuthPlugIn>,
}

impl AuthConfig {
    /// The plug-in id a downstream server authenticates with.
    pub const DSS_TARGETING: &'static str = "DssTargeting";

    /// The `DssTargeting` plug-in, if the server offers it.
    pub fn dss_targeting(&self) -> Option<&AuthPlugIn> {
        self.plug_ins
            .iter()
            .find(|p| p.plug_in_id.eq_ignore_ascii_case(Self::DSS_TARGETING))
    }
}

/// One language the upstream server knows, from GetConfigData.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LanguageData {
    /// The Windows LCID (`1033`); `0` is the pseudo-language `all`.
    pub id: u32,
    /// `en`, `zh-tw`, … as update documents write language tags.
    pub short_name: String,
    pub long_name: String,
    /// Whether the upstream server itself syncs this language.
    pub enabled: bool,
}

/// GetConfigData's answer: the upstream server's sync configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigData {
    /// Most revision ids one GetUpdateData request may carry; more is refused with
    /// `InvalidParameters` (`updateIds`). WSUS: 100. Always at least 1.
    pub max_updates_per_request: u32,
    /// The anchor to send with the next GetConfigData. With it, the server leaves out what did
    /// not change (WSUS then sends an empty language list).
    pub new_config_anchor: Option<Anchor>,
    pub catalog_only_sync: bool,
    /// The upstream server downloads content only when approved; metadata is unaffected.
    pub lazy_sync: bool,
    pub server_hosts_psf_files: bool,
    /// The protocol version the server speaks, as written (`1.20`).
    pub protocol_version: Option<String>,
    pub languages: Vec<LanguageData>,
}

/// GetRevisionIdList's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevisionIdList {
    /// The anchor to send next time for the same kind of list (keep one for the category list,
    /// `GetConfig` true, and one for the update list); store it only once the revisions it
    /// covers are durably stored.
    pub anchor: Anchor,
    /// The new or changed revisions, in the server's order. The answer says nothing about
    /// whether a revision is a category: that follows from the request (`GetConfig` true gives
    /// categories, classifications and detectoids) and from each document's `UpdateType`. The
    /// same update may appear with several revisions (WSUS lists categories that way).
    pub revisions: Vec<RevisionId>,
}

impl RevisionIdList {
    /// The highest listed revision of each update, in order of first appearance: what to fetch
    /// when the list names several revisions of one update.
    pub fn latest_revisions(&self) -> Vec<RevisionId> {
        let mut index: HashMap<UpdateId, usize> = HashMap::with_capacity(self.revisions.len());
        let mut latest: Vec<RevisionId> = Vec::with_capacity(self.revisions.len());
        for revision in &self.revisions {
            match index.get(&revision.update_id) {
                Some(&at) => {
                    if latest[at].revision < revision.revision {
                        latest[at] = *revision;
                    }
                }
                None => {
                    index.insert(revision.update_id, latest.len());
                    latest.push(*revision);
                }
            }
        }
        latest
    }
}

/// An update document as the upstream server sent it, still encoded. Decoding is separate from
/// parsing the answer so that one bad blob can be refused without losing the batch's others.
#[derive(Clone, PartialEq, Eq)]
pub enum UpdateBlob {
    /// `XmlUpdateBlob`: the document as text (the XML escaping already undone). WSUS sends
    /// documents up to about 5 KB this way.
    Plain(String),
    /// `XmlUpdateBlobCompressed`: base64 of a Cabinet holding the document in UTF-16LE.
    Compressed(String),
}

impl fmt::Debug for UpdateBlob {
    /// The length only: documents are long, and a log line should stay one line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpdateBlob::Plain(text) => write!(f, "Plain({} bytes)", text.len()),
            UpdateBlob::Compressed(text) => write!(f, "Compressed({} base64 bytes)", text.len()),
        }
    }
}

/// One update of GetUpdateData's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateData {
    /// The revision the server says this is; check it against the decoded document's identity
    /// and against what was asked for.
    pub id: RevisionId,
    pub blob: UpdateBlob,
    /// The SHA-1 digests of the revision's files (`FileDigestList`), empty when it has none.
    pub file_digests: Vec<Vec<u8>>,
}

/// Where one file's content can be downloaded, from GetUpdateData's `fileUrls`. A location is
/// not proof that the upstream server holds the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileUrl {
    /// The file's SHA-1 digest.
    pub file_digest: Vec<u8>,
    /// The file on Microsoft Update's download servers, if it is there.
    pub mu_url: Option<String>,
    /// The file on the upstream server; unused by WSUS, which sends it empty.
    pub uss_url: Option<String>,
}

/// GetUpdateData's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateDataBatch {
    /// One entry per requested revision, in the server's order; duplicates are possible if the
    /// request had duplicates.
    pub updates: Vec<UpdateData>,
    pub file_urls: Vec<FileUrl>,
}
