//! `genos send` / `genos recv`: a file over a room, in parts, checked with SHA-256.
//!
//! The sender announces the file with a header (name, size, SHA-256, part size) carried as
//! each part's metadata, sends it in parts of at most [`PART_SIZE`] bytes (so memory stays
//! bounded whatever the file's size), and waits for each receiver's verdict. The receiver
//! writes the parts to a temporary file beside the destination, checks the digest, and only
//! then renames it into place: an interrupted or corrupt transfer never leaves a file under
//! the final name.
//!
//! One receiver's failure never costs the others: a receiver that fails (its link ends, it
//! leaves, it refuses) is dropped from the transfer and told so if it can still hear; the
//! rest get the whole file, and the sender reports each receiver's outcome. A receiver whose
//! sender leaves, gives up on it, or sends nothing for [`STALL_TIMEOUT`] ends with an error
//! and keeps no partial file.

use std::path::{Path, PathBuf};
use std::time::Duration;

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
/// Channel carrying the receivers' verdicts (and the sender's notice that it gave up on a
/// receiver).
pub const VERDICT_CHANNEL: &str = "genos/file-verdict";
/// How long a receiver waits for the next part before it gives up on the sender.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the peers still in the transfer are checked against the room's peers.
const PRESENCE_CHECK: Duration = Duration::from_millis(250);

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
    /// The sender left the room before the file was complete; nothing was kept.
    #[error("the sender {0} left before the file was complete; the partial file was discarded")]
    SenderLeft(String),
    /// No part came for [`STALL_TIMEOUT`]; nothing was kept.
    #[error("the sender {0} sent nothing for {STALL_TIMEOUT:?}; the partial file was discarded")]
    Stalled(String),
    /// Every receiver failed.
    #[error("no receiver took the file: {0}")]
    NobodyTookIt(String),
}

/// How a transfer went for each receiver.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SendOutcome {
    /// Receivers that stored the file with a matching digest.
    pub stored: Vec<PeerId>,
    /// Receivers that did not, and why.
    pub failed: Vec<(PeerId, String)>,
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
/// A receiver that fails is dropped and the others go on; the outcome lists each receiver.
/// An error means nobody could be sent to (or the file could not be read).
pub async fn send_file(
    room: &Room,
    path: &Path,
    peers: Vec<PeerId>,
    on_progress: impl Fn(u64),
) -> Result<SendOutcome, TransferError> {
    let verdicts = room.typed_channel::<Verdict>(VERDICT_CHANNEL)?;
    let (sha256, size) = digest_file(path).await?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".to_owned());
    let channel = room.channel(FILE_CHANNEL)?;
    let mut file = tokio::fs::File::open(path).await.map_err(io(path))?;
    let mut outcome = SendOutcome::default();
    let mut active = peers;
    let mut sent = 0u64;
    let mut part = 0u64;
    while !active.is_empty() {
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
            .to(Target::Peers(active.clone()))
            .with_meta(meta);
        let report = channel.send_with(Bytes::from(buffer), options).await?;
        for (peer, error) in report.failed {
            give_up(
                &verdicts,
                &mut active,
                &mut outcome,
                peer,
                error.to_string(),
            )
            .await;
        }
        sent += want as u64;
        part += 1;
        on_progress(sent);
        if sent >= size {
            break;
        }
    }
    let mut waiting = active;
    while !waiting.is_empty() {
        let verdict = tokio::select! {
            verdict = verdicts.recv() => verdict.ok_or(TransferError::Ended)?,
            () = tokio::time::sleep(PRESENCE_CHECK) => {
                let present = room.peers();
                for peer in waiting.clone() {
                    if !present.contains(&peer) {
                        let reason = "left the room before saying whether it stored the file";
                        give_up(&verdicts, &mut waiting, &mut outcome, peer, reason.into()).await;
                    }
                }
                continue;
            }
        };
        let Ok(verdict) = verdict else { continue };
        if !waiting.contains(&verdict.from) {
            continue;
        }
        waiting.retain(|p| *p != verdict.from);
        match verdict.value {
            Verdict::Stored => outcome.stored.push(verdict.from),
            Verdict::Failed(reason) => outcome.failed.push((verdict.from, reason)),
        }
    }
    if outcome.stored.is_empty() {
        let reasons: Vec<String> = outcome
            .failed
            .iter()
            .map(|(peer, reason)| format!("{}: {reason}", peer.short()))
            .collect();
        return Err(TransferError::NobodyTookIt(reasons.join("; ")));
    }
    Ok(outcome)
}

/// Drops `peer` from the transfer, and tells it (if it can still hear) so that it does not
/// wait for parts that will not come.
async fn give_up(
    verdicts: &genos::room::TypedChannel<Verdict>,
    active: &mut Vec<PeerId>,
    outcome: &mut SendOutcome,
    peer: PeerId,
    reason: String,
) {
    tracing::warn!(peer = %peer.short(), %reason, "a receiver dropped out of the transfer");
    active.retain(|p| *p != peer);
    let notice = Verdict::Failed(format!("the sender gave up on this receiver: {reason}"));
    let _ = tokio::time::timeout(PRESENCE_CHECK, verdicts.send_to(peer, &notice)).await;
    outcome.failed.push((peer, reason));
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
    let next_part = || next_part(room, &channel, &verdicts, from);
    let result = receive_parts(first, next_part, out_dir, on_start, on_progress).await;
    let verdict = match &result {
        Ok(_) => Verdict::Stored,
        Err(error) => Verdict::Failed(error.to_string()),
    };
    // Best effort: a sender that left cannot hear it, and what happened here stands anyway.
    if let Err(error) = verdicts.send_to(from, &verdict).await {
        tracing::warn!(%error, "the verdict did not reach the sender");
    }
    result
}

/// The next part from `from`; an error if it left, gave up on us or went quiet.
async fn next_part(
    room: &Room,
    channel: &genos::room::Channel,
    verdicts: &genos::room::TypedChannel<Verdict>,
    from: PeerId,
) -> Result<genos::room::Message, TransferError> {
    let stalled = tokio::time::sleep(STALL_TIMEOUT);
    tokio::pin!(stalled);
    loop {
        tokio::select! {
            message = channel.recv() => return message.ok_or(TransferError::Ended),
            notice = verdicts.recv() => match notice {
                Some(Ok(notice)) if notice.from == from => {
                    if let Verdict::Failed(reason) = notice.value {
                        return Err(TransferError::Refused { peer: from.short(), reason });
                    }
                }
                Some(_) => {}
                None => return Err(TransferError::Ended),
            },
            () = tokio::time::sleep(PRESENCE_CHECK) => {
                if !room.peers().contains(&from) {
                    return Err(TransferError::SenderLeft(from.short()));
                }
            }
            () = &mut stalled => return Err(TransferError::Stalled(from.short())),
        }
    }
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

async fn receive_parts<F, Next>(
    first: genos::room::Message,
    mut next_part: F,
    out_dir: &Path,
    on_start: impl FnOnce(&FileHeader),
    on_progress: impl Fn(u64),
) -> Result<Received, TransferError>
where
    F: FnMut() -> Next,
    Next: std::future::Future<Output = Result<genos::room::Message, TransferError>>,
{
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
            message = next_part().await?;
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
