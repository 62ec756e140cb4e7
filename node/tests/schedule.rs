//! The schedule, the retry policy and the manual clock together, the way the sync manager
//! uses them: a loop that sleeps until the next scheduled sync, runs it, and after a
//! failure sleeps until the retry instead. Weeks of schedule run in milliseconds.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use sitesync_metadata::Timestamp;
use sitesync_node::clock::{Clock, ManualClock, TimestampExt};
use sitesync_node::sync::schedule::{RetryPolicy, Schedule};

const MINUTE: Duration = Duration::from_secs(60);
const DAY: Duration = Duration::from_secs(24 * 3600);

/// 2008-01-07T00:00:00Z, a Monday.
const START: Timestamp = Timestamp(1_199_664_000_000);

/// A miniature sync manager: `outcomes` says whether each successive sync succeeds; every
/// sync's start time is recorded.
async fn run_syncs(
    clock: Arc<dyn Clock>,
    schedule: Schedule,
    retry: RetryPolicy,
    outcomes: Vec<bool>,
    started: Arc<Mutex<Vec<Timestamp>>>,
) {
    let mut last_scheduled_run = None;
    let mut retry_at = None;
    for succeeds in outcomes {
        let due = retry_at
            .take()
            .unwrap_or_else(|| schedule.next_after(last_scheduled_run, clock.now()));
        clock.sleep_until(due).await;
        let start = clock.now();
        started.lock().unwrap().push(start);
        if succeeds {
            last_scheduled_run = Some(start);
        } else {
            retry_at = Some(retry.retry_at(start));
        }
    }
}

fn minutes_after_start(times: &[Timestamp]) -> Vec<u64> {
    times
        .iter()
        .map(|t| t.saturating_duration_since(START).as_secs() / 60)
        .collect()
}

#[tokio::test]
async fn a_failed_sync_is_retried_sixty_minutes_later_and_the_schedule_resumes() {
    let clock = ManualClock::new(START);
    let started = Arc::new(Mutex::new(Vec::new()));
    let real_start = std::time::Instant::now();
    let manager = tokio::spawn(run_syncs(
        Arc::new(clock.clone()),
        Schedule::default(),
        RetryPolicy::default(),
        vec![true, false, true, true],
        Arc::clone(&started),
    ));

    // The first sync of a fresh site runs at once; the next is due 7 days later.
    assert_eq!(clock.next_deadline().await, START.saturating_add(7 * DAY));
    assert_eq!(minutes_after_start(&started.lock().unwrap()), [0]);

    // It fails: the retry is due 60 minutes after the failure.
    clock.advance(7 * DAY);
    let failed_at = START.saturating_add(7 * DAY);
    assert_eq!(
        clock.next_deadline().await,
        failed_at.saturating_add(60 * MINUTE)
    );

    // Not a minute early.
    clock.advance(59 * MINUTE);
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(started.lock().unwrap().len(), 2);

    // The retry succeeds, and the schedule counts 7 days from it.
    clock.advance(MINUTE);
    let retried_at = failed_at.saturating_add(60 * MINUTE);
    assert_eq!(
        clock.next_deadline().await,
        retried_at.saturating_add(7 * DAY)
    );
    clock.advance_to_next_deadline().await;
    manager.await.unwrap();

    let week = 7 * 24 * 60;
    assert_eq!(
        minutes_after_start(&started.lock().unwrap()),
        [0, week, week + 60, 2 * week + 60]
    );
    assert!(real_start.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn a_cron_schedule_runs_at_its_utc_times() {
    let clock = ManualClock::new(START);
    let started = Arc::new(Mutex::new(Vec::new()));
    let manager = tokio::spawn(run_syncs(
        Arc::new(clock.clone()),
        "cron:0 3 * * 0".parse().unwrap(),
        "30m".parse().unwrap(),
        vec![true, true, false, true],
        Arc::clone(&started),
    ));
    for _ in 0..3 {
        clock.advance_to_next_deadline().await;
    }
    manager.await.unwrap();

    let started = started.lock().unwrap();
    let printed: Vec<String> = started.iter().map(|t| t.to_string()).collect();
    assert_eq!(
        printed,
        [
            "2008-01-07T00:00:00Z", // never synced: at once
            "2008-01-13T03:00:00Z", // Sunday 03:00
            "2008-01-20T03:00:00Z", // fails
            "2008-01-20T03:30:00Z", // the 30-minute retry
        ]
    );
}

#[test]
fn a_node_down_across_several_scheduled_times_syncs_once_when_back() {
    let schedule = Schedule::default();
    let last = START;
    let back = START.saturating_add(30 * DAY);
    let due = schedule.next_after(Some(last), back);
    assert_eq!(due, back, "due at once");
    assert_eq!(
        schedule.next_after(Some(due), back),
        back.saturating_add(7 * DAY),
        "and then not again for 7 days"
    );
}
