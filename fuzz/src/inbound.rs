//! Every message a node decodes from a peer, and what receiving one involves.
//!
//! Input format of the `inbound_messages` target: the first byte picks an entry of
//! [`INBOUND`] (modulo its length), the remaining bytes are the encoded message. Entries are
//! only ever appended, so that committed corpus files keep their meaning; the seed generator
//! writes its files through [`input`], which looks the entry up by name.
//!
//! Receiving a message here is what a receiver does before its domain logic: decode with
//! prost, then convert every part that `sitesync_proto::convert` has a conversion for —
//! identities, digests, enums, timestamps, revisions — and parse every carried update
//! document with the metadata parser, checking it against the identity it was sent under.
//! Beyond "never panics", it checks that prost decodes what it encodes to the same message,
//! that every accepted domain value converts to the wire and back unchanged, and that a
//! refusal's message stays short whatever the peer sent (`ConversionError` quotes at most
//! 64 characters of the peer's text).

use std::fmt::Debug;

use prost::Message;
use sitesync_metadata::{
    CatalogDigest, MsrcSeverity, ParseLimits, RevisionId, UpdateId, UpdateRevision, UpdateType,
    parse_update,
};
use sitesync_proto::convert::{WireEnum, optional_enum, timestamp_from_wire, timestamp_to_wire};
use sitesync_proto::{ConversionError, HeldReference, RevisionDocument, v1};

/// One message type a node, a child or the control plane decodes from a peer.
#[derive(Debug)]
pub struct Inbound {
    /// The message's name in the contract (`sitesync.v1.<name>`).
    pub name: &'static str,
    /// Decodes `bytes` as this message and receives it.
    pub receive: fn(&[u8]),
}

/// The input of the `inbound_messages` target that delivers `message` as the entry `name`.
///
/// Panics if `name` is not in [`INBOUND`]: a seed for a message nobody decodes is a mistake.
pub fn input(name: &str, message: &impl Message) -> Vec<u8> {
    let index = INBOUND
        .iter()
        .position(|entry| entry.name == name)
        .unwrap_or_else(|| panic!("{name} is not an inbound message"));
    let mut bytes = vec![u8::try_from(index).expect("at most 256 inbound messages")];
    message.encode(&mut bytes).expect("a Vec grows as needed");
    bytes
}

/// Runs one fuzz input: the first byte picks the message type.
pub fn receive_input(data: &[u8]) {
    if let Some((&selector, bytes)) = data.split_first() {
        (INBOUND[usize::from(selector) % INBOUND.len()].receive)(bytes);
    }
}

macro_rules! inbound {
    ($($message:ident => $check:expr),+ $(,)?) => {
        /// Every inbound message type, in a fixed order (append only: corpus files select
        /// entries by index).
        pub const INBOUND: &[Inbound] = &[$(
            Inbound {
                name: stringify!($message),
                receive: |bytes| receive::<v1::$message>(bytes, $check),
            },
        )+];
    };
}

inbound! {
    // Requests a node serves: Hierarchy (from children).
    RegisterChildRequest => |m| optional(m.state, site_state),
    SyncRequest => |m| {
        timestamp(m.requested_at);
        optional(m.update_server, store_info);
        optional(m.site_database, store_info);
        optional(m.catalog_version, signed_catalog_version);
    },
    StatusMessageBatch => |m| m.messages.into_iter().for_each(status_message),
    SiteStateReport => |m| m.sites.into_iter().for_each(site_state),
    // SiteReplication and UpdateServer (from children and downstream servers).
    ReplicationRequest => |m| match m.kind {
        Some(v1::replication_request::Kind::Subscribe(subscribe)) => {
            optional(subscribe.from, anchor);
        }
        Some(v1::replication_request::Kind::Ack(ack)) => optional(ack.applied, anchor),
        None => {}
    },
    GetChangesRequest => |m| optional(m.since, anchor),
    GetUpdateDocumentsRequest => |m| {
        m.revisions.into_iter().for_each(convert::<RevisionId, _>);
        m.updates.into_iter().for_each(convert::<UpdateId, _>);
    },
    GetCatalogInfoRequest => nothing,
    GetSiteDatabaseInfoRequest => nothing,
    // Admin (from operators).
    GetSiteStatusRequest => nothing,
    GetHierarchyRequest => nothing,
    RunSyncRequest => nothing,
    WatchSyncRequest => nothing,
    ListStatusMessagesRequest => |m| {
        timestamp(m.since);
        timestamp(m.until);
    },
    ListUpdatesRequest => |m| optional(m.filter, update_filter),
    GetUpdateRequest => |m| optional(m.update_id, convert::<UpdateId, _>),
    GetSyncSettingsRequest => nothing,
    SetSyncSettingsRequest => |m| optional(m.settings, sync_settings),
    ExportCatalogRequest => |m| optional(m.since, anchor),
    ImportCatalogChunk => nothing,
    PublishUpdateRequest => |m| {
        for document in &m.documents {
            if parse_update(document, &ParseLimits::default()).is_ok() {
                let _ = sitesync_metadata::custom::unseal(document);
            }
        }
    },
    GetClientPolicyRequest => nothing,
    // ClientPolicy (from clients).
    GetMachinePolicyRequest => nothing,
    GetLegacyScanCatalogRequest => nothing,
    // Responses a child decodes from its parent, a downstream server from its upstream.
    RegisterChildResponse => nothing,
    SyncRequestReceipt => nothing,
    StatusMessageReceipt => nothing,
    SiteStateReceipt => nothing,
    CatalogInfo => catalog_info,
    GetChangesResponse => |m| match m.kind {
        Some(v1::get_changes_response::Kind::Plan(plan)) => optional(plan.target, anchor),
        Some(v1::get_changes_response::Kind::Batch(batch)) => change_batch(batch),
        Some(v1::get_changes_response::Kind::Complete(complete)) => {
            optional(complete.at_target, catalog_info);
        }
        None => {}
    },
    UpdateDocumentBatch => |m| {
        m.documents.into_iter().for_each(update_document);
        m.missing_revisions.into_iter().for_each(convert::<RevisionId, _>);
        m.missing_updates.into_iter().for_each(convert::<UpdateId, _>);
    },
    ReplicationMessage => |m| match m.kind {
        Some(v1::replication_message::Kind::Batch(batch)) => change_batch(batch),
        Some(v1::replication_message::Kind::Heartbeat(heartbeat)) => {
            optional(heartbeat.site_database, store_info);
            timestamp(heartbeat.sent_at);
        }
        None => {}
    },
    StoreInfo => store_info,
    // Responses the control plane and clients decode.
    SiteStatus => |m| {
        optional(m.site, site_state);
        for child in m.children {
            timestamp(child.registered_at);
            timestamp(child.last_contact_at);
            optional(child.replication_acked, anchor);
        }
        m.queued_syncs.into_iter().for_each(sync_run);
    },
    HierarchyTree => |m| {
        for node in m.sites {
            optional(node.state, site_state);
            timestamp(node.last_report_at);
        }
        timestamp(m.as_of);
    },
    RunSyncResponse => nothing,
    SyncProgress => |m| {
        optional(m.run, sync_run);
        m.messages.into_iter().for_each(status_message);
    },
    ListStatusMessagesResponse => |m| m.messages.into_iter().for_each(status_message),
    ListUpdatesResponse => |m| {
        for summary in m.updates {
            optional(summary.id, convert::<RevisionId, _>);
            wire_enum::<UpdateType>(summary.update_type);
            wire_enum::<MsrcSeverity>(summary.msrc_severity);
            summary.categories.into_iter().for_each(convert::<UpdateId, _>);
            summary.superseded.into_iter().for_each(convert::<UpdateId, _>);
        }
    },
    GetUpdateResponse => |m| {
        optional(m.revision, convert::<UpdateRevision, _>);
        m.superseded_by.into_iter().for_each(convert::<UpdateId, _>);
        for category in m.categories {
            optional(category.id, convert::<UpdateId, _>);
        }
    },
    SyncSettings => sync_settings,
    SetSyncSettingsResponse => |m| optional(m.settings, sync_settings),
    ExportCatalogChunk => |m| {
        if let Some(v1::export_catalog_chunk::Kind::Start(start)) = m.kind
            && let Some(header) = start.header
        {
            optional(header.catalog_version, signed_catalog_version);
            optional(header.base, anchor);
            optional(header.target, anchor);
            timestamp(header.created_at);
        }
    },
    ImportCatalogResponse => |m| {
        if let Some(header) = m.header {
            optional(header.catalog_version, signed_catalog_version);
            timestamp(header.created_at);
        }
        optional(m.update_server, store_info);
        optional(m.catalog_version, signed_catalog_version);
    },
    PublishUpdateResponse => |m| {
        optional(m.id, convert::<RevisionId, _>);
        optional(m.publications, store_info);
    },
    MachinePolicy => |m| {
        optional(m.catalog_digest, convert::<CatalogDigest, _>);
        optional(m.catalog_version, signed_catalog_version);
        timestamp(m.created_at);
        optional(m.catalog_position, anchor);
    },
    LegacyScanCatalogChunk => |m| {
        if let Some(v1::legacy_scan_catalog_chunk::Kind::Header(header)) = m.kind {
            timestamp(header.generated_at);
            timestamp(header.next_refresh_at);
            optional(header.catalog_digest, convert::<CatalogDigest, _>);
        }
    },
    // Custom updates' publishers (S6), appended.
    ListPublishersRequest => nothing,
    ListPublishersResponse => |m| {
        for delegation in m.delegations {
            publisher_delegation(delegation);
        }
    },
    DelegatePublisherRequest => |m| timestamp(m.expires_at),
    DelegatePublisherResponse => |m| {
        optional(m.delegation, publisher_delegation);
        for delegation in m.retired {
            publisher_delegation(delegation);
        }
    },
    RevokePublisherRequest => nothing,
    RevokePublisherResponse => |m| {
        for delegation in m.retired {
            publisher_delegation(delegation);
        }
    },
}

/// What a node reads of a delegation: its times.
fn publisher_delegation(delegation: v1::PublisherDelegation) {
    timestamp(delegation.added_at);
    timestamp(delegation.retired_at);
    timestamp(delegation.expires_at);
}

/// Decodes one message, checks that prost's encoding of it decodes to the same message, and
/// hands it to the receiver's checks.
fn receive<M: Message + Default + PartialEq>(bytes: &[u8], check: fn(M)) {
    let Ok(message) = M::decode(bytes) else {
        return;
    };
    let encoded = message.encode_to_vec();
    assert_eq!(encoded.len(), message.encoded_len());
    let again = M::decode(encoded.as_slice()).expect("prost refuses what it encoded");
    assert!(
        again == message,
        "prost's encoding does not decode to the same message"
    );
    check(message);
}

fn nothing<M>(_: M) {}

fn convert<D, W>(wire: W)
where
    D: TryFrom<W, Error = ConversionError> + Clone + PartialEq + Debug,
    W: From<D>,
{
    let _ = converted::<W, D>(wire);
}

/// A wire enum field with a domain enum; UNSPECIFIED is "absent".
fn wire_enum<D: WireEnum>(raw: i32) {
    if let Err(error) = optional_enum::<D>(raw, "") {
        bounded(error);
    }
}

fn optional<W>(wire: Option<W>, check: impl FnOnce(W)) {
    if let Some(wire) = wire {
        check(wire);
    }
}

/// Converts `wire` into its domain type; an accepted value must come back unchanged from the
/// wire, a refusal must stay short.
fn converted<W, D>(wire: W) -> Option<D>
where
    D: TryFrom<W, Error = ConversionError> + Clone + PartialEq + Debug,
    W: From<D>,
{
    match D::try_from(wire) {
        Ok(value) => {
            assert_eq!(
                D::try_from(W::from(value.clone())),
                Ok(value.clone()),
                "a domain value changes on its way to the wire and back"
            );
            Some(value)
        }
        Err(error) => {
            bounded(error);
            None
        }
    }
}

/// A refusal's message is what a receiver logs and returns to the peer: it must not grow with
/// what the peer sent.
fn bounded(error: ConversionError) {
    let message = error.to_string();
    assert!(
        message.len() <= 1024,
        "a conversion error of {} bytes: {message:.200}",
        message.len()
    );
}

fn timestamp(wire: Option<prost_types::Timestamp>) {
    let Some(wire) = wire else {
        return;
    };
    match timestamp_from_wire(wire) {
        Ok(time) => assert_eq!(timestamp_from_wire(timestamp_to_wire(time)), Ok(time)),
        Err(error) => bounded(error),
    }
}

/// A document from another node, received as a node receives it: shape-checked, parsed, and
/// its parsed identity compared with the declared one.
fn update_document(wire: v1::UpdateDocument) {
    let Some(received) = converted::<_, RevisionDocument>(wire) else {
        return;
    };
    if let Ok(revision) = parse_update(&received.document, &ParseLimits::default()) {
        assert_eq!(revision.document, received.document);
        if let Err(error) = received.check_identity(revision.id) {
            bounded(error);
        }
    }
}

fn anchor(wire: v1::Anchor) {
    optional(wire.snapshot_through, convert::<RevisionId, _>);
}

fn store_info(wire: v1::StoreInfo) {
    optional(wire.latest, anchor);
    optional(wire.digest, convert::<CatalogDigest, _>);
}

fn catalog_info(wire: v1::CatalogInfo) {
    optional(wire.store, store_info);
    optional(wire.catalog_version, signed_catalog_version);
}

/// The carried `CatalogVersion` is a message inside a byte field: decoded the same way.
fn signed_catalog_version(wire: v1::SignedCatalogVersion) {
    receive::<v1::CatalogVersion>(&wire.catalog_version, |version| {
        optional(version.update_server_digest, convert::<CatalogDigest, _>);
        optional(version.site_database_digest, convert::<CatalogDigest, _>);
        timestamp(version.issued_at);
        timestamp(version.expires_at);
    });
}

fn change_batch(wire: v1::ChangeBatch) {
    optional(wire.from, anchor);
    optional(wire.resume_anchor, anchor);
    match wire.body {
        Some(v1::change_batch::Body::Log(log)) => {
            for change in log.changes {
                match change.payload {
                    Some(v1::catalog_change::Payload::Revision(document)) => {
                        update_document(document);
                    }
                    Some(v1::catalog_change::Payload::Deleted(id)) => {
                        convert::<RevisionId, _>(id);
                    }
                    Some(v1::catalog_change::Payload::Reference(reference)) => {
                        convert::<HeldReference, _>(reference);
                    }
                    None => {}
                }
            }
        }
        Some(v1::change_batch::Body::Snapshot(snapshot)) => {
            optional(snapshot.after, convert::<RevisionId, _>);
            optional(snapshot.through, convert::<RevisionId, _>);
            snapshot.revisions.into_iter().for_each(update_document);
            for reference in snapshot.references {
                convert::<HeldReference, _>(reference);
            }
        }
        None => {}
    }
}

fn sync_run(wire: v1::SyncRun) {
    timestamp(wire.requested_at);
    timestamp(wire.started_at);
    timestamp(wire.finished_at);
    timestamp(wire.retry_at);
}

fn site_state(wire: v1::SiteState) {
    optional(wire.update_server, store_info);
    optional(wire.site_database, store_info);
    optional(wire.replication, |replication| {
        optional(replication.applied, anchor);
        timestamp(replication.applied_at);
    });
    optional(wire.last_sync, sync_run);
    optional(wire.current_sync, sync_run);
    timestamp(wire.next_sync_at);
    optional(wire.catalog_version, signed_catalog_version);
    timestamp(wire.observed_at);
}

fn status_message(wire: v1::StatusMessage) {
    timestamp(wire.time);
}

fn category_selector(wire: v1::CategorySelector) {
    if let Some(v1::category_selector::By::Id(id)) = wire.by {
        convert::<UpdateId, _>(id);
    }
}

fn update_filter(wire: v1::UpdateFilter) {
    wire.products.into_iter().for_each(category_selector);
    wire.classifications.into_iter().for_each(category_selector);
    for raw in wire.update_types {
        wire_enum::<UpdateType>(raw);
    }
    wire_enum::<MsrcSeverity>(wire.min_msrc_severity);
}

fn sync_settings(wire: v1::SyncSettings) {
    wire.products.into_iter().for_each(category_selector);
    wire.classifications.into_iter().for_each(category_selector);
}
