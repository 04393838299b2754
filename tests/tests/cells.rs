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
use std::time::{Duration, Instant};

use genos::cellmesh::{Sizing, assign_cell};
use genos::crypto::RoomKey;
use genos::room::{CellsSettings, Topology, missing_planned_links};
use genos::signal::nostr::{EmbeddedRelay, EmbeddedRelayConfig};
use genos::{PeerId, Room};
use own_runtime::{PASSWORD, Peer, key_params};
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
    let main = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let relay = main
        .block_on(EmbeddedRelay::start(EmbeddedRelayConfig::default()))
        .unwrap();
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
