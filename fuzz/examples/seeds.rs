//! Writes the seed corpus: `cargo run --example seeds [CORPUS_DIR]` (default: `corpus/` beside
//! this crate's manifest). Regenerate after adding an inbound message or changing the
//! contract; files of the same name are overwritten, others are left alone.
//!
//! - `update_xml/`: the five real documents of `metadata/tests/fixtures`, and variants that
//!   stop at each limit or refusal of the parser (truncated, DOCTYPE, foreign encoding,
//!   entities, deep nesting, a second root), so the fuzzer starts next to every branch.
//! - `inbound_messages/`: an empty message of every inbound type, and valid messages carrying
//!   real identities, digests, timestamps and documents for the types that have conversions.

use std::fs;
use std::path::{Path, PathBuf};

use prost::Message;
use sitesync_fuzz::inbound::{INBOUND, input};
use sitesync_metadata::{
    CatalogDigest, ContentHash, ParseLimits, RevisionId, UpdateRevision, parse_update, sample,
};
use sitesync_proto::convert::timestamp_to_wire;
use sitesync_proto::v1;

fn main() -> std::io::Result<()> {
    let root = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus"));

    let xml = root.join("update_xml");
    fs::create_dir_all(&xml)?;
    let mut count = 0;
    for (name, document) in update_xml_seeds() {
        fs::write(xml.join(name), document)?;
        count += 1;
    }
    eprintln!("wrote {count} seeds to {}", xml.display());

    let messages = root.join("inbound_messages");
    fs::create_dir_all(&messages)?;
    let mut count = 0;
    for (name, bytes) in inbound_seeds() {
        fs::write(messages.join(name), bytes)?;
        count += 1;
    }
    eprintln!("wrote {count} seeds to {}", messages.display());

    let files = root.join("export_file");
    fs::create_dir_all(&files)?;
    let mut count = 0;
    for (name, bytes) in export_file_seeds() {
        fs::write(files.join(name), bytes)?;
        count += 1;
    }
    eprintln!("wrote {count} seeds to {}", files.display());
    Ok(())
}

/// Export files: the sample catalog as a full file of two chunks, and that file cut short
/// at the places a reader checks (after the magic, inside the header, before the manifest,
/// before the trailer).
fn export_file_seeds() -> Vec<(String, Vec<u8>)> {
    use sitesync_archive::{Writer, add_counts, batch_counts};
    use sitesync_security::pki::{Authority, DEFAULT_VALIDITY};
    use sitesync_security::{Identity, TlsFiles, signing::Signer};

    let dir = tempfile::tempdir().expect("a temporary directory");
    let authority = Authority::init(dir.path(), "seeds").expect("a CA");
    let site = Identity::site("CEN").expect("a site code");
    authority
        .issue(&site, &[], DEFAULT_VALIDITY)
        .expect("a certificate");
    let signer = Signer::load(&TlsFiles::in_pki_dir(dir.path(), &site)).expect("the key");
    let log = "6f1e3c2a-0b7d-4c4e-9a51-2d8f0e6b7a10";
    let anchor = |sequence, through: Option<RevisionId>| v1::Anchor {
        log_id: log.into(),
        sequence,
        snapshot_through: through.map(Into::into),
    };
    let documents: Vec<_> = sample::DOCUMENTS
        .iter()
        .map(|(_, document)| (parsed(document).id, document.to_vec()))
        .collect();
    let mut ids: Vec<RevisionId> = documents.iter().map(|(id, _)| *id).collect();
    ids.sort();
    let part = |revisions: &[RevisionId],
                after: Option<RevisionId>,
                through: Option<RevisionId>| v1::SnapshotPart {
        as_of_sequence: 5,
        after: after.map(Into::into),
        through: through.map(Into::into),
        revisions: revisions
            .iter()
            .map(|id| {
                let document = &documents.iter().find(|(d, _)| d == id).expect("held").1;
                v1::UpdateDocument {
                    id: Some((*id).into()),
                    document: document.clone(),
                    ..Default::default()
                }
            })
            .collect(),
        references: Vec::new(),
    };
    let middle = ids[2];
    let batches = [
        v1::ChangeBatch {
            from: None,
            body: Some(v1::change_batch::Body::Snapshot(part(
                &ids[..3],
                None,
                Some(middle),
            ))),
            resume_anchor: Some(anchor(5, Some(middle))),
        },
        v1::ChangeBatch {
            from: Some(anchor(5, Some(middle))),
            body: Some(v1::change_batch::Body::Snapshot(part(
                &ids[3..],
                Some(middle),
                None,
            ))),
            resume_anchor: Some(anchor(5, None)),
        },
    ];
    let mut counts = v1::ArchiveCounts::default();
    for batch in &batches {
        add_counts(&mut counts, &batch_counts(batch));
    }
    let header = v1::ArchiveHeader {
        source_site: "CEN".into(),
        kind: v1::ArchiveKind::Full as i32,
        catalog_version: Some(v1::SignedCatalogVersion::default()),
        update_server_digest: Some(CatalogDigest::EMPTY.into()),
        target: Some(anchor(5, None)),
        counts: Some(counts),
        revision_count: ids.len() as u64,
        created_at: Some(timestamp_to_wire(sitesync_metadata::Timestamp(
            1_790_000_000_000,
        ))),
        ..Default::default()
    };
    let mut writer = Writer::start(Vec::new(), &header).expect("in memory");
    for batch in &batches {
        writer.chunk(batch).expect("in memory");
    }
    let file = writer.finish(&signer).expect("signed");
    let manifest_at = u64::from_le_bytes(
        file[file.len() - 16..file.len() - 8]
            .try_into()
            .expect("8 bytes"),
    ) as usize;
    vec![
        ("sample-full.ssx".to_owned(), file.clone()),
        ("cut-after-magic.ssx".to_owned(), file[..16].to_vec()),
        ("cut-in-header.ssx".to_owned(), file[..40].to_vec()),
        (
            "cut-before-manifest.ssx".to_owned(),
            file[..manifest_at].to_vec(),
        ),
        (
            "cut-before-trailer.ssx".to_owned(),
            file[..file.len() - 16].to_vec(),
        ),
    ]
}

/// The smallest real document (a software update bundling four others) and a category:
/// what the message seeds carry. Real documents are prefixed (`upd:`) and have no XML
/// declaration.
fn documents() -> (&'static [u8], &'static [u8]) {
    let by_name = |wanted: &str| {
        sample::DOCUMENTS
            .iter()
            .find(|(name, _)| *name == wanted)
            .map(|(_, document)| *document)
            .expect("the sample catalog holds this document")
    };
    (
        by_name("ccb78947-6453-4ecc-9de8-bc0305c98f2d-r200.xml"),
        by_name("56309036-4c77-4dd9-951a-99ee9c246a94-r101.xml"),
    )
}

fn parsed(document: &[u8]) -> UpdateRevision {
    parse_update(document, &ParseLimits::default()).expect("sample documents parse")
}

fn update_xml_seeds() -> Vec<(String, Vec<u8>)> {
    let mut seeds: Vec<(String, Vec<u8>)> = sample::DOCUMENTS
        .iter()
        .map(|(name, document)| ((*name).to_owned(), document.to_vec()))
        .collect();

    let (software, category) = documents();
    let text =
        |bytes: &[u8]| String::from_utf8(bytes.to_vec()).expect("sample documents are UTF-8");
    let software_text = text(software);
    let category_text = text(category);

    let mut add = |name: &str, bytes: Vec<u8>| seeds.push((format!("{name}.xml"), bytes));
    add(
        "declaration",
        format!("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n{software_text}").into_bytes(),
    );
    add("truncated-half", software[..software.len() / 2].to_vec());
    add("truncated-in-tag", {
        let cut = software_text.rfind("</").expect("an end tag") + 3;
        software[..cut].to_vec()
    });
    add("truncated-in-utf8", {
        let mut bytes = software[..software.len() - 20].to_vec();
        bytes.extend_from_slice(&"é".as_bytes()[..1]);
        bytes
    });
    add("not-utf8", {
        let mut bytes = software.to_vec();
        let at = bytes.len() / 2;
        bytes[at] = 0xff;
        bytes
    });
    add(
        "encoding-utf16",
        format!("<?xml version=\"1.0\" encoding=\"utf-16\"?>{software_text}").into_bytes(),
    );
    add(
        "doctype",
        format!("<!DOCTYPE u [<!ENTITY a \"aaaaaaaa\">]>{software_text}").into_bytes(),
    );
    add(
        "entities",
        software_text
            .replacen(
                "<upd:Title>",
                "<upd:Title>&amp;&lt;&#x41;&#66;<![CDATA[x]]><!-- c --><?pi x?>",
                1,
            )
            .into_bytes(),
    );
    add(
        "unknown-entity",
        software_text
            .replacen("<upd:Title>", "<upd:Title>&a;", 1)
            .into_bytes(),
    );
    add("deep", {
        let at = category_text.rfind("</").expect("an end tag");
        let mut doc = category_text.clone();
        doc.insert_str(at, &format!("{}{}", "<d>".repeat(80), "</d>".repeat(80)));
        doc.into_bytes()
    });
    add(
        "second-root",
        format!("{software_text}<upd:Update/>").into_bytes(),
    );
    add(
        "not-update",
        b"<?xml version=\"1.0\"?><Other xmlns=\"urn:x\"/>".to_vec(),
    );
    add(
        "undeclared-prefix",
        software_text
            .replacen("<upd:Title>", "<p:Title>", 1)
            .replacen("</upd:Title>", "</p:Title>", 1)
            .into_bytes(),
    );
    add("empty-title", {
        let start = software_text.find("<upd:Title>").expect("a title") + "<upd:Title>".len();
        let end = software_text.find("</upd:Title>").expect("a title");
        let mut doc = software_text.clone();
        doc.replace_range(start..end, "");
        doc.into_bytes()
    });
    seeds
}

fn inbound_seeds() -> Vec<(String, Vec<u8>)> {
    let (software, category) = documents();
    let revision = parsed(software);
    let id = revision.id;
    let time = timestamp_to_wire(revision.creation_date);
    let digest = CatalogDigest::of([(id, ContentHash::of(software))]);
    let anchor = v1::Anchor {
        log_id: "3f1c0d2e".to_owned(),
        sequence: 42,
        snapshot_through: Some(id.into()),
    };
    let store = v1::StoreInfo {
        latest: Some(anchor.clone()),
        first_retained_sequence: 1,
        digest: Some(digest.into()),
        revision_count: 2,
        update_count: 2,
    };
    let catalog_version = v1::SignedCatalogVersion {
        catalog_version: v1::CatalogVersion {
            version: 7,
            top_site_code: "CEN".to_owned(),
            update_server_digest: Some(digest.into()),
            revision_count: 2,
            site_database_digest: Some(digest.into()),
            issued_at: Some(time),
            expires_at: Some(time),
            delegations: Vec::new(),
        }
        .encode_to_vec(),
        algorithm: 1,
        signature: vec![0x5a; 64],
        signer_certificate: b"not a certificate".to_vec(),
    };
    let run = v1::SyncRun {
        sync_id: "17".to_owned(),
        kind: v1::SyncKind::Full as i32,
        requested_at: Some(time),
        started_at: Some(time),
        counts: Some(v1::SyncCounts {
            new: 2,
            ..Default::default()
        }),
        ..Default::default()
    };
    let site = v1::SiteState {
        site_code: "PR1".to_owned(),
        role: v1::SiteRole::Site as i32,
        parent_site_code: "CEN".to_owned(),
        address: "https://pr1.example:8531".to_owned(),
        update_server: Some(store.clone()),
        site_database: Some(store.clone()),
        replication: Some(v1::ReplicationState {
            applied: Some(anchor.clone()),
            applied_at: Some(time),
            ..Default::default()
        }),
        last_sync: Some(run.clone()),
        next_sync_at: Some(time),
        catalog_version: Some(catalog_version.clone()),
        observed_at: Some(time),
        node_version: "0.1.0".to_owned(),
        ..Default::default()
    };
    let status = v1::StatusMessage {
        site_code: "PR1".to_owned(),
        sequence: 1,
        message_id: v1::StatusMessageId::SyncDone as i32,
        component: "SMS_WSUS_SYNC_MANAGER".to_owned(),
        severity: v1::Severity::Informational as i32,
        time: Some(time),
        text: "WSUS Synchronization done.".to_owned(),
        sync_id: "17".to_owned(),
        properties: [("new".to_owned(), "2".to_owned())].into(),
        trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".to_owned(),
    };
    let document = |bytes: &[u8]| v1::UpdateDocument::from(parsed(bytes));
    // As a parent sends it to a reader that accepts compressed documents.
    let compressed = |bytes: &[u8]| v1::UpdateDocument {
        id: Some(parsed(bytes).id.into()),
        document: Vec::new(),
        lz4_document: sitesync_proto::compress_document(bytes),
    };
    let batch = v1::ChangeBatch {
        from: Some(anchor.clone()),
        resume_anchor: Some(anchor.clone()),
        body: Some(v1::change_batch::Body::Log(v1::ChangeLogPart {
            changes: vec![
                v1::CatalogChange {
                    sequence: 41,
                    kind: v1::ChangeKind::New as i32,
                    payload: Some(v1::catalog_change::Payload::Revision(document(category))),
                },
                v1::CatalogChange {
                    sequence: 42,
                    kind: v1::ChangeKind::Deleted as i32,
                    payload: Some(v1::catalog_change::Payload::Deleted(id.into())),
                },
                v1::CatalogChange {
                    sequence: 43,
                    kind: v1::ChangeKind::New as i32,
                    payload: Some(v1::catalog_change::Payload::Reference(
                        v1::RevisionReference {
                            id: Some(id.into()),
                            content_sha256: vec![0xa5; 32],
                        },
                    )),
                },
            ],
        })),
    };
    let snapshot = v1::ChangeBatch {
        from: Some(anchor.clone()),
        body: Some(v1::change_batch::Body::Snapshot(v1::SnapshotPart {
            as_of_sequence: 42,
            after: None,
            through: Some(id.into()),
            revisions: vec![document(category), compressed(software)],
            references: vec![v1::RevisionReference {
                id: Some(id.into()),
                content_sha256: vec![0x5a; 32],
            }],
        })),
        ..Default::default()
    };
    // A document filed under another identity: the receiver must refuse it.
    let misfiled = v1::UpdateDocument {
        id: Some(
            RevisionId {
                revision: id.revision + 1,
                ..id
            }
            .into(),
        ),
        document: category.to_vec(),
        lz4_document: Vec::new(),
    };
    let selector = |index: usize| v1::CategorySelector {
        by: Some(match index {
            0 => v1::category_selector::By::Id(parsed(category).id.update_id.into()),
            _ => v1::category_selector::By::Name("Windows Defender".to_owned()),
        }),
    };
    let settings = v1::SyncSettings {
        products: vec![selector(0), selector(1)],
        classifications: vec![selector(1)],
        languages: vec!["en".to_owned()],
        schedule: Some(v1::SyncSchedule {
            kind: Some(v1::sync_schedule::Kind::Cron("0 3 * * *".to_owned())),
        }),
        retry_delay: Some(prost_types::Duration {
            seconds: 3600,
            nanos: 0,
        }),
        ..Default::default()
    };

    let mut seeds = Vec::new();
    // One empty message of every type, so each decoder starts with a seed.
    for entry in INBOUND {
        seeds.push((format!("{}-empty", entry.name), input(entry.name, &())));
    }
    macro_rules! seed {
        ($name:ident, $label:literal, $message:expr) => {
            seeds.push((
                concat!(stringify!($name), "-", $label).to_owned(),
                input(stringify!($name), &$message),
            ))
        };
    }
    seed!(
        RegisterChildRequest,
        "site",
        v1::RegisterChildRequest {
            site_code: "PR1".to_owned(),
            role: v1::SiteRole::Site as i32,
            address: "https://pr1.example:8531".to_owned(),
            node_version: "0.1.0".to_owned(),
            state: Some(site.clone()),
        }
    );
    seed!(
        SyncRequest,
        "cascade",
        v1::SyncRequest {
            request_id: "req-1".to_owned(),
            parent_site_code: "CEN".to_owned(),
            kind: v1::SyncKind::Full as i32,
            reason: v1::SyncRequestReason::Cascade as i32,
            requested_at: Some(time),
            update_server: Some(store.clone()),
            site_database: Some(store.clone()),
            catalog_version: Some(catalog_version.clone()),
            origin_sync_id: "17".to_owned(),
        }
    );
    seed!(
        StatusMessageBatch,
        "one",
        v1::StatusMessageBatch {
            reporter_site_code: "PR1".to_owned(),
            messages: vec![status.clone()],
        }
    );
    seed!(
        SiteStateReport,
        "one",
        v1::SiteStateReport {
            reporter_site_code: "PR1".to_owned(),
            sites: vec![site.clone()],
        }
    );
    seed!(
        ReplicationRequest,
        "subscribe",
        v1::ReplicationRequest {
            kind: Some(v1::replication_request::Kind::Subscribe(v1::Subscribe {
                site_code: "PR1".to_owned(),
                from: Some(anchor.clone()),
                max_batch_bytes: 1 << 20,
                window: 4,
                by_reference: true,
                accept_lz4: true,
            })),
        }
    );
    seed!(
        ReplicationRequest,
        "ack",
        v1::ReplicationRequest {
            kind: Some(v1::replication_request::Kind::Ack(v1::Ack {
                applied: Some(anchor.clone()),
            })),
        }
    );
    seed!(
        GetChangesRequest,
        "since",
        v1::GetChangesRequest {
            since: Some(anchor.clone()),
            ..Default::default()
        }
    );
    seed!(
        GetUpdateDocumentsRequest,
        "ids",
        v1::GetUpdateDocumentsRequest {
            revisions: vec![id.into()],
            updates: vec![id.update_id.into()],
        }
    );
    seed!(
        ListStatusMessagesRequest,
        "window",
        v1::ListStatusMessagesRequest {
            site_codes: vec!["PR1".to_owned()],
            since: Some(time),
            until: Some(time),
            ..Default::default()
        }
    );
    seed!(
        ListUpdatesRequest,
        "filter",
        v1::ListUpdatesRequest {
            filter: Some(v1::UpdateFilter {
                products: vec![selector(0)],
                classifications: vec![selector(1)],
                kb_article: Some("915597".to_owned()),
                update_types: vec![v1::UpdateType::Software as i32, 99],
                min_msrc_severity: v1::MsrcSeverity::Important as i32,
                ..Default::default()
            }),
            page_size: 10,
            ..Default::default()
        }
    );
    seed!(
        GetUpdateRequest,
        "id",
        v1::GetUpdateRequest {
            update_id: Some(id.update_id.into()),
            revision: Some(id.revision),
            ..Default::default()
        }
    );
    seed!(
        SetSyncSettingsRequest,
        "settings",
        v1::SetSyncSettingsRequest {
            settings: Some(settings.clone()),
            expected_revision: 3,
        }
    );
    seed!(
        ImportCatalogChunk,
        "header",
        v1::ImportCatalogChunk {
            kind: Some(v1::import_catalog_chunk::Kind::Header(v1::ImportHeader {
                file_name: "catalog.ssx".to_owned(),
                total_bytes: 1024,
                dry_run: true,
            })),
        }
    );
    seed!(
        PublishUpdateRequest,
        "document",
        v1::PublishUpdateRequest {
            documents: vec![category.to_vec()],
        }
    );
    seed!(
        CatalogInfo,
        "store",
        v1::CatalogInfo {
            site_code: "CEN".to_owned(),
            role: v1::SiteRole::Site as i32,
            store: Some(store.clone()),
            catalog_version: Some(catalog_version.clone()),
        }
    );
    seed!(
        GetChangesResponse,
        "plan",
        v1::GetChangesResponse {
            kind: Some(v1::get_changes_response::Kind::Plan(v1::ChangesPlan {
                target: Some(anchor.clone()),
                snapshot: false,
                estimated_changes: 2,
            })),
        }
    );
    seed!(
        GetChangesResponse,
        "log",
        v1::GetChangesResponse {
            kind: Some(v1::get_changes_response::Kind::Batch(batch.clone())),
        }
    );
    seed!(
        UpdateDocumentBatch,
        "documents",
        v1::UpdateDocumentBatch {
            documents: vec![document(category), misfiled.clone()],
            missing_revisions: vec![id.into()],
            missing_updates: vec![id.update_id.into()],
        }
    );
    seed!(
        ReplicationMessage,
        "snapshot",
        v1::ReplicationMessage {
            kind: Some(v1::replication_message::Kind::Batch(snapshot.clone())),
        }
    );
    seed!(
        ReplicationMessage,
        "heartbeat",
        v1::ReplicationMessage {
            kind: Some(v1::replication_message::Kind::Heartbeat(
                v1::ReplicationHeartbeat {
                    site_database: Some(store.clone()),
                    interval: Some(prost_types::Duration {
                        seconds: 30,
                        nanos: 0,
                    }),
                    sent_at: Some(time),
                }
            )),
        }
    );
    seed!(
        SyncProgress,
        "run",
        v1::SyncProgress {
            run: Some(run.clone()),
            messages: vec![status.clone()],
        }
    );
    seed!(
        GetUpdateResponse,
        "revision",
        v1::GetUpdateResponse {
            revision: Some(v1::UpdateRevision::from(&revision)),
            revisions_held: vec![id.revision],
            superseded_by: vec![id.update_id.into()],
            ..Default::default()
        }
    );
    seed!(
        MachinePolicy,
        "policy",
        v1::MachinePolicy {
            version: 3,
            site_code: "PR1".to_owned(),
            catalog_digest: Some(digest.into()),
            catalog_version: Some(catalog_version.clone()),
            created_at: Some(time),
            catalog_position: Some(anchor.clone()),
            ..Default::default()
        }
    );
    seeds
}
