//! The watch on a pooled session's two streams: never a panic, never more forwarded than the client
//! sent, and the same verdict however the bytes are split into reads.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pgssl::proxy::protocol::session_watch::{ClientChunk, SessionWatch};

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, rest)) = data.split_first() else {
        return;
    };
    let (client, server) = rest.split_at(rest.len() / 2);
    let mut whole = SessionWatch::default();
    let whole_forwarded = match whole.on_client(client) {
        ClientChunk::Forward => client.len(),
        ClientChunk::Terminated(n) => n,
    };
    whole.on_server(server);

    let size = usize::from(chunk).max(1);
    let mut split = SessionWatch::default();
    let (mut forwarded, mut terminated) = (0, false);
    for c in client.chunks(size) {
        match split.on_client(c) {
            ClientChunk::Forward => forwarded += c.len(),
            ClientChunk::Terminated(n) => {
                assert!(n <= c.len());
                forwarded += n;
                terminated = true;
                break;
            }
        }
    }
    for c in server.chunks(size) {
        split.on_server(c);
    }
    assert!(forwarded <= client.len());
    if !terminated {
        assert_eq!(forwarded, whole_forwarded);
        assert_eq!(whole.idle(), split.idle());
    }
});
