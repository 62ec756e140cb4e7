//! Every inbound message decoder, picked by the first byte: see `sitesync_fuzz::inbound`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sitesync_fuzz::inbound::receive_input(data));
