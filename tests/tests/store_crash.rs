//! A writer process killed with SIGKILL while writing leaves a database that reopens with
//! every acknowledged change and a consistent digest (SPEC invariant 2, for one store).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use sitesync_node::store::{DEFAULT_CACHE_BYTES, NodeDatabase, StoreState};
use sitesync_tests::{BATCHES_APPLIED_KEY, ChildGuard, CrashWorkload};

const SEED: u64 = 41;

#[test]
fn sigkill_while_writing_loses_no_acknowledged_batch() {
    let dir = tempfile::tempdir().unwrap();
    let model = NodeDatabase::in_memory().unwrap();
    let mut model_workload = CrashWorkload::new(SEED);
    let mut model_batches = 0u64;
    let mut acked_total = 0u64;

    // Each trial resumes the same database, so later trials also test reopening a store
    // that was itself recovered from a crash.
    for trial in 0..8u64 {
        let mut child = ChildGuard(
            Command::new(env!("CARGO_BIN_EXE_store-writer"))
                .arg(dir.path())
                .arg(SEED.to_string())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let stdout = child.0.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let wanted = 2 + trial * 3;
        let mut acked = 0;
        for _ in 0..wanted {
            let line = lines.next().expect("the writer stopped early").unwrap();
            let mut fields = line.split_whitespace();
            assert_eq!(fields.next(), Some("ack"));
            acked = fields.next().unwrap().parse().unwrap();
        }
        // Let the kill land somewhere inside the next batches' writes.
        std::thread::sleep(Duration::from_millis(trial * 7 % 23));
        child.0.kill().unwrap();
        child.0.wait().unwrap();
        drop(child);
        // Acknowledgements printed after the ones we read may exist too; drain them.
        for line in lines.map_while(Result::ok) {
            if let Some(n) = line.split_whitespace().nth(1) {
                acked = n.parse().unwrap();
            }
        }
        acked_total = acked_total.max(acked);

        let db = NodeDatabase::open(dir.path(), DEFAULT_CACHE_BYTES).unwrap();
        let store = db.update_server();
        let report = store.verify().unwrap();
        assert!(
            report.is_consistent(),
            "trial {trial}: {:?}",
            report.problems
        );
        let applied = u64::from_be_bytes(
            store
                .metadata(BATCHES_APPLIED_KEY)
                .unwrap()
                .unwrap()
                .as_slice()
                .try_into()
                .unwrap(),
        );
        assert!(
            applied >= acked_total,
            "trial {trial}: batch {acked_total} was acknowledged but the store holds only {applied}"
        );

        // Replay the same batches into a model: the store must hold exactly that.
        while model_batches < applied {
            let batch = model_workload.next_batch().unwrap();
            model.update_server().apply(batch, &[]).unwrap();
            model_batches += 1;
        }
        assert_eq!(
            store.digest(),
            model.update_server().digest(),
            "trial {trial}"
        );
        // Equal but for the log identity, which each store draws for itself.
        let model_state = StoreState {
            log_id: store.state().log_id,
            ..model.update_server().state()
        };
        assert_eq!(store.state(), model_state, "trial {trial}");
        assert_eq!(report.recomputed_digest, store.digest());
    }
}
