//! The PROXY protocol v2 header from a trusted balancer: never a panic on any bytes, and a length
//! that is checked before anything is allocated for it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pgssl::proxy::protocol::proxy_header::{self, FIXED_LEN, MAX_BODY};

fuzz_target!(|data: &[u8]| {
    let Some((fixed, body)) = data.split_first_chunk::<FIXED_LEN>() else {
        return;
    };
    if let Ok(len) = proxy_header::body_len(fixed) {
        assert!(len <= MAX_BODY);
        let _ = proxy_header::parse(fixed, &body[..len.min(body.len())]);
    }
    let _ = proxy_header::parse(fixed, body);
});
