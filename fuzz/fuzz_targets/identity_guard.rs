//! What pgssl reads from a client's statements and message stream to refuse writes of `pgssl.*`
//! (`identity::guard`): never a panic; a statement in front ending in `;` changes no verdict;
//! nothing after a write can hide it; and the stream guard cuts at the same byte however the stream
//! is split into chunks.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pgssl::proxy::identity::guard::{StreamGuard, writes_pgssl};

/// Where a guard cuts a stream fed as `chunks` (absolute position), if it does.
fn cut(chunks: &[&[u8]]) -> Option<usize> {
    let mut guard = StreamGuard::default();
    let mut at = 0;
    for c in chunks {
        if let Some(n) = guard.feed(c) {
            assert!(n < c.len(), "a cut keeps the message's last byte back");
            return Some(at + n);
        }
        at += c.len();
    }
    None
}

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest).into_owned();
    let verdict = writes_pgssl(&text);
    assert_eq!(writes_pgssl(&format!("SELECT 1; {text}")), verdict, "{text:?}");
    assert!(writes_pgssl(&format!("SET pgssl.node = 'x'; {text}")));

    let whole = cut(&[rest]);
    let at = usize::from(split).min(rest.len());
    let (a, b) = rest.split_at(at);
    assert_eq!(cut(&[a, b]), whole);
    let bytes: Vec<&[u8]> = rest.chunks(7).collect();
    assert_eq!(cut(&bytes), whole);
});
