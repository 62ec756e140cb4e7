//! Settings for the memory allocator the node binary uses (mimalloc).
//!
//! - `MIMALLOC_PURGE_DELAY=0`: mimalloc keeps freed memory for a second before returning
//!   it to the system. During a sync memory is freed and reused continuously, so that delay
//!   alone raised the peak resident size of a 100,000-revision sync from about 190 MiB to
//!   260 MiB.
//! - `MIMALLOC_ALLOW_THP=0`: with transparent huge pages, every fresh fault of the heap
//!   zeroes a whole 2 MiB page. Returning memory at once (above) makes such faults frequent:
//!   a child's sync of 1,000 updates spent 30–40% of its CPU time zeroing pages in the
//!   kernel, and about a quarter less CPU time in all without huge pages.
//!
//! mimalloc reads its options from the environment when the process starts, before `main`,
//! so a process started without them replaces itself once with one that has them (same
//! process id, same arguments). An operator's own values are respected.

use std::os::unix::process::CommandExt;

/// The options and the values the node sets when the environment has none.
const OPTIONS: [(&str, &str); 2] = [("MIMALLOC_PURGE_DELAY", "0"), ("MIMALLOC_ALLOW_THP", "0")];

/// Call first thing in `main`. Returns only when the settings are in effect, or when they
/// cannot be applied (the process then runs with the allocator's defaults).
pub fn configure() {
    let missing: Vec<(&str, &str)> = OPTIONS
        .into_iter()
        .filter(|(name, _)| std::env::var_os(name).is_none())
        .collect();
    if missing.is_empty() {
        return;
    }
    let Ok(executable) = std::env::current_exe() else {
        return;
    };
    let error = std::process::Command::new(executable)
        .args(std::env::args_os().skip(1))
        .envs(missing)
        .exec();
    eprintln!("cannot apply the allocator settings ({error}); running with the defaults");
}
