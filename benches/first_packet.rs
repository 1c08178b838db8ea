//! Criterion micro-benchmarks of the per-connection work that never touches a socket: parsing the
//! first packets and deciding the policy. Run with `cargo bench --bench first_packet`.

use std::hint::black_box;

use bytes::{BufMut, BytesMut};
use criterion::{Criterion, criterion_group, criterion_main};
use pgssl::proxy::policy::{self, Mode, Transport, UserClassifier};
use pgssl::proxy::protocol::first_packet;

fn packet(code: u32, body: &[u8]) -> BytesMut {
    let mut b = BytesMut::with_capacity(8 + body.len());
    b.put_u32(8 + body.len() as u32);
    b.put_u32(code);
    b.put_slice(body);
    b
}

fn parsing(c: &mut Criterion) {
    let startup = packet(
        3 << 16,
        b"user\0internal_svc\0database\0repository\0application_name\0vizqlserver\0client_encoding\0UTF8\0\0",
    );
    let ssl_request = packet(first_packet::SSL_REQUEST_CODE, b"");
    let mut cancel_body = vec![0, 0, 0, 42];
    cancel_body.extend([7u8; 32]);
    let cancel = packet(first_packet::CANCEL_REQUEST_CODE, &cancel_body);
    let mut group = c.benchmark_group("first_packet::parse");
    for (name, bytes) in [
        ("startup_4_params", &startup),
        ("ssl_request", &ssl_request),
        ("cancel_3_2", &cancel),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut buf = bytes.clone();
                black_box(first_packet::parse(black_box(&mut buf)).ok())
            })
        });
    }
    group.finish();
}

fn policy_decision(c: &mut Criterion) {
    let classifier = UserClassifier::new(vec!["tableau".into(), "readonly".into()]);
    c.bench_function("policy::classify_and_decide", |b| {
        b.iter(|| {
            let class = classifier.classify(black_box("internal_svc"));
            black_box(policy::decide(
                black_box(Mode::Optional),
                class,
                Transport::Tls,
                "internal_svc",
            ))
        })
    });
    c.bench_function("policy::decide_reject", |b| {
        b.iter(|| {
            let class = classifier.classify(black_box("internal_svc"));
            black_box(policy::decide(
                black_box(Mode::Required),
                class,
                Transport::Plaintext,
                "internal_svc",
            ))
        })
    });
}

criterion_group!(benches, parsing, policy_decision);
criterion_main!(benches);
