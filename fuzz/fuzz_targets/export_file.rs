//! The export-file reader on any bytes: see `sitesync_fuzz::export_file`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sitesync_fuzz::export_file::check(data));
