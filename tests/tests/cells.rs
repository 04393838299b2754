//! Cells rooms end to end: the `genos` facade with `Topology::Cells` on the embedded Nostr
//! relay (WebSocket on 127.0.0.1) and real WebRTC on 127.0.0.1. Each peer runs on a tokio
//! runtime of its own, so a peer can be killed as a crashed process would be: its runtime
//! dropped, no goodbye, no closing handshake.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;

use genos::cellmesh::{Sizing, assign_cell};
use genos::crypto::RoomKey;
use genos::room::{CellsSettings, Topology, missing_planned_links};
use genos::{Codec, PeerId, Room, RoomEvent, Sample, Target, TrackOptions};
use own_runtime::{PASSWORD, Peer, key_params, main_and_relay};
use tokio::runtime::Runtime;

#[path = "support/own_runtime.rs"]
mod own_runtime;

const APP: &str = "genos-e2e-cells";
/// Bound on waiting for anything, so a broken build fails instead of hanging.
const PATIENCE: Duration = Duration::from_secs(120);

fn join(relay: &str, room_id: &str) -> Peer {
    Peer::join(relay, APP, room_id, Topology::Cells(settings()))
}

/// Cells of four (16 peers: 4 cells), a short wait for a stored view, a 3 s watchdog.
fn settings() -> CellsSettings {
    let mut settings = CellsSettings::default();
    settings.overlay.sizing = Sizing::Fixed(4);
    settings.overlay.bootstrap_wait = Duration::from_secs(1);
    settings
}

fn topic(room_id: &str) -> [u8; 32] {
    RoomKey::derive(APP, room_id, Some(PASSWORD.as_bytes()), &key_params())
        .unwrap()
        .topic()
}

/// Per room, the peers the plan (every key, the agreed cell count) links it to that it is
/// not linked to; None while the rooms disagree on the cell count.
fn lacking(rooms: &[&Room], topic: &[u8; 32]) -> Option<Vec<Vec<PeerId>>> {
    let views: HashSet<u32> = rooms
        .iter()
        .map(|room| room.mesh_status().map_or(0, |s| s.cells))
        .collect();
    let cells = match views.into_iter().collect::<Vec<_>>()[..] {
        [cells] if cells > 0 => cells,
        _ => return None,
    };
    Some(missing_planned_links(
        rooms,
        topic,
        cells,
        &settings().overlay,
    ))
}

/// Waits until the rooms agree on a cell count and hold every planned link.
fn wait_formed(runtime: &Runtime, rooms: &[&Room], topic: &[u8; 32], what: &str) {
    let start = Instant::now();
    runtime.block_on(async {
        loop {
            let missing = lacking(rooms, topic);
            if missing
                .as_ref()
                .is_some_and(|missing| missing.iter().all(Vec::is_empty))
            {
                return;
            }
            if start.elapsed() > PATIENCE {
                let states: Vec<String> = rooms
                    .iter()
                    .map(|room| format!("{}: {:?}", room.local_peer().short(), room.mesh_status()))
                    .collect();
                panic!("{what}: never formed; lacking {missing:?}\n{states:#?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
}

/// Every room in `rooms` broadcasts once on `channel`; every other gets each message whole.
fn everyone_hears_everyone(runtime: &Runtime, rooms: &[&Room], channel: &str) {
    runtime.block_on(async {
        let channels: Vec<genos::Channel> = rooms
            .iter()
            .map(|room| room.channel(channel).unwrap())
            .collect();
        for (i, channel) in channels.iter().enumerate() {
            let report = channel.send(format!("hello from {i}")).await.unwrap();
            assert!(report.via_overlay);
        }
        for (i, channel) in channels.iter().enumerate() {
            let mut heard = HashSet::new();
            while heard.len() < rooms.len() - 1 {
                let message = tokio::time::timeout(PATIENCE, channel.recv())
                    .await
                    .unwrap_or_else(|_| {
                        panic!(
                            "peer {i} heard {} of {} on {channel:?}: {:?}",
                            heard.len(),
                            rooms.len() - 1,
                            rooms[i].mesh_status()
                        )
                    })
                    .expect("channel ended");
                let sender = rooms
                    .iter()
                    .position(|room| room.local_peer() == message.from)
                    .expect("a message from a peer of the room");
                assert_eq!(
                    &message.payload[..],
                    format!("hello from {sender}").as_bytes()
                );
                assert!(
                    heard.insert(sender),
                    "peer {i} got {sender}'s message twice"
                );
            }
        }
    });
}

// Sixteen peers form four cells (every planned link up); a bridge is killed and every room
// drops it, with every broadcast reaching everyone again; a newcomer with no hint lands in
// the cell its key gives, links to its cell mates, and hears and is heard by all.
#[test]
fn a_cells_room_survives_a_killed_bridge_and_takes_in_a_newcomer() {
    let (main, relay) = main_and_relay();
    let room_id = format!("cells-{}", rand::random::<u32>());
    let topic = topic(&room_id);

    let mut peers = vec![join(relay.url(), &room_id)];
    // The rest find the first one's view stored at the relay.
    std::thread::sleep(Duration::from_secs(2));
    let rest: Vec<Peer> = std::thread::scope(|scope| {
        let joins: Vec<_> = (1..16)
            .map(|_| scope.spawn(|| join(relay.url(), &room_id)))
            .collect();
        joins.into_iter().map(|join| join.join().unwrap()).collect()
    });
    peers.extend(rest);
    let rooms: Vec<&Room> = peers.iter().map(|peer| &peer.room).collect();
    wait_formed(&main, &rooms, &topic, "16 peers");
    for room in &rooms {
        let status = room.mesh_status().unwrap();
        assert_eq!(status.cells, 4, "{status:?}");
        // Cell mates and a few bridges; never the whole room.
        assert!(status.intra_links + status.bridge_links < 15, "{status:?}");
    }
    everyone_hears_everyone(&main, &rooms, "before");

    // Kill a peer holding bridges.
    let victim = peers
        .iter()
        .position(|peer| peer.room.mesh_status().unwrap().bridge_links >= 2)
        .expect("some peer bridges two cells");
    let victim = peers.remove(victim);
    let gone = victim.room.local_peer();
    victim.kill();
    let rooms: Vec<&Room> = peers.iter().map(|peer| &peer.room).collect();
    // Every link to it is dropped (the 3 s watchdog), and broadcasts reach everyone again.
    // (Not checked: that every link of the new plan is up. Peers of other cells keep a
    // crashed peer in their rosters until a link to it fails, and in some runs a bridge or
    // two of the new plan were still missing two minutes on; issue #14.)
    main.block_on(async {
        tokio::time::timeout(PATIENCE, async {
            while rooms.iter().any(|room| room.peers().contains(&gone)) {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
        .await
        .expect("a room kept its link to the killed peer");
    });
    everyone_hears_everyone(&main, &rooms, "after");

    // A newcomer, told nothing, joins the cell its key gives.
    let newcomer = join(relay.url(), &room_id);
    let cells = peers[0].room.mesh_status().unwrap().cells;
    peers.push(newcomer);
    let rooms: Vec<&Room> = peers.iter().map(|peer| &peer.room).collect();
    let newcomer = rooms.last().unwrap();
    // It links to its cell. (Not checked: every link of the new plan. In about one run of
    // five a bridge between the newcomer and another cell was still missing two minutes on,
    // probably a peer planning around the killed one it still has in its roster; issue #14.)
    main.block_on(async {
        tokio::time::timeout(PATIENCE, async {
            while newcomer
                .mesh_status()
                .is_none_or(|s| s.cells == 0 || s.intra_links + 1 < s.cell_members)
            {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("the newcomer never linked up: {:?}", newcomer.mesh_status()));
    });
    let status = newcomer.mesh_status().unwrap();
    assert_eq!(status.cells, cells);
    assert_eq!(
        status.cell,
        assign_cell(&topic, newcomer.local_peer().as_bytes(), cells)
    );
    everyone_hears_everyone(&main, &rooms, "with the newcomer");

    for peer in peers {
        peer.leave();
    }
}

/// Waits on `runtime` for the next `PeerTrack` from `from` on `events`.
fn next_track_from(
    runtime: &Runtime,
    events: &mut genos::RoomEvents,
    from: PeerId,
) -> genos::RemoteTrack {
    runtime.block_on(async {
        tokio::time::timeout(PATIENCE, async {
            loop {
                match events.next().await {
                    Some(RoomEvent::PeerTrack { peer, track, .. }) if peer == from => {
                        return track;
                    }
                    Some(_) => {}
                    None => panic!("events ended"),
                }
            }
        })
        .await
        .expect("no track arrived")
    })
}

/// Reads `count` samples on `runtime`; each carries its number, and they follow one another.
fn read_numbered(runtime: &Runtime, track: &genos::RemoteTrack, count: usize) -> Vec<u64> {
    runtime.block_on(async {
        let mut numbers = Vec::new();
        while numbers.len() < count {
            let sample = tokio::time::timeout(PATIENCE, track.recv_sample())
                .await
                .expect("no sample")
                .expect("the track ended");
            numbers.push(u64::from_be_bytes(sample.data[..8].try_into().unwrap()));
        }
        for pair in numbers.windows(2) {
            assert_eq!(
                pair[1],
                pair[0] + 1,
                "samples out of order or lost: {numbers:?}"
            );
        }
        numbers
    })
}

/// Plays numbered VP8 samples on `track` every 20 ms while `playing`; numbering starts at
/// the first sample that reaches a peer (nothing does until the track's link is up).
fn play_numbered(runtime: &Runtime, track: genos::RoomTrack, playing: Arc<AtomicBool>) {
    runtime.spawn(async move {
        let mut n: u64 = 0;
        while playing.load(Ordering::Relaxed) {
            let mut frame = n.to_be_bytes().to_vec();
            frame.resize(3_000, 7);
            if track
                .write_sample(Sample::new(frame, Duration::from_millis(20)))
                .await
                .is_ok_and(|reached| reached > 0)
            {
                n += 1;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
}

/// `peer_count` peers form a cells room of `cells` cells; `pairs` senders (distinct) each add
/// a video track addressed to a peer (distinct) they have no link to. Each track reaches its
/// peer, the link outlives the overlay's linger (the overlay does not plan it), and once the
/// tracks are removed the links go.
fn tracks_to_unlinked_peers(peer_count: usize, cells: u32, pairs: usize) {
    let (main, relay) = main_and_relay();
    let room_id = format!("cells-media-{}", rand::random::<u32>());
    let topic = topic(&room_id);
    let mut settings = settings();
    settings.overlay.sizing = Sizing::Fixed(cells);
    let join = || {
        Peer::join(
            relay.url(),
            APP,
            &room_id,
            Topology::Cells(settings.clone()),
        )
    };
    let mut peers = vec![join()];
    std::thread::sleep(Duration::from_secs(2));
    let rest: Vec<Peer> = std::thread::scope(|scope| {
        let joins: Vec<_> = (1..peer_count).map(|_| scope.spawn(join)).collect();
        joins.into_iter().map(|join| join.join().unwrap()).collect()
    });
    peers.extend(rest);
    let rooms: Vec<&Room> = peers.iter().map(|peer| &peer.room).collect();
    wait_formed(&main, &rooms, &topic, &format!("{peer_count} peers"));

    // Pairs the plan does not link, with distinct senders and receivers.
    let mut chosen: Vec<(usize, usize)> = Vec::new();
    for a in 0..peers.len() {
        let free = |b: &usize| {
            *b != a
                && !chosen.iter().any(|&(x, y)| x == *b || y == *b || y == a)
                && !rooms[a].peers().contains(&rooms[*b].local_peer())
        };
        if let Some(b) = (0..peers.len()).find(free) {
            chosen.push((a, b));
        }
        if chosen.len() == pairs {
            break;
        }
    }
    assert_eq!(chosen.len(), pairs, "not enough unlinked pairs: {chosen:?}");
    let mut events: Vec<genos::RoomEvents> = chosen
        .iter()
        .map(|&(_, b)| peers[b].room.events())
        .collect();
    let playing = Arc::new(AtomicBool::new(true));
    let mut tracks = Vec::new();
    for &(a, b) in &chosen {
        let to = Target::Peer(rooms[b].local_peer());
        let track = peers[a]
            .runtime
            .block_on(rooms[a].add_track(Codec::Vp8, TrackOptions::new().to(to)))
            .unwrap();
        play_numbered(&peers[a].runtime, track.clone(), playing.clone());
        tracks.push(track);
    }
    let remotes: Vec<genos::RemoteTrack> = chosen
        .iter()
        .zip(&mut events)
        .map(|(&(a, b), events)| next_track_from(&peers[b].runtime, events, rooms[a].local_peer()))
        .collect();
    let linked = |&(a, b): &(usize, usize)| rooms[a].peers().contains(&rooms[b].local_peer());
    for (&(_, b), remote) in chosen.iter().zip(&remotes) {
        read_numbered(&peers[b].runtime, remote, 10);
    }
    assert!(chosen.iter().all(linked), "a track has no link");

    // Past the overlay's linger (10 s), which would have closed links it does not plan.
    std::thread::sleep(settings.overlay.linger + Duration::from_secs(3));
    assert!(chosen.iter().all(linked), "a track's link was closed");
    for (&(_, b), remote) in chosen.iter().zip(&remotes) {
        read_numbered(&peers[b].runtime, remote, 10);
    }

    // Removed: the links are the overlay's again, which does not plan them.
    playing.store(false, Ordering::Relaxed);
    for (&(a, _), track) in chosen.iter().zip(&tracks) {
        peers[a]
            .runtime
            .block_on(rooms[a].remove_track(track))
            .unwrap();
    }
    main.block_on(async {
        tokio::time::timeout(PATIENCE, async {
            while chosen.iter().any(linked) {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
        .await
        .expect("a track's link outlived the track");
    });
    drop(rooms);
    for peer in peers {
        peer.leave();
    }
}

// In a cells room, a track addressed to a peer with no direct link gets a link of its own.
#[test]
fn a_track_to_a_peer_without_a_link_gets_a_link_for_the_track() {
    tracks_to_unlinked_peers(8, 2, 1);
}

// The same with 30 peers joining at once and six such tracks at once.
#[test]
fn thirty_peers_six_tracks_to_peers_without_a_link() {
    tracks_to_unlinked_peers(30, 4, 6);
}
