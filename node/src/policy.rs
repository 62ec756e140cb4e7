//! The site-wide machine policy (S8): after each successful sync the site publishes a new
//! version telling clients where the update server is and which catalog it holds, so they
//! can start scanning for compliance.

use serde::{Deserialize, Serialize};
use sitesync_metadata::{CatalogDigest, Timestamp};

use crate::store::{Backend, StoreError, WriteBatch};

const CURRENT: &[u8] = b"current";

/// One version of the policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientPolicy {
    /// Increases by one with every successful sync.
    pub version: u64,
    /// Where clients reach the site's update server(s).
    pub update_servers: Vec<String>,
    /// The update-server store's catalog digest clients scan against.
    pub catalog_digest: CatalogDigest,
    pub revisions: u64,
    /// The update-server store's change-log position at the time.
    pub catalog_sequence: u64,
    pub created_at: Timestamp,
    /// The sync that produced it.
    pub sync_id: u64,
}

/// The policy, kept durably in a key space of the node's database.
#[derive(Debug)]
pub struct PolicyStore {
    space: Box<dyn Backend>,
}

impl PolicyStore {
    pub fn new(space: Box<dyn Backend>) -> Self {
        Self { space }
    }

    /// The policy served now; `None` before the first successful sync.
    pub fn current(&self) -> Result<Option<ClientPolicy>, StoreError> {
        self.space
            .get(CURRENT)?
            .map(|bytes| {
                postcard::from_bytes(&bytes).map_err(|e| StoreError::Corrupt {
                    what: format!("client policy does not decode: {e}"),
                })
            })
            .transpose()
    }

    /// Publishes the next version; durable before it returns.
    pub fn publish(
        &self,
        update_servers: Vec<String>,
        catalog_digest: CatalogDigest,
        revisions: u64,
        catalog_sequence: u64,
        created_at: Timestamp,
        sync_id: u64,
    ) -> Result<ClientPolicy, StoreError> {
        let version = self.current()?.map_or(1, |p| p.version + 1);
        let policy = ClientPolicy {
            version,
            update_servers,
            catalog_digest,
            revisions,
            catalog_sequence,
            created_at,
            sync_id,
        };
        let mut batch = WriteBatch::default();
        batch.put(
            CURRENT.to_vec(),
            postcard::to_allocvec(&policy).expect("postcard serializes plain structs into a Vec"),
        );
        self.space.apply(batch)?;
        self.space.flush()?;
        Ok(policy)
    }
}
