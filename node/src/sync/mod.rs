//! The sync manager and what it is built from.
//!
//! - [`manager`]: the sync manager — the two phases of S7, full and manual syncs, the
//!   schedule, retries and redoing an interrupted sync.
//! - [`schedule`]: when scheduled syncs run, and the retry after a failure (S2, S9).
//! - [`settings`]: which updates enter the stores (S1, S6).
//! - [`status`]: durable status messages 6701–6706 (S9).

pub mod manager;
pub mod schedule;
pub mod settings;
pub mod status;
