//! Settings for the memory allocator the node binary uses (mimalloc).
//!
//! mimalloc keeps freed memory for a second before returning it to the system. During a
//! sync memory is freed and reused continuously, so that delay alone raised the peak
//! resident size of a 100,000-revision sync from about 190 MiB to 260 MiB. mimalloc reads
//! its options from the environment when the process starts, before `main`, so a process
//! started without the setting replaces itself once with one that has it (same process id,
//! same arguments). An operator's own `MIMALLOC_PURGE_DELAY` is respected.

use std::os::unix::process::CommandExt;

const PURGE_DELAY: &str = "MIMALLOC_PURGE_DELAY";

/// Call first thing in `main`. Returns only when the settings are in effect, or when they
/// cannot be applied (the process then runs with the allocator's defaults).
pub fn configure() {
    if std::env::var_os(PURGE_DELAY).is_some() {
        return;
    }
    let Ok(executable) = std::env::current_exe() else {
        return;
    };
    let error = std::process::Command::new(executable)
        .args(std::env::args_os().skip(1))
        .env(PURGE_DELAY, "0")
        .exec();
    eprintln!("cannot apply the allocator settings ({error}); running with the defaults");
}
