//! The extended relay list kept on disk: read at join, written when the directory answers;
//! and what sessions measured of its relays, beside it.

/// The JSON array in the file at `path`, if the file exists, holds at most `max_file` bytes
/// and parses as an array (what is wrong is logged as `what`).
fn read_json_array(
    path: &std::path::Path,
    max_file: u64,
    what: &str,
) -> Option<Vec<serde_json::Value>> {
    let metadata = std::fs::metadata(path).ok()?;
    if metadata.len() > max_file {
        tracing::warn!(path = %path.display(), "{what} too large, ignored");
        return None;
    }
    let text = std::fs::read_to_string(path).ok()?;
    let values = serde_json::from_str::<Vec<serde_json::Value>>(&text);
    if values.is_err() {
        tracing::warn!(path = %path.display(), "{what} is not a JSON array, ignored");
    }
    values.ok()
}

/// Reads an extended relay list: a JSON array of `ws://`/`wss://` URLs, at most 64 KiB and
/// 256 entries; anything else in the file is ignored. Missing or unreadable: empty.
pub fn read_relay_cache(path: &std::path::Path) -> Vec<String> {
    const MAX_FILE: u64 = 64 * 1024;
    const MAX_ENTRIES: usize = 256;
    let Some(values) = read_json_array(path, MAX_FILE, "relay cache") else {
        return Vec::new();
    };
    values
        .iter()
        .filter_map(serde_json::Value::as_str)
        .filter(|url| url.starts_with("ws://") || url.starts_with("wss://"))
        .take(MAX_ENTRIES)
        .map(str::to_owned)
        .collect()
}

/// Writes an extended relay list (creating or replacing the file).
pub fn write_relay_cache(path: &std::path::Path, relays: &[String]) -> std::io::Result<()> {
    let text = serde_json::to_string_pretty(relays).map_err(std::io::Error::other)?;
    std::fs::write(path, text)
}

/// What sessions measured of one relay, kept beside the extended list so the next session
/// picks relays from it by health instead of list order.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct RelayRecord {
    /// The relay's URL.
    pub url: String,
    /// Times a session got a subscription confirmed by it.
    pub connects: u64,
    /// Failed connection attempts.
    pub failures: u64,
    /// Smoothed publish-to-`OK` time, if it ever acknowledged.
    pub latency_ms: Option<u64>,
    /// Whether it was muted (refused us, too slow, failed too often) when last seen.
    pub muted: bool,
    /// When it was last recorded (seconds since the Unix epoch).
    pub seen: u64,
}

impl RelayRecord {
    /// Orders relays for dialling, best first: ones that worked (faster first), then ones
    /// never tried, then ones that failed or were muted.
    fn rank(record: Option<&RelayRecord>) -> (u8, u64) {
        match record {
            None => (1, 0),
            Some(r) if r.muted || (r.connects == 0 && r.failures > 0) => (2, r.failures),
            Some(r) if r.connects > 0 => (0, r.latency_ms.unwrap_or(u64::MAX / 2)),
            Some(_) => (1, 0),
        }
    }
}

/// Largest number of relay records kept (the most recently seen).
const MAX_RECORDS: usize = 512;

/// The records file of a cache file: `relays.json` -> `relays.health.json`.
pub(crate) fn records_path(cache: &std::path::Path) -> std::path::PathBuf {
    cache.with_extension("health.json")
}

/// Reads relay records (at most 256 KiB and [`MAX_RECORDS`] entries; malformed entries are
/// skipped, a missing or unreadable file is empty).
pub fn read_relay_records(path: &std::path::Path) -> Vec<RelayRecord> {
    const MAX_FILE: u64 = 256 * 1024;
    let Some(values) = read_json_array(path, MAX_FILE, "relay records") else {
        return Vec::new();
    };
    values
        .into_iter()
        .filter_map(|value| serde_json::from_value(value).ok())
        .take(MAX_RECORDS)
        .collect()
}

/// Merges `fresh` records into the file at `path` (newer replace older per URL; the most
/// recently seen [`MAX_RECORDS`] kept), written to a temporary file and renamed into place so
/// sessions writing at once never leave a torn file.
pub fn record_relays(path: &std::path::Path, fresh: &[RelayRecord]) -> std::io::Result<()> {
    let mut records = read_relay_records(path);
    for record in fresh {
        records.retain(|r| r.url != record.url);
        records.push(record.clone());
    }
    records.sort_by_key(|r| std::cmp::Reverse(r.seen));
    records.truncate(MAX_RECORDS);
    let text = serde_json::to_string_pretty(&records).map_err(std::io::Error::other)?;
    let temporary = path.with_extension(format!("tmp{}", rand::random::<u32>()));
    std::fs::write(&temporary, text)?;
    std::fs::rename(&temporary, path)
}

/// Sorts `candidates` best first by their records (stable: list order among equals).
pub(crate) fn rank_relays(candidates: &mut [String], records: &[RelayRecord]) {
    candidates.sort_by_key(|url| RelayRecord::rank(records.iter().find(|r| &r.url == url)));
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn record(
        url: &str,
        connects: u64,
        failures: u64,
        latency: Option<u64>,
        muted: bool,
    ) -> RelayRecord {
        RelayRecord {
            url: url.into(),
            connects,
            failures,
            latency_ms: latency,
            muted,
            seen: 1,
        }
    }

    #[test]
    fn relays_rank_working_then_untried_then_failing() {
        let mut urls: Vec<String> = [
            "ws://dead",
            "ws://new",
            "ws://slow",
            "ws://fast",
            "ws://muted",
        ]
        .map(String::from)
        .to_vec();
        let records = [
            record("ws://dead", 0, 8, None, false),
            record("ws://slow", 3, 1, Some(900), false),
            record("ws://fast", 2, 0, Some(40), false),
            record("ws://muted", 5, 0, Some(10), true),
        ];
        rank_relays(&mut urls, &records);
        assert_eq!(
            urls,
            [
                "ws://fast",
                "ws://slow",
                "ws://new",
                "ws://muted",
                "ws://dead"
            ]
        );
    }

    #[test]
    fn records_merge_by_url_and_survive_garbage() {
        let dir = std::env::temp_dir().join(format!("genos-records-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("relays.health.json");
        std::fs::write(&path, b"[{\"url\": 3}, \"junk\"]").unwrap();
        assert!(read_relay_records(&path).is_empty());
        record_relays(&path, &[record("ws://a", 1, 0, Some(5), false)]).unwrap();
        let mut newer = record("ws://a", 2, 0, Some(7), false);
        newer.seen = 2;
        record_relays(&path, &[newer.clone(), record("ws://b", 0, 1, None, false)]).unwrap();
        let records = read_relay_records(&path);
        assert_eq!(records.len(), 2);
        assert!(records.contains(&newer));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
