//! Benchmarks of genos-crypto, each beside its baseline measured in the same run:
//! envelope seal/open against the raw XChaCha20-Poly1305 AEAD, key derivation, signatures.
//!
//! Run: `cargo xtask bench crypto` (prints ratios) or `cargo bench -p genos-crypto`.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::Duration;

use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{Key, Tag, XChaCha20Poly1305, XNonce};
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use genos_crypto::{Context, HEADER_LEN, Identity, KeyParams, PeerId, Purpose, RoomKey, SealKey};

const SIZES: [usize; 3] = [1024, 16 * 1024, 64 * 1024];

fn context() -> Context<'static> {
    Context::new(Purpose::Data, PeerId::from_bytes([7; 32]))
}

fn seal(c: &mut Criterion) {
    let mut group = c.benchmark_group("seal");
    let key = SealKey::from_bytes([1; 32]);
    let cipher = XChaCha20Poly1305::new(&Key::from([1; 32]));
    for size in SIZES {
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::new("raw-aead", size), &size, |b, &size| {
            let mut buffer = vec![0u8; size];
            let nonce = XNonce::from([3; 24]);
            b.iter(|| {
                let tag = cipher
                    .encrypt_inout_detached(&nonce, b"", buffer.as_mut_slice().into())
                    .unwrap();
                black_box(tag);
            });
        });
        group.bench_with_input(BenchmarkId::new("envelope", size), &size, |b, &size| {
            let mut buffer = SealKey::buffer(size);
            buffer.resize(HEADER_LEN + size, 0);
            b.iter(|| {
                // Drop the previous tag; re-sealing the ciphertext costs the same as plaintext.
                buffer.truncate(HEADER_LEN + size);
                key.seal_in_place(&context(), &mut buffer).unwrap();
                black_box(&buffer);
            });
        });
    }
    group.finish();
}

fn open(c: &mut Criterion) {
    let mut group = c.benchmark_group("open");
    let key = SealKey::from_bytes([1; 32]);
    let cipher = XChaCha20Poly1305::new(&Key::from([1; 32]));
    for size in SIZES {
        group.throughput(Throughput::Bytes(size as u64));
        let nonce = XNonce::from([3; 24]);
        let mut raw = vec![0u8; size];
        let tag: Tag = cipher
            .encrypt_inout_detached(&nonce, b"", raw.as_mut_slice().into())
            .unwrap();
        group.bench_with_input(BenchmarkId::new("raw-aead", size), &size, |b, _| {
            b.iter_batched_ref(
                || raw.clone(),
                |buffer| {
                    cipher
                        .decrypt_inout_detached(&nonce, b"", buffer.as_mut_slice().into(), &tag)
                        .unwrap();
                },
                BatchSize::SmallInput,
            );
        });
        let sealed = key.seal(&context(), &vec![0u8; size]).unwrap();
        group.bench_with_input(BenchmarkId::new("envelope", size), &size, |b, _| {
            b.iter_batched_ref(
                || sealed.clone(),
                |buffer| {
                    black_box(key.open_in_place(&context(), buffer).unwrap());
                },
                BatchSize::SmallInput,
            );
        });
    }
    group.finish();
}

fn derive(c: &mut Criterion) {
    let mut group = c.benchmark_group("derive");
    group.sample_size(10);
    group.bench_function("argon2id-default", |b| {
        b.iter(|| {
            RoomKey::derive("app", "room", Some(b"password"), &KeyParams::default()).unwrap()
        });
    });
    group.bench_function("no-password", |b| {
        b.iter(|| RoomKey::derive("app", "room", None, &KeyParams::default()).unwrap());
    });
    group.finish();
}

fn signatures(c: &mut Criterion) {
    let mut group = c.benchmark_group("signature");
    let identity = Identity::generate();
    let message = [5u8; 256];
    let signature = identity.sign(&message);
    group.bench_function("sign", |b| b.iter(|| identity.sign(black_box(&message))));
    group.bench_function("verify", |b| {
        b.iter(|| {
            identity
                .peer_id()
                .verify(black_box(&message), &signature)
                .unwrap()
        });
    });
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30)
}

criterion_group! {
    name = benches;
    config = config();
    targets = seal, open, derive, signatures
}
criterion_main!(benches);
