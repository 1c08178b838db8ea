//! The watch on the repository's login answers: never a panic, and the same verdict however the bytes
//! are split into reads.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pgssl::proxy::protocol::login_watch::LoginWatch;

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, bytes)) = data.split_first() else {
        return;
    };
    let whole = LoginWatch::default().feed(bytes);
    let mut watch = LoginWatch::default();
    let split = bytes
        .chunks(usize::from(chunk).max(1))
        .find_map(|c| watch.feed(c));
    assert_eq!(whole, split);
});
