//! The control socket's request line as `serve` reads it from a local peer, and the answer lines as
//! the CLI reads them back: never a panic; a request is one of the known tagged objects or nothing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pgssl::control::node::PoolSnapshot;
use pgssl::control::reload::{ReloadReport, ServeStatus};
use pgssl::control::socket::{ControlRequest, decode_reply};

fuzz_target!(|data: &[u8]| {
    let Ok(line) = std::str::from_utf8(data) else {
        return; // `serve` reads the line as UTF-8 and answers an error for anything else
    };
    if let Ok(request) = ControlRequest::decode(line) {
        assert_eq!(ControlRequest::decode(&request.clone().encode()).ok(), Some(request));
    }
    let _ = decode_reply::<ReloadReport>(line);
    let _ = decode_reply::<ServeStatus>(line);
    let _ = decode_reply::<PoolSnapshot>(line);
    let _ = decode_reply::<Vec<pgssl::proxy::sessions::SessionInfo>>(line);
    let _ = decode_reply::<Vec<u64>>(line);
    let _ = decode_reply::<Vec<pgssl::proxy::inventory::Seen>>(line);
});
