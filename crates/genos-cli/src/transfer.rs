//! `genos send` / `genos recv`: a file over a room, in parts, checked with SHA-256.
//!
//! The sender announces the file with a header (name, size, SHA-256, part size) carried as
//! each part's metadata, sends it in parts of at most [`PART_SIZE`] bytes (so memory stays
//! bounded whatever the file's size), and waits for each receiver's verdict. The receiver
//! writes the parts to a temporary file beside the destination, checks the digest, and only
//! then renames it into place: an interrupted or corrupt transfer never leaves a file under
//! the final name.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use genos::crypto::PeerId;
use genos::room::{Room, RoomError, SendOptions, Target};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Largest part sent as one room message.
pub const PART_SIZE: usize = 4 << 20;
/// Channel carrying the parts.
pub const FILE_CHANNEL: &str = "genos/file";
/// Channel carrying the receivers' verdicts.
pub const VERDICT_CHANNEL: &str = "genos/file-verdict";

/// Why a transfer failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransferError {
    /// Reading or writing a file failed.
    #[error("{path}: {error}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What happened.
        error: std::io::Error,
    },
    /// The room refused something.
    #[error("room: {0}")]
    Room(#[from] RoomError),
    /// A peer sent something that is not a valid part (or a header that changed mid-way).
    #[error("invalid transfer from {from}: {reason}")]
    Invalid {
        /// The sender.
        from: String,
        /// What was wrong.
        reason: String,
    },
    /// The received file's SHA-256 differs from the announced one; nothing was kept.
    #[error("{0}: SHA-256 mismatch, the file was discarded")]
    DigestMismatch(String),
    /// A receiver reported a failure.
    #[error("{peer} could not take the file: {reason}")]
    Refused {
        /// The receiver.
        peer: String,
        /// Its reason.
        reason: String,
    },
    /// The room ended before the transfer did.
    #[error("the room ended before the transfer finished")]
    Ended,
}

/// What the sender announces about the file, on every part.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileHeader {
    /// The file's name (no directories).
    pub name: String,
    /// Its size.
    pub size: u64,
    /// Its SHA-256.
    pub sha256: [u8; 32],
    /// Index of this part.
    pub part: u64,
}

/// A receiver's verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Verdict {
    /// Stored with a matching digest.
    Stored,
    /// Not stored, and why.
    Failed(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TransferError + '_ {
    move |error| TransferError::Io {
        path: path.to_owned(),
        error,
    }
}

/// SHA-256 of a file, read in bounded pieces.
pub async fn digest_file(path: &Path) -> Result<([u8; 32], u64), TransferError> {
    let mut file = tokio::fs::File::open(path).await.map_err(io(path))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let read = file.read(&mut buffer).await.map_err(io(path))?;
        if read == 0 {
            break;
        }
        hasher.update(buffer.get(..read).unwrap_or_default());
        size += read as u64;
    }
    Ok((hasher.finalize().into(), size))
}

/// Sends `path` to `peers` and waits for each one's verdict. `on_progress(bytes sent)`.
pub async fn send_file(
    room: &Room,
    path: &Path,
    peers: Vec<PeerId>,
    on_progress: impl Fn(u64),
) -> Result<(), TransferError> {
    let verdicts = room.typed_channel::<Verdict>(VERDICT_CHANNEL)?;
    let (sha256, size) = digest_file(path).await?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".to_owned());
    let channel = room.channel(FILE_CHANNEL)?;
    let mut file = tokio::fs::File::open(path).await.map_err(io(path))?;
    let mut sent = 0u64;
    let mut part = 0u64;
    loop {
        let want = usize::try_from((size - sent).min(PART_SIZE as u64)).unwrap_or(PART_SIZE);
        let mut buffer = vec![0u8; want];
        file.read_exact(&mut buffer).await.map_err(io(path))?;
        let header = FileHeader {
            name: name.clone(),
            size,
            sha256,
            part,
        };
        let meta = postcard::to_stdvec(&header).map_err(|e| RoomError::Encode(e.to_string()))?;
        let options = SendOptions::default()
            .to(Target::Peers(peers.clone()))
            .with_meta(meta);
        let report = channel.send_with(Bytes::from(buffer), options).await?;
        if let Some((peer, error)) = report.failed.into_iter().next() {
            return Err(TransferError::Refused {
                peer: peer.short(),
                reason: error.to_string(),
            });
        }
        sent += want as u64;
        part += 1;
        on_progress(sent);
        if sent >= size {
            break;
        }
    }
    let mut waiting: Vec<PeerId> = peers;
    while !waiting.is_empty() {
        let verdict = verdicts.recv().await.ok_or(TransferError::Ended)?;
        let Ok(verdict) = verdict else { continue };
        if !waiting.contains(&verdict.from) {
            continue;
        }
        waiting.retain(|p| *p != verdict.from);
        if let Verdict::Failed(reason) = verdict.value {
            return Err(TransferError::Refused {
                peer: verdict.from.short(),
                reason,
            });
        }
    }
    Ok(())
}

/// A file received and stored.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Received {
    /// Where it was stored.
    pub path: PathBuf,
    /// Its size.
    pub size: u64,
    /// Who sent it.
    pub from: PeerId,
}

/// Receives one file into `out_dir`. `on_start(header)` once the first part arrives,
/// `on_progress(bytes received)` after each part.
pub async fn receive_file(
    room: &Room,
    out_dir: &Path,
    on_start: impl FnOnce(&FileHeader),
    on_progress: impl Fn(u64),
) -> Result<Received, TransferError> {
    let channel = room.channel(FILE_CHANNEL)?;
    let verdicts = room.typed_channel::<Verdict>(VERDICT_CHANNEL)?;
    let first = channel.recv().await.ok_or(TransferError::Ended)?;
    let from = first.from;
    let result = receive_parts(first, &channel, out_dir, on_start, on_progress).await;
    let verdict = match &result {
        Ok(_) => Verdict::Stored,
        Err(error) => Verdict::Failed(error.to_string()),
    };
    verdicts.send_to(from, &verdict).await?;
    result
}

fn header_of(message: &genos::room::Message) -> Result<FileHeader, TransferError> {
    let invalid = |reason: &str| TransferError::Invalid {
        from: message.from.short(),
        reason: reason.to_owned(),
    };
    let meta = message
        .meta
        .as_deref()
        .ok_or_else(|| invalid("no header"))?;
    postcard::from_bytes(meta).map_err(|_| invalid("undecodable header"))
}

/// A name safe to create in the output directory: the last path component, no dot files.
fn safe_name(name: &str) -> String {
    let base = name
        .rsplit(['/', '\\'])
        .next()
        .unwrap_or_default()
        .trim_start_matches('.');
    let clean: String = base.chars().filter(|c| !c.is_control()).take(200).collect();
    if clean.is_empty() {
        "received.bin".to_owned()
    } else {
        clean
    }
}

async fn receive_parts(
    first: genos::room::Message,
    channel: &genos::room::Channel,
    out_dir: &Path,
    on_start: impl FnOnce(&FileHeader),
    on_progress: impl Fn(u64),
) -> Result<Received, TransferError> {
    let from = first.from;
    let header = header_of(&first)?;
    if header.part != 0 {
        return Err(TransferError::Invalid {
            from: from.short(),
            reason: "the transfer did not start at its first part".into(),
        });
    }
    on_start(&header);
    let name = safe_name(&header.name);
    let final_path = out_dir.join(&name);
    let temp_path = out_dir.join(format!(".{name}.genos-part"));
    let mut file = tokio::fs::File::create(&temp_path)
        .await
        .map_err(io(&temp_path))?;
    let outcome = async {
        let mut hasher = Sha256::new();
        let mut received = 0u64;
        let mut message = first;
        let mut part = 0u64;
        loop {
            let this = header_of(&message)?;
            let consistent = this.name == header.name
                && this.size == header.size
                && this.sha256 == header.sha256
                && this.part == part;
            if message.from != from || !consistent {
                return Err(TransferError::Invalid {
                    from: message.from.short(),
                    reason: "a part does not continue the transfer".into(),
                });
            }
            received += message.payload.len() as u64;
            if received > header.size {
                return Err(TransferError::Invalid {
                    from: from.short(),
                    reason: "more data than announced".into(),
                });
            }
            hasher.update(&message.payload);
            file.write_all(&message.payload)
                .await
                .map_err(io(&temp_path))?;
            on_progress(received);
            if received == header.size {
                break;
            }
            part += 1;
            message = channel.recv().await.ok_or(TransferError::Ended)?;
        }
        file.sync_all().await.map_err(io(&temp_path))?;
        if <[u8; 32]>::from(hasher.finalize()) != header.sha256 {
            return Err(TransferError::DigestMismatch(name.clone()));
        }
        Ok(())
    }
    .await;
    drop(file);
    match outcome {
        Ok(()) => {
            tokio::fs::rename(&temp_path, &final_path)
                .await
                .map_err(io(&final_path))?;
            Ok(Received {
                path: final_path,
                size: header.size,
                from,
            })
        }
        Err(error) => {
            let _ = tokio::fs::remove_file(&temp_path).await;
            Err(error)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::safe_name;

    #[test]
    fn names_cannot_escape_the_output_directory() {
        assert_eq!(safe_name("../../etc/passwd"), "passwd");
        assert_eq!(safe_name("..\\..\\boot.ini"), "boot.ini");
        assert_eq!(safe_name(".."), "received.bin");
        assert_eq!(safe_name(".hidden"), "hidden");
        assert_eq!(safe_name("a\nb.txt"), "ab.txt");
        assert_eq!(safe_name("report.pdf"), "report.pdf");
    }
}
