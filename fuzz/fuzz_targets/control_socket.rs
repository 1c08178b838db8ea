//! The control socket's request line as `serve` reads it from a local peer, and the answer lines as
//! the CLI reads them back: never a panic; a request is one known word or nothing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pgssl::control::reload::{
    ControlRequest, parse_pool_reply, parse_reload_reply, parse_status_reply,
};

fuzz_target!(|data: &[u8]| {
    let Ok(line) = std::str::from_utf8(data) else {
        return; // `serve` reads the line as UTF-8 and closes on anything else
    };
    if let Some(request) = ControlRequest::parse(line) {
        let word = line.trim();
        assert!(matches!(word, "reload" | "status" | "pool"), "{request:?} from {word:?}");
    }
    let _ = parse_reload_reply(line);
    let _ = parse_status_reply(line);
    let _ = parse_pool_reply(line);
});
