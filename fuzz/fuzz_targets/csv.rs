//! Fuzz target: `baton::fuzz::csv` on arbitrary bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| baton::fuzz::csv(data));
