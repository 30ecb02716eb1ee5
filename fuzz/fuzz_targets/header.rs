//! Fuzz target: `baton::fuzz::header` on arbitrary bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| baton::fuzz::header(data));
