//! Trystero's peer ids: 20 characters from `[0-9A-Za-z]`, random per page load.

use rand::Rng;

/// Characters of a Trystero peer id (in Trystero's order).
const CHARSET: &[u8] = b"0123456789AaBbCcDdEeFfGgHhIiJjKkLlMmNnOoPpQqRrSsTtUuVvWwXxYyZz";
/// Length of the ids Trystero makes.
pub const PEER_ID_LEN: usize = 20;
/// Longest peer id accepted from others (Trystero checks none; genos bounds it).
pub const MAX_PEER_ID_LEN: usize = 64;

/// A fresh random peer id in Trystero's format.
pub fn generate() -> String {
    random(PEER_ID_LEN)
}

/// `len` random characters of Trystero's id alphabet (its offer ids and password challenges
/// are made the same way, 12 and 36 long).
pub fn random(len: usize) -> String {
    let mut rng = rand::rng();
    (0..len)
        .map(|_| {
            let at = rng.random_range(0..CHARSET.len());
            char::from(CHARSET.get(at).copied().unwrap_or(b'0'))
        })
        .collect()
}

/// Whether `id` is a peer id genos accepts from others: 1 to [`MAX_PEER_ID_LEN`] visible
/// ASCII characters (it becomes part of a topic and of log lines).
pub fn is_acceptable(id: &str) -> bool {
    (1..=MAX_PEER_ID_LEN).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_graphic())
}

#[cfg(test)]
mod tests {
    #[test]
    fn generated_ids_look_like_trysteros() {
        let id = super::generate();
        assert_eq!(id.len(), super::PEER_ID_LEN);
        assert!(id.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_ne!(id, super::generate());
        assert!(super::is_acceptable(&id));
        assert!(!super::is_acceptable(""));
        assert!(!super::is_acceptable("a b"));
        assert!(!super::is_acceptable(&"x".repeat(65)));
    }
}
