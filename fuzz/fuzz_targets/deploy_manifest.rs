//! Arbitrary bytes as a rules_img deploy manifest (`push-X.json`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kvpush::source::fuzzing::deploy_manifest(data));
