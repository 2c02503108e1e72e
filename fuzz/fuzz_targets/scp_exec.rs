//! The SSH exec command parser: never panics; an accepted SCP sink always has
//! a target.
#![no_main]
use ingestd::core::scp::exec::{parse_exec, ExecRequest};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let ExecRequest::ScpSink(a) = parse_exec(data) {
        assert!(!a.target.is_empty());
    }
});
