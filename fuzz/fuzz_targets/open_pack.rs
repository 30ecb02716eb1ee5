//! Fuzz target: `baton::fuzz::open_pack` on arbitrary bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| baton::fuzz::open_pack(data));
