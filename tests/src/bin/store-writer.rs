//! Applies [`CrashWorkload`] batches to a node database until killed, printing one line per
//! durable batch: `ack <batches applied> <last sequence> <digest>`. A test kills it with
//! SIGKILL at arbitrary points and checks what survived.
//!
//! Usage: `store-writer DATA_DIR SEED`

use std::io::Write;

use anyhow::Context;
use sitesync_node::store::{DEFAULT_CACHE_BYTES, NodeDatabase};
use sitesync_tests::{BATCHES_APPLIED_KEY, CrashWorkload};

/// A bound on the run, so a writer whose test forgot it still stops by itself.
const MAX_BATCHES: u64 = 100_000;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().context("usage: store-writer DATA_DIR SEED")?;
    let seed: u64 = args
        .next()
        .context("usage: store-writer DATA_DIR SEED")?
        .parse()?;

    let db = NodeDatabase::open(dir.as_ref(), DEFAULT_CACHE_BYTES)?;
    let store = db.update_server();
    let applied = match store.metadata(BATCHES_APPLIED_KEY)? {
        Some(bytes) => u64::from_be_bytes(bytes.as_slice().try_into()?),
        None => 0,
    };

    // Resume exactly after the last batch the store holds.
    let mut workload = CrashWorkload::new(seed);
    for _ in 0..applied {
        workload.next_batch()?;
    }
    let mut stdout = std::io::stdout().lock();
    for done in applied + 1..=MAX_BATCHES {
        let batch = workload.next_batch()?;
        let outcome = store.apply(batch, &[(BATCHES_APPLIED_KEY, done.to_be_bytes().to_vec())])?;
        writeln!(
            stdout,
            "ack {done} {} {}",
            outcome.last_sequence, outcome.digest
        )?;
        stdout.flush()?;
    }
    Ok(())
}
