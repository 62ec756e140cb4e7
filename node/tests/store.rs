//! The catalog stores: change kinds, indexes, atomic metadata, reopen with a recomputed
//! digest, and a property test against a plain model. The semantic tests run on both the
//! sled and the in-memory backends.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use sitesync_metadata::{
    CatalogDigest, LocalizedProperties, PublicationState, Relationship, RevisionId, Timestamp,
    UpdateId, UpdateRef, UpdateRevision, UpdateType,
};
use sitesync_node::store::{
    CatalogChange, CatalogStore, ChangeKind, DEFAULT_CACHE_BYTES, NodeDatabase, StoreError,
    StoreState,
};

fn update_id(n: u32) -> UpdateId {
    let mut bytes = [0x5a; 16];
    bytes[12..].copy_from_slice(&n.to_be_bytes());
    UpdateId::from_bytes(bytes)
}

/// A revision with a synthetic document; `salt` changes the bytes without changing the id.
fn revision(
    update: u32,
    revision: u32,
    state: PublicationState,
    categories: &[u32],
    salt: u32,
) -> UpdateRevision {
    let id = RevisionId {
        update_id: update_id(update),
        revision,
    };
    let prerequisites = if categories.is_empty() {
        Vec::new()
    } else {
        vec![Relationship::AtLeastOne {
            is_category: true,
            members: categories
                .iter()
                .map(|c| UpdateRef {
                    update_id: update_id(*c),
                    revision: None,
                })
                .collect(),
        }]
    };
    UpdateRevision {
        id,
        update_type: UpdateType::Software,
        publication_state: state,
        creation_date: Timestamp::from_unix_millis(1_700_000_000_000),
        default_language: "en".into(),
        localized: vec![LocalizedProperties {
            language: "en".into(),
            title: format!("Update {update}"),
            description: None,
        }],
        kb_article: Some(format!("{}", 4_000_000 + update)),
        security_bulletin: None,
        msrc_severity: None,
        category_type: None,
        prerequisites,
        bundled: Vec::new(),
        superseded: Vec::new(),
        files: Vec::new(),
        // The bytes are what identifies a revision's content, so they carry every field
        // the tests vary.
        document: format!(
            "<Update id='{id}' state='{state:?}' categories='{categories:?}' salt='{salt}'/>"
        )
        .into_bytes(),
    }
}

/// Every update in a category, read two at a time to exercise paging.
fn in_category(store: &CatalogStore, category: u32) -> Vec<UpdateId> {
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let page = store
            .updates_in_category(update_id(category), after, 2)
            .unwrap();
        let Some((last, _)) = page.last() else {
            return out;
        };
        after = *last;
        out.extend(page.into_iter().map(|(_, update)| update));
    }
}

fn published(update: u32, rev: u32) -> UpdateRevision {
    revision(update, rev, PublicationState::Published, &[900], 0)
}

/// Both kinds of database: sled in a temporary directory, and memory.
fn databases() -> Vec<(tempfile::TempDir, NodeDatabase)> {
    let dir = tempfile::tempdir().unwrap();
    let on_disk = NodeDatabase::open(dir.path(), 8 << 20).unwrap();
    let memory_dir = tempfile::tempdir().unwrap();
    vec![
        (dir, on_disk),
        (memory_dir, NodeDatabase::in_memory().unwrap()),
    ]
}

fn put(revisions: impl IntoIterator<Item = UpdateRevision>) -> Vec<CatalogChange> {
    revisions.into_iter().map(CatalogChange::Put).collect()
}

#[test]
fn change_kinds_and_indexes_follow_the_catalog() {
    for (_dir, db) in databases() {
        let store: &CatalogStore = db.update_server();
        let outcome = store
            .apply(put([published(1, 100), published(2, 100)]), &[])
            .unwrap();
        assert_eq!((outcome.new, outcome.last_sequence), (2, 2));

        // A newer revision moves the update to another category.
        let moved = revision(1, 101, PublicationState::Published, &[901], 0);
        let expired = revision(2, 101, PublicationState::Expired, &[900], 0);
        let outcome = store.apply(put([moved, expired]), &[]).unwrap();
        assert_eq!((outcome.changed, outcome.expired), (1, 1));
        assert_eq!(in_category(store, 900), vec![update_id(2)]);
        assert_eq!(in_category(store, 901), vec![update_id(1)]);
        let latest = store.latest(update_id(2)).unwrap().unwrap();
        assert_eq!(latest.id.revision, 101);
        assert_eq!(latest.publication_state, PublicationState::Expired);

        // An older revision arriving late is kept but does not become the latest.
        let outcome = store.apply(put([published(1, 99)]), &[]).unwrap();
        assert_eq!(outcome.changed, 1);
        assert_eq!(
            store.latest(update_id(1)).unwrap().unwrap().id.revision,
            101
        );

        let outcome = store
            .apply([CatalogChange::Delete(update_id(1))], &[])
            .unwrap();
        assert_eq!(outcome.deleted, 1);
        assert!(store.latest(update_id(1)).unwrap().is_none());
        assert!(store.revision_numbers(update_id(1)).unwrap().is_empty());
        assert!(in_category(store, 901).is_empty());

        let log = store.changes_since(0, 100).unwrap();
        let kinds: Vec<_> = log.iter().map(|c| (c.sequence, c.kind)).collect();
        assert_eq!(
            kinds,
            vec![
                (1, ChangeKind::New),
                (2, ChangeKind::New),
                (3, ChangeKind::Changed),
                (4, ChangeKind::Expired),
                (5, ChangeKind::Changed),
                (6, ChangeKind::Deleted),
            ]
        );
        assert_eq!(
            log[5].revision.revision, 101,
            "a deletion names the latest revision"
        );
        assert_eq!(store.changes_since(4, 100).unwrap().len(), 2);

        let state = store.state();
        assert_eq!((state.revisions, state.updates), (2, 1));
        let expected = CatalogDigest::of(
            [
                published(2, 100),
                revision(2, 101, PublicationState::Expired, &[900], 0),
            ]
            .iter()
            .map(|r| (r.id, r.content_hash())),
        );
        assert_eq!(store.digest(), expected);
        assert!(store.verify().unwrap().is_consistent());
    }
}

#[test]
fn reapplying_the_same_changes_changes_nothing() {
    for (_dir, db) in databases() {
        let store = db.site_database();
        let batch = put((0..20).map(|n| published(n, 100)));
        let first = store.apply(batch.clone(), &[]).unwrap();
        let again = store.apply(batch.clone(), &[]).unwrap();
        assert_eq!(again.logged(), 0);
        assert_eq!(again.unchanged, 20);
        assert_eq!(again.last_sequence, first.last_sequence);
        assert_eq!(again.digest, first.digest);
        // Deleting an update the store does not hold is a no-op, not an error.
        let outcome = store
            .apply([CatalogChange::Delete(update_id(999))], &[])
            .unwrap();
        assert_eq!((outcome.unchanged, outcome.logged()), (1, 0));
    }
}

#[test]
fn new_bytes_for_a_held_revision_replace_it_in_the_digest() {
    for (_dir, db) in databases() {
        let store = db.update_server();
        store.apply(put([published(7, 100)]), &[]).unwrap();
        let replaced = revision(7, 100, PublicationState::Published, &[900], 1);
        let outcome = store.apply(put([replaced.clone()]), &[]).unwrap();
        assert_eq!(outcome.changed, 1);
        assert_eq!(store.state().revisions, 1);
        assert_eq!(
            store.digest(),
            CatalogDigest::of([(replaced.id, replaced.content_hash())])
        );
        assert_eq!(
            store.document(replaced.id).unwrap().unwrap(),
            replaced.document
        );
    }
}

#[test]
fn changes_to_one_update_within_one_batch_see_each_other() {
    for (_dir, db) in databases() {
        let store = db.update_server();
        let changes = vec![
            CatalogChange::Put(published(3, 100)),
            CatalogChange::Put(published(3, 101)),
            CatalogChange::Delete(update_id(3)),
            CatalogChange::Put(published(3, 102)),
        ];
        let outcome = store.apply(changes, &[]).unwrap();
        assert_eq!((outcome.new, outcome.changed, outcome.deleted), (2, 1, 1));
        assert_eq!(store.revision_numbers(update_id(3)).unwrap().len(), 1);
        assert_eq!(
            store.latest(update_id(3)).unwrap().unwrap().id.revision,
            102
        );
        let report = store.verify().unwrap();
        assert!(report.is_consistent(), "{:?}", report.problems);
    }
}

/// Found by the property test: the removal staged by a delete must not take away the
/// document a later put in the same batch brings back.
#[test]
fn delete_then_put_of_the_same_revision_in_one_batch_keeps_the_document() {
    for (_dir, db) in databases() {
        let store = db.update_server();
        store.apply(put([published(9, 101)]), &[]).unwrap();
        let changes = vec![
            CatalogChange::Delete(update_id(9)),
            CatalogChange::Put(published(9, 101)),
        ];
        store.apply(changes, &[]).unwrap();
        let id = published(9, 101).id;
        assert_eq!(
            store.document(id).unwrap().unwrap(),
            published(9, 101).document
        );
        let report = store.verify().unwrap();
        assert!(report.is_consistent(), "{:?}", report.problems);
        assert_eq!(report.unreferenced_documents, 0);
    }
}

/// The site database takes what the update-server store holds with the same bytes without
/// a second copy; each store keeps reading what it holds when the other moves on, and a
/// document goes once neither references it.
#[test]
fn the_stores_share_documents_and_each_keeps_what_it_references() {
    for (_dir, db) in databases() {
        let stores: [&CatalogStore; 2] = [db.update_server(), db.site_database()];
        let [update_server, site] = stores;
        let revisions = [published(1, 100), published(2, 100), published(3, 100)];
        update_server.apply(put(revisions.clone()), &[]).unwrap();
        site.apply(put(revisions.clone()), &[]).unwrap();
        assert_eq!(db.documents().count().unwrap(), 3, "one copy of each");

        // The update server moves on: update 1 goes and update 2 gets other bytes.
        let rewritten = revision(2, 100, PublicationState::Published, &[900], 1);
        let changes = vec![
            CatalogChange::Delete(update_id(1)),
            CatalogChange::Put(rewritten.clone()),
        ];
        update_server.apply(changes, &[]).unwrap();
        for held in &revisions {
            assert_eq!(site.document(held.id).unwrap().unwrap(), held.document);
        }
        assert_eq!(
            update_server.document(rewritten.id).unwrap().unwrap(),
            rewritten.document
        );
        assert_eq!(db.documents().count().unwrap(), 4);
        for store in stores {
            let report = store.verify().unwrap();
            assert!(report.is_consistent(), "{:?}", report.problems);
            assert_eq!(report.unreferenced_documents, 0);
        }

        // The site database lets go of everything: the update server's two stay.
        let deletions = (1..=3).map(|u| CatalogChange::Delete(update_id(u)));
        site.apply(deletions, &[]).unwrap();
        assert_eq!(db.documents().count().unwrap(), 2);
        assert_eq!(
            update_server
                .document(published(3, 100).id)
                .unwrap()
                .unwrap(),
            published(3, 100).document
        );
        assert_eq!(db.documents().remove_unreferenced().unwrap(), 0);
        assert!(update_server.verify().unwrap().is_consistent());
    }
}

#[test]
fn metadata_moves_with_the_data_and_the_state_key_is_reserved() {
    for (_dir, db) in databases() {
        let store = db.update_server();
        store
            .apply(put([published(1, 100)]), &[("anchor", b"42".to_vec())])
            .unwrap();
        assert_eq!(
            store.metadata("anchor").unwrap().as_deref(),
            Some(&b"42"[..])
        );
        let before = store.state();
        let refused = store.apply(put([published(2, 100)]), &[("state", Vec::new())]);
        assert!(matches!(refused, Err(StoreError::ReservedMeta(_))));
        assert_eq!(store.state(), before, "a refused apply changes nothing");
        assert!(store.latest(update_id(2)).unwrap().is_none());
    }
}

#[test]
fn the_two_stores_of_a_node_are_independent() {
    let (_dir, db) = databases().remove(0);
    db.update_server()
        .apply(put([published(1, 100)]), &[])
        .unwrap();
    assert_eq!(db.update_server().state().revisions, 1);
    assert_eq!(db.site_database().state().revisions, 0);
    assert_eq!(db.site_database().digest(), CatalogDigest::EMPTY);
}

/// Marks the store whose index is `index` as written by layout `format`, as an earlier
/// release would have left it.
fn mark_layout(index: &sled::Tree, format: u32) {
    let state_key = sitesync_node::store::keys::meta(sitesync_node::store::keys::STATE);
    let mut state: StoreState =
        postcard::from_bytes(&index.get(&state_key).unwrap().unwrap()).unwrap();
    state.format = format;
    index
        .insert(state_key, postcard::to_allocvec(&state).unwrap())
        .unwrap();
}

/// A store of the layout before documents were compressed opens, is marked with the new
/// layout, and reads its documents as they were kept; what it writes from then on is kept
/// compressed, and a document damaged in store is reported, not served.
#[test]
fn a_store_with_uncompressed_documents_is_taken_over() {
    use sitesync_node::store::{DOCUMENTS_TREE, document_from_stored};

    let dir = tempfile::tempdir().unwrap();
    let old = published(1, 100);
    {
        let db = NodeDatabase::open(dir.path(), DEFAULT_CACHE_BYTES).unwrap();
        db.update_server().apply(put([old.clone()]), &[]).unwrap();
    }
    // Rewrite it as the earlier layout left it: the document as it is, layout 3.
    {
        let db = sled::open(dir.path()).unwrap();
        let documents = db.open_tree(DOCUMENTS_TREE).unwrap();
        let (key, stored) = documents.iter().next().unwrap().unwrap();
        assert_eq!(stored.first(), Some(&0), "documents are kept compressed");
        assert!(stored.len() < old.document.len());
        documents.insert(key, old.document.clone()).unwrap();
        let index = db.open_tree("update_server.index").unwrap();
        mark_layout(&index, 3);
        db.flush().unwrap();
    }

    let new = published(2, 100);
    {
        let db = NodeDatabase::open(dir.path(), DEFAULT_CACHE_BYTES).unwrap();
        let store = db.update_server();
        assert_eq!(store.state().format, 5);
        assert_eq!(store.document(old.id).unwrap(), Some(old.document.clone()));
        store.apply(put([new.clone()]), &[]).unwrap();
        assert_eq!(store.document(new.id).unwrap(), Some(new.document.clone()));
        let report = store.verify().unwrap();
        assert!(report.is_consistent(), "{:?}", report.problems);
        assert_eq!(report.revisions, 2);
    }

    // A compressed document that no longer decompresses is corruption, named as such.
    {
        let db = sled::open(dir.path()).unwrap();
        let documents = db.open_tree(DOCUMENTS_TREE).unwrap();
        let (key, mut stored) = documents
            .iter()
            .map(Result::unwrap)
            .map(|(key, value)| (key, value.to_vec()))
            .find(|(_, value)| value.first() == Some(&0))
            .unwrap();
        assert_eq!(document_from_stored(stored.clone()).unwrap(), new.document);
        stored.truncate(stored.len() / 2);
        documents.insert(key, stored).unwrap();
        db.flush().unwrap();
    }
    let db = NodeDatabase::open(dir.path(), DEFAULT_CACHE_BYTES).unwrap();
    let store = db.update_server();
    let error = store.document(new.id).unwrap_err();
    assert!(matches!(error, StoreError::Corrupt { .. }), "{error}");
    assert!(error.to_string().contains("does not decompress"), "{error}");
    assert!(!store.verify().unwrap().is_consistent());
    assert_eq!(store.document(old.id).unwrap(), Some(old.document));
}

/// A store of the layout that kept the category index one entry per key opens, is marked
/// with the new layout, and answers, moves and removes those entries as its own.
#[test]
fn a_store_with_one_category_entry_per_key_is_taken_over() {
    use sitesync_node::store::keys;

    let dir = tempfile::tempdir().unwrap();
    let in_both = |update| revision(update, 100, PublicationState::Published, &[900, 901], 0);
    {
        let db = NodeDatabase::open(dir.path(), DEFAULT_CACHE_BYTES).unwrap();
        let store = db.update_server();
        store.apply(put([in_both(1), in_both(2)]), &[]).unwrap();
        store.apply(put([in_both(3)]), &[]).unwrap();
    }
    // Rewrite the index as layout 4 left it: the update id under (category, position).
    {
        let db = sled::open(dir.path()).unwrap();
        let index = db.open_tree("update_server.index").unwrap();
        let chunks: Vec<_> = index
            .scan_prefix([keys::CATEGORY])
            .map(Result::unwrap)
            .collect();
        assert_eq!(chunks.len(), 4, "a chunk per category per batch");
        for (key, value) in chunks {
            index.remove(&key).unwrap();
            for entry in value.chunks_exact(24) {
                let category = keys::update_id_at(&key, 1).unwrap();
                let position = keys::u64_at(entry, 0).unwrap();
                index
                    .insert(keys::category(category, position), &entry[8..])
                    .unwrap();
            }
        }
        assert_eq!(index.scan_prefix([keys::CATEGORY]).count(), 6);
        mark_layout(&index, 4);
        db.flush().unwrap();
    }

    let db = NodeDatabase::open(dir.path(), DEFAULT_CACHE_BYTES).unwrap();
    let store = db.update_server();
    assert_eq!(store.state().format, 5);
    let all = vec![update_id(1), update_id(2), update_id(3)];
    assert_eq!(in_category(store, 900), all);
    assert_eq!(in_category(store, 901), all);
    assert!(store.verify().unwrap().is_consistent());

    // Update 2 moves to another category, update 3 goes: both remove one-entry keys.
    let moved = revision(2, 101, PublicationState::Published, &[902], 0);
    store
        .apply(
            vec![
                CatalogChange::Put(moved),
                CatalogChange::Delete(update_id(3)),
            ],
            &[],
        )
        .unwrap();
    assert_eq!(in_category(store, 900), vec![update_id(1)]);
    assert_eq!(in_category(store, 901), vec![update_id(1)]);
    assert_eq!(in_category(store, 902), vec![update_id(2)]);
    let report = store.verify().unwrap();
    assert!(report.is_consistent(), "{:?}", report.problems);
}

/// The acceptance check: 10,000 revisions written, the database reopened, the digest equal
/// to one recomputed from scratch, and the change log strictly increasing with no gaps.
#[test]
fn ten_thousand_revisions_survive_a_reopen_with_a_recomputed_digest() {
    let dir = tempfile::tempdir().unwrap();
    let mut expected: BTreeMap<RevisionId, UpdateRevision> = BTreeMap::new();
    {
        let db = NodeDatabase::open(dir.path(), DEFAULT_CACHE_BYTES).unwrap();
        let mut written = 0u32;
        let mut batch = Vec::new();
        while written < 10_000 {
            // 3,334 updates of up to three revisions each; the third revision of every
            // fifth update expires it.
            let update = written / 3;
            let rev = 100 + written % 3;
            let state = if rev == 102 && update.is_multiple_of(5) {
                PublicationState::Expired
            } else {
                PublicationState::Published
            };
            let r = revision(update, rev, state, &[900 + update % 7], 0);
            expected.insert(r.id, r.clone());
            batch.push(CatalogChange::Put(r));
            written += 1;
            if batch.len() == 500 {
                db.update_server()
                    .apply(std::mem::take(&mut batch), &[])
                    .unwrap();
            }
        }
        db.update_server().apply(batch, &[]).unwrap();
    }

    let db = NodeDatabase::open(dir.path(), DEFAULT_CACHE_BYTES).unwrap();
    let store = db.update_server();
    let recomputed = CatalogDigest::of(expected.values().map(|r| (r.id, r.content_hash())));
    assert_eq!(store.digest(), recomputed);
    let report = store.verify().unwrap();
    assert!(report.is_consistent(), "{:?}", report.problems);
    assert_eq!(report.recomputed_digest, recomputed);
    assert_eq!(report.revisions, 10_000);
    assert_eq!(store.state().last_sequence, 10_000);

    let mut next = 1u64;
    let mut after = 0u64;
    loop {
        let page = store.changes_since(after, 777).unwrap();
        let Some(last) = page.last() else { break };
        after = last.sequence;
        for change in &page {
            assert_eq!(
                change.sequence, next,
                "the change log has a gap or a repeat"
            );
            next += 1;
        }
    }
    assert_eq!(next, 10_001);
    for r in expected.values().step_by(97) {
        assert_eq!(store.document(r.id).unwrap().unwrap(), r.document);
    }
}

#[derive(Debug, Clone)]
enum Op {
    Put {
        update: u32,
        revision: u32,
        expired: bool,
        category: u32,
        salt: u32,
    },
    Delete {
        update: u32,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..12u32, 100..104u32, any::<bool>(), 0..3u32, 0..2u32).prop_map(
            |(update, revision, expired, category, salt)| Op::Put { update, revision, expired, category, salt }
        ),
        1 => (0..12u32).prop_map(|update| Op::Delete { update }),
    ]
}

/// The changes `ops` make, with what they do to a plain model of the catalog.
fn changes_of(ops: &[Op], model: &mut BTreeMap<RevisionId, UpdateRevision>) -> Vec<CatalogChange> {
    let changes: Vec<CatalogChange> = ops
        .iter()
        .map(|op| match op {
            Op::Put {
                update,
                revision: rev,
                expired,
                category,
                salt,
            } => {
                let state = if *expired {
                    PublicationState::Expired
                } else {
                    PublicationState::Published
                };
                CatalogChange::Put(revision(*update, *rev, state, &[900 + category], *salt))
            }
            Op::Delete { update } => CatalogChange::Delete(update_id(*update)),
        })
        .collect();
    for change in &changes {
        match change {
            CatalogChange::Put(r) => {
                model.insert(r.id, r.clone());
            }
            CatalogChange::PutSummarized(_) => unreachable!("the model puts parsed revisions"),
            CatalogChange::Delete(u) => model.retain(|id, _| id.update_id != *u),
        }
    }
    changes
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Two stores on one documents space, each changed on its own, each read back exactly
    /// its own catalog, and the space holds one document per distinct revision content.
    #[test]
    fn two_stores_sharing_documents_each_match_their_model(
        batches in prop::collection::vec((any::<bool>(), prop::collection::vec(op(), 1..12)), 1..12)
    ) {
        let db = NodeDatabase::in_memory().unwrap();
        let stores: [&CatalogStore; 2] = [db.update_server(), db.site_database()];
        let mut models: [BTreeMap<RevisionId, UpdateRevision>; 2] = Default::default();
        for (second, ops) in &batches {
            let which = usize::from(*second);
            let changes = changes_of(ops, &mut models[which]);
            stores[which].apply(changes, &[]).unwrap();
        }
        for (store, model) in stores.iter().zip(&models) {
            let expected = CatalogDigest::of(model.values().map(|r| (r.id, r.content_hash())));
            prop_assert_eq!(store.digest(), expected);
            for (id, held) in model {
                prop_assert_eq!(store.document(*id).unwrap(), Some(held.document.clone()));
            }
            let report = store.verify().unwrap();
            prop_assert!(report.is_consistent(), "{:?}", report.problems);
            prop_assert_eq!(report.unreferenced_documents, 0);
        }
        let distinct: BTreeSet<(RevisionId, &[u8])> = models
            .iter()
            .flat_map(|model| model.iter().map(|(id, r)| (*id, &r.document[..])))
            .collect();
        prop_assert_eq!(db.documents().count().unwrap(), distinct.len() as u64);
    }

    /// Any sequence of batches leaves the store equal to a plain model of the catalog, with
    /// a consistent digest, indexes and log.
    #[test]
    fn store_matches_a_plain_model(batches in prop::collection::vec(prop::collection::vec(op(), 1..12), 1..8)) {
        let db = NodeDatabase::in_memory().unwrap();
        let store = db.update_server();
        let mut model: BTreeMap<RevisionId, UpdateRevision> = BTreeMap::new();
        let mut logged = 0u64;
        for ops in &batches {
            let changes = changes_of(ops, &mut model);
            logged += store.apply(changes, &[]).unwrap().logged();
        }
        let expected = CatalogDigest::of(model.values().map(|r| (r.id, r.content_hash())));
        prop_assert_eq!(store.digest(), expected);
        prop_assert_eq!(store.state().revisions, model.len() as u64);
        prop_assert_eq!(store.state().last_sequence, logged);
        let updates: BTreeSet<UpdateId> = model.keys().map(|id| id.update_id).collect();
        prop_assert_eq!(store.state().updates, updates.len() as u64);
        for update in &updates {
            let newest = model.keys().filter(|id| id.update_id == *update).max().unwrap();
            prop_assert_eq!(store.latest(*update).unwrap().unwrap().id, *newest);
        }
        for category in 900..903 {
            let mut expected: Vec<UpdateId> = updates
                .iter()
                .filter(|u| {
                    let newest = model.keys().filter(|id| id.update_id == **u).max().unwrap();
                    model[newest].categories().any(|c| c == update_id(category))
                })
                .copied()
                .collect();
            let mut found = in_category(store, category);
            expected.sort();
            found.sort();
            prop_assert_eq!(found, expected);
        }
        let mut listed = Vec::new();
        let mut after = None;
        loop {
            let page = store.summaries(after, 5).unwrap();
            let Some(last) = page.last() else { break };
            after = Some(last.id.update_id);
            listed.extend(page.into_iter().map(|s| s.id.update_id));
        }
        prop_assert_eq!(listed, updates.iter().copied().collect::<Vec<_>>());
        let report = store.verify().unwrap();
        prop_assert!(report.is_consistent(), "{:?}", report.problems);
    }
}
