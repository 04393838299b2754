//! What a cells room tells about its overlay ([`crate::Room::mesh_status`]).

use std::borrow::Borrow;
use std::collections::HashSet;
use std::sync::Mutex;

use genos_cellmesh::{
    CryptoAuth, LinkRole, Overlay, OverlayConfig, OverlayMetrics, planned_links_in,
};
use genos_crypto::PeerId;

use crate::{Room, lock};

/// A snapshot of a cells room's overlay, refreshed by the room every 100 ms.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MeshStatus {
    /// Cells in the room's current view (0 while this peer still listens for the view).
    pub cells: u32,
    /// This peer's cell.
    pub cell: u32,
    /// Whether this peer's cell is too large for the view while the room forms: it opens no
    /// new links until the view is resized (see `genos_cellmesh::Overlay::is_forming`).
    pub forming: bool,
    /// Whether this peer leads its cell (posts its census; cell 0's leader beacons).
    pub leader: bool,
    /// Peers of this peer's cell it knows, itself included.
    pub cell_members: usize,
    /// Bridge slots this peer holds (each a bridge link it opens to another cell).
    pub bridge_slots: usize,
    /// Links the overlay holds to cell mates.
    pub intra_links: usize,
    /// Bridge links to other cells.
    pub bridge_links: usize,
    /// Links no longer wanted, lingering until they close (counted in the two above too).
    pub lingering_links: usize,
    /// Peers the overlay knows (its cell and the cells it bridges to).
    pub roster: usize,
    /// Signaling topics joined for the overlay (lobby, own cell, bridge cells).
    pub topics: usize,
    /// The overlay's counters.
    pub metrics: OverlayMetrics,
}

impl MeshStatus {
    pub(crate) fn of(overlay: &Overlay<CryptoAuth>, topics: usize) -> Self {
        let (mut intra_links, mut bridge_links) = (0, 0);
        for (_, role) in overlay.links() {
            match role {
                LinkRole::Intra => intra_links += 1,
                LinkRole::Bridge { .. } => bridge_links += 1,
                _ => {}
            }
        }
        Self {
            cells: overlay.cells(),
            cell: overlay.cell(),
            forming: overlay.is_forming(std::time::Instant::now()),
            leader: overlay.is_leader(),
            cell_members: overlay.cell_members().count(),
            bridge_slots: overlay.bridge_slots().len(),
            intra_links,
            bridge_links,
            lingering_links: overlay.lingering_links(),
            roster: overlay.roster_len(),
            topics,
            metrics: overlay.metrics().clone(),
        }
    }
}

/// The latest snapshot, shared with the room handle.
#[derive(Debug, Default)]
pub(crate) struct StatusCell(Mutex<Option<MeshStatus>>);

impl StatusCell {
    pub(crate) fn set(&self, status: MeshStatus) {
        *lock(&self.0) = Some(status);
    }

    pub(crate) fn get(&self) -> Option<MeshStatus> {
        lock(&self.0).clone()
    }
}

/// For harnesses holding many peers of one cells room in one process (`genos swarm`,
/// tests): per room, the peers its overlay should link it to, by the plan
/// [`genos_cellmesh::planned_links_in`] gives for every room's key, the room topic
/// ([`genos_crypto::RoomKey::topic`]) and `cells` cells. No single peer can tell: it knows
/// only its own view.
///
/// ```
/// let rooms: Vec<genos_room::Room> = Vec::new();
/// let config = genos_cellmesh::OverlayConfig::default();
/// assert!(genos_room::planned_peers(&rooms, &[0; 32], 4, &config).is_empty());
/// ```
pub fn planned_peers<R: Borrow<Room>>(
    rooms: &[R],
    topic: &[u8; 32],
    cells: u32,
    overlay: &OverlayConfig,
) -> Vec<Vec<PeerId>> {
    let ids: Vec<PeerId> = rooms.iter().map(|r| r.borrow().local_peer()).collect();
    let keys: Vec<[u8; 32]> = ids.iter().map(|id| *id.as_bytes()).collect();
    planned_links_in(topic, &keys, cells, overlay)
        .into_iter()
        .map(|planned| {
            planned
                .into_iter()
                .filter_map(|i| ids.get(i).copied())
                .collect()
        })
        .collect()
}

/// Per room, the peers of [`planned_peers`] it is not linked to now: all empty once the
/// room formed.
///
/// ```
/// let rooms: Vec<genos_room::Room> = Vec::new();
/// let config = genos_cellmesh::OverlayConfig::default();
/// assert!(genos_room::missing_planned_links(&rooms, &[0; 32], 4, &config).is_empty());
/// ```
pub fn missing_planned_links<R: Borrow<Room>>(
    rooms: &[R],
    topic: &[u8; 32],
    cells: u32,
    overlay: &OverlayConfig,
) -> Vec<Vec<PeerId>> {
    rooms
        .iter()
        .zip(planned_peers(rooms, topic, cells, overlay))
        .map(|(room, planned)| {
            let held: HashSet<PeerId> = room.borrow().peers().into_iter().collect();
            planned
                .into_iter()
                .filter(|peer| !held.contains(peer))
                .collect()
        })
        .collect()
}
