//! Encoded media files: IVF (VP8) and Ogg (Opus), read as [`Sample`]s and written from
//! [`ReceivedSample`]s. No decoding: a sample is one encoded frame or Opus packet.
//!
//! Readers refuse what they cannot trust with a typed [`MediaFileError`] and never allocate
//! more than [`MAX_SAMPLE_SIZE`] for one sample. Sample durations come from the file's
//! timestamps (IVF) or from each Opus packet's table-of-contents byte (Ogg), so a sender can
//! pace a file in real time.

use std::fs::File;
use std::io::{BufReader, BufWriter, ErrorKind, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;

use super::{Codec, MAX_SAMPLE_SIZE, ReceivedSample, Sample};

/// Why a media file could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MediaFileError {
    /// The file system said no.
    #[error("media file I/O: {0}")]
    Io(#[from] std::io::Error),
    /// Neither IVF nor Ogg.
    #[error("not an IVF or Ogg file")]
    UnknownFormat,
    /// A format genos does not carry (only VP8 in IVF, only Opus in Ogg).
    #[error("unsupported media: {0}")]
    Unsupported(String),
    /// The file is damaged or truncated mid-structure.
    #[error("malformed media file: {0}")]
    Malformed(String),
    /// One sample is larger than [`MAX_SAMPLE_SIZE`].
    #[error("a sample of {size} bytes exceeds {MAX_SAMPLE_SIZE} bytes")]
    TooLarge {
        /// The sample's size.
        size: usize,
    },
}

fn malformed(what: impl Into<String>) -> MediaFileError {
    MediaFileError::Malformed(what.into())
}

const IVF_SIGNATURE: &[u8; 4] = b"DKIF";
const IVF_HEADER_LEN: usize = 32;
const OGG_SIGNATURE: &[u8; 4] = b"OggS";
const OPUS_HEAD: &[u8; 8] = b"OpusHead";
const OPUS_TAGS: &[u8; 8] = b"OpusTags";

/// Reads the samples of an IVF (VP8) or Ogg (Opus) file in order.
pub struct MediaReader {
    codec: Codec,
    source: Source,
}

enum Source {
    Ivf(IvfReader),
    Ogg(OggReader),
}

impl std::fmt::Debug for MediaReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediaReader")
            .field("codec", &self.codec)
            .finish_non_exhaustive()
    }
}

impl MediaReader {
    /// Opens `path`, telling the format from its first bytes.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, MediaFileError> {
        let mut input = BufReader::new(File::open(path)?);
        let mut magic = [0u8; 4];
        input.read_exact(&mut magic).map_err(eof_as_format)?;
        if &magic == IVF_SIGNATURE {
            let ivf = IvfReader::start(input)?;
            Ok(Self {
                codec: Codec::Vp8,
                source: Source::Ivf(ivf),
            })
        } else if &magic == OGG_SIGNATURE {
            let ogg = OggReader::start(input)?;
            Ok(Self {
                codec: Codec::Opus,
                source: Source::Ogg(ogg),
            })
        } else {
            Err(MediaFileError::UnknownFormat)
        }
    }

    /// The codec of the file's samples.
    pub fn codec(&self) -> Codec {
        self.codec
    }

    /// The next sample; `None` at the end of the file.
    pub fn next_sample(&mut self) -> Result<Option<Sample>, MediaFileError> {
        match &mut self.source {
            Source::Ivf(ivf) => ivf.next_sample(),
            Source::Ogg(ogg) => ogg.next_sample(),
        }
    }
}

fn eof_as_format(error: std::io::Error) -> MediaFileError {
    if error.kind() == ErrorKind::UnexpectedEof {
        MediaFileError::UnknownFormat
    } else {
        MediaFileError::Io(error)
    }
}

fn eof_as_truncated(error: std::io::Error) -> MediaFileError {
    if error.kind() == ErrorKind::UnexpectedEof {
        malformed("truncated")
    } else {
        MediaFileError::Io(error)
    }
}

fn le_u16(bytes: &[u8], at: usize) -> u16 {
    let mut word = [0u8; 2];
    if let Some(slice) = bytes.get(at..at + 2) {
        word.copy_from_slice(slice);
    }
    u16::from_le_bytes(word)
}

fn le_u32(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    if let Some(slice) = bytes.get(at..at + 4) {
        word.copy_from_slice(slice);
    }
    u32::from_le_bytes(word)
}

fn le_u64(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    if let Some(slice) = bytes.get(at..at + 8) {
        word.copy_from_slice(slice);
    }
    u64::from_le_bytes(word)
}

struct IvfReader {
    input: BufReader<File>,
    /// Seconds per timestamp unit: numerator / denominator.
    timebase: (u32, u32),
    /// The next frame, read ahead to know the current one's duration.
    ahead: Option<(u64, Bytes)>,
}

impl IvfReader {
    fn start(mut input: BufReader<File>) -> Result<Self, MediaFileError> {
        let mut header = [0u8; IVF_HEADER_LEN];
        input
            .read_exact(&mut header[4..])
            .map_err(eof_as_truncated)?;
        let header_len = usize::from(le_u16(&header, 6));
        if header.get(8..12) != Some(b"VP80") {
            let fourcc = String::from_utf8_lossy(header.get(8..12).unwrap_or_default());
            return Err(MediaFileError::Unsupported(format!("IVF with {fourcc}")));
        }
        let (denominator, numerator) = (le_u32(&header, 16), le_u32(&header, 20));
        if numerator == 0 || denominator == 0 {
            return Err(malformed("IVF timebase of zero"));
        }
        if header_len > IVF_HEADER_LEN {
            let skip = (header_len - IVF_HEADER_LEN) as u64;
            input.seek(SeekFrom::Current(skip as i64))?;
        }
        let mut reader = Self {
            input,
            timebase: (numerator, denominator),
            ahead: None,
        };
        reader.ahead = reader.read_frame()?;
        Ok(reader)
    }

    fn read_frame(&mut self) -> Result<Option<(u64, Bytes)>, MediaFileError> {
        let mut header = [0u8; 12];
        match self.input.read_exact(&mut header) {
            Ok(()) => {}
            Err(error) if error.kind() == ErrorKind::UnexpectedEof => return Ok(None),
            Err(error) => return Err(error.into()),
        }
        let size = le_u32(&header, 0) as usize;
        if size > MAX_SAMPLE_SIZE {
            return Err(MediaFileError::TooLarge { size });
        }
        let mut frame = vec![0u8; size];
        self.input
            .read_exact(&mut frame)
            .map_err(eof_as_truncated)?;
        Ok(Some((le_u64(&header, 4), Bytes::from(frame))))
    }

    fn ticks_to_duration(&self, ticks: u64) -> Duration {
        let (numerator, denominator) = self.timebase;
        let nanos =
            u128::from(ticks) * u128::from(numerator) * 1_000_000_000 / u128::from(denominator);
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    fn next_sample(&mut self) -> Result<Option<Sample>, MediaFileError> {
        let Some((timestamp, data)) = self.ahead.take() else {
            return Ok(None);
        };
        self.ahead = self.read_frame()?;
        // A frame lasts until the next one starts; the last one lasts one timebase unit.
        let ticks = match &self.ahead {
            Some((next, _)) => next.saturating_sub(timestamp).max(1),
            None => 1,
        };
        Ok(Some(Sample::new(data, self.ticks_to_duration(ticks))))
    }
}

struct OggReader {
    input: BufReader<File>,
    /// Opus packets of the current page not yet returned.
    packets: std::collections::VecDeque<Bytes>,
    /// A packet continued on the next page.
    partial: Vec<u8>,
    ended: bool,
}

impl OggReader {
    fn start(input: BufReader<File>) -> Result<Self, MediaFileError> {
        let mut reader = Self {
            input,
            packets: std::collections::VecDeque::new(),
            partial: Vec::new(),
            ended: false,
        };
        // The signature of the first page was consumed by the format check.
        reader.read_page(true)?;
        let head = reader
            .packets
            .pop_front()
            .ok_or_else(|| malformed("no OpusHead"))?;
        if !head.starts_with(OPUS_HEAD) {
            return Err(MediaFileError::Unsupported(
                "an Ogg stream that is not Opus".into(),
            ));
        }
        // The comment header follows (it may span pages); skip it.
        loop {
            if let Some(tags) = reader.packets.pop_front() {
                if !tags.starts_with(OPUS_TAGS) {
                    return Err(malformed("no OpusTags after OpusHead"));
                }
                break;
            }
            if !reader.read_page(false)? {
                return Err(malformed("no OpusTags"));
            }
        }
        Ok(reader)
    }

    /// Reads one page into `packets`; false at the end of the file.
    fn read_page(&mut self, signature_read: bool) -> Result<bool, MediaFileError> {
        let mut header = [0u8; 27];
        let from = if signature_read {
            header[..4].copy_from_slice(OGG_SIGNATURE);
            4
        } else {
            0
        };
        match self
            .input
            .read_exact(header.get_mut(from..).unwrap_or_default())
        {
            Ok(()) => {}
            Err(error) if error.kind() == ErrorKind::UnexpectedEof && from == 0 => {
                return Ok(false);
            }
            Err(error) => return Err(eof_as_truncated(error)),
        }
        if header.get(..4) != Some(&OGG_SIGNATURE[..]) {
            return Err(malformed("lost page sync"));
        }
        let segments = usize::from(header[26]);
        let mut table = vec![0u8; segments];
        self.input
            .read_exact(&mut table)
            .map_err(eof_as_truncated)?;
        let mut body = vec![0u8; table.iter().map(|s| usize::from(*s)).sum()];
        self.input.read_exact(&mut body).map_err(eof_as_truncated)?;
        if ogg_crc(&header, &table, &body) != le_u32(&header, 22) {
            return Err(malformed("page checksum mismatch"));
        }
        let mut at = 0;
        for lace in table {
            let lace = usize::from(lace);
            let piece = body.get(at..at + lace).unwrap_or_default();
            at += lace;
            if self.partial.len() + piece.len() > MAX_SAMPLE_SIZE {
                return Err(MediaFileError::TooLarge {
                    size: self.partial.len() + piece.len(),
                });
            }
            self.partial.extend_from_slice(piece);
            if lace < 255 {
                self.packets
                    .push_back(Bytes::from(std::mem::take(&mut self.partial)));
            }
        }
        if header[5] & 0x04 != 0 {
            self.ended = true;
        }
        Ok(true)
    }

    fn next_sample(&mut self) -> Result<Option<Sample>, MediaFileError> {
        loop {
            if let Some(packet) = self.packets.pop_front() {
                if packet.is_empty() {
                    // Nothing to play (e.g. the end-of-stream page of our writer).
                    continue;
                }
                let duration = opus_packet_duration(&packet)
                    .ok_or_else(|| malformed("an Opus packet without a valid TOC"))?;
                return Ok(Some(Sample::new(packet, duration)));
            }
            if self.ended || !self.read_page(false)? {
                return Ok(None);
            }
        }
    }
}

/// How long an Opus packet plays, from its table-of-contents byte (RFC 6716 §3.1).
pub fn opus_packet_duration(packet: &[u8]) -> Option<Duration> {
    let toc = *packet.first()?;
    let config = toc >> 3;
    let frame_micros: u64 = match config {
        // SILK: 10, 20, 40, 60 ms.
        0..=11 => match config % 4 {
            0 => 10_000,
            1 => 20_000,
            2 => 40_000,
            _ => 60_000,
        },
        // Hybrid: 10, 20 ms.
        12..=15 if config % 2 == 0 => 10_000,
        12..=15 => 20_000,
        // CELT: 2.5, 5, 10, 20 ms.
        _ => match config % 4 {
            0 => 2_500,
            1 => 5_000,
            2 => 10_000,
            _ => 20_000,
        },
    };
    let frames: u64 = match toc & 0x03 {
        0 => 1,
        1 | 2 => 2,
        _ => u64::from(*packet.get(1)? & 0x3f),
    };
    if frames == 0 {
        return None;
    }
    Some(Duration::from_micros(frame_micros * frames))
}

/// CRC-32 of an Ogg page (polynomial 0x04c11db7, no reflection), its checksum field as zero.
fn ogg_crc(header: &[u8; 27], table: &[u8], body: &[u8]) -> u32 {
    let mut crc = 0u32;
    let mut feed = |byte: u8| {
        crc ^= u32::from(byte) << 24;
        for _ in 0..8 {
            crc = if crc & 0x8000_0000 != 0 {
                (crc << 1) ^ 0x04c1_1db7
            } else {
                crc << 1
            };
        }
    };
    for (index, byte) in header.iter().enumerate() {
        feed(if (22..26).contains(&index) { 0 } else { *byte });
    }
    table.iter().chain(body).for_each(|byte| feed(*byte));
    crc
}

/// Writes received samples to an IVF (VP8) or Ogg (Opus) file. Call
/// [`MediaWriter::finish`] at the end (it fixes up the frame count and flushes).
pub struct MediaWriter {
    codec: Codec,
    output: BufWriter<File>,
    frames: u32,
    /// RTP timestamp of the first sample: file timestamps start at zero.
    first_timestamp: Option<u32>,
    /// (Ogg) page sequence and the stream's serial number.
    page: u32,
    serial: u32,
    granule: u64,
}

impl std::fmt::Debug for MediaWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediaWriter")
            .field("codec", &self.codec)
            .field("frames", &self.frames)
            .finish_non_exhaustive()
    }
}

impl MediaWriter {
    /// Creates `path` for samples of `codec`: VP8 as IVF, Opus as Ogg.
    pub fn create(path: impl AsRef<Path>, codec: Codec) -> Result<Self, MediaFileError> {
        let mut writer = Self {
            codec,
            output: BufWriter::new(File::create(path)?),
            frames: 0,
            first_timestamp: None,
            page: 0,
            serial: rand::random(),
            granule: 0,
        };
        match codec {
            Codec::Vp8 => {
                let mut header = [0u8; IVF_HEADER_LEN];
                header[..4].copy_from_slice(IVF_SIGNATURE);
                header[6..8].copy_from_slice(&(IVF_HEADER_LEN as u16).to_le_bytes());
                header[8..12].copy_from_slice(b"VP80");
                header[12..14].copy_from_slice(&640u16.to_le_bytes());
                header[14..16].copy_from_slice(&480u16.to_le_bytes());
                // Timebase 1/90000: RTP timestamps as they are.
                header[16..20].copy_from_slice(&90_000u32.to_le_bytes());
                header[20..24].copy_from_slice(&1u32.to_le_bytes());
                writer.output.write_all(&header)?;
            }
            _ => {
                let mut head = Vec::with_capacity(19);
                head.extend_from_slice(OPUS_HEAD);
                head.extend_from_slice(&[1, 2]); // version, channels
                head.extend_from_slice(&312u16.to_le_bytes()); // pre-skip
                head.extend_from_slice(&48_000u32.to_le_bytes());
                head.extend_from_slice(&[0, 0, 0]); // gain, mapping family
                writer.write_page(&head, 0x02, 0)?;
                let mut tags = Vec::new();
                tags.extend_from_slice(OPUS_TAGS);
                tags.extend_from_slice(&5u32.to_le_bytes());
                tags.extend_from_slice(b"genos");
                tags.extend_from_slice(&0u32.to_le_bytes());
                writer.write_page(&tags, 0x00, 0)?;
            }
        }
        Ok(writer)
    }

    /// Frames written so far.
    pub fn frames(&self) -> u32 {
        self.frames
    }

    /// Appends one received sample.
    pub fn write_sample(&mut self, sample: &ReceivedSample) -> Result<(), MediaFileError> {
        self.write_frame(&sample.data, sample.rtp_timestamp)
    }

    /// Appends one encoded frame (VP8) or packet (Opus) with its RTP timestamp (the first
    /// one written becomes time zero; IVF keeps the 90 kHz timestamps).
    pub fn write_frame(&mut self, data: &[u8], rtp_timestamp: u32) -> Result<(), MediaFileError> {
        if data.len() > MAX_SAMPLE_SIZE {
            return Err(MediaFileError::TooLarge { size: data.len() });
        }
        let first = *self.first_timestamp.get_or_insert(rtp_timestamp);
        let timestamp = rtp_timestamp.wrapping_sub(first);
        match self.codec {
            Codec::Vp8 => {
                self.output.write_all(&(data.len() as u32).to_le_bytes())?;
                self.output.write_all(&u64::from(timestamp).to_le_bytes())?;
                self.output.write_all(data)?;
            }
            _ => {
                let duration = opus_packet_duration(data).unwrap_or_default();
                self.granule += u64::from(Codec::Opus.ticks(duration));
                self.write_page(data, 0x00, self.granule)?;
            }
        }
        self.frames += 1;
        Ok(())
    }

    fn write_page(&mut self, packet: &[u8], flags: u8, granule: u64) -> Result<(), MediaFileError> {
        // One packet per page: 255-byte laces, then the remainder (0 if a multiple of 255).
        let laces = packet.len() / 255 + 1;
        if laces > 255 {
            return Err(MediaFileError::TooLarge { size: packet.len() });
        }
        let mut table = vec![255u8; laces - 1];
        table.push((packet.len() % 255) as u8);
        let mut header = [0u8; 27];
        header[..4].copy_from_slice(OGG_SIGNATURE);
        header[5] = flags;
        header[6..14].copy_from_slice(&granule.to_le_bytes());
        header[14..18].copy_from_slice(&self.serial.to_le_bytes());
        header[18..22].copy_from_slice(&self.page.to_le_bytes());
        header[26] = laces as u8;
        let crc = ogg_crc(&header, &table, packet);
        header[22..26].copy_from_slice(&crc.to_le_bytes());
        self.output.write_all(&header)?;
        self.output.write_all(&table)?;
        self.output.write_all(packet)?;
        self.page += 1;
        Ok(())
    }

    /// Finishes the file: the frame count (IVF) or an end-of-stream page (Ogg), then a flush.
    pub fn finish(mut self) -> Result<(), MediaFileError> {
        match self.codec {
            Codec::Vp8 => {
                self.output.seek(SeekFrom::Start(24))?;
                self.output.write_all(&self.frames.to_le_bytes())?;
            }
            _ => {
                let granule = self.granule;
                self.write_page(&[], 0x04, granule)?;
            }
        }
        self.output.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn received(data: &[u8], rtp_timestamp: u32) -> ReceivedSample {
        ReceivedSample {
            data: Bytes::copy_from_slice(data),
            rtp_timestamp,
            lost_before: 0,
        }
    }

    #[test]
    fn ivf_and_ogg_files_round_trip_samples_and_durations() {
        let dir = std::env::temp_dir().join(format!("genos-files-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        // VP8: frames of several sizes, 3000 ticks (33.3 ms) apart.
        let video = dir.join("v.ivf");
        let mut writer = MediaWriter::create(&video, Codec::Vp8).unwrap();
        let frames: Vec<Vec<u8>> = (0..5u8)
            .map(|n| vec![n; 100 + 300 * usize::from(n)])
            .collect();
        for (n, frame) in frames.iter().enumerate() {
            writer
                .write_sample(&received(
                    frame,
                    (u32::MAX - 2999).wrapping_add(3000 * n as u32),
                ))
                .unwrap();
        }
        writer.finish().unwrap();
        let mut reader = MediaReader::open(&video).unwrap();
        assert_eq!(reader.codec(), Codec::Vp8);
        for frame in &frames[..4] {
            let sample = reader.next_sample().unwrap().unwrap();
            assert_eq!(&sample.data[..], &frame[..]);
            assert_eq!(sample.duration.as_micros(), 33_333);
        }
        assert_eq!(
            &reader.next_sample().unwrap().unwrap().data[..],
            &frames[4][..]
        );
        assert!(reader.next_sample().unwrap().is_none());
        // Opus: TOC 0x78 = config 15 (20 ms), one frame; one packet over 255 bytes.
        let audio = dir.join("a.ogg");
        let mut writer = MediaWriter::create(&audio, Codec::Opus).unwrap();
        let packets: Vec<Vec<u8>> = [3usize, 255, 600, 40]
            .iter()
            .map(|len| {
                let mut packet = vec![0x78];
                packet.resize(*len, 7);
                packet
            })
            .collect();
        for (n, packet) in packets.iter().enumerate() {
            writer
                .write_sample(&received(packet, 960 * n as u32))
                .unwrap();
        }
        writer.finish().unwrap();
        let mut reader = MediaReader::open(&audio).unwrap();
        assert_eq!(reader.codec(), Codec::Opus);
        for packet in &packets {
            let sample = reader.next_sample().unwrap().unwrap();
            assert_eq!(&sample.data[..], &packet[..]);
            assert_eq!(sample.duration, Duration::from_millis(20));
        }
        assert!(reader.next_sample().unwrap().is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn damaged_files_are_typed_errors() {
        let dir = std::env::temp_dir().join(format!("genos-bad-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("x");
        std::fs::write(&path, b"RIFF....").unwrap();
        assert!(matches!(
            MediaReader::open(&path),
            Err(MediaFileError::UnknownFormat)
        ));
        let mut ivf = vec![0u8; 32];
        ivf[..4].copy_from_slice(b"DKIF");
        ivf[8..12].copy_from_slice(b"VP90");
        std::fs::write(&path, &ivf).unwrap();
        assert!(matches!(
            MediaReader::open(&path),
            Err(MediaFileError::Unsupported(_))
        ));
        ivf[8..12].copy_from_slice(b"VP80");
        ivf[16..20].copy_from_slice(&30u32.to_le_bytes());
        ivf[20..24].copy_from_slice(&1u32.to_le_bytes());
        // A frame header claiming 4 GiB.
        ivf.extend_from_slice(&u32::MAX.to_le_bytes());
        ivf.extend_from_slice(&0u64.to_le_bytes());
        std::fs::write(&path, &ivf).unwrap();
        assert!(matches!(
            MediaReader::open(&path),
            Err(MediaFileError::TooLarge { .. })
        ));
        // An Ogg page with a broken checksum.
        let ogg = dir.join("a.ogg");
        let mut writer = MediaWriter::create(&ogg, Codec::Opus).unwrap();
        writer.write_sample(&received(&[0x78, 1, 2], 0)).unwrap();
        writer.finish().unwrap();
        let mut bytes = std::fs::read(&ogg).unwrap();
        let last = bytes.len() - 30;
        bytes[last] ^= 0xff;
        std::fs::write(&ogg, &bytes).unwrap();
        let mut reader = MediaReader::open(&ogg).unwrap();
        assert!(matches!(
            reader.next_sample(),
            Err(MediaFileError::Malformed(_))
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
