//! Arbitrary bytes as manifest.json and as an image config.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kvpush::source::fuzzing::manifest(data));
