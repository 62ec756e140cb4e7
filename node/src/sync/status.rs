//! Durable status messages (S9): what the sync manager reports, kept so operators can ask
//! later what happened, at which site, in which sync.
//!
//! The sync manager of a site reports with ConfigMgr's ids and meanings, component
//! [`COMPONENT`]: 6701 started, 6704 phase "syncing the update server", 6705 phase "syncing
//! the site database", 6706 phase "syncing the internet-facing update server", 6702 done,
//! 6703 failed with the reason. Ids from 6790 up are sitesync's own (6790: a document was
//! skipped; 6791–6795: the legacy scan catalog, see [`crate::legacy_catalog`]). Each [`StatusLog::append`] gives the message the next sequence number of its
//! site and is durable before it returns.
//!
//! Messages also travel up the hierarchy so the top site sees the whole tree:
//! [`StatusLog::messages_after`] reads a site's messages in sequence order from where the
//! parent last acknowledged ([`StatusLog::last_sequence`] on the parent), and the parent
//! stores them with [`StatusLog::insert_forwarded`], which ignores ones it already holds,
//! identified by (site code, sequence).
//!
//! [`StatusLog::query`] answers operators, newest first, filtered by site, id, time range
//! and sync, a page at a time. The log keeps the newest [`DEFAULT_RETENTION`] messages
//! (configurable); each write removes the oldest beyond that in the same atomic batch.
//!
//! Key layout (one key space, numbers big endian; `site` is a length byte and the code):
//!
//! | prefix | key                                                  | value                  |
//! |--------|------------------------------------------------------|------------------------|
//! | `T`    | !time (8), site, !sequence (8), id (4), sync id (8)  | the message (postcard) |
//! | `A`    | time (8), site, sequence (8)                         | its `T` key            |
//! | `Q`    | site, sequence (8)                                   | its `T` key            |
//! | `N`    | site code                                            | highest sequence (8)   |
//! | `M`    | a name (`format`, `count`)                           | layout version, count  |
//!
//! Why: `T` with inverted time is newest first, so the operators' usual question ("what
//! happened lately") is a forward scan that stops after one page, and the id, site and sync
//! id in the key let filters skip non-matching messages without reading them. `A` is the
//! same order oldest first, for pruning. `Q` serves de-duplication (a point read) and
//! forwarding (a scan in sequence order). `N` survives pruning, so a site's sequence never
//! restarts even after all its messages aged out.

use crate::store::keys::successor;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use sitesync_metadata::Timestamp;

use crate::store::backend::{Backend, BackendError, WriteBatch};

/// The component every message of the sync manager names, as in ConfigMgr.
pub const COMPONENT: &str = "SMS_WSUS_SYNC_MANAGER";

/// How many messages a log keeps unless told otherwise.
pub const DEFAULT_RETENTION: u64 = 100_000;
/// Longest message text. Longer local texts are truncated (a failure must be recorded
/// however long its reason); longer forwarded ones are refused.
pub const MAX_TEXT_BYTES: usize = 16 * 1024;
pub const MAX_PROPERTIES: usize = 64;
pub const MAX_PROPERTY_NAME_BYTES: usize = 128;
pub const MAX_PROPERTY_VALUE_BYTES: usize = 4096;
pub const MAX_SITE_CODE_BYTES: usize = 64;
pub const MAX_COMPONENT_BYTES: usize = 64;
/// Messages returned by one query when the query does not say.
pub const DEFAULT_QUERY_LIMIT: usize = 100;
/// Most messages one query returns, whatever it asks for.
pub const MAX_QUERY_LIMIT: usize = 10_000;
/// Most messages accepted in one [`StatusLog::insert_forwarded`] call.
pub const MAX_FORWARDED_BATCH: usize = 10_000;

/// The version of the key layout above. A log written with another layout is refused at
/// open instead of being misread.
const FORMAT_VERSION: u32 = 1;

/// Beyond the messages a write adds, how many old ones it may prune: a log reopened with a
/// much lower retention shrinks over the following writes rather than in one huge batch.
const PRUNE_CATCH_UP: u64 = 1024;

const BY_TIME: u8 = b'T';
const OLDEST_FIRST: u8 = b'A';
const BY_SITE: u8 = b'Q';
const SITE_SEQUENCE: u8 = b'N';
const FORMAT_KEY: &[u8] = b"Mformat";
const COUNT_KEY: &[u8] = b"Mcount";

/// The status message ids sitesync raises, with ConfigMgr's numbers.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(into = "u32", try_from = "u32")]
pub enum StatusMessageId {
    /// 6701: a sync started.
    SyncStarted = 6701,
    /// 6702: a sync finished successfully.
    SyncDone = 6702,
    /// 6703: a sync failed; the text says why. A retry is scheduled.
    SyncFailed = 6703,
    /// 6704: phase 1, the update server syncs from its upstream.
    SyncingUpdateServer = 6704,
    /// 6705: phase 2, changes are copied into the site database.
    SyncingSiteDatabase = 6705,
    /// 6706: the internet-facing update server syncs from this site's update server.
    SyncingInternetUpdateServer = 6706,
    /// 6791 (sitesync's own): a legacy scan catalog build started (S13).
    LegacyCatalogBuildStarted = 6791,
    /// 6792 (sitesync's own): a legacy scan catalog build is done; the text gives its build
    /// number, counts and what it wrote.
    LegacyCatalogBuilt = 6792,
    /// 6793 (sitesync's own): a legacy scan catalog build failed; the text says why.
    LegacyCatalogBuildFailed = 6793,
    /// 6794 (sitesync's own): a site took a new legacy scan catalog build from its parent.
    LegacyCatalogReceived = 6794,
    /// 6795 (sitesync's own): taking the parent's legacy scan catalog failed; the text
    /// says why. The site keeps serving the build it held.
    LegacyCatalogFetchFailed = 6795,
    /// 6790 (sitesync's own): a document was skipped; the text names it and the reason.
    DocumentSkipped = 6790,
}

impl StatusMessageId {
    pub const ALL: [StatusMessageId; 12] = [
        Self::SyncStarted,
        Self::SyncDone,
        Self::SyncFailed,
        Self::SyncingUpdateServer,
        Self::SyncingSiteDatabase,
        Self::SyncingInternetUpdateServer,
        Self::DocumentSkipped,
        Self::LegacyCatalogBuildStarted,
        Self::LegacyCatalogBuilt,
        Self::LegacyCatalogBuildFailed,
        Self::LegacyCatalogReceived,
        Self::LegacyCatalogFetchFailed,
    ];

    /// The number operators know the message by.
    pub fn code(self) -> u32 {
        self as u32
    }

    pub fn from_code(code: u32) -> Option<Self> {
        Self::ALL.into_iter().find(|id| id.code() == code)
    }

    /// The severity a message with this id has.
    pub fn severity(self) -> Severity {
        match self {
            Self::SyncFailed | Self::LegacyCatalogBuildFailed => Severity::Error,
            Self::DocumentSkipped | Self::LegacyCatalogFetchFailed => Severity::Warning,
            _ => Severity::Informational,
        }
    }

    /// The variant's name, which [`FromStr`] also accepts.
    pub fn name(self) -> &'static str {
        match self {
            Self::SyncStarted => "SyncStarted",
            Self::SyncDone => "SyncDone",
            Self::SyncFailed => "SyncFailed",
            Self::SyncingUpdateServer => "SyncingUpdateServer",
            Self::SyncingSiteDatabase => "SyncingSiteDatabase",
            Self::SyncingInternetUpdateServer => "SyncingInternetUpdateServer",
            Self::LegacyCatalogBuildStarted => "LegacyCatalogBuildStarted",
            Self::LegacyCatalogBuilt => "LegacyCatalogBuilt",
            Self::LegacyCatalogBuildFailed => "LegacyCatalogBuildFailed",
            Self::LegacyCatalogReceived => "LegacyCatalogReceived",
            Self::LegacyCatalogFetchFailed => "LegacyCatalogFetchFailed",
            Self::DocumentSkipped => "DocumentSkipped",
        }
    }

    /// What the message means, in ConfigMgr's words where it has them.
    pub fn description(self) -> &'static str {
        match self {
            Self::SyncStarted => "WSUS synchronization started",
            Self::SyncDone => "WSUS synchronization done",
            Self::SyncFailed => "WSUS synchronization failed",
            Self::SyncingUpdateServer => {
                "WSUS synchronization in progress; current phase: synchronizing the update server"
            }
            Self::SyncingSiteDatabase => {
                "WSUS synchronization in progress; current phase: synchronizing the site database"
            }
            Self::SyncingInternetUpdateServer => {
                "WSUS synchronization in progress; current phase: synchronizing the internet-facing update server"
            }
            Self::LegacyCatalogBuildStarted => "legacy scan catalog build started",
            Self::LegacyCatalogBuilt => "legacy scan catalog build done",
            Self::LegacyCatalogBuildFailed => "legacy scan catalog build failed",
            Self::LegacyCatalogReceived => "legacy scan catalog taken from the parent",
            Self::LegacyCatalogFetchFailed => "taking the parent's legacy scan catalog failed",
            Self::DocumentSkipped => "an update document was skipped",
        }
    }
}

impl fmt::Display for StatusMessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code())
    }
}

/// The text or number given is not a status message id sitesync raises.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{0}` is not a status message id; use 6701 (started), 6702 (done), 6703 (failed), 6704 (syncing the update server), 6705 (syncing the site database), 6706 (syncing the internet-facing update server), 6790 (document skipped) or 6791-6795 (legacy scan catalog: build started, done, failed; taken from the parent, failed)"
)]
pub struct UnknownStatusMessageId(pub String);

impl From<StatusMessageId> for u32 {
    fn from(id: StatusMessageId) -> u32 {
        id.code()
    }
}

impl TryFrom<u32> for StatusMessageId {
    type Error = UnknownStatusMessageId;

    fn try_from(code: u32) -> Result<Self, Self::Error> {
        Self::from_code(code).ok_or_else(|| UnknownStatusMessageId(code.to_string()))
    }
}

impl FromStr for StatusMessageId {
    type Err = UnknownStatusMessageId;

    /// The number (`6703`) or the name (`SyncFailed`, any case).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let by_code = text.parse::<u32>().ok().and_then(Self::from_code);
        by_code
            .or_else(|| {
                Self::ALL
                    .into_iter()
                    .find(|id| id.name().eq_ignore_ascii_case(text))
            })
            .ok_or_else(|| UnknownStatusMessageId(text.to_owned()))
    }
}

/// How serious a status message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Severity {
    // Stored by position: append new severities at the end only.
    Informational,
    Warning,
    Error,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Informational => "informational",
            Self::Warning => "warning",
            Self::Error => "error",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One status message, as stored and as forwarded to the parent site.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusMessage {
    /// The site that raised it.
    pub site_code: String,
    /// Strictly increasing per originating site, starting at 1, so a parent can tell
    /// which forwarded messages it already holds.
    pub sequence: u64,
    pub id: StatusMessageId,
    pub severity: Severity,
    /// The reporting component; [`COMPONENT`] for the sync manager.
    pub component: String,
    pub time: Timestamp,
    /// The sync the message belongs to, numbered by the originating site's sync manager.
    pub sync_id: u64,
    pub text: String,
    /// Machine-readable details (counts, the phase, a document's name), so tools need not
    /// parse `text`.
    pub properties: BTreeMap<String, String>,
    /// The trace the message was raised in (32 hex digits), empty when none: the sync's, so
    /// an operator goes from a message to the whole cascade's trace.
    pub trace_id: String,
}

/// A message as stored before messages carried a trace id.
#[derive(Serialize, Deserialize)]
struct StatusMessageWithoutTrace {
    site_code: String,
    sequence: u64,
    id: StatusMessageId,
    severity: Severity,
    component: String,
    time: Timestamp,
    sync_id: u64,
    text: String,
    properties: BTreeMap<String, String>,
}

/// Whether `trace_id` is a trace id as messages carry it: empty, or 32 lowercase hex digits.
pub fn valid_trace_id(trace_id: &str) -> bool {
    trace_id.is_empty()
        || (trace_id.len() == 32
            && trace_id
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
}

/// A failure of the status message log.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error(
        "the status message log is corrupt: {what}; restore the node's data directory from a backup (status messages are history only: syncs do not depend on them)"
    )]
    Corrupt { what: String },
    #[error(
        "the status message log was written with layout version {found}, this node understands version {FORMAT_VERSION}; run the sitesync release that wrote it, or start from an empty data directory"
    )]
    Format { found: u32 },
    #[error(
        "`{site_code}` is not a site code: {reason} (site codes are 1 to {MAX_SITE_CODE_BYTES} bytes without spaces, such as CEN or P01)"
    )]
    InvalidSiteCode {
        site_code: String,
        reason: &'static str,
    },
    #[error(
        "status message {sequence} of site `{site_code}` was refused: {reason}; nothing of this batch was stored — the sending site must correct or drop that message and send again"
    )]
    InvalidForwarded {
        site_code: String,
        sequence: u64,
        reason: String,
    },
    #[error(
        "{count} status messages were sent in one batch, at most {MAX_FORWARDED_BATCH} are accepted; send them in smaller batches"
    )]
    BatchTooLarge { count: usize },
    #[error(
        "`{0}` is not a page token of this node's status messages; repeat the query without a page token"
    )]
    InvalidCursor(String),
}

fn corrupt(what: impl Into<String>) -> StatusError {
    StatusError::Corrupt { what: what.into() }
}

/// Where a query stopped; pass it as [`StatusQuery::after`] to get the next page. Opaque:
/// it prints as a hex token for transports and parses back from one.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct StatusCursor(Vec<u8>);

impl StatusCursor {
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// A cursor from bytes obtained with [`StatusCursor::as_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, StatusError> {
        if !matches!(bytes.first(), Some(&BY_TIME | &OLDEST_FIRST)) {
            return Err(StatusError::InvalidCursor(hex(bytes)));
        }
        Ok(Self(bytes.to_vec()))
    }
}

impl fmt::Display for StatusCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex(&self.0))
    }
}

impl fmt::Debug for StatusCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StatusCursor({self})")
    }
}

impl FromStr for StatusCursor {
    type Err = StatusError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || StatusError::InvalidCursor(text.to_owned());
        if !text.len().is_multiple_of(2) || !text.is_ascii() {
            return Err(invalid());
        }
        let bytes = (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16))
            .collect::<Result<Vec<u8>, _>>()
            .map_err(|_| invalid())?;
        Self::from_bytes(&bytes).map_err(|_| invalid())
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Which messages a [`StatusLog::query`] returns. Empty lists mean "any".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusQuery {
    /// Only messages raised by these sites.
    pub sites: Vec<String>,
    /// Only messages with these ids.
    pub ids: Vec<StatusMessageId>,
    /// Only messages at or after this time.
    pub since: Option<Timestamp>,
    /// Only messages at or before this time.
    pub until: Option<Timestamp>,
    /// Only messages of this sync. Sync ids are numbered per site, so this is usually
    /// combined with one site.
    pub sync_id: Option<u64>,
    /// Oldest first instead of newest first.
    pub oldest_first: bool,
    /// Continue after the page that returned this cursor (from a query in the same order).
    pub after: Option<StatusCursor>,
    /// At most this many messages: 0 means [`DEFAULT_QUERY_LIMIT`], and more than
    /// [`MAX_QUERY_LIMIT`] is capped.
    pub limit: usize,
}

impl Default for StatusQuery {
    fn default() -> Self {
        Self {
            sites: Vec::new(),
            ids: Vec::new(),
            since: None,
            until: None,
            sync_id: None,
            oldest_first: false,
            after: None,
            limit: DEFAULT_QUERY_LIMIT,
        }
    }
}

/// The durable status messages of a node: its own and those forwarded from sites below.
#[derive(Debug)]
pub struct StatusLog {
    backend: Box<dyn Backend>,
    /// How many messages to keep; older ones are pruned as new ones arrive.
    retention: u64,
    /// Serializes writers: each reads the sequence and count it updates.
    writer: Mutex<()>,
}

impl StatusLog {
    /// Opens the log kept in `backend` (creating it when the backend is empty), keeping
    /// [`DEFAULT_RETENTION`] messages.
    pub fn open(backend: Box<dyn Backend>) -> Result<Self, StatusError> {
        match backend.get(FORMAT_KEY)? {
            Some(bytes) => {
                let found = u32::from_be_bytes(
                    bytes
                        .as_slice()
                        .try_into()
                        .map_err(|_| corrupt("the layout version record has the wrong size"))?,
                );
                if found != FORMAT_VERSION {
                    return Err(StatusError::Format { found });
                }
            }
            None => {
                let any = backend.scan(&[], &[], 1, &|_| true)?;
                if !any.entries.is_empty() {
                    return Err(corrupt(
                        "the key space holds data but no layout version; is it another store's?",
                    ));
                }
                let mut batch = WriteBatch::default();
                batch.put(FORMAT_KEY.to_vec(), FORMAT_VERSION.to_be_bytes().to_vec());
                batch.put(COUNT_KEY.to_vec(), 0u64.to_be_bytes().to_vec());
                backend.apply(batch)?;
                backend.flush()?;
            }
        }
        Ok(Self {
            backend,
            retention: DEFAULT_RETENTION,
            writer: Mutex::new(()),
        })
    }

    /// Keeps the newest `max_messages` messages (at least 1) from the next write on.
    pub fn with_retention(mut self, max_messages: u64) -> Self {
        self.retention = max_messages.max(1);
        self
    }

    pub fn retention(&self) -> u64 {
        self.retention
    }

    /// Records a message raised at this site: gives it the site's next sequence number,
    /// the id's severity and [`COMPONENT`], and returns once it is durable. A text or
    /// properties beyond the limits are truncated rather than refused.
    pub fn append(
        &self,
        site_code: &str,
        id: StatusMessageId,
        sync_id: u64,
        text: impl Into<String>,
        properties: BTreeMap<String, String>,
        time: Timestamp,
    ) -> Result<StatusMessage, StatusError> {
        self.append_traced(site_code, id, sync_id, text, properties, time, "")
    }

    /// [`StatusLog::append`] for a message raised inside a trace (`trace_id`: 32 hex digits,
    /// or empty for none; anything else is dropped).
    #[allow(clippy::too_many_arguments)]
    pub fn append_traced(
        &self,
        site_code: &str,
        id: StatusMessageId,
        sync_id: u64,
        text: impl Into<String>,
        properties: BTreeMap<String, String>,
        time: Timestamp,
        trace_id: &str,
    ) -> Result<StatusMessage, StatusError> {
        check_site_code(site_code)?;
        let mut text = text.into();
        truncate(&mut text, MAX_TEXT_BYTES);
        let properties = properties
            .into_iter()
            .take(MAX_PROPERTIES)
            .map(|(mut name, mut value)| {
                truncate(&mut name, MAX_PROPERTY_NAME_BYTES);
                truncate(&mut value, MAX_PROPERTY_VALUE_BYTES);
                (name, value)
            })
            .collect();

        let _writer = self.lock_writer();
        let sequence = self
            .last_sequence(site_code)?
            .checked_add(1)
            .ok_or_else(|| corrupt(format!("site {site_code}'s sequence is exhausted")))?;
        let message = StatusMessage {
            site_code: site_code.to_owned(),
            sequence,
            id,
            severity: id.severity(),
            component: COMPONENT.to_owned(),
            time,
            sync_id,
            text,
            properties,
            trace_id: if valid_trace_id(trace_id) {
                trace_id.to_owned()
            } else {
                String::new()
            },
        };
        let mut batch = WriteBatch::default();
        stage_insert(&mut batch, &message);
        batch.put(
            site_sequence_key(site_code),
            sequence.to_be_bytes().to_vec(),
        );
        self.stage_count_and_prune(&mut batch, 1)?;
        self.backend.apply(batch)?;
        self.backend.flush()?;
        Ok(message)
    }

    /// Stores messages forwarded from other sites, ignoring any already held (same site
    /// code and sequence, whatever its content). Returns how many were newly stored, once
    /// they are durable. Every message is checked first: one invalid message refuses the
    /// whole batch and stores nothing.
    ///
    /// A message pruned by retention and forwarded again is stored again; forwarding that
    /// resumes after [`StatusLog::last_sequence`] never does that.
    pub fn insert_forwarded(&self, messages: Vec<StatusMessage>) -> Result<usize, StatusError> {
        if messages.len() > MAX_FORWARDED_BATCH {
            return Err(StatusError::BatchTooLarge {
                count: messages.len(),
            });
        }
        for message in &messages {
            check_forwarded(message)?;
        }

        let _writer = self.lock_writer();
        let mut batch = WriteBatch::default();
        let mut staged: HashSet<(&str, u64)> = HashSet::new();
        let mut highest: HashMap<&str, u64> = HashMap::new();
        for message in &messages {
            let identity = (message.site_code.as_str(), message.sequence);
            if staged.contains(&identity)
                || self
                    .backend
                    .get(&by_site_key(&message.site_code, message.sequence))?
                    .is_some()
            {
                continue;
            }
            staged.insert(identity);
            stage_insert(&mut batch, message);
            let high = highest.entry(identity.0).or_default();
            *high = (*high).max(message.sequence);
        }
        if staged.is_empty() {
            return Ok(0);
        }
        for (site_code, sequence) in highest {
            if sequence > self.last_sequence(site_code)? {
                batch.put(
                    site_sequence_key(site_code),
                    sequence.to_be_bytes().to_vec(),
                );
            }
        }
        self.stage_count_and_prune(&mut batch, staged.len() as u64)?;
        self.backend.apply(batch)?;
        self.backend.flush()?;
        Ok(staged.len())
    }

    /// Messages matching `query`, newest first (by message time; within one millisecond,
    /// by site and then highest sequence first), with a cursor for the next page when the
    /// page is full. A cursor may lead to an empty page.
    pub fn query(
        &self,
        query: &StatusQuery,
    ) -> Result<(Vec<StatusMessage>, Option<StatusCursor>), StatusError> {
        let limit = match query.limit {
            0 => DEFAULT_QUERY_LIMIT,
            limit => limit.min(MAX_QUERY_LIMIT),
        };
        let sites: HashSet<&[u8]> = query.sites.iter().map(|s| s.as_bytes()).collect();
        let ids: HashSet<u32> = query.ids.iter().map(|id| id.code()).collect();
        let since = query.since.unwrap_or(Timestamp(i64::MIN));
        if query.oldest_first {
            return self.query_oldest_first(query, limit, &sites, &ids);
        }
        let keep = |key: &[u8]| match TimeKey::parse(key) {
            Some(k) => {
                k.time >= since
                    && (sites.is_empty() || sites.contains(k.site))
                    && (ids.is_empty() || ids.contains(&k.id))
                    && query.sync_id.is_none_or(|sync_id| sync_id == k.sync_id)
            }
            // Kept so that reading it reports the corruption.
            None => true,
        };

        let mut from = vec![BY_TIME];
        if let Some(until) = query.until {
            from.extend_from_slice(&inverted_time(until));
        }
        if let Some(after) = &query.after {
            if after.as_bytes().first() != Some(&BY_TIME) {
                return Err(StatusError::InvalidCursor(after.to_string()));
            }
            from = from.max(successor(after.as_bytes().to_vec()));
        }
        let mut out = Vec::new();
        let mut last_key = None;
        while out.len() < limit {
            let page = self
                .backend
                .scan(&[BY_TIME], &from, limit - out.len(), &keep)?;
            for (key, value) in page.entries {
                if TimeKey::parse(&key).is_none() {
                    return Err(corrupt("a message key has an unknown shape"));
                }
                out.push(decode_message(&value)?);
                last_key = Some(key);
            }
            match page.resume_after {
                // Keys are newest first: past `since`, nothing further can match.
                Some(resume) if TimeKey::parse(&resume).is_some_and(|k| k.time >= since) => {
                    from = successor(resume);
                }
                _ => return Ok((out, None)),
            }
        }
        Ok((out, last_key.map(StatusCursor)))
    }

    /// [`StatusLog::query`] in time order: the oldest-first index gives the order and the
    /// time and site filters; the message's own key gives its id and sync id.
    fn query_oldest_first(
        &self,
        query: &StatusQuery,
        limit: usize,
        sites: &HashSet<&[u8]>,
        ids: &HashSet<u32>,
    ) -> Result<(Vec<StatusMessage>, Option<StatusCursor>), StatusError> {
        let mut from = vec![OLDEST_FIRST];
        if let Some(since) = query.since {
            from.extend_from_slice(&ordered_time(since));
        }
        if let Some(after) = &query.after {
            if after.as_bytes().first() != Some(&OLDEST_FIRST) {
                return Err(StatusError::InvalidCursor(after.to_string()));
            }
            from = from.max(successor(after.as_bytes().to_vec()));
        }
        let until = query.until.map(ordered_time);
        let keep = |key: &[u8]| {
            parse_oldest_key(key).is_none_or(|(site, _)| sites.is_empty() || sites.contains(site))
        };
        let mut out = Vec::new();
        loop {
            let page = self.backend.scan(&[OLDEST_FIRST], &from, limit, &keep)?;
            for (key, time_key) in page.entries {
                if until.is_some_and(|until| key.get(1..9).is_some_and(|t| t > &until[..])) {
                    return Ok((out, None));
                }
                let fields = TimeKey::parse(&time_key).ok_or_else(|| {
                    corrupt("an index entry names a message key of an unknown shape")
                })?;
                let wanted = (ids.is_empty() || ids.contains(&fields.id))
                    && query
                        .sync_id
                        .is_none_or(|sync_id| sync_id == fields.sync_id);
                if !wanted {
                    continue;
                }
                let value = self
                    .backend
                    .get(&time_key)?
                    .ok_or_else(|| corrupt("an index entry names a message that is gone"))?;
                out.push(decode_message(&value)?);
                if out.len() == limit {
                    return Ok((out, Some(StatusCursor(key))));
                }
            }
            match page.resume_after {
                Some(resume) => from = successor(resume),
                None => return Ok((out, None)),
            }
        }
    }

    /// Messages of `site_code` with a sequence greater than `after_sequence`, in sequence
    /// order, at most `limit` (capped at [`MAX_QUERY_LIMIT`]): what a site forwards to its
    /// parent after the parent acknowledged `after_sequence`.
    pub fn messages_after(
        &self,
        site_code: &str,
        after_sequence: u64,
        limit: usize,
    ) -> Result<Vec<StatusMessage>, StatusError> {
        check_site_code(site_code)?;
        let limit = limit.min(MAX_QUERY_LIMIT);
        let prefix = by_site_prefix(site_code);
        let Some(first) = after_sequence.checked_add(1) else {
            return Ok(Vec::new());
        };
        let mut from = by_site_key(site_code, first);
        let mut out = Vec::new();
        while out.len() < limit {
            let page = self
                .backend
                .scan(&prefix, &from, limit - out.len(), &|_| true)?;
            for (_, time_key) in page.entries {
                let value = self
                    .backend
                    .get(&time_key)?
                    .ok_or_else(|| corrupt("the site index names a message that is not stored"))?;
                out.push(decode_message(&value)?);
            }
            match page.resume_after {
                Some(resume) => from = successor(resume),
                None => break,
            }
        }
        Ok(out)
    }

    /// One message, by its originating site and sequence.
    pub fn get(
        &self,
        site_code: &str,
        sequence: u64,
    ) -> Result<Option<StatusMessage>, StatusError> {
        check_site_code(site_code)?;
        let Some(time_key) = self.backend.get(&by_site_key(site_code, sequence))? else {
            return Ok(None);
        };
        let value = self
            .backend
            .get(&time_key)?
            .ok_or_else(|| corrupt("the site index names a message that is not stored"))?;
        decode_message(&value).map(Some)
    }

    /// The highest sequence number stored for `site_code` (0 if none ever was), kept even
    /// after the messages themselves were pruned.
    pub fn last_sequence(&self, site_code: &str) -> Result<u64, StatusError> {
        match self.backend.get(&site_sequence_key(site_code))? {
            Some(bytes) => read_u64(&bytes, "a site's sequence record"),
            None => Ok(0),
        }
    }

    /// How many messages are stored.
    pub fn len(&self) -> Result<u64, StatusError> {
        match self.backend.get(COUNT_KEY)? {
            Some(bytes) => read_u64(&bytes, "the message count"),
            None => Err(corrupt("the message count is missing")),
        }
    }

    pub fn is_empty(&self) -> Result<bool, StatusError> {
        Ok(self.len()? == 0)
    }

    /// Adds the new count to `batch`, and the removal of the oldest messages beyond the
    /// retention bound.
    fn stage_count_and_prune(&self, batch: &mut WriteBatch, added: u64) -> Result<(), StatusError> {
        let mut count = self.len()? + added;
        let excess = count
            .saturating_sub(self.retention)
            .min(added + PRUNE_CATCH_UP);
        let mut pruned = 0;
        let mut from = vec![OLDEST_FIRST];
        while pruned < excess {
            let want = usize::try_from(excess - pruned).unwrap_or(usize::MAX);
            let page = self.backend.scan(&[OLDEST_FIRST], &from, want, &|_| true)?;
            for (key, time_key) in page.entries {
                let (site_code, sequence) = parse_oldest_key(&key)
                    .ok_or_else(|| corrupt("an oldest-first index key has an unknown shape"))?;
                batch.delete(by_site_key_bytes(site_code, sequence));
                batch.delete(time_key);
                batch.delete(key);
                pruned += 1;
            }
            match page.resume_after {
                Some(resume) => from = successor(resume),
                None => break,
            }
        }
        count -= pruned;
        batch.put(COUNT_KEY.to_vec(), count.to_be_bytes().to_vec());
        Ok(())
    }

    fn lock_writer(&self) -> std::sync::MutexGuard<'_, ()> {
        // Writers change nothing in memory, so a panicked writer leaves nothing to repair.
        self.writer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Adds a message's record and its two index entries to `batch`.
fn stage_insert(batch: &mut WriteBatch, message: &StatusMessage) {
    let time_key = time_key(message);
    let encoded =
        postcard::to_allocvec(message).expect("postcard serializes plain structs into a Vec");
    batch.put(oldest_key(message), time_key.clone());
    batch.put(
        by_site_key(&message.site_code, message.sequence),
        time_key.clone(),
    );
    batch.put(time_key, encoded);
}

fn decode_message(bytes: &[u8]) -> Result<StatusMessage, StatusError> {
    // postcard has no field tags: a message stored before trace ids is shorter, and is
    // tried second.
    postcard::from_bytes(bytes)
        .or_else(
            |error| match postcard::from_bytes::<StatusMessageWithoutTrace>(bytes) {
                Ok(old) => Ok(StatusMessage {
                    site_code: old.site_code,
                    sequence: old.sequence,
                    id: old.id,
                    severity: old.severity,
                    component: old.component,
                    time: old.time,
                    sync_id: old.sync_id,
                    text: old.text,
                    properties: old.properties,
                    trace_id: String::new(),
                }),
                Err(_) => Err(error),
            },
        )
        .map_err(|e| corrupt(format!("a stored message does not decode: {e}")))
}

fn read_u64(bytes: &[u8], what: &str) -> Result<u64, StatusError> {
    bytes
        .try_into()
        .map(u64::from_be_bytes)
        .map_err(|_| corrupt(format!("{what} has the wrong size")))
}

fn check_site_code(site_code: &str) -> Result<(), StatusError> {
    let invalid = |reason| StatusError::InvalidSiteCode {
        site_code: site_code.to_owned(),
        reason,
    };
    if site_code.is_empty() {
        Err(invalid("it is empty"))
    } else if site_code.len() > MAX_SITE_CODE_BYTES {
        Err(invalid("it is too long"))
    } else if site_code
        .chars()
        .any(|c| c.is_control() || c.is_whitespace())
    {
        Err(invalid("it contains spaces or control characters"))
    } else {
        Ok(())
    }
}

fn check_forwarded(message: &StatusMessage) -> Result<(), StatusError> {
    let refuse = |reason: String| StatusError::InvalidForwarded {
        site_code: message.site_code.clone(),
        sequence: message.sequence,
        reason,
    };
    check_site_code(&message.site_code).map_err(|e| refuse(e.to_string()))?;
    if message.sequence == 0 {
        return Err(refuse("sequence numbers start at 1".to_owned()));
    }
    if message.component.is_empty() || message.component.len() > MAX_COMPONENT_BYTES {
        return Err(refuse(format!(
            "the component name must be 1 to {MAX_COMPONENT_BYTES} bytes"
        )));
    }
    if message.text.len() > MAX_TEXT_BYTES {
        return Err(refuse(format!(
            "its text is {} bytes, at most {MAX_TEXT_BYTES} are accepted",
            message.text.len()
        )));
    }
    if message.properties.len() > MAX_PROPERTIES {
        return Err(refuse(format!(
            "it has {} properties, at most {MAX_PROPERTIES} are accepted",
            message.properties.len()
        )));
    }
    if let Some((name, _)) = message.properties.iter().find(|(name, value)| {
        name.len() > MAX_PROPERTY_NAME_BYTES || value.len() > MAX_PROPERTY_VALUE_BYTES
    }) {
        return Err(refuse(format!(
            "property `{}` is too long (names up to {MAX_PROPERTY_NAME_BYTES} bytes, values up to {MAX_PROPERTY_VALUE_BYTES})",
            name.chars().take(40).collect::<String>()
        )));
    }
    Ok(())
}

/// Shortens `text` to at most `max` bytes on a character boundary, marking the cut.
fn truncate(text: &mut String, max: usize) {
    const MARK: &str = "…";
    if text.len() <= max {
        return;
    }
    let mut end = max.saturating_sub(MARK.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push_str(MARK);
}

/// A time as 8 bytes whose byte order is time order.
fn ordered_time(time: Timestamp) -> [u8; 8] {
    ((time.unix_millis() as u64) ^ (1 << 63)).to_be_bytes()
}

/// A time as 8 bytes whose byte order is the reverse of time order.
fn inverted_time(time: Timestamp) -> [u8; 8] {
    (!u64::from_be_bytes(ordered_time(time))).to_be_bytes()
}

fn push_site(key: &mut Vec<u8>, site_code: &[u8]) {
    // Site codes are checked to be at most MAX_SITE_CODE_BYTES (< 256) long.
    key.push(site_code.len() as u8);
    key.extend_from_slice(site_code);
}

fn time_key(message: &StatusMessage) -> Vec<u8> {
    let mut key = Vec::with_capacity(30 + message.site_code.len());
    key.push(BY_TIME);
    key.extend_from_slice(&inverted_time(message.time));
    push_site(&mut key, message.site_code.as_bytes());
    key.extend_from_slice(&(!message.sequence).to_be_bytes());
    key.extend_from_slice(&message.id.code().to_be_bytes());
    key.extend_from_slice(&message.sync_id.to_be_bytes());
    key
}

fn oldest_key(message: &StatusMessage) -> Vec<u8> {
    let mut key = Vec::with_capacity(18 + message.site_code.len());
    key.push(OLDEST_FIRST);
    key.extend_from_slice(&ordered_time(message.time));
    push_site(&mut key, message.site_code.as_bytes());
    key.extend_from_slice(&message.sequence.to_be_bytes());
    key
}

fn parse_oldest_key(key: &[u8]) -> Option<(&[u8], u64)> {
    let site_len = usize::from(*key.get(9)?);
    let site = key.get(10..10 + site_len)?;
    let sequence = key.get(10 + site_len..)?;
    Some((site, u64::from_be_bytes(sequence.try_into().ok()?)))
}

fn by_site_prefix(site_code: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(10 + site_code.len());
    key.push(BY_SITE);
    push_site(&mut key, site_code.as_bytes());
    key
}

fn by_site_key(site_code: &str, sequence: u64) -> Vec<u8> {
    by_site_key_bytes(site_code.as_bytes(), sequence)
}

fn by_site_key_bytes(site_code: &[u8], sequence: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(10 + site_code.len());
    key.push(BY_SITE);
    push_site(&mut key, site_code);
    key.extend_from_slice(&sequence.to_be_bytes());
    key
}

fn site_sequence_key(site_code: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + site_code.len());
    key.push(SITE_SEQUENCE);
    key.extend_from_slice(site_code.as_bytes());
    key
}

/// The fields of a `T` key, read without touching the message.
struct TimeKey<'a> {
    time: Timestamp,
    site: &'a [u8],
    id: u32,
    sync_id: u64,
}

impl<'a> TimeKey<'a> {
    fn parse(key: &'a [u8]) -> Option<Self> {
        let inverted = u64::from_be_bytes(key.get(1..9)?.try_into().ok()?);
        let time = Timestamp(((!inverted) ^ (1 << 63)) as i64);
        let site_len = usize::from(*key.get(9)?);
        let site = key.get(10..10 + site_len)?;
        let rest = key.get(10 + site_len..)?;
        if rest.len() != 20 {
            return None;
        }
        Some(Self {
            time,
            site,
            id: u32::from_be_bytes(rest[8..12].try_into().ok()?),
            sync_id: u64::from_be_bytes(rest[12..20].try_into().ok()?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::backend::MemoryBackend;

    fn log() -> StatusLog {
        StatusLog::open(Box::new(MemoryBackend::new())).unwrap()
    }

    fn append(log: &StatusLog, site: &str, id: StatusMessageId, time: i64) -> StatusMessage {
        log.append(
            site,
            id,
            1,
            id.description(),
            BTreeMap::new(),
            Timestamp(time),
        )
        .unwrap()
    }

    #[test]
    fn ids_have_configmgr_numbers_severities_and_parse_by_number_or_name() {
        assert_eq!(StatusMessageId::SyncStarted.code(), 6701);
        assert_eq!(StatusMessageId::SyncFailed.code(), 6703);
        assert_eq!(StatusMessageId::DocumentSkipped.code(), 6790);
        assert_eq!(StatusMessageId::SyncFailed.severity(), Severity::Error);
        assert_eq!(
            StatusMessageId::DocumentSkipped.severity(),
            Severity::Warning
        );
        assert_eq!(
            StatusMessageId::SyncDone.severity(),
            Severity::Informational
        );
        for id in StatusMessageId::ALL {
            assert_eq!(id.to_string().parse::<StatusMessageId>().unwrap(), id);
            assert_eq!(
                id.name().to_lowercase().parse::<StatusMessageId>().unwrap(),
                id
            );
            assert_eq!(StatusMessageId::try_from(id.code()).unwrap(), id);
        }
        let error = "6799".parse::<StatusMessageId>().unwrap_err().to_string();
        assert!(
            error.contains("`6799`") && error.contains("6703 (failed)"),
            "{error}"
        );
    }

    #[test]
    fn ids_are_stored_by_number() {
        let bytes = postcard::to_allocvec(&StatusMessageId::SyncFailed).unwrap();
        assert_eq!(postcard::from_bytes::<u32>(&bytes).unwrap(), 6703);
        assert!(
            postcard::from_bytes::<StatusMessageId>(&postcard::to_allocvec(&6799u32).unwrap())
                .is_err()
        );
    }

    #[test]
    fn messages_stored_before_trace_ids_read_with_none() {
        let old = postcard::to_allocvec(&StatusMessageWithoutTrace {
            site_code: "PR1".into(),
            sequence: 3,
            id: StatusMessageId::SyncStarted,
            severity: Severity::Informational,
            component: COMPONENT.into(),
            time: Timestamp(9),
            sync_id: 2,
            text: "started".into(),
            properties: BTreeMap::from([("a".into(), "b".into())]),
        })
        .unwrap();
        let message = decode_message(&old).unwrap();
        assert_eq!((message.sequence, message.text.as_str()), (3, "started"));
        assert_eq!(message.trace_id, "");

        let traced = StatusMessage {
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
            ..message
        };
        let bytes = postcard::to_allocvec(&traced).unwrap();
        assert_eq!(decode_message(&bytes).unwrap(), traced);
    }

    #[test]
    fn trace_ids_are_32_lowercase_hex_digits_or_nothing() {
        assert!(valid_trace_id(""));
        assert!(valid_trace_id("4bf92f3577b34da6a3ce929d0e0e4736"));
        assert!(!valid_trace_id("4BF92F3577B34DA6A3CE929D0E0E4736"));
        assert!(!valid_trace_id("4bf92f3577b34da6"));
        assert!(!valid_trace_id("zzf92f3577b34da6a3ce929d0e0e4736"));
    }

    #[test]
    fn time_keys_sort_newest_first_across_the_epoch() {
        let key = |time| {
            time_key(&StatusMessage {
                site_code: "CEN".into(),
                sequence: 1,
                id: StatusMessageId::SyncDone,
                severity: Severity::Informational,
                component: COMPONENT.into(),
                time: Timestamp(time),
                sync_id: 1,
                text: String::new(),
                properties: BTreeMap::new(),
                trace_id: String::new(),
            })
        };
        let times = [i64::MIN, -1, 0, 1, 1_700_000_000_000, i64::MAX];
        for pair in times.windows(2) {
            assert!(key(pair[1]) < key(pair[0]));
        }
        for time in times {
            assert_eq!(TimeKey::parse(&key(time)).unwrap().time, Timestamp(time));
        }
    }

    #[test]
    fn long_local_texts_are_truncated_on_a_character_boundary() {
        let log = log();
        let text = "é".repeat(MAX_TEXT_BYTES);
        let message = log
            .append(
                "CEN",
                StatusMessageId::SyncFailed,
                1,
                text,
                BTreeMap::new(),
                Timestamp(0),
            )
            .unwrap();
        assert!(message.text.len() <= MAX_TEXT_BYTES);
        assert!(message.text.ends_with('…'));
    }

    #[test]
    fn bad_site_codes_are_refused_with_the_reason() {
        let log = log();
        for (site, reason) in [
            ("", "empty"),
            ("C E N", "spaces"),
            (&"X".repeat(65), "too long"),
        ] {
            let error = log
                .append(
                    site,
                    StatusMessageId::SyncDone,
                    1,
                    "",
                    BTreeMap::new(),
                    Timestamp(0),
                )
                .unwrap_err()
                .to_string();
            assert!(error.contains(reason), "{error}");
        }
    }

    #[test]
    fn a_cursor_prints_as_a_token_and_parses_back() {
        let log = log();
        for time in 0..3 {
            append(&log, "CEN", StatusMessageId::SyncStarted, time);
        }
        let (_, cursor) = log
            .query(&StatusQuery {
                limit: 2,
                ..StatusQuery::default()
            })
            .unwrap();
        let cursor = cursor.unwrap();
        assert_eq!(cursor.to_string().parse::<StatusCursor>().unwrap(), cursor);
        for bad in ["zz", "abc", "00", "é"] {
            let error = bad.parse::<StatusCursor>().unwrap_err().to_string();
            assert!(error.contains("page token"), "{error}");
        }
    }
}
