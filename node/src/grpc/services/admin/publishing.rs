//! `Admin.PublishUpdate`, `ListPublishers`, `DelegatePublisher`, `RevokePublisher`: custom
//! updates and their publishers at the top site (S6), over [`crate::publish`].

use sitesync_metadata::custom;
use sitesync_proto::convert::{timestamp_from_wire, timestamp_to_wire};
use sitesync_proto::v1;
use tonic::Status;

use super::AdminService;
use crate::catalog_version::delegation_to_wire;
use crate::grpc::wire::store_info;
use crate::publish::{self, PublishError};
use crate::publishing::Delegation;
use crate::sync::manager::{Disposition, SyncKind, SyncTrigger};
use crate::sync::settings::{CategorySelector, SyncSettings};
use crate::telemetry::TraceContext;

impl From<PublishError> for Status {
    fn from(error: PublishError) -> Self {
        match error {
            PublishError::NotTop | PublishError::NoSigning => {
                Status::failed_precondition(error.to_string())
            }
            PublishError::Invalid(_) | PublishError::Custom(_) => {
                Status::invalid_argument(error.to_string())
            }
            PublishError::Version(e) => Status::internal(e.to_string()),
            PublishError::Store(e) => e.into(),
        }
    }
}

impl AdminService {
    pub(super) fn publish(
        &self,
        request: v1::PublishUpdateRequest,
    ) -> Result<v1::PublishUpdateResponse, Status> {
        let database = &self.node.database;
        let published = publish::publish(
            self.node.catalog_versions.as_ref(),
            database.publications(),
            database.update_server(),
            request.documents,
            self.node.clock.now(),
        )?;
        let kind = if published.outcome.expired > 0 {
            v1::ChangeKind::Expired
        } else if published.outcome.new > 0 {
            v1::ChangeKind::New
        } else {
            v1::ChangeKind::Changed
        };
        tracing::info!(
            revision = %published.id,
            vendor = %published.vendor,
            product = %published.product,
            accepted_version = published.accepted.version,
            "custom update published"
        );
        let settings = self.sync.settings()?;
        let sync_id = if selects(&settings, &published.vendor, &published.product) {
            match self.sync.request_traced(
                SyncKind::Manual,
                SyncTrigger::Operator,
                TraceContext::current(),
            )? {
                Disposition::Started(id) | Disposition::Queued(id) => id,
            }
        } else {
            0
        };
        Ok(v1::PublishUpdateResponse {
            id: Some(published.id.into()),
            kind: kind as i32,
            publications: Some(store_info(&published.publications)),
            sync_id,
            accepted_version: published.accepted.version,
        })
    }

    /// What `GetUpdate` says of a custom revision's seal.
    pub(super) fn custom_info(
        &self,
        revision: &sitesync_metadata::UpdateRevision,
    ) -> Result<Option<v1::CustomUpdateInfo>, Status> {
        let check = match self.node.catalog_versions.as_ref() {
            Some(versions) => versions
                .current_check(self.node.clock.now())
                .map_err(|e| Status::internal(e.to_string()))?,
            None => None,
        };
        Ok(
            crate::publishing::judge(revision, check.as_deref()).map(|j| v1::CustomUpdateInfo {
                publisher: j.seal.publisher,
                vendor: j.seal.vendor,
                product: j.seal.product,
                key_id: j.key,
                accepted_version: j.seal.accepted.map_or(0, |a| a.version),
                accepted_at: j.seal.accepted.map(|a| timestamp_to_wire(a.at)),
                valid: j.valid,
                verdict: j.verdict,
            }),
        )
    }

    pub(super) fn list_publishers(&self) -> Result<v1::ListPublishersResponse, Status> {
        let Some(versions) = self.node.catalog_versions.as_ref() else {
            return Ok(v1::ListPublishersResponse::default());
        };
        let delegations = versions
            .delegations()
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(v1::ListPublishersResponse {
            delegations: delegations.iter().map(delegation_to_wire).collect(),
            catalog_version: versions.held().map_or(0, |h| h.number()),
        })
    }

    pub(super) fn delegate_publisher(
        &self,
        request: v1::DelegatePublisherRequest,
    ) -> Result<v1::DelegatePublisherResponse, Status> {
        let expires_at = request
            .expires_at
            .map(timestamp_from_wire)
            .transpose()
            .map_err(|e| Status::invalid_argument(format!("expires_at: {e}")))?;
        let change = publish::delegate(
            self.node.catalog_versions.as_ref(),
            self.node.database.update_server(),
            &request.certificate,
            expires_at,
            request.rotate,
            self.node.clock.now(),
        )?;
        let added = change.added.as_ref().map(delegation_to_wire);
        if let Some(added) = &change.added {
            tracing::info!(
                publisher = %added.publisher,
                vendor = %added.vendor,
                key = %added.key_id(),
                expires_at = %added.expires_at,
                retired = change.retired.len(),
                "publisher delegated"
            );
        }
        Ok(v1::DelegatePublisherResponse {
            delegation: added,
            retired: wire(&change.retired),
        })
    }

    pub(super) fn revoke_publisher(
        &self,
        request: v1::RevokePublisherRequest,
    ) -> Result<v1::RevokePublisherResponse, Status> {
        let change = publish::revoke(
            self.node.catalog_versions.as_ref(),
            &request.publisher,
            self.node.clock.now(),
        )?;
        tracing::info!(
            publisher = %request.publisher,
            retired = change.retired.len(),
            "publisher revoked"
        );
        Ok(v1::RevokePublisherResponse {
            retired: wire(&change.retired),
        })
    }
}

fn wire(delegations: &[Delegation]) -> Vec<v1::PublisherDelegation> {
    delegations.iter().map(delegation_to_wire).collect()
}

/// Whether the settings' products take in the custom updates of `vendor`'s `product`.
fn selects(settings: &SyncSettings, vendor: &str, product: &str) -> bool {
    let ids = [
        custom::LOCAL_PUBLISHER,
        custom::vendor_category_id(vendor),
        custom::product_category_id(vendor, product),
    ];
    let names = [custom::LOCAL_PUBLISHER_NAME, vendor, product];
    settings.products.is_empty()
        || settings.products.iter().any(|selector| match selector {
            CategorySelector::Id(id) => ids.contains(id),
            CategorySelector::Name(name) => names.iter().any(|n| n.eq_ignore_ascii_case(name)),
        })
}
