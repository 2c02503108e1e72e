//! The SCP control-line framing: any byte stream, split at any point, is cut
//! into lines and parsed without panicking; names that parse are valid.
#![no_main]
use ingestd::core::scp::frame::{parse_control, Control, LineBuf};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let split = data.first().copied().unwrap_or(0) as usize;
    let data = data.get(1..).unwrap_or_default();
    let (a, b) = data.split_at(split.min(data.len()));
    let mut lb = LineBuf::new();
    for part in [a, b] {
        lb.push(part);
        while let Ok(Some(line)) = lb.next_line() {
            if let Ok(Control::File { name, .. } | Control::Dir { name, .. }) = parse_control(&line) {
                assert!(ingestd::core::vpath::validate_name(&name).is_ok(), "{name:?}");
            }
        }
    }
    let _ = parse_control(data);
});
