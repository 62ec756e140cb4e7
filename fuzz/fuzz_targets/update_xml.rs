//! The update XML parser on any bytes: see `sitesync_fuzz::update_xml`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sitesync_fuzz::update_xml::check(data));
