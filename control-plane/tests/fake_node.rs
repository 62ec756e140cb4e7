//! The node commands, run as the built `sitesyncctl` against a fake `Admin` and
//! `ClientPolicy` service on loopback: exit statuses, paging up to `--limit`, JSON shapes,
//! the settings revision check, refusals carrying the node's reason, `sync --wait`
//! following a run to its end, and `export` and `import` streaming export files (a stream
//! cut short, bytes out of order, Ctrl-C). `node_commands.rs` runs the same commands against a real
//! node; this file pins the client's behaviour where a real node is hard to steer (a
//! concurrent settings change, a permission rule, a failed sync).

use std::io::Cursor;
use std::path::Path;
use std::pin::Pin;
use std::process::Output;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use sitesync_metadata::{ParseLimits, UpdateRevision, parse_update};
use sitesync_proto::FILE_CHUNK_BYTES;
use sitesync_proto::v1::admin_server::{Admin, AdminServer};
use sitesync_proto::v1::client_policy_server::{ClientPolicy, ClientPolicyServer};
use sitesync_proto::v1::{self, category_selector::By};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_stream::{Stream, StreamExt as _};
use tonic::{Request, Response, Status};

mod support;
use support::archive::{ExportFixture, LOG, anchor};
use support::sitesyncctl;

const SYNC_ID: &str = "17";
const DEFENDER: &str = "a2fef9b0-7951-4c2c-a42b-9e351dd1c1fe";
const MESSAGES: u64 = 250;

/// How the fake node behaves.
#[derive(Debug, Clone, Default)]
struct Behaviour {
    /// A child site: manual syncs and settings changes are refused.
    child: bool,
    /// Syncs end with 6703.
    fail_syncs: bool,
    /// Another operator changes the settings between our read and our write.
    concurrent_settings_change: bool,
    /// Every call is refused by this rule.
    deny: Option<&'static str>,
    /// The export file `ExportCatalog` sends, and how.
    export: Option<ExportScript>,
    /// `ImportCatalog` reads the whole file, then refuses it with this reason
    /// (FAILED_PRECONDITION).
    refuse_imports: Option<&'static str>,
}

/// What `ExportCatalog` sends: the file in pieces of [`EXPORT_PIECE`] bytes after its
/// header, then its end, unless `fault` says otherwise.
#[derive(Debug, Clone)]
struct ExportScript {
    bytes: Arc<Vec<u8>>,
    header: v1::ArchiveHeader,
    fault: Option<ExportFault>,
}

/// How an export stream goes wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ExportFault {
    /// Half the file, then the stream ends without its end.
    CutShort,
    /// The second piece is left out.
    Gap,
    /// Half the file, then nothing more, ever.
    Stall,
}

const EXPORT_PIECE: usize = 64 * 1024;

/// An import as the fake received it.
#[derive(Debug, Default)]
struct ReceivedImport {
    header: Option<v1::ImportHeader>,
    /// Each chunk's offset and length, in order.
    chunks: Vec<(u64, usize)>,
    bytes: Vec<u8>,
}

#[derive(Debug)]
struct FakeAdmin {
    behaviour: Behaviour,
    settings: Mutex<v1::SyncSettings>,
    /// The page sizes `ListStatusMessages` was asked for.
    page_sizes: Mutex<Vec<u32>>,
    /// The `since` of each `ExportCatalog`.
    export_requests: Mutex<Vec<Option<v1::Anchor>>>,
    imports: Mutex<Vec<ReceivedImport>>,
    messages: Vec<v1::StatusMessage>,
    updates: Vec<v1::UpdateSummary>,
    defender: UpdateRevision,
}

fn time(seconds: i64) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds, nanos: 0 }
}

/// 2025-01-31T08:00:00Z.
const T0: i64 = 1_738_310_400;

fn fixture(name: &str) -> UpdateRevision {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    parse_update(&std::fs::read(path).unwrap(), &ParseLimits::default()).unwrap()
}

fn store(revisions: u64, byte: u8) -> v1::StoreInfo {
    v1::StoreInfo {
        latest: Some(v1::Anchor {
            log_id: "log-a".into(),
            sequence: revisions + 3,
            snapshot_through: None,
        }),
        first_retained_sequence: 1,
        digest: Some(v1::CatalogDigest {
            value: vec![byte; 32],
        }),
        revision_count: revisions,
        update_count: revisions,
    }
}

/// Three levels: CEN at the top; PR1 in step and its internet node INT; SE1 below PR1,
/// behind and silent; PR2 registered but never reported.
fn hierarchy() -> v1::HierarchyTree {
    let node = |code: &str, parent: &str, role: v1::SiteRole, byte: u8| v1::SiteState {
        site_code: code.into(),
        role: role.into(),
        parent_site_code: parent.into(),
        address: format!("{}.example:7443", code.to_lowercase()),
        update_server: Some(store(150, byte)),
        site_database: (role == v1::SiteRole::Site).then(|| store(150, byte)),
        observed_at: Some(time(T0 + 50)),
        ..Default::default()
    };
    let lag = |revisions: u64, seconds: i64| v1::SiteLag {
        revisions,
        behind: Some(prost_types::Duration { seconds, nanos: 0 }),
    };
    let mut cen = node("CEN", "", v1::SiteRole::Site, 0xab);
    cen.last_sync = Some(v1::SyncRun {
        result: v1::SyncResult::Succeeded.into(),
        phase: v1::SyncPhase::Finished.into(),
        finished_at: Some(time(T0 + 12)),
        ..Default::default()
    });
    let mut se1 = node("SE1", "PR1", v1::SiteRole::Site, 0x11);
    se1.update_server = Some(store(138, 0x11));
    v1::HierarchyTree {
        root_site_code: "CEN".into(),
        as_of: Some(time(T0 + 60)),
        sites: vec![
            v1::HierarchyNode {
                state: Some(cen),
                reachable: true,
                last_report_at: None,
                lag: None,
            },
            v1::HierarchyNode {
                state: Some(node("PR1", "CEN", v1::SiteRole::Site, 0xab)),
                reachable: true,
                last_report_at: Some(time(T0 + 58)),
                lag: Some(lag(0, 0)),
            },
            v1::HierarchyNode {
                state: Some(node("INT", "PR1", v1::SiteRole::Internet, 0xab)),
                reachable: true,
                last_report_at: Some(time(T0 + 57)),
                lag: Some(lag(0, 0)),
            },
            v1::HierarchyNode {
                state: Some(se1),
                reachable: false,
                last_report_at: Some(time(T0 - 600)),
                lag: Some(lag(12, 660)),
            },
            v1::HierarchyNode {
                state: Some(v1::SiteState {
                    site_code: "PR2".into(),
                    role: v1::SiteRole::Site.into(),
                    parent_site_code: "CEN".into(),
                    address: "pr2.example:7443".into(),
                    ..Default::default()
                }),
                reachable: false,
                last_report_at: None,
                lag: None,
            },
        ],
    }
}

fn message(sequence: u64, id: v1::StatusMessageId, text: &str) -> v1::StatusMessage {
    v1::StatusMessage {
        site_code: "CEN".into(),
        sequence,
        message_id: id.into(),
        component: "SMS_WSUS_SYNC_MANAGER".into(),
        severity: if id == v1::StatusMessageId::SyncFailed {
            v1::Severity::Error
        } else {
            v1::Severity::Informational
        }
        .into(),
        time: Some(time(T0 + sequence as i64)),
        text: text.into(),
        sync_id: SYNC_ID.into(),
        properties: Default::default(),
        trace_id: "0af7651916cd43dd8448eb211c80319c".into(),
    }
}

impl FakeAdmin {
    fn new(behaviour: Behaviour) -> Self {
        let ids = [
            v1::StatusMessageId::SyncStarted,
            v1::StatusMessageId::SyncUpdateServer,
            v1::StatusMessageId::SyncSiteDatabase,
            v1::StatusMessageId::SyncDone,
        ];
        let messages = (1..=MESSAGES)
            .map(|sequence| message(sequence, ids[(sequence as usize - 1) % 4], "message"))
            .collect();
        let defender = fixture(&format!("{DEFENDER}-r200.xml"));
        let updates = [
            fixture("56309036-4c77-4dd9-951a-99ee9c246a94-r101.xml"),
            fixture("266f6222-c89d-43f2-9f8a-69340271e677-r200.xml"),
            defender.clone(),
        ]
        .iter()
        .map(v1::UpdateSummary::from)
        .collect();
        Self {
            behaviour,
            settings: Mutex::new(v1::SyncSettings {
                products: vec![v1::CategorySelector {
                    by: Some(By::Name("Windows XP".into())),
                }],
                classifications: vec![v1::CategorySelector {
                    by: Some(By::Name("Security Updates".into())),
                }],
                languages: vec!["en".into()],
                schedule: Some(v1::SyncSchedule {
                    kind: Some(v1::sync_schedule::Kind::Interval(v1::ScheduleInterval {
                        every: 7,
                        unit: v1::IntervalUnit::Days.into(),
                    })),
                }),
                retry_delay: None,
                legacy_catalog_refresh: None,
                revision: 3,
            }),
            page_sizes: Mutex::new(Vec::new()),
            export_requests: Mutex::new(Vec::new()),
            imports: Mutex::new(Vec::new()),
            messages,
            updates,
            defender,
        }
    }

    fn check(&self) -> Result<(), Status> {
        match self.behaviour.deny {
            Some(rule) => Err(Status::permission_denied(rule)),
            None => Ok(()),
        }
    }

    fn run(&self, phase: v1::SyncPhase, done: u64, total: u64) -> v1::SyncRun {
        let finished = phase == v1::SyncPhase::Finished;
        let failed = finished && self.behaviour.fail_syncs;
        v1::SyncRun {
            sync_id: SYNC_ID.into(),
            kind: v1::SyncKind::Full.into(),
            trigger: v1::SyncTrigger::Operator.into(),
            phase: phase.into(),
            result: match (finished, failed) {
                (false, _) => v1::SyncResult::Unspecified,
                (true, false) => v1::SyncResult::Succeeded,
                (true, true) => v1::SyncResult::Failed,
            }
            .into(),
            requested_at: Some(time(T0)),
            started_at: Some(time(T0)),
            finished_at: finished.then(|| time(T0 + 12)),
            counts: Some(v1::SyncCounts {
                new: done,
                ..Default::default()
            }),
            progress: Some(v1::PhaseProgress {
                phase: phase.into(),
                done,
                total,
            }),
            failure_reason: if failed {
                "the upstream directory cannot be read".into()
            } else {
                String::new()
            },
            retry_at: failed.then(|| time(T0 + 12 + 3600)),
            sync_request_id: String::new(),
        }
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl Admin for FakeAdmin {
    async fn get_site_status(
        &self,
        _: Request<v1::GetSiteStatusRequest>,
    ) -> Result<Response<v1::SiteStatus>, Status> {
        self.check()?;
        Ok(Response::new(v1::SiteStatus {
            site: Some(v1::SiteState {
                site_code: "CEN".into(),
                role: v1::SiteRole::Site.into(),
                update_server: Some(store(152, 0xab)),
                site_database: Some(store(150, 0xcd)),
                last_sync: Some(self.run(v1::SyncPhase::Finished, 150, 150)),
                next_sync_at: Some(time(T0 + 7 * 86_400)),
                observed_at: Some(time(T0 + 60)),
                ..Default::default()
            }),
            client_policy_version: 1,
            ..Default::default()
        }))
    }

    async fn get_hierarchy(
        &self,
        _: Request<v1::GetHierarchyRequest>,
    ) -> Result<Response<v1::HierarchyTree>, Status> {
        self.check()?;
        Ok(Response::new(hierarchy()))
    }

    async fn run_sync(
        &self,
        request: Request<v1::RunSyncRequest>,
    ) -> Result<Response<v1::RunSyncResponse>, Status> {
        self.check()?;
        let kind = request.into_inner().kind();
        if self.behaviour.child && kind == v1::SyncKind::Manual {
            return Err(Status::failed_precondition(
                "manual sync is refused at a child site: PR1 syncs only when its parent CEN \
                 asks",
            ));
        }
        Ok(Response::new(v1::RunSyncResponse {
            sync_id: SYNC_ID.into(),
            disposition: v1::RunSyncDisposition::Started.into(),
        }))
    }

    type WatchSyncStream = BoxStream<v1::SyncProgress>;

    async fn watch_sync(
        &self,
        request: Request<v1::WatchSyncRequest>,
    ) -> Result<Response<Self::WatchSyncStream>, Status> {
        self.check()?;
        if request.into_inner().sync_id != SYNC_ID {
            return Err(Status::not_found("no sync run with that id"));
        }
        let last = if self.behaviour.fail_syncs {
            message(
                4,
                v1::StatusMessageId::SyncFailed,
                "the upstream directory cannot be read",
            )
        } else {
            message(4, v1::StatusMessageId::SyncDone, "done: new 150")
        };
        let steps = vec![
            (
                self.run(v1::SyncPhase::Started, 0, 0),
                vec![message(1, v1::StatusMessageId::SyncStarted, "started")],
            ),
            (
                self.run(v1::SyncPhase::UpdateServer, 75, 150),
                vec![message(2, v1::StatusMessageId::SyncUpdateServer, "phase 1")],
            ),
            (
                self.run(v1::SyncPhase::SiteDatabase, 150, 150),
                vec![message(3, v1::StatusMessageId::SyncSiteDatabase, "phase 2")],
            ),
            (self.run(v1::SyncPhase::Finished, 150, 150), vec![last]),
        ];
        let (sender, receiver) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            for (run, messages) in steps {
                let progress = v1::SyncProgress {
                    run: Some(run),
                    messages,
                };
                if sender.send(Ok(progress)).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }

    async fn list_status_messages(
        &self,
        request: Request<v1::ListStatusMessagesRequest>,
    ) -> Result<Response<v1::ListStatusMessagesResponse>, Status> {
        self.check()?;
        let request = request.into_inner();
        self.page_sizes.lock().unwrap().push(request.page_size);
        let page_size = match request.page_size {
            0 => 100,
            n => n.min(1000) as usize,
        };
        let start: usize = if request.page_token.is_empty() {
            0
        } else {
            request
                .page_token
                .parse()
                .map_err(|_| Status::invalid_argument("bad page token"))?
        };
        let matching: Vec<&v1::StatusMessage> = self
            .messages
            .iter()
            .filter(|m| {
                request.message_ids.is_empty() || request.message_ids.contains(&m.message_id)
            })
            .filter(|m| {
                request
                    .since
                    .is_none_or(|since| m.time.unwrap().seconds >= since.seconds)
            })
            .collect();
        let page: Vec<v1::StatusMessage> = matching
            .iter()
            .skip(start)
            .take(page_size)
            .map(|m| (*m).clone())
            .collect();
        let next = start + page.len();
        Ok(Response::new(v1::ListStatusMessagesResponse {
            messages: page,
            next_page_token: if next < matching.len() {
                next.to_string()
            } else {
                String::new()
            },
        }))
    }

    async fn list_updates(
        &self,
        request: Request<v1::ListUpdatesRequest>,
    ) -> Result<Response<v1::ListUpdatesResponse>, Status> {
        self.check()?;
        let filter = request.into_inner().filter.unwrap_or_default();
        let updates = self
            .updates
            .iter()
            .filter(|u| {
                filter.update_types.is_empty() || filter.update_types.contains(&u.update_type)
            })
            .filter(|u| filter.kb_article.is_none() || u.kb_article == filter.kb_article)
            .cloned()
            .collect();
        Ok(Response::new(v1::ListUpdatesResponse {
            updates,
            next_page_token: String::new(),
        }))
    }

    async fn get_update(
        &self,
        request: Request<v1::GetUpdateRequest>,
    ) -> Result<Response<v1::GetUpdateResponse>, Status> {
        self.check()?;
        let id = request.into_inner().update_id.unwrap_or_default().guid;
        if id != DEFENDER {
            return Err(Status::not_found(format!("update {id} is not held")));
        }
        Ok(Response::new(v1::GetUpdateResponse {
            revision: Some((&self.defender).into()),
            revisions_held: vec![200],
            superseded_by: vec![],
            categories: self
                .defender
                .categories()
                .map(|id| v1::CategoryInfo {
                    id: Some(id.into()),
                    name: String::new(),
                    category_type: 0,
                })
                .collect(),
            custom: None,
        }))
    }

    async fn get_sync_settings(
        &self,
        _: Request<v1::GetSyncSettingsRequest>,
    ) -> Result<Response<v1::SyncSettings>, Status> {
        self.check()?;
        let mut settings = self.settings.lock().unwrap().clone();
        if self.behaviour.concurrent_settings_change {
            settings.revision -= 1;
        }
        Ok(Response::new(settings))
    }

    async fn set_sync_settings(
        &self,
        request: Request<v1::SetSyncSettingsRequest>,
    ) -> Result<Response<v1::SetSyncSettingsResponse>, Status> {
        self.check()?;
        if self.behaviour.child {
            return Err(Status::failed_precondition(
                "sync settings are set at the top site; PR1 takes what its parent offers",
            ));
        }
        let request = request.into_inner();
        let mut current = self.settings.lock().unwrap();
        if request.expected_revision != 0 && request.expected_revision != current.revision {
            return Err(Status::aborted("the settings changed since revision"));
        }
        let mut settings = request.settings.unwrap_or_default();
        let next_sync_full = settings.products != current.products
            || settings.classifications != current.classifications
            || settings.languages != current.languages;
        settings.revision = current.revision + 1;
        *current = settings.clone();
        Ok(Response::new(v1::SetSyncSettingsResponse {
            settings: Some(settings),
            next_sync_full,
        }))
    }

    type ExportCatalogStream = BoxStream<v1::ExportCatalogChunk>;

    async fn export_catalog(
        &self,
        request: Request<v1::ExportCatalogRequest>,
    ) -> Result<Response<Self::ExportCatalogStream>, Status> {
        use v1::export_catalog_chunk::Kind;
        self.check()?;
        let Some(script) = self.behaviour.export.clone() else {
            return Err(Status::unimplemented("not in the fake"));
        };
        self.export_requests
            .lock()
            .unwrap()
            .push(request.into_inner().since);
        let message = |kind| Ok(v1::ExportCatalogChunk { kind: Some(kind) });
        let mut messages = vec![message(Kind::Start(v1::ExportStart {
            header: Some(script.header.clone()),
            estimated_records: 31,
        }))];
        let half = script.bytes.len() / 2;
        for (index, piece) in script.bytes.chunks(EXPORT_PIECE).enumerate() {
            let offset = index * EXPORT_PIECE;
            match script.fault {
                Some(ExportFault::Gap) if index == 1 => continue,
                Some(ExportFault::CutShort | ExportFault::Stall) if offset >= half => break,
                _ => {}
            }
            messages.push(message(Kind::Chunk(v1::FileChunk {
                offset: offset as u64,
                data: piece.to_vec(),
            })));
        }
        let stream = tokio_stream::iter(messages);
        Ok(Response::new(match script.fault {
            Some(ExportFault::CutShort) => Box::pin(stream),
            Some(ExportFault::Stall) => Box::pin(stream.chain(tokio_stream::pending())),
            _ => Box::pin(
                stream.chain(tokio_stream::iter([message(Kind::End(v1::ExportEnd {
                    total_bytes: script.bytes.len() as u64,
                }))])),
            ),
        }))
    }

    async fn import_catalog(
        &self,
        request: Request<tonic::Streaming<v1::ImportCatalogChunk>>,
    ) -> Result<Response<v1::ImportCatalogResponse>, Status> {
        use v1::import_catalog_chunk::Kind;
        self.check()?;
        let mut stream = request.into_inner();
        let mut received = ReceivedImport::default();
        while let Some(message) = stream.message().await? {
            match message.kind {
                Some(Kind::Header(header)) => received.header = Some(header),
                Some(Kind::Chunk(chunk)) => {
                    received.chunks.push((chunk.offset, chunk.data.len()));
                    received.bytes.extend_from_slice(&chunk.data);
                }
                None => {}
            }
        }
        let header = sitesync_archive::Archive::open(Cursor::new(received.bytes.clone()))
            .map_err(|e| Status::invalid_argument(e.to_string()))?
            .header()
            .clone();
        let dry_run = received.header.as_ref().is_some_and(|h| h.dry_run);
        self.imports.lock().unwrap().push(received);
        if let Some(reason) = self.behaviour.refuse_imports {
            return Err(Status::failed_precondition(reason));
        }
        Ok(Response::new(v1::ImportCatalogResponse {
            catalog_version: header.catalog_version.clone(),
            header: Some(header),
            already_held: false,
            sync_id: if dry_run { 0 } else { 21 },
            counts: Some(v1::SyncCounts {
                new: 1,
                deleted: 30,
                ..Default::default()
            }),
            update_server: Some(store(1_234, 0x07)),
        }))
    }

    async fn publish_update(
        &self,
        _: Request<v1::PublishUpdateRequest>,
    ) -> Result<Response<v1::PublishUpdateResponse>, Status> {
        Err(Status::unimplemented("not in the fake"))
    }

    async fn list_publishers(
        &self,
        _: Request<v1::ListPublishersRequest>,
    ) -> Result<Response<v1::ListPublishersResponse>, Status> {
        Err(Status::unimplemented("not in the fake"))
    }

    async fn delegate_publisher(
        &self,
        _: Request<v1::DelegatePublisherRequest>,
    ) -> Result<Response<v1::DelegatePublisherResponse>, Status> {
        Err(Status::unimplemented("not in the fake"))
    }

    async fn revoke_publisher(
        &self,
        _: Request<v1::RevokePublisherRequest>,
    ) -> Result<Response<v1::RevokePublisherResponse>, Status> {
        Err(Status::unimplemented("not in the fake"))
    }

    async fn get_client_policy(
        &self,
        _: Request<v1::GetClientPolicyRequest>,
    ) -> Result<Response<v1::MachinePolicy>, Status> {
        self.check()?;
        Ok(Response::new(policy()))
    }

    async fn build_legacy_catalog(
        &self,
        _: Request<v1::BuildLegacyCatalogRequest>,
    ) -> Result<Response<v1::LegacyCatalogStatus>, Status> {
        self.check()?;
        Err(Status::failed_precondition(
            "the fake node is not the legacy catalog host",
        ))
    }

    async fn get_legacy_catalog_status(
        &self,
        _: Request<v1::GetLegacyCatalogStatusRequest>,
    ) -> Result<Response<v1::LegacyCatalogStatus>, Status> {
        self.check()?;
        Ok(Response::new(v1::LegacyCatalogStatus::default()))
    }
}

fn policy() -> v1::MachinePolicy {
    v1::MachinePolicy {
        version: 1,
        site_code: "CEN".into(),
        update_servers: vec![v1::UpdateServerEndpoint {
            address: "http://127.0.0.1:8530".into(),
            internet_facing: false,
        }],
        catalog_digest: Some(v1::CatalogDigest {
            value: vec![0xab; 32],
        }),
        revision_count: 152,
        catalog_version: None,
        created_at: Some(time(T0 + 12)),
        sync_id: SYNC_ID.into(),
        catalog_position: None,
    }
}

#[tonic::async_trait]
impl ClientPolicy for FakeAdmin {
    async fn get_machine_policy(
        &self,
        _: Request<v1::GetMachinePolicyRequest>,
    ) -> Result<Response<v1::MachinePolicy>, Status> {
        Ok(Response::new(policy()))
    }

    type GetLegacyScanCatalogStream = BoxStream<v1::LegacyScanCatalogChunk>;

    async fn get_legacy_scan_catalog(
        &self,
        _: Request<v1::GetLegacyScanCatalogRequest>,
    ) -> Result<Response<Self::GetLegacyScanCatalogStream>, Status> {
        Err(Status::unimplemented("not in the fake"))
    }
}

/// The fake served on a free loopback port until dropped.
struct FakeNode {
    address: String,
    admin: Arc<FakeAdmin>,
    _runtime: tokio::runtime::Runtime,
}

impl FakeNode {
    fn start(behaviour: Behaviour) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let admin = Arc::new(FakeAdmin::new(behaviour));
        let server = tonic::transport::Server::builder()
            .add_service(AdminServer::from_arc(admin.clone()))
            .add_service(ClientPolicyServer::from_arc(admin.clone()))
            .serve_with_incoming(TcpListenerStream::new(listener));
        runtime.spawn(server);
        Self {
            address,
            admin,
            _runtime: runtime,
        }
    }

    fn ctl(&self, args: &[&str]) -> Output {
        sitesyncctl(&self.address, args)
    }
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn json(output: &Output) -> Value {
    assert!(output.status.success(), "failed: {}", stderr(output));
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", stdout(output)))
}

#[test]
fn status_as_json_and_as_a_table() {
    let node = FakeNode::start(Behaviour::default());
    let status = json(&node.ctl(&["status", "--output", "json"]));
    assert_eq!(status["site_code"], "CEN");
    assert_eq!(status["role"], "site");
    assert_eq!(status["update_server"]["digest"], "ab".repeat(32));
    assert_eq!(status["update_server"]["revisions"], 152);
    assert_eq!(status["site_database"]["digest"], "cd".repeat(32));
    assert_eq!(status["site_database"]["revisions"], 150);
    assert_eq!(status["last_sync"]["kind"], "full");
    assert_eq!(status["last_sync"]["result"], "succeeded");
    assert_eq!(status["last_sync"]["started"], "2025-01-31T08:00:00Z");
    assert_eq!(status["last_sync"]["finished"], "2025-01-31T08:00:12Z");

    let table = node.ctl(&["status"]);
    assert!(table.status.success(), "{}", stderr(&table));
    let text = stdout(&table);
    assert!(text.contains("CEN (top site)"), "{text}");
    assert!(text.contains(&"ab".repeat(8)), "{text}");
}

#[test]
fn an_unreachable_node_is_one_line_and_exit_2() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let output = sitesyncctl(&format!("127.0.0.1:{port}"), &["status"]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    let text = stderr(&output);
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(
        text.starts_with(&format!(
            "error: cannot reach the node at http://127.0.0.1:{port}: "
        )),
        "{text}"
    );
    assert!(
        text.trim_end()
            .ends_with("is it running? set --node or SITESYNC_NODE"),
        "{text}"
    );
    assert!(output.stdout.is_empty());
}

#[test]
fn a_bad_command_line_is_not_mistaken_for_an_unreachable_node() {
    let output = sitesyncctl("127.0.0.1:1", &["settings", "set"]);
    assert_eq!(output.status.code(), Some(64), "{}", stderr(&output));
    let output = sitesyncctl("127.0.0.1:1", &["--help"]);
    assert_eq!(output.status.code(), Some(0));
}

#[test]
fn sync_without_wait_prints_the_disposition() {
    let node = FakeNode::start(Behaviour::default());
    let started = json(&node.ctl(&["sync", "--output", "json"]));
    assert_eq!(started["sync_id"], SYNC_ID);
    assert_eq!(started["disposition"], "started");
    assert_eq!(started["kind"], "full");
    let text = node.ctl(&["sync", "--manual"]);
    assert_eq!(stdout(&text).trim(), "sync 17 started (manual)");
}

#[test]
fn sync_wait_follows_the_run_to_success() {
    let node = FakeNode::start(Behaviour::default());
    let output = node.ctl(&["sync", "--wait", "--output", "json"]);
    let run = json(&output);
    assert_eq!(run["sync_id"], SYNC_ID);
    assert_eq!(run["phase"], "finished");
    assert_eq!(run["result"], "succeeded");
    assert_eq!(run["counts"]["new"], 150);
    // Not a terminal: no bar, but every status message as a line, in order.
    let log = stderr(&output);
    let ids: Vec<&str> = log
        .lines()
        .skip(1)
        .filter_map(|line| line.split_whitespace().nth(2))
        .collect();
    assert_eq!(ids, ["6701", "6704", "6705", "6702"], "{log}");
    assert!(log.starts_with("sync 17 started (full)"), "{log}");

    let table = node.ctl(&["sync", "--wait"]);
    assert!(table.status.success(), "{}", stderr(&table));
    assert!(stdout(&table).contains("succeeded"), "{}", stdout(&table));
}

#[test]
fn a_failed_sync_exits_1_with_the_reason_and_the_retry() {
    let node = FakeNode::start(Behaviour {
        fail_syncs: true,
        ..Behaviour::default()
    });
    let output = node.ctl(&["sync", "--wait"]);
    assert_eq!(output.status.code(), Some(1));
    let log = stderr(&output);
    assert!(
        log.contains(
            "error: sync 17 failed: the upstream directory cannot be read; it is retried at \
             2025-01-31T09:00:12Z"
        ),
        "{log}"
    );
    assert!(stdout(&output).contains("failed"));
}

#[test]
fn refusals_print_the_nodes_reason() {
    let child = FakeNode::start(Behaviour {
        child: true,
        ..Behaviour::default()
    });
    let output = child.ctl(&["sync", "--manual"]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        stderr(&output).trim(),
        "error: manual sync is refused at a child site: PR1 syncs only when its parent CEN asks"
    );

    let denied = FakeNode::start(Behaviour {
        deny: Some("rule operators-only: the certificate CN=alice is not an operator"),
        ..Behaviour::default()
    });
    let output = denied.ctl(&["status"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains(
            "permission denied: rule operators-only: the certificate CN=alice is not an operator"
        ),
        "{}",
        stderr(&output)
    );
}

#[test]
fn messages_follow_pages_up_to_the_limit() {
    let node = FakeNode::start(Behaviour::default());
    let listed = json(&node.ctl(&["messages", "--limit", "120", "--output", "json"]));
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 120);
    assert_eq!(listed[0]["sequence"], 1);
    assert_eq!(listed[119]["sequence"], 120);
    assert_eq!(listed[0]["message_id"], 6701);
    assert_eq!(listed[0]["message_name"], "sync_started");
    assert_eq!(listed[0]["time"], "2025-01-31T08:00:01Z");
    assert_eq!(listed[0]["severity"], "informational");
    assert_eq!(*node.admin.page_sizes.lock().unwrap(), [120]);

    let all = json(&node.ctl(&["messages", "--limit", "0", "--output", "json"]));
    assert_eq!(all.as_array().unwrap().len(), MESSAGES as usize);

    let done = json(&node.ctl(&["messages", "--id", "6702", "--output", "json"]));
    let done = done.as_array().unwrap();
    assert!(!done.is_empty());
    assert!(done.iter().all(|m| m["message_id"] == 6702));

    let default_limit = node.ctl(&["messages"]);
    let text = stdout(&default_limit);
    // A header and 100 rows, each with the component.
    assert_eq!(text.matches("SMS_WSUS_SYNC_MANAGER").count(), 100, "{text}");

    let since = json(&node.ctl(&["messages", "--since", "2025-01-31T08:03:00Z", "-o", "json"]));
    assert_eq!(since.as_array().unwrap().len(), (MESSAGES - 179) as usize);
}

#[test]
fn updates_list_and_show() {
    let node = FakeNode::start(Behaviour::default());
    let listed = json(&node.ctl(&["updates", "list", "--output", "json"]));
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 3);
    let defender = listed.iter().find(|u| u["update_id"] == DEFENDER).unwrap();
    assert_eq!(defender["revision"], 200);
    assert!(defender["categories"].is_array());

    let by_kb = json(&node.ctl(&["updates", "list", "--kb", "KB915597", "-o", "json"]));
    assert!(by_kb.as_array().unwrap().len() <= 3);

    let table = node.ctl(&["updates", "list"]);
    assert!(stdout(&table).contains(DEFENDER), "{}", stderr(&table));

    let shown = json(&node.ctl(&["updates", "show", DEFENDER, "--output", "json"]));
    assert_eq!(shown["update_id"], DEFENDER);
    assert_eq!(shown["revisions_held"], serde_json::json!([200]));
    let table = node.ctl(&["updates", "show", &DEFENDER.to_uppercase()]);
    assert!(table.status.success(), "{}", stderr(&table));
    assert!(stdout(&table).contains("revisions held"));

    let document = node.ctl(&["updates", "show", DEFENDER, "--document"]);
    assert_eq!(document.stdout, node.admin.defender.document);

    let missing = node.ctl(&["updates", "show", "00000000-0000-0000-0000-000000000001"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        stderr(&missing).contains("is not held"),
        "{}",
        stderr(&missing)
    );
    let bad = node.ctl(&["updates", "show", "KB123"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(stderr(&bad).contains("is not an update id"));
}

#[test]
fn settings_set_changes_only_what_is_given() {
    let node = FakeNode::start(Behaviour::default());
    let before = json(&node.ctl(&["settings", "get", "--output", "json"]));
    assert_eq!(before["schedule"], "7d");
    assert_eq!(before["revision"], 3);
    let output = node.ctl(&[
        "settings",
        "set",
        "--products",
        "Windows 10,Local publisher",
        "--retry",
        "30m",
        "--output",
        "json",
    ]);
    let after = json(&output);
    assert_eq!(
        after["products"],
        serde_json::json!(["Windows 10", "Local publisher"])
    );
    assert_eq!(after["classifications"], before["classifications"]);
    assert_eq!(after["languages"], before["languages"]);
    assert_eq!(after["schedule"], "7d");
    assert_eq!(after["retry_delay_seconds"], 1800);
    assert_eq!(after["revision"], 4);
    assert_eq!(after["next_sync_full"], true);
    assert!(stderr(&output).contains("the next sync is full"));

    let schedule = json(&node.ctl(&["settings", "set", "--schedule", "0 3 * * 0", "-o", "json"]));
    assert_eq!(schedule["schedule"], "cron:0 3 * * 0");
    assert_eq!(schedule["next_sync_full"], false);
    assert_eq!(schedule["retry_delay_seconds"], 1800);
}

#[test]
fn a_concurrent_settings_change_is_refused() {
    let node = FakeNode::start(Behaviour {
        concurrent_settings_change: true,
        ..Behaviour::default()
    });
    let output = node.ctl(&["settings", "set", "--languages", "en,de"]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        stderr(&output).trim(),
        "error: settings changed meanwhile; run settings get and try again"
    );
}

#[test]
fn policy_through_admin_and_as_a_client() {
    let node = FakeNode::start(Behaviour::default());
    for args in [
        &["policy", "-o", "json"][..],
        &["policy", "--as-client", "-o", "json"],
    ] {
        let policy = json(&node.ctl(args));
        assert_eq!(policy["version"], 1);
        assert_eq!(policy["catalog_digest"], "ab".repeat(32));
        assert_eq!(policy["revision_count"], 152);
        assert_eq!(policy["created_at"], "2025-01-31T08:00:12Z");
        assert_eq!(
            policy["update_servers"][0]["address"],
            "http://127.0.0.1:8530"
        );
    }
}

#[test]
fn tree_as_a_table_as_json_and_as_dot() {
    let node = FakeNode::start(Behaviour::default());
    let table = node.ctl(&["tree"]);
    assert!(table.status.success(), "{}", stderr(&table));
    let text = stdout(&table);
    let row = |code: &str| {
        text.lines()
            .find(|l| l.contains(code))
            .unwrap_or_else(|| panic!("no row for {code}: {text}"))
            .to_owned()
    };
    assert!(
        row("CEN").contains(&format!("150 rev  {}", "ab".repeat(8))),
        "{text}"
    );
    assert!(row("├── PR1").contains("in step"), "{text}");
    assert!(row("│   ├── INT").contains("internet"), "{text}");
    assert!(row("│   └── SE1").contains("12 rev, 11m 0s"), "{text}");
    assert!(row("│   └── SE1").contains("UNREACHABLE"), "{text}");
    assert!(
        row("└── PR2").contains("UNREACHABLE (never reported)"),
        "{text}"
    );
    assert!(row("└── PR2").contains("pr2.example:7443"), "{text}");

    let tree = json(&node.ctl(&["tree", "--output", "json"]));
    assert_eq!(tree["root_site_code"], "CEN");
    let sites = tree["sites"].as_array().unwrap();
    let order: Vec<(&str, &str)> = sites
        .iter()
        .map(|s| {
            (
                s["site_code"].as_str().unwrap(),
                s["parent_site_code"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        order,
        [
            ("CEN", ""),
            ("PR1", "CEN"),
            ("INT", "PR1"),
            ("SE1", "PR1"),
            ("PR2", "CEN")
        ]
    );
    assert_eq!(sites[3]["reachable"], false);
    assert_eq!(sites[3]["lag_revisions"], 12);
    assert_eq!(sites[3]["lag_seconds"], 660.0);
    assert_eq!(sites[3]["update_server"]["revisions"], 138);
    assert_eq!(sites[3]["update_server"]["digest"], "11".repeat(32));
    assert_eq!(sites[2]["site_database"], Value::Null);
    assert_eq!(sites[4]["reported"], false);
    assert_eq!(sites[0]["last_sync"]["result"], "succeeded");

    let dot = node.ctl(&["tree", "--output", "dot"]);
    assert!(dot.status.success(), "{}", stderr(&dot));
    let dot = stdout(&dot);
    assert!(dot.starts_with("digraph sitesync {"), "{dot}");
    for edge in [
        "CEN\" -> \"PR1",
        "PR1\" -> \"INT",
        "PR1\" -> \"SE1",
        "CEN\" -> \"PR2",
    ] {
        assert!(dot.contains(edge), "no edge {edge}: {dot}");
    }
    assert_eq!(dot.matches(" -> ").count(), 4, "{dot}");
    let se1 = dot.lines().find(|l| l.contains("\"SE1\" [")).unwrap();
    assert!(se1.contains("style=dashed, color=red"), "{dot}");
    let pr1 = dot.lines().find(|l| l.contains("\"PR1\" [")).unwrap();
    assert!(!pr1.contains("dashed"), "{dot}");
}

/// `tree --watch` piped: a frame per refresh with a blank line between, a node that cannot
/// be reached is a frame that says so (and the watch goes on), and Ctrl-C ends it with
/// status 0.
#[cfg(unix)]
#[test]
fn tree_watch_goes_on_while_the_node_is_down() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let address = format!("127.0.0.1:{port}");
    let mut watch = support::Running::start(support::insecure_command(
        &address,
        &["tree", "--watch", "--interval", "1s"],
    ));
    let mut frames = vec![Vec::new()];
    while frames.len() < 3 {
        let line = watch
            .next_line(Duration::from_secs(30))
            .expect("the watch goes on");
        if line.is_empty() {
            frames.push(Vec::new());
        } else {
            frames.last_mut().unwrap().push(line);
        }
    }
    for frame in &frames[..2] {
        assert_eq!(frame.len(), 3, "{frame:#?}");
        assert!(
            frame[0].starts_with(&format!("node {address} · refreshed ")),
            "{frame:#?}"
        );
        assert!(frame[0].ends_with(" · every 1s"), "{frame:#?}");
        assert!(
            frame[1].starts_with("NO ANSWER from the node; trying again in 1s (no answer yet)"),
            "{frame:#?}"
        );
        assert!(
            frame[2].starts_with(&format!("cannot reach the node at http://{address}: ")),
            "{frame:#?}"
        );
        assert!(!frame.concat().contains('\u{1b}'), "{frame:#?}");
    }
    watch.interrupt();
    let (status, stderr) = watch.wait(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "{stderr}");
}

/// A refusal that would only repeat ends the watch at once with the usual error.
#[test]
fn tree_watch_ends_on_a_refusal() {
    let denied = FakeNode::start(Behaviour {
        deny: Some("rule operators-only: the certificate CN=alice is not an operator"),
        ..Behaviour::default()
    });
    let mut watch = support::Running::start(support::insecure_command(
        &denied.address,
        &["tree", "--watch", "--output", "json"],
    ));
    assert_eq!(watch.next_line(Duration::from_secs(30)), None);
    let (status, stderr) = watch.wait(Duration::from_secs(10));
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.starts_with("error: the node refused Admin.GetHierarchy: permission denied"),
        "{stderr}"
    );
}

#[test]
fn tree_watch_with_a_json_line_per_refresh_and_its_flags() {
    let node = FakeNode::start(Behaviour::default());
    let mut watch = support::Running::start(support::insecure_command(
        &node.address,
        &["tree", "--watch", "--interval", "1s", "-o", "json"],
    ));
    for _ in 0..2 {
        let line = watch.next_line(Duration::from_secs(30)).unwrap();
        let frame: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(frame["answered"], true, "{frame}");
        assert_eq!(frame["tree"]["sites"][3]["site_code"], "SE1", "{frame}");
        assert_eq!(frame["tree"]["sites"][3]["lag_revisions"], 12, "{frame}");
    }
    drop(watch);

    // --interval belongs to --watch; a watch is not drawn in DOT; an interval is at least 1s.
    for args in [
        &["tree", "--interval", "5s"][..],
        &["tree", "--watch", "--output", "dot"],
        &["tree", "--watch", "--interval", "0s"],
    ] {
        let output = node.ctl(args);
        assert_eq!(
            output.status.code(),
            Some(64),
            "{args:?}: {}",
            stderr(&output)
        );
        assert!(output.stdout.is_empty(), "{args:?}");
    }
}

#[test]
fn export_writes_the_file_only_once_it_is_complete() {
    let fixture = ExportFixture::with_padding(300_000);
    let script = |fault| ExportScript {
        bytes: Arc::new(fixture.bytes()),
        header: fixture.header.clone(),
        fault,
    };
    let node = FakeNode::start(Behaviour {
        export: Some(script(None)),
        ..Behaviour::default()
    });
    let out = fixture.arg("next.ssx");
    let since = fixture.arg("cen.ssx");
    let output = node.ctl(&["export", "--out", &out, "--since", &since, "-o", "json"]);
    let view = json(&output);
    assert_eq!(view["file"], out);
    assert_eq!(view["source_site"], "CEN");
    assert_eq!(view["target"], format!("{LOG}:41"));
    assert_eq!(view["bytes"], fixture.bytes().len());
    assert_eq!(view["chunks"], 4);
    assert_eq!(view["verified"], Value::Null);
    assert_eq!(std::fs::read(&out).unwrap(), fixture.bytes());
    // The earlier file's target is where the node is asked to start.
    assert_eq!(
        node.admin.export_requests.lock().unwrap().as_slice(),
        [Some(anchor(41))]
    );
    // Not a terminal: lines instead of a bar.
    let log = stderr(&output);
    assert!(
        log.starts_with(&format!(
            "exporting the changes after {LOG}:10 from CEN (catalog version 12): about 31 records"
        )),
        "{log}"
    );
    assert!(log.contains("received "), "{log}");

    // An existing file is replaced only with --force.
    let output = node.ctl(&["export", "--out", &out, "--since-anchor", "log-b:7"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("exists: pass --force"),
        "{}",
        stderr(&output)
    );
    let output = node.ctl(&[
        "export",
        "--out",
        &out,
        "--force",
        "--since-anchor",
        "log-b:7",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stdout(&output).contains("incremental"),
        "{}",
        stdout(&output)
    );
    assert_eq!(
        node.admin.export_requests.lock().unwrap()[1],
        Some(v1::Anchor {
            log_id: "log-b".into(),
            sequence: 7,
            snapshot_through: None,
        })
    );
    assert_eq!(fixture.entries(), ["cen.ssx", "next.ssx", "other", "pki"]);

    for (fault, expected) in [
        (
            ExportFault::CutShort,
            "the export stream was cut short after ",
        ),
        (
            ExportFault::Gap,
            "parts of the file are missing, repeated or out of order",
        ),
    ] {
        let node = FakeNode::start(Behaviour {
            export: Some(script(Some(fault))),
            ..Behaviour::default()
        });
        let output = node.ctl(&["export", "--out", &fixture.arg("broken.ssx")]);
        assert_eq!(output.status.code(), Some(1), "{fault:?}");
        assert!(
            stderr(&output).contains(expected),
            "{fault:?}: {}",
            stderr(&output)
        );
        assert!(output.stdout.is_empty(), "{fault:?}");
        assert_eq!(
            fixture.entries(),
            ["cen.ssx", "next.ssx", "other", "pki"],
            "{fault:?}"
        );
    }
}

#[cfg(unix)]
#[test]
fn ctrl_c_during_an_export_leaves_no_file() {
    let fixture = ExportFixture::with_padding(300_000);
    let node = FakeNode::start(Behaviour {
        export: Some(ExportScript {
            bytes: Arc::new(fixture.bytes()),
            header: fixture.header.clone(),
            fault: Some(ExportFault::Stall),
        }),
        ..Behaviour::default()
    });
    let out = fixture.arg("stalled.ssx");
    let mut export = support::Running::start(support::insecure_command(
        &node.address,
        &["export", "--out", &out],
    ));
    let partial = ".stalled.ssx.partial-";
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !fixture
        .entries()
        .iter()
        .any(|name| name.starts_with(partial))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "{:?}",
            fixture.entries()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    export.interrupt();
    let (status, log) = export.wait(Duration::from_secs(10));
    assert_eq!(status.code(), Some(130), "{log}");
    assert!(log.contains("interrupted: "), "{log}");
    assert_eq!(fixture.entries(), ["cen.ssx", "other", "pki"]);
}

#[test]
fn import_streams_the_file_and_prints_what_the_node_did() {
    // More than two FileChunks.
    let fixture = ExportFixture::with_padding(2_500_000);
    let bytes = fixture.bytes();
    let file = fixture.arg("cen.ssx");
    let node = FakeNode::start(Behaviour::default());
    let output = node.ctl(&["import", &file, "-o", "json"]);
    let view = json(&output);
    assert_eq!(view["file"], file);
    assert_eq!(view["dry_run"], false);
    assert_eq!(view["already_held"], false);
    assert_eq!(view["sync_id"], 21);
    assert_eq!(view["kind"], "incremental");
    assert_eq!(view["target"], format!("{LOG}:41"));
    assert_eq!(view["counts"]["new"], 1);
    assert_eq!(view["counts"]["deleted"], 30);
    assert_eq!(view["update_server"]["digest"], "07".repeat(32));
    assert_eq!(view["catalog_version"]["version"], 12);
    let log = stderr(&output);
    assert!(log.starts_with("sending "), "{log}");
    assert!(
        log.contains("the node is verifying and applying it"),
        "{log}"
    );
    {
        let imports = node.admin.imports.lock().unwrap();
        let received = &imports[0];
        assert_eq!(
            received.header,
            Some(v1::ImportHeader {
                file_name: "cen.ssx".into(),
                total_bytes: bytes.len() as u64,
                dry_run: false,
            })
        );
        assert_eq!(received.bytes, bytes);
        assert_eq!(
            received.chunks.len(),
            bytes.len().div_ceil(FILE_CHUNK_BYTES)
        );
        let mut offset = 0;
        for &(at, len) in &received.chunks {
            assert_eq!(at, offset);
            assert!(len <= FILE_CHUNK_BYTES);
            offset += len as u64;
        }
    }

    let output = node.ctl(&["import", &file, "--dry-run"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stdout(&output).contains("dry run"), "{}", stdout(&output));
    assert!(
        node.admin.imports.lock().unwrap()[1]
            .header
            .as_ref()
            .unwrap()
            .dry_run
    );
    // The file is only read.
    assert_eq!(fixture.bytes(), bytes);

    let refusing = FakeNode::start(Behaviour {
        refuse_imports: Some("the file starts at log:10, but this node stands at log:3"),
        ..Behaviour::default()
    });
    let output = refusing.ctl(&["import", &file]);
    assert_eq!(output.status.code(), Some(1));
    assert!(output.stdout.is_empty());
    assert!(
        stderr(&output)
            .ends_with("error: the file starts at log:10, but this node stands at log:3\n"),
        "{}",
        stderr(&output)
    );
}
