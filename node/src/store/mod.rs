//! A node's stores, on one sled database.
//!
//! - [`UpdateServerStore`]: every revision the node's update server has synced from its
//!   upstream (the WSUS database). Downstream nodes pull from it.
//! - [`SiteDatabase`]: the site's view (the ConfigMgr site database). Phase 2 of a sync
//!   copies into it; child sites replicate from it.
//! - [`Publications`]: at a top site, the custom updates published there (S6), selected
//!   or not; phase 1 takes them into the update-server store while `Local publisher` is
//!   selected. Empty elsewhere.
//!
//! Each store has an index of its own; their documents share one space, so a revision more
//! than one holds is stored once ([`DocumentSpace`]).
//!
//! All are [`CatalogStore`]s (see [`catalog`]) over the small [`Backend`] interface (see
//! [`backend`]): sled on disk in production, memory in fast tests. [`keys`] is the layout.

pub mod backend;
pub mod catalog;
mod category_index;
mod error;
pub mod keys;

use std::collections::HashMap;
use std::ops::Deref;
use std::path::Path;
use std::sync::{Arc, Mutex};

pub use backend::{Backend, BackendError, MemoryBackend, Page, SledBackend, WriteBatch};
pub use catalog::{
    ApplyOutcome, CatalogChange, CatalogStore, ChangeKind, DocumentSpace, HeldUpdate, LoggedChange,
    StoreState, SummarizedRevision, UpdateSummary, VerifyReport, document_from_stored,
    stored_document_form,
};
pub use error::StoreError;

/// The sled tree holding both stores' documents (see [`DocumentSpace`]).
pub const DOCUMENTS_TREE: &str = "documents";

/// The default sled page-cache size for a node: enough for the indexes and the recent
/// documents, far below sled's own 1 GiB default.
pub const DEFAULT_CACHE_BYTES: u64 = 32 << 20;

/// The update-server store (see the module documentation).
#[derive(Debug)]
pub struct UpdateServerStore(CatalogStore);

/// The site database (see the module documentation).
#[derive(Debug)]
pub struct SiteDatabase(CatalogStore);

/// The published custom updates (see the module documentation).
#[derive(Debug)]
pub struct Publications(CatalogStore);

impl Deref for Publications {
    type Target = CatalogStore;
    fn deref(&self) -> &CatalogStore {
        &self.0
    }
}

impl Deref for UpdateServerStore {
    type Target = CatalogStore;
    fn deref(&self) -> &CatalogStore {
        &self.0
    }
}

impl Deref for SiteDatabase {
    type Target = CatalogStore;
    fn deref(&self) -> &CatalogStore {
        &self.0
    }
}

/// Everything a node keeps on disk: one sled database holding an index tree per store and
/// their shared documents tree.
#[derive(Debug)]
pub struct NodeDatabase {
    /// Kept so other parts of the node open their own key spaces (see [`Self::space`]) in
    /// the same database, and so the database lives as long as its stores.
    db: Option<sled::Db>,
    /// The database directory, whose volume's free space every write checks.
    path: std::path::PathBuf,
    /// The named spaces of an in-memory database, so opening a name twice gives the same
    /// data, as a sled tree does.
    memory_spaces: Mutex<HashMap<String, Arc<MemoryBackend>>>,
    update_server: UpdateServerStore,
    site_database: SiteDatabase,
    publications: Publications,
    documents: Arc<DocumentSpace>,
}

impl NodeDatabase {
    /// Opens (or creates) the database in `path`.
    pub fn open(path: &Path, cache_bytes: u64) -> Result<Self, StoreError> {
        let db = backend::open_sled(path, cache_bytes)?;
        let tree = |name: &str| -> Result<Box<dyn Backend>, StoreError> {
            let tree = db.open_tree(name).map_err(BackendError::from)?;
            Ok(Box::new(SledBackend::with_space_check(
                tree,
                path,
                backend::KEEP_FREE_BYTES,
            )))
        };
        let documents = DocumentSpace::new(tree(DOCUMENTS_TREE)?);
        Ok(Self {
            update_server: UpdateServerStore(CatalogStore::open(
                tree("update_server.index")?,
                &documents,
                keys::UPDATE_SERVER_DOCUMENTS,
            )?),
            site_database: SiteDatabase(CatalogStore::open(
                tree("site_database.index")?,
                &documents,
                keys::SITE_DATABASE_DOCUMENTS,
            )?),
            publications: Publications(CatalogStore::open(
                tree("publications.index")?,
                &documents,
                keys::PUBLICATIONS_DOCUMENTS,
            )?),
            documents,
            db: Some(db),
            path: path.to_owned(),
            memory_spaces: Mutex::default(),
        })
    }

    /// A database that lives in memory only, for tests.
    pub fn in_memory() -> Result<Self, StoreError> {
        let documents = DocumentSpace::new(Box::new(MemoryBackend::new()));
        let store = |tag| CatalogStore::open(Box::new(MemoryBackend::new()), &documents, tag);
        Ok(Self {
            update_server: UpdateServerStore(store(keys::UPDATE_SERVER_DOCUMENTS)?),
            site_database: SiteDatabase(store(keys::SITE_DATABASE_DOCUMENTS)?),
            publications: Publications(store(keys::PUBLICATIONS_DOCUMENTS)?),
            documents,
            db: None,
            path: std::path::PathBuf::new(),
            memory_spaces: Mutex::default(),
        })
    }

    pub fn update_server(&self) -> &UpdateServerStore {
        &self.update_server
    }

    pub fn site_database(&self) -> &SiteDatabase {
        &self.site_database
    }

    pub fn publications(&self) -> &Publications {
        &self.publications
    }

    /// The documents both stores keep.
    pub fn documents(&self) -> &DocumentSpace {
        &self.documents
    }

    /// Another key space of the node's database, by name: the sync manager's state, the
    /// status messages, the upstream tracker. Names must not start with a store's name.
    pub fn space(&self, name: &str) -> Result<Box<dyn Backend>, StoreError> {
        match &self.db {
            Some(db) => {
                let tree = db
                    .open_tree(format!("space.{name}"))
                    .map_err(BackendError::from)?;
                Ok(Box::new(SledBackend::with_space_check(
                    tree,
                    &self.path,
                    backend::KEEP_FREE_BYTES,
                )))
            }
            None => {
                let mut spaces = self.memory_spaces.lock().unwrap_or_else(|p| p.into_inner());
                let space = spaces.entry(name.to_owned()).or_default().clone();
                Ok(Box::new(space))
            }
        }
    }
}
