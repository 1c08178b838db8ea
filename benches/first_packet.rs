//! Micro-benchmark of the per-connection hot path that does not touch a socket: parsing a start-up
//! packet and deciding the policy. Run with `cargo bench --bench first_packet`.
//!
//! A plain timing loop (no framework) so that it builds with the project's own dependencies; figures are
//! nanoseconds per operation, best of several rounds.

use std::hint::black_box;
use std::time::Instant;

use bytes::{BufMut, BytesMut};
use pgssl::policy::{self, Mode, Transport, UserClassifier};
use pgssl::protocol::first_packet;

fn startup_packet() -> BytesMut {
    let body = b"user\0internal_svc\0database\0repository\0application_name\0vizqlserver\0client_encoding\0UTF8\0\0";
    let mut b = BytesMut::new();
    b.put_u32(8 + body.len() as u32);
    b.put_u32(3 << 16);
    b.put_slice(body);
    b
}

fn bench(name: &str, iterations: u32, mut f: impl FnMut()) {
    let mut best = f64::MAX;
    for _ in 0..5 {
        let start = Instant::now();
        for _ in 0..iterations {
            f();
        }
        best = best.min(start.elapsed().as_nanos() as f64 / f64::from(iterations));
    }
    println!("{name:<40} {best:>10.1} ns/op");
}

fn main() {
    let packet = startup_packet();
    bench("first_packet::parse (startup, 4 params)", 200_000, || {
        let mut buf = packet.clone();
        black_box(first_packet::parse(black_box(&mut buf)).ok());
    });
    let classifier = UserClassifier::new(vec!["tableau".into(), "readonly".into()]);
    bench(
        "policy::decide (optional, internal, TLS)",
        1_000_000,
        || {
            let class = classifier.classify(black_box("internal_svc"));
            black_box(policy::decide(
                Mode::Optional,
                class,
                Transport::Tls,
                "internal_svc",
            ));
        },
    );
}
