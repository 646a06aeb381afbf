//! Arbitrary bytes as an image tarball: index, manifest, images, layers.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kvpush::source::fuzzing::tarball(data));
