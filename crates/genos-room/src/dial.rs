//! Who dials whom.

use genos_crypto::PeerId;
use genos_transport::Role;

/// The role `local` plays towards `remote`: the peer with the lower id offers, the other
/// answers, so two peers that notice each other at the same moment never both dial (no
/// glare). `None` for the same id: a peer never connects to itself.
pub fn dial_role(local: &PeerId, remote: &PeerId) -> Option<Role> {
    match local.cmp(remote) {
        std::cmp::Ordering::Less => Some(Role::Offerer),
        std::cmp::Ordering::Greater => Some(Role::Answerer),
        std::cmp::Ordering::Equal => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exactly_one_side_offers() {
        for (a, b) in [(0u8, 1u8), (200, 3), (7, 255)] {
            let a = PeerId::from_bytes([a; 32]);
            let b = PeerId::from_bytes([b; 32]);
            let roles = (dial_role(&a, &b), dial_role(&b, &a));
            assert!(
                matches!(
                    roles,
                    (Some(Role::Offerer), Some(Role::Answerer))
                        | (Some(Role::Answerer), Some(Role::Offerer))
                ),
                "{roles:?}"
            );
        }
    }
}
