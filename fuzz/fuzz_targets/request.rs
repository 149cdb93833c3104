//! Fuzzes request parsing: JSON body limits and parsing, then the request checks and the
//! user-request checkpoint on whatever string the body holds.
#![no_main]

use genesis_security::{Checkpoint, Guard, Limits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    if let Ok(value) = limits.parse_json_body::<serde_json::Value>(data) {
        if let Some(request) = value.get("request").and_then(|v| v.as_str()) {
            if limits.check_request(request).is_ok() {
                let _ = Guard::default().screen(Checkpoint::UserRequest, request);
            }
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = limits.check_request(text);
    }
});
