//! Fuzz target: `baton::fuzz::ctf` on arbitrary bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| baton::fuzz::ctf(data));
