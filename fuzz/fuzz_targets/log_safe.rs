//! Client-supplied text as logged: never a control character, never a line break, always bounded.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pgssl::telemetry::{LOG_TEXT_LIMIT, LogSafe};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for shown in [LogSafe(&text).to_string(), format!("{:#}", LogSafe(&text))] {
        assert!(!shown.chars().any(char::is_control), "{shown:?}");
        // Each character becomes at most 10 ("\u{10ffff}"), plus quotes and the summary.
        assert!(shown.chars().count() <= LOG_TEXT_LIMIT * 10 + 32);
    }
});
