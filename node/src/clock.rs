//! The time seam: every part of the node that reads the time or waits for a moment does it
//! through a [`Clock`].
//!
//! A node waits for long stretches: 7 days between scheduled syncs (S2), 60 minutes before
//! retrying a failed sync (S9). Code that called `SystemTime::now` and `tokio::time::sleep`
//! directly could only be tested by waiting that long. Instead the sync manager holds an
//! `Arc<dyn Clock>`:
//!
//! - [`SystemClock`] in the running node: wall-clock time, and sleeps that follow the wall
//!   clock even when it is stepped.
//! - [`ManualClock`] in tests: time stands still until the test calls
//!   [`ManualClock::advance`] or [`ManualClock::set`], and every sleeper whose deadline has
//!   been reached wakes at once. A test can also wait until the code under test is asleep
//!   and read the deadline it chose ([`ManualClock::next_deadline`]), which is how "the retry
//!   is scheduled 60 minutes after the failure" is asserted without racing.
//!
//! Times are [`Timestamp`]s (Unix milliseconds, UTC), the type stored everywhere else;
//! [`TimestampExt`] adds the little arithmetic with [`Duration`] that callers need.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sitesync_metadata::Timestamp;
use tokio::sync::watch;

/// A future returned by [`Clock::sleep_until`]: boxed so that `Clock` stays object safe and
/// can be shared as `Arc<dyn Clock>`.
pub type Sleep<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// Where the node gets the time from, and how it waits for a moment to come.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// The current time.
    fn now(&self) -> Timestamp;

    /// Completes once [`Clock::now`] has reached `deadline` (at once if it already has).
    fn sleep_until(&self, deadline: Timestamp) -> Sleep<'_>;

    /// Completes once `duration` has passed on this clock.
    fn sleep(&self, duration: Duration) -> Sleep<'_> {
        self.sleep_until(self.now().saturating_add(duration))
    }
}

/// Arithmetic between [`Timestamp`]s and [`Duration`]s. The metadata crate owns
/// `Timestamp`, so this lives here as an extension trait rather than as operator impls.
pub trait TimestampExt {
    /// The time `duration` later, saturating at the largest representable time.
    fn saturating_add(self, duration: Duration) -> Timestamp;
    /// The time `duration` earlier, saturating at the smallest representable time.
    fn saturating_sub(self, duration: Duration) -> Timestamp;
    /// How long after `earlier` this time is; zero if it is not later.
    fn saturating_duration_since(self, earlier: Timestamp) -> Duration;
}

/// A duration in whole milliseconds, saturating: no duration a node deals with comes near
/// the 292 million years at which this saturates.
pub(crate) fn duration_millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

impl TimestampExt for Timestamp {
    fn saturating_add(self, duration: Duration) -> Timestamp {
        Timestamp(self.0.saturating_add(duration_millis(duration)))
    }

    fn saturating_sub(self, duration: Duration) -> Timestamp {
        Timestamp(self.0.saturating_sub(duration_millis(duration)))
    }

    fn saturating_duration_since(self, earlier: Timestamp) -> Duration {
        let millis = self.0.saturating_sub(earlier.0).max(0);
        Duration::from_millis(millis.unsigned_abs())
    }
}

/// The real clock of a running node.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

/// The longest single nap of [`SystemClock::sleep_until`]. Tokio's timer runs on the
/// monotonic clock, so a wall clock stepped forward (an NTP correction, a VM resumed from
/// suspend) would otherwise let a 7-day sleep overshoot by the size of the step; re-reading
/// the wall clock at least this often bounds the overshoot to one nap.
const MAX_NAP: Duration = Duration::from_secs(60);

impl SystemClock {
    pub fn new() -> Self {
        Self
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let millis = match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(since) => duration_millis(since),
            // A wall clock set before 1970 is misconfigured, but time still has an answer.
            Err(before) => -duration_millis(before.duration()),
        };
        Timestamp(millis)
    }

    fn sleep_until(&self, deadline: Timestamp) -> Sleep<'_> {
        Box::pin(async move {
            loop {
                let remaining = deadline.saturating_duration_since(self.now());
                if remaining.is_zero() {
                    return;
                }
                tokio::time::sleep(remaining.min(MAX_NAP)).await;
            }
        })
    }
}

/// A clock for tests that moves only when told to.
///
/// Clones share one time: hand one clone to the code under test (as `Arc<dyn Clock>`) and
/// drive the other from the test.
#[derive(Debug, Clone)]
pub struct ManualClock {
    inner: Arc<ManualInner>,
}

#[derive(Debug)]
struct ManualInner {
    /// The current time; sleepers watch it and wake when it reaches their deadline.
    time: watch::Sender<Timestamp>,
    /// The deadline of every sleep in progress, by sleeper, so a test can wait until the
    /// code under test has gone to sleep and see until when.
    sleepers: watch::Sender<BTreeMap<u64, Timestamp>>,
    next_sleeper: AtomicU64,
    /// Serializes changes of the time so that `advance` is a read-modify-write.
    set_lock: Mutex<()>,
}

impl ManualClock {
    /// A clock standing at `start`.
    pub fn new(start: Timestamp) -> Self {
        Self {
            inner: Arc::new(ManualInner {
                time: watch::Sender::new(start),
                sleepers: watch::Sender::new(BTreeMap::new()),
                next_sleeper: AtomicU64::new(0),
                set_lock: Mutex::new(()),
            }),
        }
    }

    /// Moves the time forward by `duration` and wakes every sleeper whose deadline is
    /// reached. Returns the new time.
    pub fn advance(&self, duration: Duration) -> Timestamp {
        let _guard = self.lock();
        let now = self.now().saturating_add(duration);
        self.inner.time.send_replace(now);
        now
    }

    /// Sets the time, forward or backward (a stepped wall clock). Sleepers whose deadline
    /// is reached wake; the others keep waiting.
    pub fn set(&self, time: Timestamp) {
        let _guard = self.lock();
        self.inner.time.send_replace(time);
    }

    /// The deadlines of the sleeps still waiting (deadline after the current time),
    /// earliest first. A sleeper whose deadline was reached but which has not run yet is
    /// not listed.
    pub fn pending_deadlines(&self) -> Vec<Timestamp> {
        let now = self.now();
        let mut deadlines: Vec<Timestamp> = self
            .inner
            .sleepers
            .borrow()
            .values()
            .copied()
            .filter(|deadline| *deadline > now)
            .collect();
        deadlines.sort();
        deadlines
    }

    /// Waits (in real time) until something sleeps on this clock with a deadline after the
    /// current time, and returns the earliest such deadline. This is how a test learns
    /// that the code under test has gone to sleep, and until when.
    pub async fn next_deadline(&self) -> Timestamp {
        let mut sleepers = self.inner.sleepers.subscribe();
        loop {
            // Read the time before borrowing the sleepers: holding one channel's lock while
            // taking the other's could deadlock against a sleeper registering.
            let now = self.now();
            let earliest = sleepers
                .borrow_and_update()
                .values()
                .copied()
                .filter(|deadline| *deadline > now)
                .min();
            if let Some(earliest) = earliest {
                return earliest;
            }
            sleepers
                .changed()
                .await
                .expect("the clock owns the sender, and the clock outlives this call");
        }
    }

    /// Waits until something sleeps on this clock, then moves the time to the earliest
    /// deadline, waking that sleeper. Returns the new time.
    pub async fn advance_to_next_deadline(&self) -> Timestamp {
        let deadline = self.next_deadline().await;
        let _guard = self.lock();
        // Never move backwards: a sleeper registered with a past deadline is already awake.
        let now = deadline.max(self.now());
        self.inner.time.send_replace(now);
        now
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        // The guarded section cannot leave the time half-written, so poisoning is harmless.
        self.inner
            .set_lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *self.inner.time.borrow()
    }

    fn sleep_until(&self, deadline: Timestamp) -> Sleep<'_> {
        // Subscribe and register before the future is first polled, so a test that sees
        // the registration and then advances cannot slip between the two.
        let mut time = self.inner.time.subscribe();
        // A statement of its own, so the time's lock is released before the sleepers' is
        // taken.
        let now = *time.borrow();
        let registration =
            (deadline > now).then(|| SleeperRegistration::new(&self.inner, deadline));
        Box::pin(async move {
            let _registration = registration;
            // The sender lives in `self`, which outlives this future, so this cannot fail.
            let _ = time.wait_for(|now| *now >= deadline).await;
        })
    }
}

/// Keeps a sleeper's deadline listed while it sleeps, including when its future is dropped
/// before completing (a `select!` that took another branch).
struct SleeperRegistration {
    inner: Arc<ManualInner>,
    id: u64,
}

impl SleeperRegistration {
    fn new(inner: &Arc<ManualInner>, deadline: Timestamp) -> Self {
        let id = inner.next_sleeper.fetch_add(1, Ordering::Relaxed);
        inner.sleepers.send_modify(|sleepers| {
            sleepers.insert(id, deadline);
        });
        Self {
            inner: Arc::clone(inner),
            id,
        }
    }
}

impl Drop for SleeperRegistration {
    fn drop(&mut self) {
        self.inner.sleepers.send_modify(|sleepers| {
            sleepers.remove(&self.id);
        });
    }
}

/// The one reconnect backoff: a delay that doubles from its first value up to a cap while a
/// peer keeps failing, and starts over after a success. Registration, status forwarding,
/// the outbox's delivery and state reports all wait with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// First delay after a failure between nodes; doubled up to [`Backoff::RECONNECT_MAX`].
    pub const RECONNECT_FIRST: Duration = Duration::from_secs(1);
    pub const RECONNECT_MAX: Duration = Duration::from_secs(60);

    pub const fn new(first: Duration, max: Duration) -> Self {
        Self {
            first,
            max,
            next: first,
        }
    }

    /// The backoff calls between nodes use: 1 s, doubled up to a minute.
    pub const fn reconnect() -> Self {
        Self::new(Self::RECONNECT_FIRST, Self::RECONNECT_MAX)
    }

    /// The delay to wait after this failure; the one after the next failure is twice as
    /// long, up to the cap.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        delay
    }

    /// The delay the next failure will wait.
    pub fn peek(&self) -> Duration {
        self.next
    }

    /// After a success: the next failure waits the first delay again.
    pub fn reset(&mut self) {
        self.next = self.first;
    }

    /// The cap.
    pub fn max(&self) -> Duration {
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);
    const HOUR: Duration = Duration::from_secs(3600);
    const DAY: Duration = Duration::from_secs(24 * 3600);

    /// 2008-01-01T00:00:00Z, when ConfigMgr 2007 was current.
    const START: Timestamp = Timestamp(1_199_145_600_000);

    fn spawn_sleeper(
        clock: &ManualClock,
        deadline: Timestamp,
    ) -> tokio::task::JoinHandle<Timestamp> {
        let clock = clock.clone();
        tokio::spawn(async move {
            clock.sleep_until(deadline).await;
            clock.now()
        })
    }

    /// Gives spawned tasks a chance to run, in real time.
    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    #[tokio::test]
    async fn a_sleeper_wakes_when_the_manual_time_reaches_its_deadline_and_not_before() {
        let clock = ManualClock::new(START);
        let deadline = START.saturating_add(60 * MINUTE);
        let sleeper = spawn_sleeper(&clock, deadline);
        assert_eq!(clock.next_deadline().await, deadline);

        clock.advance(59 * MINUTE);
        settle().await;
        assert!(!sleeper.is_finished(), "woke a minute early");

        clock.advance(MINUTE);
        let woke_at = tokio::time::timeout(Duration::from_secs(5), sleeper)
            .await
            .expect("the sleeper wakes right after the time reaches its deadline")
            .unwrap();
        assert_eq!(woke_at, deadline);
        assert!(clock.pending_deadlines().is_empty());
    }

    #[tokio::test]
    async fn advancing_seven_days_wakes_a_seven_day_sleeper_instantly() {
        let clock = ManualClock::new(START);
        let real_start = std::time::Instant::now();
        let sleeper = spawn_sleeper(&clock, START.saturating_add(7 * DAY));
        clock.next_deadline().await;
        clock.advance(7 * DAY);
        tokio::time::timeout(Duration::from_secs(5), sleeper)
            .await
            .unwrap()
            .unwrap();
        assert!(real_start.elapsed() < Duration::from_secs(1));
    }

    #[tokio::test]
    async fn advance_to_next_deadline_wakes_sleepers_in_deadline_order() {
        let clock = ManualClock::new(START);
        let retry = spawn_sleeper(&clock, START.saturating_add(HOUR));
        let scheduled = spawn_sleeper(&clock, START.saturating_add(7 * DAY));
        while clock.pending_deadlines().len() < 2 {
            settle().await;
        }

        assert_eq!(
            clock.advance_to_next_deadline().await,
            START.saturating_add(HOUR)
        );
        assert_eq!(retry.await.unwrap(), START.saturating_add(HOUR));
        settle().await;
        assert!(!scheduled.is_finished());

        assert_eq!(
            clock.advance_to_next_deadline().await,
            START.saturating_add(7 * DAY)
        );
        assert_eq!(scheduled.await.unwrap(), START.saturating_add(7 * DAY));
    }

    #[tokio::test]
    async fn a_deadline_already_reached_completes_at_once_and_is_not_listed() {
        let clock = ManualClock::new(START);
        clock.sleep_until(START).await;
        clock.sleep_until(START.saturating_sub(DAY)).await;
        clock.sleep(Duration::ZERO).await;
        assert!(clock.pending_deadlines().is_empty());
    }

    #[tokio::test]
    async fn setting_the_time_backwards_keeps_sleepers_waiting() {
        let clock = ManualClock::new(START);
        let sleeper = spawn_sleeper(&clock, START.saturating_add(HOUR));
        clock.next_deadline().await;
        clock.set(START.saturating_sub(DAY));
        settle().await;
        assert!(!sleeper.is_finished());
        clock.set(START.saturating_add(2 * HOUR));
        assert_eq!(sleeper.await.unwrap(), START.saturating_add(2 * HOUR));
    }

    #[tokio::test]
    async fn a_dropped_sleep_is_no_longer_listed() {
        let clock = ManualClock::new(START);
        let sleep = clock.sleep(HOUR);
        assert_eq!(clock.pending_deadlines(), vec![START.saturating_add(HOUR)]);
        drop(sleep);
        assert!(clock.pending_deadlines().is_empty());
    }

    #[tokio::test]
    async fn the_system_clock_reads_the_wall_clock_and_sleeps_briefly() {
        let clock = SystemClock::new();
        let before = clock.now();
        assert!(before > START);
        let deadline = before.saturating_add(Duration::from_millis(30));
        clock.sleep_until(deadline).await;
        assert!(clock.now() >= deadline);
        // A deadline in the past returns at once.
        tokio::time::timeout(
            Duration::from_secs(1),
            clock.sleep_until(before.saturating_sub(DAY)),
        )
        .await
        .unwrap();
    }

    #[test]
    fn timestamp_arithmetic_saturates() {
        assert_eq!(
            Timestamp(i64::MAX - 1).saturating_add(HOUR),
            Timestamp(i64::MAX)
        );
        assert_eq!(
            Timestamp(i64::MIN + 1).saturating_sub(HOUR),
            Timestamp(i64::MIN)
        );
        assert_eq!(
            START.saturating_add(HOUR).saturating_duration_since(START),
            HOUR
        );
        assert_eq!(
            START.saturating_duration_since(START.saturating_add(HOUR)),
            Duration::ZERO
        );
        assert_eq!(
            Timestamp(i64::MAX).saturating_duration_since(Timestamp(i64::MIN)),
            Duration::from_millis(i64::MAX.unsigned_abs())
        );
    }
}
