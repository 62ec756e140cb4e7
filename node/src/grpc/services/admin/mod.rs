//! `sitesync.v1.Admin`: the operator's surface — status, syncs and their progress, status
//! messages, updates, sync settings and the client policy.

mod archive;
mod publishing;
mod settings;
mod updates;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use sitesync_metadata::{CategoryType, PublicationState, RevisionId, UpdateId, UpdateType};
use sitesync_proto::convert::{optional_timestamp, timestamp_to_wire};
use sitesync_proto::v1;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::super::wire::{machine_policy, own_site_state, wire_message, wire_run};
use crate::hierarchy::site_states::{self, SiteStates};
use crate::legacy_catalog::LegacyCatalog;
use crate::node::NodeState;
use crate::store::{CatalogStore, UpdateSummary};
use crate::sync::manager::{
    Disposition, ManagerView, SyncKind, SyncManager, SyncPhase, SyncRun, SyncTrigger,
};
use crate::sync::status::{Severity, StatusCursor, StatusMessageId, StatusQuery};
use crate::telemetry::TraceContext;
use settings::{settings_from_wire, wire_settings};
use updates::{SupersededCache, is_product, resolve_categories, wire_summary};

const DEFAULT_PAGE: usize = sitesync_proto::DEFAULT_PAGE_SIZE as usize;
const MAX_PAGE: usize = sitesync_proto::MAX_PAGE_SIZE as usize;

#[derive(Debug, Clone)]
pub struct AdminService {
    node: Arc<NodeState>,
    sync: SyncManager,
    hierarchy: Arc<crate::hierarchy::Hierarchy>,
    legacy: LegacyCatalog,
    /// Which updates some held update supersedes, per store.
    superseded: SupersededCache,
}

impl AdminService {
    pub fn new(
        node: Arc<NodeState>,
        sync: SyncManager,
        hierarchy: Arc<crate::hierarchy::Hierarchy>,
        legacy: LegacyCatalog,
    ) -> Self {
        Self {
            node,
            sync,
            hierarchy,
            legacy,
            superseded: SupersededCache::default(),
        }
    }

    fn store(&self, selector: i32) -> Result<(&CatalogStore, usize), Status> {
        match v1::StoreSelector::try_from(selector) {
            Ok(v1::StoreSelector::UpdateServer) => Ok((self.node.database.update_server(), 0)),
            // An internet-facing node has only its update server (S11).
            Ok(v1::StoreSelector::Unspecified) if self.is_internet_node() => {
                Ok((self.node.database.update_server(), 0))
            }
            Ok(v1::StoreSelector::SiteDatabase) if self.is_internet_node() => {
                Err(Status::failed_precondition(
                    "an internet-facing node has no site database: ask for the update-server store, or ask its site's node",
                ))
            }
            Ok(v1::StoreSelector::SiteDatabase | v1::StoreSelector::Unspecified) => {
                Ok((self.node.database.site_database(), 1))
            }
            Ok(v1::StoreSelector::Publications) => Ok((self.node.database.publications(), 2)),
            Err(_) => Err(Status::invalid_argument(format!(
                "store: {selector} is not a store; use UPDATE_SERVER, SITE_DATABASE or PUBLICATIONS"
            ))),
        }
    }

    fn is_internet_node(&self) -> bool {
        self.node.config.role == crate::config::Role::Internet
    }

    fn site_state(&self, view: &ManagerView) -> v1::SiteState {
        let mut state = own_site_state(&self.node, view, self.node.network_clock.now());
        state.parent_site_code = self.hierarchy.parent_site_code().unwrap_or_default();
        state
    }
}

#[tonic::async_trait]
impl v1::admin_server::Admin for AdminService {
    async fn get_site_status(
        &self,
        _request: Request<v1::GetSiteStatusRequest>,
    ) -> Result<Response<v1::SiteStatus>, Status> {
        let view = self.sync.watch().borrow().clone();
        let policy_version = self.sync.policy().current()?.map_or(0, |p| p.version);
        let hierarchy = self.hierarchy.clone();
        let mut site = self.site_state(&view);
        let mut queued: Vec<v1::SyncRun> = view.queued.iter().map(wire_run).collect();
        let children = tokio::task::spawn_blocking(move || {
            // The parent's request behind each run it started, to trace a cascade.
            let runs = site
                .last_sync
                .iter_mut()
                .chain(site.current_sync.iter_mut())
                .chain(queued.iter_mut());
            for run in runs {
                if run.trigger() == v1::SyncTrigger::ParentRequest
                    && let Ok(id) = run.sync_id.parse()
                {
                    run.sync_request_id =
                        hierarchy.received.request_for_sync(id)?.unwrap_or_default();
                }
            }
            let children = hierarchy
                .children
                .list()?
                .into_iter()
                .map(|child| {
                    Ok(v1::RegisteredChild {
                        role: if child.is_internet_node() {
                            v1::SiteRole::Internet
                        } else {
                            v1::SiteRole::Site
                        } as i32,
                        address: child.address.clone(),
                        registered_at: Some(timestamp_to_wire(child.registered_at)),
                        last_contact_at: Some(timestamp_to_wire(child.last_seen)),
                        pending_sync_requests: u32::try_from(
                            hierarchy.outbox.pending_for(&child.site_code)?,
                        )
                        .unwrap_or(u32::MAX),
                        replication_acked: None,
                        site_code: child.site_code,
                    })
                })
                .collect::<Result<Vec<_>, crate::hierarchy::HierarchyError>>()?;
            Ok::<_, crate::hierarchy::HierarchyError>((site, queued, children))
        })
        .await
        .map_err(|e| Status::internal(format!("the status task failed: {e}")))?;
        let (site, queued, children) = children?;
        Ok(Response::new(v1::SiteStatus {
            site: Some(site),
            children,
            queued_syncs: queued,
            client_policy_version: policy_version,
        }))
    }

    async fn get_hierarchy(
        &self,
        request: Request<v1::GetHierarchyRequest>,
    ) -> Result<Response<v1::HierarchyTree>, Status> {
        let stale_after = match request.into_inner().stale_after {
            None => site_states::default_stale_after(),
            Some(wire) => u64::try_from(wire.seconds)
                .ok()
                .zip(u32::try_from(wire.nanos).ok())
                .filter(|(_, nanos)| *nanos < 1_000_000_000)
                .map(|(seconds, nanos)| Duration::new(seconds, nanos))
                .filter(|d| !d.is_zero())
                .ok_or_else(|| {
                    Status::invalid_argument(
                        "stale_after: give a positive duration, or leave it out for three report intervals",
                    )
                })?,
        };
        let view = self.sync.watch().borrow().clone();
        let node = self.node.clone();
        let tree = tokio::task::spawn_blocking(move || {
            let states = SiteStates::open(&node)?;
            let now = states.now();
            let own = own_site_state(&node, &view, now);
            let held = states.list()?;
            // Children that registered but never reported still belong in the tree.
            let registered =
                crate::hierarchy::Children::new(node.database.space("children")?).list()?;
            Ok::<_, Status>(super::super::site_states::assemble(
                own,
                held,
                &registered,
                now,
                stale_after,
            ))
        })
        .await
        .map_err(|e| Status::internal(format!("the hierarchy task failed: {e}")))??;
        Ok(Response::new(tree))
    }

    async fn run_sync(
        &self,
        request: Request<v1::RunSyncRequest>,
    ) -> Result<Response<v1::RunSyncResponse>, Status> {
        let kind = match v1::SyncKind::try_from(request.into_inner().kind) {
            Ok(v1::SyncKind::Full) => SyncKind::Full,
            Ok(v1::SyncKind::Manual) => SyncKind::Manual,
            _ => {
                return Err(Status::invalid_argument(
                    "kind: say FULL (every change, as a scheduled sync) or MANUAL (new updates only)",
                ));
            }
        };
        let (id, disposition) =
            match self
                .sync
                .request_traced(kind, SyncTrigger::Operator, TraceContext::current())?
            {
                Disposition::Started(id) => (id, v1::RunSyncDisposition::Started),
                Disposition::Queued(id) => (id, v1::RunSyncDisposition::Queued),
            };
        Ok(Response::new(v1::RunSyncResponse {
            sync_id: id.to_string(),
            disposition: disposition as i32,
        }))
    }

    type WatchSyncStream = ReceiverStream<Result<v1::SyncProgress, Status>>;

    async fn watch_sync(
        &self,
        request: Request<v1::WatchSyncRequest>,
    ) -> Result<Response<Self::WatchSyncStream>, Status> {
        let text = request.into_inner().sync_id;
        let sync_id: u64 = if text.is_empty() {
            // The run in progress, else the next one to start.
            let view = self.sync.watch().borrow().clone();
            view.current
                .or_else(|| view.queued.first().cloned())
                .map(|r| r.id)
                .ok_or_else(|| Status::not_found("no sync is running or queued"))?
        } else {
            text.parse().map_err(|_| {
                Status::invalid_argument(format!(
                    "sync_id: `{text}` is not a sync id (a number, as RunSync returned it)"
                ))
            })?
        };
        let known = {
            let view = self.sync.watch().borrow().clone();
            find_run(&view, sync_id).is_some()
        };
        if !known {
            return Err(Status::not_found(format!(
                "sync {sync_id} is neither queued, running nor the last one finished"
            )));
        }
        let (sender, receiver) = mpsc::channel(8);
        let sync = self.sync.clone();
        let site = self.node.config.site_code.to_string();
        tokio::spawn(async move {
            let mut watch = sync.watch();
            let mut sent_through = 0u64;
            loop {
                let view = watch.borrow_and_update().clone();
                let Some(run) = find_run(&view, sync_id) else {
                    break;
                };
                let log = sync.status_log();
                let query = StatusQuery {
                    sites: vec![site.clone()],
                    sync_id: Some(sync_id),
                    limit: 1_000,
                    ..StatusQuery::default()
                };
                let messages = match log.query(&query) {
                    Ok((mut messages, _)) => {
                        messages.retain(|m| m.sequence > sent_through);
                        messages.sort_by_key(|m| m.sequence);
                        messages
                    }
                    Err(e) => {
                        let _ = sender.send(Err(Status::internal(e.to_string()))).await;
                        return;
                    }
                };
                if let Some(last) = messages.last() {
                    sent_through = last.sequence;
                }
                let finished = run.phase == SyncPhase::Finished;
                let progress = v1::SyncProgress {
                    run: Some(wire_run(&run)),
                    messages: messages.iter().map(wire_message).collect(),
                };
                if sender.send(Ok(progress)).await.is_err() || finished {
                    return;
                }
                if watch.changed().await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(receiver)))
    }

    async fn list_status_messages(
        &self,
        request: Request<v1::ListStatusMessagesRequest>,
    ) -> Result<Response<v1::ListStatusMessagesResponse>, Status> {
        let request = request.into_inner();
        let ids = request
            .message_ids
            .iter()
            .map(|raw| {
                u32::try_from(*raw)
                    .ok()
                    .and_then(StatusMessageId::from_code)
                    .ok_or_else(|| Status::invalid_argument(format!("message_ids: {raw} is not a status message id this node knows (6701-6706, 6790)")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let sync_id = match request.sync_id.as_str() {
            "" => None,
            text => Some(text.parse::<u64>().map_err(|_| {
                Status::invalid_argument(format!("sync_id: `{text}` is not a sync id"))
            })?),
        };
        let after = match request.page_token.as_str() {
            "" => None,
            token => Some(token.parse::<StatusCursor>().map_err(|_| {
                Status::invalid_argument(
                    "page_token: not a token this node issued; start again without it",
                )
            })?),
        };
        let min_severity = match v1::Severity::try_from(request.min_severity) {
            Ok(v1::Severity::Warning) => 1,
            Ok(v1::Severity::Error) => 2,
            _ => 0,
        };
        // Severity follows from the id and every message here is the sync manager's, so
        // both filters become an id filter that the log applies before paging.
        let mut ids = if ids.is_empty() {
            StatusMessageId::ALL.to_vec()
        } else {
            ids
        };
        ids.retain(|id| severity_rank(id.severity()) >= min_severity);
        if !request.component.is_empty() && request.component != crate::sync::status::COMPONENT {
            ids.clear();
        }
        if ids.is_empty() {
            return Ok(Response::new(v1::ListStatusMessagesResponse::default()));
        }
        let query = StatusQuery {
            sites: request
                .site_codes
                .iter()
                .map(|s| s.to_ascii_uppercase())
                .collect(),
            ids,
            since: optional_timestamp(request.since, "since")?,
            until: optional_timestamp(request.until, "until")?,
            sync_id,
            oldest_first: request.oldest_first,
            after,
            limit: (request.page_size as usize)
                .clamp(1, MAX_PAGE)
                .max(if request.page_size == 0 {
                    DEFAULT_PAGE
                } else {
                    1
                }),
        };
        let (messages, next) = self
            .sync
            .status_log()
            .query(&query)
            .map_err(|e| Status::internal(e.to_string()))?;
        let messages = messages.iter().map(wire_message).collect();
        Ok(Response::new(v1::ListStatusMessagesResponse {
            messages,
            next_page_token: next.map(|c| c.to_string()).unwrap_or_default(),
        }))
    }

    async fn list_updates(
        &self,
        request: Request<v1::ListUpdatesRequest>,
    ) -> Result<Response<v1::ListUpdatesResponse>, Status> {
        let request = request.into_inner();
        let (store, slot) = self.store(request.store)?;
        let filter = request.filter.unwrap_or_default();
        let products = resolve_categories(store, &filter.products, "filter.products", is_product)?;
        let classifications = resolve_categories(
            store,
            &filter.classifications,
            "filter.classifications",
            |t| t == Some(CategoryType::UpdateClassification),
        )?;
        let types = filter
            .update_types
            .iter()
            .map(|raw| {
                sitesync_proto::convert::required_enum::<UpdateType>(*raw, "filter.update_types")
            })
            .collect::<Result<HashSet<_>, _>>()?;
        let superseded = match filter.superseded {
            Some(_) => Some(self.superseded.superseded_in(store, slot)?),
            None => None,
        };
        let text = filter.text.as_ref().map(|t| t.to_lowercase());
        // A custom update's publisher is in its seal: read only when asked for.
        let publisher = |s: &UpdateSummary| {
            filter.publisher.as_ref().is_none_or(|wanted| {
                crate::publishing::held_seal(store, s.id)
                    .ok()
                    .flatten()
                    .is_some_and(|seal| seal.publisher.eq_ignore_ascii_case(wanted))
            })
        };
        let kb = filter
            .kb_article
            .as_ref()
            .map(|k| k.trim_start_matches(['K', 'B', 'k', 'b']).to_owned());
        let matches = |s: &UpdateSummary| {
            products
                .as_ref()
                .is_none_or(|p| s.categories.iter().any(|c| p.contains(c)))
                && classifications
                    .as_ref()
                    .is_none_or(|c| s.categories.iter().any(|x| c.contains(x)))
                && kb
                    .as_ref()
                    .is_none_or(|kb| s.kb_article.as_deref() == Some(kb.as_str()))
                && text.as_ref().is_none_or(|t| {
                    s.title.to_lowercase().contains(t) || s.id.update_id.to_string().contains(t)
                })
                && filter
                    .expired
                    .is_none_or(|e| e == (s.publication_state == PublicationState::Expired))
                && (types.is_empty() || types.contains(&s.update_type))
                && match (&superseded, filter.superseded) {
                    (Some(set), Some(wanted)) => set.contains(&s.id.update_id) == wanted,
                    _ => true,
                }
                && publisher(s)
        };
        let page_size = match request.page_size as usize {
            0 => DEFAULT_PAGE,
            n => n.min(MAX_PAGE),
        };
        let mut after = match request.page_token.as_str() {
            "" => None,
            token => Some(token.parse::<UpdateId>().map_err(|_| {
                Status::invalid_argument(
                    "page_token: not a token this node issued; start again without it",
                )
            })?),
        };
        let superseded_all = self.superseded.superseded_in(store, slot)?;
        let mut updates = Vec::new();
        let mut next_page_token = String::new();
        'pages: loop {
            let page = store.summaries(after, 1_000)?;
            let Some(last) = page.last() else { break };
            after = Some(last.id.update_id);
            for summary in page {
                if !matches(&summary) {
                    continue;
                }
                if updates.len() == page_size {
                    next_page_token = updates
                        .last()
                        .map(|u: &v1::UpdateSummary| {
                            u.id.as_ref()
                                .and_then(|id| id.update_id.as_ref())
                                .map(|g| g.guid.clone())
                                .unwrap_or_default()
                        })
                        .unwrap_or_default();
                    break 'pages;
                }
                updates.push(wire_summary(
                    &summary,
                    superseded_all.contains(&summary.id.update_id),
                ));
            }
        }
        Ok(Response::new(v1::ListUpdatesResponse {
            updates,
            next_page_token,
        }))
    }

    async fn get_update(
        &self,
        request: Request<v1::GetUpdateRequest>,
    ) -> Result<Response<v1::GetUpdateResponse>, Status> {
        let request = request.into_inner();
        let (store, _) = self.store(request.store)?;
        let update = UpdateId::try_from(
            request
                .update_id
                .ok_or_else(|| Status::invalid_argument("update_id is required"))?,
        )?;
        let held = store.revision_numbers(update)?;
        let Some(latest) = held.last() else {
            return Err(Status::not_found(format!(
                "update {update} is not in this store"
            )));
        };
        let id = match request.revision {
            Some(revision) => RevisionId {
                update_id: update,
                revision,
            },
            None => *latest,
        };
        let revision = store
            .revision(id)?
            .ok_or_else(|| Status::not_found(format!("revision {id} is not in this store")))?;
        let superseded_by = {
            let mut by = Vec::new();
            let mut after = None;
            loop {
                let page = store.summaries(after, 1_000)?;
                let Some(last) = page.last() else { break };
                after = Some(last.id.update_id);
                by.extend(
                    page.iter()
                        .filter(|s| s.superseded.contains(&update))
                        .map(|s| v1::UpdateId::from(s.id.update_id)),
                );
            }
            by
        };
        let custom = self.custom_info(&revision)?;
        let categories = revision
            .categories()
            .map(|category| {
                let summary = store.latest(category)?;
                Ok(v1::CategoryInfo {
                    id: Some(category.into()),
                    name: summary
                        .as_ref()
                        .map(|s| s.title.clone())
                        .unwrap_or_default(),
                    category_type: summary
                        .and_then(|s| s.category_type)
                        .map_or(0, sitesync_proto::convert::enum_to_wire),
                })
            })
            .collect::<Result<Vec<_>, crate::store::StoreError>>()?;
        Ok(Response::new(v1::GetUpdateResponse {
            revision: Some((&revision).into()),
            custom,
            revisions_held: held.iter().map(|r| r.revision).collect(),
            superseded_by,
            categories,
        }))
    }

    async fn get_sync_settings(
        &self,
        _request: Request<v1::GetSyncSettingsRequest>,
    ) -> Result<Response<v1::SyncSettings>, Status> {
        Ok(Response::new(self.wire_settings(&self.sync.settings()?)))
    }

    async fn set_sync_settings(
        &self,
        request: Request<v1::SetSyncSettingsRequest>,
    ) -> Result<Response<v1::SetSyncSettingsResponse>, Status> {
        let request = request.into_inner();
        let wire = request
            .settings
            .ok_or_else(|| Status::invalid_argument("settings is required"))?;
        let legacy_refresh = match wire.legacy_catalog_refresh {
            None => None,
            Some(_) if !self.legacy.is_host() => {
                return Err(Status::failed_precondition(
                    "settings.legacy_catalog_refresh: this site is not the legacy catalog host; set it at the top site that has [legacy_catalog] host = true",
                ));
            }
            Some(d) if d.seconds >= 60 && d.nanos == 0 => {
                Some(Duration::from_secs(d.seconds as u64))
            }
            Some(_) => {
                return Err(Status::invalid_argument(
                    "settings.legacy_catalog_refresh: give a whole number of seconds, at least one minute",
                ));
            }
        };
        let before = self.sync.settings()?;
        let settings = settings_from_wire(wire, &before)?;
        let saved = self
            .sync
            .set_settings(settings, request.expected_revision)?;
        if let Some(refresh) = legacy_refresh {
            self.legacy
                .set_refresh(refresh)
                .map_err(|e| Status::internal(e.to_string()))?;
        }
        Ok(Response::new(v1::SetSyncSettingsResponse {
            next_sync_full: !saved.same_selection(&before),
            settings: Some(self.wire_settings(&saved)),
        }))
    }

    type ExportCatalogStream = ReceiverStream<Result<v1::ExportCatalogChunk, Status>>;

    async fn export_catalog(
        &self,
        request: Request<v1::ExportCatalogRequest>,
    ) -> Result<Response<Self::ExportCatalogStream>, Status> {
        archive::export(self.node.clone(), request.into_inner())
            .await
            .map(Response::new)
    }

    async fn import_catalog(
        &self,
        request: Request<tonic::Streaming<v1::ImportCatalogChunk>>,
    ) -> Result<Response<v1::ImportCatalogResponse>, Status> {
        let trace = TraceContext::current();
        archive::import(
            self.node.clone(),
            self.sync.clone(),
            request.into_inner(),
            trace,
        )
        .await
    }

    async fn publish_update(
        &self,
        request: Request<v1::PublishUpdateRequest>,
    ) -> Result<Response<v1::PublishUpdateResponse>, Status> {
        let service = self.clone();
        let request = request.into_inner();
        tokio::task::spawn_blocking(move || service.publish(request))
            .await
            .map_err(|e| Status::internal(format!("publishing stopped: {e}")))?
            .map(Response::new)
    }

    async fn list_publishers(
        &self,
        _request: Request<v1::ListPublishersRequest>,
    ) -> Result<Response<v1::ListPublishersResponse>, Status> {
        self.list_publishers().map(Response::new)
    }

    async fn delegate_publisher(
        &self,
        request: Request<v1::DelegatePublisherRequest>,
    ) -> Result<Response<v1::DelegatePublisherResponse>, Status> {
        self.delegate_publisher(request.into_inner())
            .map(Response::new)
    }

    async fn revoke_publisher(
        &self,
        request: Request<v1::RevokePublisherRequest>,
    ) -> Result<Response<v1::RevokePublisherResponse>, Status> {
        self.revoke_publisher(request.into_inner())
            .map(Response::new)
    }

    async fn get_client_policy(
        &self,
        _request: Request<v1::GetClientPolicyRequest>,
    ) -> Result<Response<v1::MachinePolicy>, Status> {
        machine_policy(&self.node, &self.sync).map(Response::new)
    }

    async fn build_legacy_catalog(
        &self,
        _request: Request<v1::BuildLegacyCatalogRequest>,
    ) -> Result<Response<v1::LegacyCatalogStatus>, Status> {
        use crate::legacy_catalog::LegacyError;
        match self.legacy.build_now().await {
            Ok(_) => Ok(Response::new(legacy_status(&self.legacy))),
            Err(e @ LegacyError::NotHost) => Err(Status::failed_precondition(e.to_string())),
            Err(e @ LegacyError::Stopping) => Err(Status::unavailable(e.to_string())),
            Err(e) => Err(Status::failed_precondition(e.to_string())),
        }
    }

    async fn get_legacy_catalog_status(
        &self,
        _request: Request<v1::GetLegacyCatalogStatusRequest>,
    ) -> Result<Response<v1::LegacyCatalogStatus>, Status> {
        Ok(Response::new(legacy_status(&self.legacy)))
    }
}

impl AdminService {
    /// The settings on the wire, with the legacy catalog's refresh at the host.
    fn wire_settings(&self, settings: &crate::sync::settings::SyncSettings) -> v1::SyncSettings {
        v1::SyncSettings {
            legacy_catalog_refresh: self
                .legacy
                .is_host()
                .then(|| settings::prost_duration(self.legacy.refresh())),
            ..wire_settings(settings)
        }
    }
}

fn legacy_status(legacy: &LegacyCatalog) -> v1::LegacyCatalogStatus {
    use sha2::Digest as _;
    let status = legacy.status();
    let (index_sha256, total_bytes, index) = match status.held {
        Some(held) => (
            sha2::Sha256::digest(&held.file).to_vec(),
            held.total_bytes(),
            Some(held.index),
        ),
        None => (Vec::new(), 0, None),
    };
    v1::LegacyCatalogStatus {
        host: status.host,
        index,
        index_sha256,
        total_bytes,
        next_build_at: status.next_build_at.map(timestamp_to_wire),
        refresh: Some(settings::prost_duration(status.refresh)),
        last_error: status.last_error.unwrap_or_default(),
        shards_written: status.outcome.shards_written as u32,
        bytes_written: status.outcome.bytes_written,
        shards_reused: status.outcome.shards_reused as u32,
    }
}

fn find_run(view: &ManagerView, id: u64) -> Option<SyncRun> {
    view.current
        .iter()
        .chain(view.queued.iter())
        .chain(view.recent.iter())
        .find(|r| r.id == id)
        .cloned()
}

fn severity_rank(severity: Severity) -> u8 {
    match severity {
        Severity::Informational => 0,
        Severity::Warning => 1,
        Severity::Error => 2,
    }
}
