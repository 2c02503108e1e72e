//! authorized_keys text (key lines, options, from= patterns): never panics.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        ingestd::fuzz_api::authorized_keys(s);
    }
});
