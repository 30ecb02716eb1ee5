//! Fuzz target: `baton::fuzz::record_json` on arbitrary bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| baton::fuzz::record_json(data));
