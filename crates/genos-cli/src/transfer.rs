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
//! and keeps what came (`.NAME.genos-part`, and `.NAME.genos-part.of` saying which file it
//! is part of: size and SHA-256).
//!
//! Resuming: the sender first offers the file ([`Control::Offer`]); each receiver answers
//! with the whole parts it holds of that same file and their SHA-256 ([`Control::Have`]); the
//! sender checks them against its own bytes and tells the receiver where its parts start
//! ([`Control::Start`]: there, or 0 if they differ). Parts before that are not sent to it;
//! the final SHA-256 check covers the whole file either way. A corrupt transfer (digest
//! mismatch, invalid parts) keeps nothing.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use genos::crypto::PeerId;
use genos::room::{Channel, Message, Room, RoomError, SendOptions, Target, Typed, TypedChannel};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

/// Largest part sent as one room message.
pub const PART_SIZE: usize = 4 << 20;
/// Channel carrying the parts.
pub const FILE_CHANNEL: &str = "genos/file";
/// Channel carrying [`Control`] messages.
pub const CONTROL_CHANNEL: &str = "genos/file-control";
/// How long a receiver waits for the next part (and a sender for a receiver's answer to its
/// offer) before giving up.
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
    /// The sender left the room before the file was complete; what came is kept to resume.
    #[error(
        "the sender {0} left before the file was complete; what came is kept, and receiving \
         the same file again resumes from it"
    )]
    SenderLeft(String),
    /// No part came for [`STALL_TIMEOUT`]; what came is kept to resume.
    #[error(
        "the sender {0} sent nothing for {STALL_TIMEOUT:?}; what came is kept, and receiving \
         the same file again resumes from it"
    )]
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

/// What sender and receivers say to each other besides the parts, on [`CONTROL_CHANNEL`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Control {
    /// Sender: this file is coming (each receiver answers with `Have`).
    Offer {
        /// The file's name.
        name: String,
        /// Its size.
        size: u64,
        /// Its SHA-256.
        sha256: [u8; 32],
    },
    /// Receiver: it holds the first `parts` parts of that file from an interrupted transfer
    /// (0: none), whose SHA-256 is `prefix_sha256`.
    Have {
        /// Whole parts held.
        parts: u64,
        /// SHA-256 of those parts' bytes.
        prefix_sha256: [u8; 32],
    },
    /// Sender: parts come from `part` on (the receiver's parts if the sender's file has the
    /// same bytes there, else 0); earlier parts sent for other receivers are skipped.
    Start {
        /// The first part this receiver gets.
        part: u64,
    },
    /// Receiver: stored with a matching digest.
    Stored,
    /// Either side: not going on, and why (a receiver that failed; a sender that gave up on
    /// this receiver).
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
    let (hasher, size) = hash_file(path, u64::MAX).await?;
    Ok((hasher.finalize().into(), size))
}

/// SHA-256 of the first `len` bytes of a file (and the hasher, to go on with); an error if
/// the file is shorter.
async fn digest_prefix(path: &Path, len: u64) -> Result<([u8; 32], Sha256), TransferError> {
    let (hasher, read) = hash_file(path, len).await?;
    if read < len {
        return Err(io(path)(std::io::ErrorKind::UnexpectedEof.into()));
    }
    Ok((hasher.clone().finalize().into(), hasher))
}

/// Hashes a file up to `limit` bytes or its end, in bounded pieces; returns the bytes read.
async fn hash_file(path: &Path, limit: u64) -> Result<(Sha256, u64), TransferError> {
    let mut file = tokio::fs::File::open(path).await.map_err(io(path))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    let mut size = 0u64;
    while size < limit {
        let want =
            usize::try_from(limit - size).map_or(buffer.len(), |left| left.min(buffer.len()));
        let piece = buffer.get_mut(..want).unwrap_or_default();
        let read = file.read(piece).await.map_err(io(path))?;
        if read == 0 {
            break;
        }
        hasher.update(piece.get(..read).unwrap_or_default());
        size += read as u64;
    }
    Ok((hasher, size))
}

/// Sends `path` to `peers` and waits for each one's verdict. `on_progress(bytes sent)`.
/// Each receiver first says which parts it already holds from an interrupted transfer of the
/// same file; those are checked against this file and not sent again. A receiver that fails
/// is dropped and the others go on; the outcome lists each receiver. An error means nobody
/// took the file (or it could not be read).
pub async fn send_file(
    room: &Room,
    path: &Path,
    peers: Vec<PeerId>,
    on_progress: impl Fn(u64),
) -> Result<SendOutcome, TransferError> {
    let control = room.typed_channel::<Control>(CONTROL_CHANNEL)?;
    let (sha256, size) = digest_file(path).await?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".to_owned());
    let channel = room.channel(FILE_CHANNEL)?;
    let mut outcome = SendOutcome::default();
    let mut active = peers;
    let offer = Control::Offer {
        name: name.clone(),
        size,
        sha256,
    };
    for peer in active.clone() {
        if let Err(error) = control.send_to(peer, &offer).await {
            give_up(&control, &mut active, &mut outcome, peer, error.to_string()).await;
        }
    }
    let starts = agree_starts(room, &control, path, size, &mut active, &mut outcome).await?;
    let first = starts.values().copied().min().unwrap_or(0);
    let mut file = tokio::fs::File::open(path).await.map_err(io(path))?;
    let mut sent = first.saturating_mul(PART_SIZE as u64).min(size);
    file.seek(std::io::SeekFrom::Start(sent))
        .await
        .map_err(io(path))?;
    let mut part = first;
    while !active.is_empty() && (sent < size || part == 0) {
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
        let targets: Vec<PeerId> = active
            .iter()
            .filter(|peer| starts.get(*peer).is_some_and(|start| *start <= part))
            .copied()
            .collect();
        let options = SendOptions::default()
            .to(Target::Peers(targets))
            .with_meta(meta);
        let report = channel.send_with(Bytes::from(buffer), options).await?;
        for (peer, error) in report.failed {
            give_up(&control, &mut active, &mut outcome, peer, error.to_string()).await;
        }
        sent += want as u64;
        part += 1;
        on_progress(sent);
    }
    let mut waiting = active;
    while !waiting.is_empty() {
        let Some((from, message)) =
            next_control(room, &control, &mut waiting, &mut outcome).await?
        else {
            continue;
        };
        match message {
            Control::Stored => outcome.stored.push(from),
            Control::Failed(reason) => outcome.failed.push((from, reason)),
            _ => continue,
        }
        waiting.retain(|p| *p != from);
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

/// Collects each receiver's `Have`, checks the parts it holds against our file, and tells it
/// where its parts start. Returns the first part per receiver.
async fn agree_starts(
    room: &Room,
    control: &TypedChannel<Control>,
    path: &Path,
    size: u64,
    active: &mut Vec<PeerId>,
    outcome: &mut SendOutcome,
) -> Result<HashMap<PeerId, u64>, TransferError> {
    let mut starts = HashMap::new();
    let mut prefixes: HashMap<u64, [u8; 32]> = HashMap::new();
    let deadline = tokio::time::Instant::now() + STALL_TIMEOUT;
    let mut waiting = active.clone();
    while !waiting.is_empty() {
        let next =
            tokio::time::timeout_at(deadline, next_control(room, control, &mut waiting, outcome));
        let Ok(next) = next.await else {
            for peer in waiting.clone() {
                let reason = "did not answer the offer".to_owned();
                give_up(control, &mut waiting, outcome, peer, reason).await;
            }
            break;
        };
        let Some((from, message)) = next? else {
            continue;
        };
        let start = match message {
            Control::Have {
                parts,
                prefix_sha256,
            } => {
                let held = parts
                    .checked_mul(PART_SIZE as u64)
                    .filter(|bytes| *bytes < size);
                match held {
                    Some(bytes) if parts > 0 => {
                        let ours = match prefixes.get(&parts) {
                            Some(digest) => *digest,
                            None => {
                                let digest = digest_prefix(path, bytes).await?.0;
                                prefixes.insert(parts, digest);
                                digest
                            }
                        };
                        if ours == prefix_sha256 { parts } else { 0 }
                    }
                    _ => 0,
                }
            }
            Control::Failed(reason) => {
                waiting.retain(|p| *p != from);
                outcome.failed.push((from, reason));
                continue;
            }
            _ => continue,
        };
        waiting.retain(|p| *p != from);
        if let Err(error) = control.send_to(from, &Control::Start { part: start }).await {
            give_up(control, &mut waiting, outcome, from, error.to_string()).await;
            continue;
        }
        starts.insert(from, start);
    }
    active.retain(|peer| starts.contains_key(peer));
    Ok(starts)
}

/// The next control message from one of `waiting`; None after dropping those that left the
/// room (checked every [`PRESENCE_CHECK`]) or for a message from anyone else.
async fn next_control(
    room: &Room,
    control: &TypedChannel<Control>,
    waiting: &mut Vec<PeerId>,
    outcome: &mut SendOutcome,
) -> Result<Option<(PeerId, Control)>, TransferError> {
    tokio::select! {
        message = control.recv() => match message.ok_or(TransferError::Ended)? {
            Ok(message) if waiting.contains(&message.from) => Ok(Some((message.from, message.value))),
            _ => Ok(None),
        },
        () = tokio::time::sleep(PRESENCE_CHECK) => {
            let present = room.peers();
            for peer in waiting.clone() {
                if !present.contains(&peer) {
                    let reason = "left the room before the transfer ended".to_owned();
                    give_up(control, waiting, outcome, peer, reason).await;
                }
            }
            Ok(None)
        }
    }
}

/// Drops `peer` from the transfer, and tells it (if it can still hear) so that it does not
/// wait for parts that will not come.
async fn give_up(
    control: &TypedChannel<Control>,
    active: &mut Vec<PeerId>,
    outcome: &mut SendOutcome,
    peer: PeerId,
    reason: String,
) {
    tracing::warn!(peer = %peer.short(), %reason, "a receiver dropped out of the transfer");
    active.retain(|p| *p != peer);
    let notice = Control::Failed(format!("the sender gave up on this receiver: {reason}"));
    let _ = tokio::time::timeout(PRESENCE_CHECK, control.send_to(peer, &notice)).await;
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
    /// Bytes that were already here from an interrupted transfer, not sent again.
    pub resumed_from: u64,
}

/// The transfer a partial file belongs to, stored beside it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct PartialOf {
    size: u64,
    sha256: [u8; 32],
}

/// Receives one file into `out_dir`, resuming an interrupted transfer of the same file (the
/// partial file and a note of what it is part of are kept beside the destination when a
/// sender goes away). `on_start(header, bytes already here)` once the transfer is agreed,
/// `on_progress(bytes received)` after each part.
pub async fn receive_file(
    room: &Room,
    out_dir: &Path,
    on_start: impl FnOnce(&FileHeader, u64),
    on_progress: impl Fn(u64),
) -> Result<Received, TransferError> {
    let channel = room.channel(FILE_CHANNEL)?;
    let control = room.typed_channel::<Control>(CONTROL_CHANNEL)?;
    let (from, header) = loop {
        let message = control.recv().await.ok_or(TransferError::Ended)?;
        if let Ok(Typed {
            from,
            value: Control::Offer { name, size, sha256 },
            ..
        }) = message
        {
            let header = FileHeader {
                name,
                size,
                sha256,
                part: 0,
            };
            break (from, header);
        }
    };
    let result = receive_offered(
        room,
        &channel,
        &control,
        from,
        &header,
        out_dir,
        on_start,
        on_progress,
    )
    .await;
    let verdict = match &result {
        Ok(_) => Control::Stored,
        Err(error) => Control::Failed(error.to_string()),
    };
    // Best effort: a sender that left cannot hear it, and what happened here stands anyway.
    if let Err(error) = control.send_to(from, &verdict).await {
        tracing::warn!(%error, "the verdict did not reach the sender");
    }
    result
}

/// The next control message from `from` or part (the parts' channel is read only when
/// `parts` is given); an error if `from` left, gave up on us or went quiet.
async fn from_sender(
    room: &Room,
    parts: Option<&Channel>,
    control: &TypedChannel<Control>,
    from: PeerId,
) -> Result<Either, TransferError> {
    let stalled = tokio::time::sleep(STALL_TIMEOUT);
    tokio::pin!(stalled);
    let next_part = async {
        match parts {
            Some(channel) => channel.recv().await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(next_part);
    loop {
        tokio::select! {
            message = &mut next_part => return message.ok_or(TransferError::Ended).map(Either::Part),
            message = control.recv() => match message {
                Some(Ok(message)) if message.from == from => match message.value {
                    Control::Failed(reason) => {
                        return Err(TransferError::Refused { peer: from.short(), reason });
                    }
                    other => return Ok(Either::Control(other)),
                },
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

enum Either {
    Part(Message),
    Control(Control),
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

#[allow(clippy::too_many_arguments)]
async fn receive_offered(
    room: &Room,
    channel: &Channel,
    control: &TypedChannel<Control>,
    from: PeerId,
    header: &FileHeader,
    out_dir: &Path,
    on_start: impl FnOnce(&FileHeader, u64),
    on_progress: impl Fn(u64),
) -> Result<Received, TransferError> {
    let name = safe_name(&header.name);
    let final_path = out_dir.join(&name);
    let temp_path = out_dir.join(format!(".{name}.genos-part"));
    let note_path = out_dir.join(format!(".{name}.genos-part.of"));
    let this = PartialOf {
        size: header.size,
        sha256: header.sha256,
    };
    // What an interrupted transfer of the same file left here: whole parts, and their digest.
    let held = match tokio::fs::read(&note_path).await {
        Ok(note) if postcard::from_bytes::<PartialOf>(&note).ok() == Some(this.clone()) => {
            let len = tokio::fs::metadata(&temp_path)
                .await
                .map_or(0, |meta| meta.len());
            (len.min(header.size.saturating_sub(1)) / PART_SIZE as u64) * PART_SIZE as u64
        }
        _ => 0,
    };
    let (prefix_sha256, prefix_hasher) = if held > 0 {
        digest_prefix(&temp_path, held).await?
    } else {
        ([0; 32], Sha256::new())
    };
    let parts = held / PART_SIZE as u64;
    control
        .send_to(
            from,
            &Control::Have {
                parts,
                prefix_sha256,
            },
        )
        .await?;
    let start = loop {
        if let Either::Control(Control::Start { part }) =
            from_sender(room, None, control, from).await?
        {
            break part;
        }
    };
    // The sender resumes where we are or starts over; the hasher follows from which.
    let hasher = match start {
        0 => Sha256::new(),
        _ if start == parts => prefix_hasher,
        _ => {
            return Err(TransferError::Invalid {
                from: from.short(),
                reason: format!("told to start at part {start}, holding {parts}"),
            });
        }
    };
    let resumed_from = start * PART_SIZE as u64;
    on_start(header, resumed_from);
    let note = postcard::to_stdvec(&this).map_err(|e| RoomError::Encode(e.to_string()))?;
    tokio::fs::write(&note_path, note)
        .await
        .map_err(io(&note_path))?;
    let mut file = tokio::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .open(&temp_path)
        .await
        .map_err(io(&temp_path))?;
    file.set_len(resumed_from).await.map_err(io(&temp_path))?;
    file.seek(std::io::SeekFrom::Start(resumed_from))
        .await
        .map_err(io(&temp_path))?;
    let outcome = async {
        let mut hasher = hasher;
        let mut received = resumed_from;
        let mut part = start;
        while received < header.size || (header.size == 0 && part == 0) {
            let Either::Part(message) = from_sender(room, Some(channel), control, from).await?
            else {
                continue;
            };
            let this = header_of(&message)?;
            if this.part < start && message.from == from {
                continue; // sent for a receiver that holds less
            }
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
            part += 1;
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
            let _ = tokio::fs::remove_file(&note_path).await;
            Ok(Received {
                path: final_path,
                size: header.size,
                from,
                resumed_from,
            })
        }
        // The sender went away: keep what came, to resume from.
        Err(
            error @ (TransferError::SenderLeft(_)
            | TransferError::Stalled(_)
            | TransferError::Refused { .. }
            | TransferError::Ended),
        ) => Err(error),
        Err(error) => {
            let _ = tokio::fs::remove_file(&temp_path).await;
            let _ = tokio::fs::remove_file(&note_path).await;
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
