//! [`ParentLegacyCatalog`] over gRPC: the parent's `ClientPolicy.GetLegacyScanCatalog`, as
//! any client of the parent's site reads it (`sitesync_legacy::fetch`).

use std::path::Path;

use sitesync_proto::v1::client_policy_client::ClientPolicyClient;
use tonic::transport::Channel;

use crate::legacy_catalog::{Check, FetchFuture, ParentLegacyCatalog};

/// The parent's legacy scan catalog, over the channel the site syncs through.
#[derive(Debug, Clone)]
pub struct GrpcParentCatalog {
    channel: Channel,
}

impl GrpcParentCatalog {
    pub fn new(channel: Channel) -> Self {
        Self { channel }
    }
}

impl ParentLegacyCatalog for GrpcParentCatalog {
    fn fetch<'a>(&'a self, dir: &'a Path, check: Check) -> FetchFuture<'a> {
        Box::pin(async move {
            let mut client = ClientPolicyClient::new(self.channel.clone());
            sitesync_legacy::fetch::fetch(
                &mut client,
                dir,
                sitesync_legacy::fetch::HeldShards::Sized,
                check,
                |_| {},
            )
            .await
        })
    }
}
