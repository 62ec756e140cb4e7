//! The status message log on both storage engines: sequences, durability across reopen,
//! filters and paging, de-duplication of forwarded messages, and retention.

use std::collections::BTreeMap;

use sitesync_metadata::Timestamp;
use sitesync_node::store::backend::{self, Backend, MemoryBackend, SledBackend};
use sitesync_node::sync::status::{
    COMPONENT, MAX_FORWARDED_BATCH, MAX_TEXT_BYTES, Severity, StatusError, StatusLog,
    StatusMessage, StatusMessageId, StatusQuery,
};

use StatusMessageId::{
    DocumentSkipped, SyncDone, SyncFailed, SyncStarted, SyncingSiteDatabase, SyncingUpdateServer,
};

const MINUTE: i64 = 60_000;
/// 2008-01-01T00:00:00Z.
const T0: i64 = 1_199_145_600_000;

fn at(minutes: i64) -> Timestamp {
    Timestamp(T0 + minutes * MINUTE)
}

/// A sled database in a temporary directory that can be closed and opened again.
struct SledDir {
    dir: tempfile::TempDir,
}

impl SledDir {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn backend(&self) -> Box<dyn Backend> {
        let db = backend::open_sled(self.dir.path(), 8 << 20).unwrap();
        Box::new(SledBackend::new(db.open_tree("status_messages").unwrap()))
    }
}

/// Runs `test` once on memory and once on sled.
fn on_both_engines(test: impl Fn(Box<dyn Backend>)) {
    test(Box::new(MemoryBackend::new()));
    let dir = SledDir::new();
    test(dir.backend());
}

fn append(
    log: &StatusLog,
    site: &str,
    id: StatusMessageId,
    sync_id: u64,
    minute: i64,
) -> StatusMessage {
    log.append(
        site,
        id,
        sync_id,
        id.description(),
        BTreeMap::new(),
        at(minute),
    )
    .unwrap()
}

/// One successful sync of a top site: 6701, 6704, 6705, 6702 a minute apart.
fn successful_sync(log: &StatusLog, site: &str, sync_id: u64, start_minute: i64) {
    for (offset, id) in [
        SyncStarted,
        SyncingUpdateServer,
        SyncingSiteDatabase,
        SyncDone,
    ]
    .into_iter()
    .enumerate()
    {
        append(log, site, id, sync_id, start_minute + offset as i64);
    }
}

fn ids(messages: &[StatusMessage]) -> Vec<u32> {
    messages.iter().map(|m| m.id.code()).collect()
}

fn all(log: &StatusLog, mut query: StatusQuery) -> Vec<StatusMessage> {
    let mut out = Vec::new();
    query.limit = 3;
    loop {
        let (page, cursor) = log.query(&query).unwrap();
        assert!(page.len() <= 3);
        out.extend(page);
        match cursor {
            Some(cursor) => query.after = Some(cursor),
            None => return out,
        }
    }
}

#[test]
fn append_numbers_each_sites_messages_and_fills_in_severity_and_component() {
    on_both_engines(|backend| {
        let log = StatusLog::open(backend).unwrap();
        let properties = BTreeMap::from([("reason".to_owned(), "upstream unreachable".to_owned())]);
        let first = append(&log, "CEN", SyncStarted, 1, 0);
        let failed = log
            .append(
                "CEN",
                SyncFailed,
                1,
                "WSUS synchronization failed: upstream unreachable",
                properties.clone(),
                at(1),
            )
            .unwrap();
        let other_site = append(&log, "P01", SyncStarted, 1, 1);

        assert_eq!(
            (first.sequence, failed.sequence, other_site.sequence),
            (1, 2, 1)
        );
        assert_eq!(failed.severity, Severity::Error);
        assert_eq!(failed.component, COMPONENT);
        assert_eq!(failed.properties, properties);
        assert_eq!(log.get("CEN", 2).unwrap(), Some(failed));
        assert_eq!(log.last_sequence("CEN").unwrap(), 2);
        assert_eq!(log.last_sequence("XYZ").unwrap(), 0);
        assert_eq!(log.len().unwrap(), 3);
    });
}

#[test]
fn reopening_keeps_messages_and_sequences_increasing() {
    let dir = SledDir::new();
    {
        let log = StatusLog::open(dir.backend()).unwrap();
        successful_sync(&log, "CEN", 1, 0);
    }
    let log = StatusLog::open(dir.backend()).unwrap();
    assert_eq!(log.len().unwrap(), 4);
    let next = append(&log, "CEN", SyncStarted, 2, 100);
    assert_eq!(next.sequence, 5);
    let (messages, _) = log.query(&StatusQuery::default()).unwrap();
    assert_eq!(ids(&messages), [6701, 6702, 6705, 6704, 6701]);
}

#[test]
fn queries_are_newest_first_and_filter_by_site_id_time_and_sync() {
    on_both_engines(|backend| {
        let log = StatusLog::open(backend).unwrap();
        successful_sync(&log, "CEN", 1, 0);
        successful_sync(&log, "P01", 1, 2);
        append(&log, "CEN", SyncStarted, 2, 10);
        append(&log, "CEN", DocumentSkipped, 2, 11);
        append(&log, "CEN", SyncFailed, 2, 12);

        let everything = all(&log, StatusQuery::default());
        assert_eq!(everything.len(), 11);
        assert!(everything.windows(2).all(|w| w[0].time >= w[1].time));
        assert_eq!(everything[0].id, SyncFailed);

        let failures = all(
            &log,
            StatusQuery {
                ids: vec![SyncFailed, SyncDone],
                ..StatusQuery::default()
            },
        );
        assert_eq!(ids(&failures), [6703, 6702, 6702]);

        let child = all(
            &log,
            StatusQuery {
                sites: vec!["P01".into()],
                ..StatusQuery::default()
            },
        );
        assert_eq!(ids(&child), [6702, 6705, 6704, 6701]);
        assert!(child.iter().all(|m| m.site_code == "P01"));

        let second_sync = all(
            &log,
            StatusQuery {
                sites: vec!["CEN".into()],
                sync_id: Some(2),
                ..StatusQuery::default()
            },
        );
        assert_eq!(ids(&second_sync), [6703, 6790, 6701]);

        // Both bounds are inclusive.
        let window = all(
            &log,
            StatusQuery {
                since: Some(at(3)),
                until: Some(at(10)),
                ..StatusQuery::default()
            },
        );
        assert_eq!(
            window
                .iter()
                .map(|m| (m.site_code.as_str(), m.time))
                .collect::<Vec<_>>(),
            [
                ("CEN", at(10)),
                ("P01", at(5)),
                ("P01", at(4)),
                ("CEN", at(3)),
                ("P01", at(3))
            ]
        );

        let nothing = all(
            &log,
            StatusQuery {
                since: Some(at(20)),
                ..StatusQuery::default()
            },
        );
        assert!(nothing.is_empty());
        let reversed = all(
            &log,
            StatusQuery {
                since: Some(at(10)),
                until: Some(at(5)),
                ..StatusQuery::default()
            },
        );
        assert!(reversed.is_empty());
    });
}

#[test]
fn paging_returns_every_message_once_in_order() {
    on_both_engines(|backend| {
        let log = StatusLog::open(backend).unwrap();
        // Several messages in the same millisecond, at several sites.
        for minute in 0..7 {
            for site in ["CEN", "P01", "P02"] {
                append(&log, site, SyncingUpdateServer, 1, minute / 2);
            }
        }
        let paged = all(&log, StatusQuery::default());
        let (whole, cursor) = log
            .query(&StatusQuery {
                limit: 1000,
                ..StatusQuery::default()
            })
            .unwrap();
        assert!(cursor.is_none());
        assert_eq!(paged, whole);
        assert_eq!(paged.len(), 21);
        let mut identities: Vec<_> = paged
            .iter()
            .map(|m| (m.site_code.clone(), m.sequence))
            .collect();
        identities.sort();
        identities.dedup();
        assert_eq!(identities.len(), 21);
        // Within a site, newer sequences come first.
        let cen: Vec<u64> = paged
            .iter()
            .filter(|m| m.site_code == "CEN")
            .map(|m| m.sequence)
            .collect();
        assert_eq!(cen, (1..=7).rev().collect::<Vec<_>>());

        // A zero limit means the default, not nothing.
        let (default_page, _) = log
            .query(&StatusQuery {
                limit: 0,
                ..StatusQuery::default()
            })
            .unwrap();
        assert_eq!(default_page.len(), 21);
    });
}

#[test]
fn a_page_token_from_another_source_is_refused() {
    let log = StatusLog::open(Box::new(MemoryBackend::new())).unwrap();
    let error = "4d00"
        .parse::<sitesync_node::sync::status::StatusCursor>()
        .unwrap_err();
    assert!(matches!(error, StatusError::InvalidCursor(_)));
    assert!(
        error
            .to_string()
            .contains("repeat the query without a page token")
    );
    drop(log);
}

#[test]
fn forwarded_messages_are_stored_once() {
    on_both_engines(|backend| {
        let child = StatusLog::open(Box::new(MemoryBackend::new())).unwrap();
        successful_sync(&child, "P01", 1, 0);
        successful_sync(&child, "P01", 2, 60);

        let parent = StatusLog::open(backend).unwrap();
        successful_sync(&parent, "CEN", 1, 0);

        // The child forwards its first messages, then everything (a resend after a lost
        // acknowledgement), with one message twice in the same batch.
        let first = child.messages_after("P01", 0, 3).unwrap();
        assert_eq!(
            first.iter().map(|m| m.sequence).collect::<Vec<_>>(),
            [1, 2, 3]
        );
        assert_eq!(parent.insert_forwarded(first.clone()).unwrap(), 3);
        let mut everything = child.messages_after("P01", 0, 100).unwrap();
        everything.push(everything[5].clone());
        assert_eq!(parent.insert_forwarded(everything.clone()).unwrap(), 5);
        assert_eq!(parent.insert_forwarded(everything).unwrap(), 0);

        assert_eq!(parent.len().unwrap(), 12);
        assert_eq!(parent.last_sequence("P01").unwrap(), 8);
        // Forwarding resumes after the parent's high-water mark.
        assert!(
            child
                .messages_after("P01", parent.last_sequence("P01").unwrap(), 100)
                .unwrap()
                .is_empty()
        );
        assert_eq!(parent.get("P01", 6).unwrap(), child.get("P01", 6).unwrap());
        // The parent's own numbering is unaffected.
        assert_eq!(append(&parent, "CEN", SyncStarted, 2, 200).sequence, 5);
    });
}

#[test]
fn a_batch_with_one_bad_message_stores_nothing() {
    let child = StatusLog::open(Box::new(MemoryBackend::new())).unwrap();
    successful_sync(&child, "P01", 1, 0);
    let parent = StatusLog::open(Box::new(MemoryBackend::new())).unwrap();

    let mut batch = child.messages_after("P01", 0, 100).unwrap();
    batch[2].text = "x".repeat(MAX_TEXT_BYTES + 1);
    let error = parent.insert_forwarded(batch.clone()).unwrap_err();
    assert!(
        matches!(error, StatusError::InvalidForwarded { sequence: 3, .. }),
        "{error}"
    );
    assert!(
        error
            .to_string()
            .contains("nothing of this batch was stored"),
        "{error}"
    );

    batch[2].text = String::new();
    batch[1].sequence = 0;
    assert!(parent.insert_forwarded(batch.clone()).is_err());
    batch[1].sequence = 2;
    batch[0].site_code = String::new();
    assert!(parent.insert_forwarded(batch).is_err());
    assert_eq!(parent.len().unwrap(), 0);
    assert_eq!(parent.last_sequence("P01").unwrap(), 0);

    let oversized = vec![child.get("P01", 1).unwrap().unwrap(); MAX_FORWARDED_BATCH + 1];
    assert!(matches!(
        parent.insert_forwarded(oversized),
        Err(StatusError::BatchTooLarge { .. })
    ));
}

#[test]
fn retention_keeps_the_newest_messages_and_sequences_survive_pruning() {
    on_both_engines(|backend| {
        let log = StatusLog::open(backend).unwrap().with_retention(5);
        for minute in 0..12 {
            append(&log, "CEN", SyncingUpdateServer, 1, minute);
        }
        assert_eq!(log.len().unwrap(), 5);
        let kept = all(&log, StatusQuery::default());
        assert_eq!(
            kept.iter().map(|m| m.sequence).collect::<Vec<_>>(),
            [12, 11, 10, 9, 8]
        );
        assert_eq!(log.get("CEN", 7).unwrap(), None);
        assert_eq!(
            log.messages_after("CEN", 0, 100)
                .unwrap()
                .iter()
                .map(|m| m.sequence)
                .collect::<Vec<_>>(),
            [8, 9, 10, 11, 12]
        );

        // Messages forwarded late with old times are the oldest, so they go first.
        let mut late = kept[0].clone();
        late.site_code = "P01".into();
        late.time = at(-100);
        for sequence in 1..=3 {
            late.sequence = sequence;
            assert_eq!(log.insert_forwarded(vec![late.clone()]).unwrap(), 1);
        }
        assert_eq!(log.len().unwrap(), 5);
        append(&log, "CEN", SyncDone, 1, 20);
        assert_eq!(log.len().unwrap(), 5);
        let kept = all(&log, StatusQuery::default());
        assert!(kept.iter().all(|m| m.site_code == "CEN"), "{kept:?}");
        assert_eq!(log.last_sequence("P01").unwrap(), 3);
    });
}

#[test]
fn lowering_the_retention_at_reopen_prunes_down_to_it() {
    let dir = SledDir::new();
    {
        let log = StatusLog::open(dir.backend()).unwrap();
        for minute in 0..50 {
            append(&log, "CEN", SyncingUpdateServer, 1, minute);
        }
    }
    let log = StatusLog::open(dir.backend()).unwrap().with_retention(10);
    let message = append(&log, "CEN", SyncDone, 1, 60);
    assert_eq!(message.sequence, 51);
    assert_eq!(log.len().unwrap(), 10);
    let kept = all(&log, StatusQuery::default());
    assert_eq!(kept.first().map(|m| m.sequence), Some(51));
    assert_eq!(kept.last().map(|m| m.sequence), Some(42));
}

#[test]
fn a_log_written_by_another_layout_is_refused() {
    let backend = MemoryBackend::new();
    let mut batch = sitesync_node::store::WriteBatch::default();
    batch.put(b"Mformat".to_vec(), 99u32.to_be_bytes().to_vec());
    backend.apply(batch).unwrap();
    let error = StatusLog::open(Box::new(backend)).unwrap_err();
    assert!(
        matches!(error, StatusError::Format { found: 99 }),
        "{error}"
    );

    let backend = MemoryBackend::new();
    let mut batch = sitesync_node::store::WriteBatch::default();
    batch.put(b"Ustuff".to_vec(), vec![1]);
    backend.apply(batch).unwrap();
    let error = StatusLog::open(Box::new(backend)).unwrap_err();
    assert!(error.to_string().contains("no layout version"), "{error}");
}

#[test]
fn a_selective_filter_finds_messages_among_many_others() {
    let log = StatusLog::open(Box::new(MemoryBackend::new())).unwrap();
    append(&log, "CEN", SyncStarted, 1, 0);
    // More messages of another site than one backend scan looks at.
    let template = append(&log, "CEN", SyncDone, 1, 1);
    let noise: Vec<StatusMessage> = (1..=MAX_FORWARDED_BATCH as u64)
        .map(|sequence| StatusMessage {
            site_code: "P01".into(),
            sequence,
            time: at(2 + sequence as i64 / 100),
            ..template.clone()
        })
        .collect();
    assert_eq!(log.insert_forwarded(noise).unwrap(), MAX_FORWARDED_BATCH);
    append(&log, "CEN", SyncFailed, 2, 500);

    let (cen, cursor) = log
        .query(&StatusQuery {
            sites: vec!["CEN".into()],
            ..StatusQuery::default()
        })
        .unwrap();
    assert_eq!(ids(&cen), [6703, 6702, 6701]);
    assert!(cursor.is_none());

    let (recent, _) = log
        .query(&StatusQuery {
            since: Some(at(100)),
            limit: 1000,
            ..StatusQuery::default()
        })
        .unwrap();
    // P01 9800..=10000 are at minute 100 or later, and the failure at minute 500.
    assert_eq!(recent.len(), 201 + 1);
}

#[test]
fn oldest_first_pages_in_time_order_with_the_same_filters() {
    on_both_engines(|backend| {
        let log = StatusLog::open(backend).unwrap();
        for minute in 0..10 {
            append(&log, "CEN", SyncStarted, minute as u64 + 1, minute);
            append(&log, "PR1", DocumentSkipped, minute as u64 + 1, minute);
            append(&log, "CEN", SyncDone, minute as u64 + 1, minute);
        }
        let query = StatusQuery {
            sites: vec!["CEN".into()],
            ids: vec![SyncStarted, SyncDone],
            since: Some(at(2)),
            until: Some(at(7)),
            oldest_first: true,
            ..StatusQuery::default()
        };
        let oldest_first = all(&log, query.clone());
        let minutes: Vec<i64> = oldest_first
            .iter()
            .map(|m| (m.time.unix_millis() - at(0).unix_millis()) / 60_000)
            .collect();
        assert_eq!(minutes, vec![2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7]);
        assert!(oldest_first.iter().all(|m| m.site_code == "CEN"));
        // The same messages as newest first, in the opposite order.
        let mut newest_first = all(
            &log,
            StatusQuery {
                oldest_first: false,
                ..query.clone()
            },
        );
        newest_first.reverse();
        assert_eq!(
            newest_first.iter().map(|m| m.sequence).collect::<Vec<_>>(),
            oldest_first.iter().map(|m| m.sequence).collect::<Vec<_>>()
        );
        // A cursor from one order is refused by the other.
        let (_, cursor) = log
            .query(&StatusQuery {
                limit: 2,
                ..query.clone()
            })
            .unwrap();
        let refused = log.query(&StatusQuery {
            oldest_first: false,
            after: cursor,
            ..query
        });
        assert!(matches!(refused, Err(StatusError::InvalidCursor(_))));
    });
}
