//! The overlay's frame path, with real authentication beside the simulator's stand-in
//! measured in the same run: what a peer pays per broadcast it receives.
//!
//! Run: `cargo xtask bench cellmesh` (prints ratios) or
//! `cargo bench -p genos-cellmesh --features sim --bench overlay`.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::Instant;

use bytes::Bytes;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use genos_cellmesh::{
    CryptoAuth, FrameAuth, Input, MeshTopic, Output, Overlay, OverlayConfig, SimAuth,
};
use genos_crypto::{Identity, SealKey};

fn started<A: FrameAuth>(auth: A) -> Overlay<A> {
    let mut overlay = Overlay::new(OverlayConfig::default(), [1; 32], auth, 3);
    overlay.handle(
        Input::Start {
            cells_hint: Some(1),
        },
        Instant::now(),
    );
    overlay
}

fn link<A: FrameAuth>(overlay: &mut Overlay<A>, other: [u8; 32]) {
    let now = Instant::now();
    overlay.handle(
        Input::Announced {
            peer: other,
            topic: MeshTopic::Cell { cells: 1, cell: 0 },
            cells: 1,
            epoch: 0,
            count: 0,
        },
        now,
    );
    overlay.handle(Input::LinkUp { peer: other }, now);
}

/// A broadcast frame (256-byte payload) from `origin` as sent to `to`.
fn frame<A: FrameAuth>(origin: &mut Overlay<A>, to: [u8; 32]) -> Bytes {
    let outputs = origin.handle(
        Input::Broadcast {
            meta: Bytes::from_static(b"bench"),
            payload: Bytes::from(vec![7u8; 256]),
        },
        Instant::now(),
    );
    outputs
        .into_iter()
        .find_map(|output| match output {
            Output::Send { to: t, message } if t == to => Some(message),
            _ => None,
        })
        .expect("frame to the receiver")
}

/// Times a fresh receiver (set up outside the timing) handling one broadcast frame; `pair`
/// makes the origin's and the receiver's auth.
fn bench_receive<A: FrameAuth>(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    pair: impl Fn() -> (A, A),
) {
    let (origin_auth, _) = pair();
    let (a, b) = (origin_auth.me(), pair().1.me());
    let mut origin = started(origin_auth);
    link(&mut origin, b);
    let sent = frame(&mut origin, b);
    group.bench_function(name, |bench| {
        bench.iter_batched(
            || {
                let mut receiver = started(pair().1);
                link(&mut receiver, a);
                receiver
            },
            |mut receiver| {
                black_box(receiver.handle(
                    Input::Received {
                        from: a,
                        message: sent.clone(),
                    },
                    Instant::now(),
                ))
            },
            BatchSize::SmallInput,
        );
    });
}

fn receive(c: &mut Criterion) {
    let mut group = c.benchmark_group("receive-broadcast");
    // Baseline: the simulator's keyed-hash stand-in (no public-key crypto).
    bench_receive(&mut group, "sim-auth", || {
        (SimAuth::new([1; 32]), SimAuth::new([2; 32]))
    });
    // Real: BIP-340 verification and the room key's AEAD.
    let room_key = SealKey::generate();
    let (ida, idb) = (Identity::generate(), Identity::generate());
    bench_receive(&mut group, "crypto-auth", || {
        (
            CryptoAuth::new(ida.clone(), room_key.clone()),
            CryptoAuth::new(idb.clone(), room_key.clone()),
        )
    });
    // A duplicate costs a lookup, not a verification.
    {
        let room_key = SealKey::generate();
        let (ida, idb) = (Identity::generate(), Identity::generate());
        let (a, b) = (*ida.peer_id().as_bytes(), *idb.peer_id().as_bytes());
        let mut origin = started(CryptoAuth::new(ida, room_key.clone()));
        link(&mut origin, b);
        let sent = frame(&mut origin, b);
        let mut receiver = started(CryptoAuth::new(idb, room_key));
        link(&mut receiver, a);
        receiver.handle(
            Input::Received {
                from: a,
                message: sent.clone(),
            },
            Instant::now(),
        );
        group.bench_function("crypto-auth-duplicate", |bench| {
            bench.iter(|| {
                black_box(receiver.handle(
                    Input::Received {
                        from: a,
                        message: sent.clone(),
                    },
                    Instant::now(),
                ))
            });
        });
    }
    group.finish();
}

criterion_group!(benches, receive);
criterion_main!(benches);
