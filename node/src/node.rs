//! A running node's shared state: its configuration and its database. Services and the
//! sync manager hold it behind an `Arc`.

use sitesync_proto::v1;

use crate::config::{NodeConfig, Role};
use crate::service::store_info;
use crate::store::{NodeDatabase, StoreState};

#[derive(Debug)]
pub struct NodeState {
    pub config: NodeConfig,
    pub database: NodeDatabase,
}

impl NodeState {
    pub fn new(config: NodeConfig, database: NodeDatabase) -> Self {
        Self { config, database }
    }

    pub fn wire_role(&self) -> v1::SiteRole {
        match self.config.role {
            Role::Site => v1::SiteRole::Site,
            Role::Internet => v1::SiteRole::Internet,
        }
    }

    /// The update-server store as downstream nodes see it now.
    pub fn catalog_info(&self) -> v1::CatalogInfo {
        self.catalog_info_at(&self.database.update_server().state())
    }

    /// The update-server store as of a given state.
    pub fn catalog_info_at(&self, state: &StoreState) -> v1::CatalogInfo {
        v1::CatalogInfo {
            site_code: self.config.site_code.to_string(),
            role: self.wire_role() as i32,
            store: Some(store_info(state)),
            catalog_version: None,
        }
    }
}
