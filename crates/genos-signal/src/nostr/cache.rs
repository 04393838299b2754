//! The extended relay list kept on disk: read at join, written when the directory answers.

/// Reads an extended relay list: a JSON array of `ws://`/`wss://` URLs, at most 64 KiB and
/// 256 entries; anything else in the file is ignored. Missing or unreadable: empty.
pub fn read_relay_cache(path: &std::path::Path) -> Vec<String> {
    const MAX_FILE: u64 = 64 * 1024;
    const MAX_ENTRIES: usize = 256;
    let Ok(metadata) = std::fs::metadata(path) else {
        return Vec::new();
    };
    if metadata.len() > MAX_FILE {
        tracing::warn!(path = %path.display(), "relay cache too large, ignored");
        return Vec::new();
    }
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    let Ok(values) = serde_json::from_str::<Vec<serde_json::Value>>(&text) else {
        tracing::warn!(path = %path.display(), "relay cache is not a JSON array, ignored");
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
