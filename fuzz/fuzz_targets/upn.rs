//! Fuzz target: `baton::fuzz::upn` on arbitrary bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| baton::fuzz::upn(data));
