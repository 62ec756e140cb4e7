//! The memory allocator of the node binary (jemalloc) and its settings.
//!
//! A node's memory is mostly the storage engine's page cache: many small allocations
//! (keys, values, tree nodes) of different lifetimes, evicted in no particular order, beside
//! large documents. What matters is how much of the memory those evictions free the
//! allocator gives back to the system, and how soon. On a top site of 300,000 revisions
//! building the legacy scan catalog (the same data directory, the node restarted as the
//! catalog host; three runs each, in turns), the process peaked at 286–288 MiB with mimalloc
//! (purge delay 0; its page-retention and reclaim options changed nothing) and at 197–233
//! MiB with jemalloc set as below; about 154 MiB of that work's allocations are live at its
//! peak. A first sync of the same 300,000 revisions (three pairs in turns) took 51.7 s
//! against 53.8 s (medians), peaked at 220–228 MiB against 218–222 MiB, and ended holding
//! 125 MiB against 172 MiB. The in-process sync benchmark (`node/benches/top_site_sync.rs`,
//! 100,000 revisions, three pairs in turns) ran its first sync in 17.3 s against 20.5 s and
//! the sync after 100 changes in 0.94 s against 1.15 s (medians), peaking at 119–121 MiB
//! against 143 MiB.
//!
//! - `narenas:2`: jemalloc keeps four arenas per core by default, and memory freed in one
//!   arena is not reused by threads allocating from another (with pages returned at once,
//!   the default eight arenas here peaked at 230 MiB in the same build where two peaked at
//!   196 MiB).
//! - `dirty_decay_ms:250,muzzy_decay_ms:0`: freed pages go back to the system within a
//!   quarter of a second rather than over ten seconds, so a sync's or a build's transient
//!   memory does not add up with the page cache's into the process's peak. Returning them
//!   at once (0) made a sync 6–8% slower for no lower peak.
//!
//! Transparent huge pages are left to the system's setting (jemalloc asks for none), so
//! returning pages early does not make every fault zero 2 MiB.
//!
//! The settings are built into jemalloc when it is compiled (`JEMALLOC_SYS_WITH_MALLOC_CONF`
//! in the workspace's `.cargo/config.toml`). An operator can change or add settings with the
//! environment variable `_RJEM_MALLOC_CONF` (jemalloc's `MALLOC_CONF` under this build's
//! prefix), read after them; `_RJEM_MALLOC_CONF=stats_print:true` prints what is in effect
//! when the process exits.

pub use tikv_jemallocator::Jemalloc;

/// Makes jemalloc the global allocator of the crate it is invoked in: the node binary, and
/// the benchmarks and tests that measure it as it runs. Its settings are built in (see the
/// module documentation).
#[macro_export]
macro_rules! node_allocator {
    () => {
        #[global_allocator]
        static ALLOCATOR: $crate::allocator::Jemalloc = $crate::allocator::Jemalloc;
    };
}
