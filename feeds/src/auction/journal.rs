//! The auction's journal: an append-only file of length-prefixed, checksummed records, made durable with one
//! `fsync` per group of records (group commit).
//!
//! Frame: `len: u32 LE` (payload bytes), `crc: u32 LE` (CRC-32 of the payload), payload. Readers stop at the
//! first frame that is incomplete, too long or fails its checksum. When nothing valid follows it, that is a torn
//! write from a crash in the middle of an append (the only way the end of the file can be wrong, since every
//! group of frames is written after the previous one was synced): [`Journal::open`] truncates the file there, so
//! the next append starts on a clean boundary and a torn record is dropped, never misread. When a valid frame
//! follows the bad one, the damage is in the middle (a flipped bit, a bad sector): the records after it were
//! acknowledged, so `open` refuses with [`Damaged`] and leaves the file as it is; the operator decides (see
//! `docs/AUCTION.md`, "Journal damage").
//!
//! ## Capacity
//! One payload is 1 to [`MAX_RECORD`] bytes; a larger length field, or a length of 0, is read as a torn frame.
//!
//! ```
//! use marquee_feeds::auction::journal::{decode_frames, encode_frame};
//! let mut file = Vec::new();
//! encode_frame(&mut file, b"first");
//! encode_frame(&mut file, b"second");
//! let whole = file.len();
//! file.truncate(whole - 2); // a crash in the middle of the second append
//! let (records, valid_len) = decode_frames(&file);
//! assert_eq!(records, [b"first".as_slice()]);
//! assert_eq!(valid_len, 4 + 4 + 5);
//! ```

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Largest payload of one record.
pub const MAX_RECORD: usize = 1 << 20;
const FRAME_HEADER: usize = 8;

/// Appends one frame holding `payload` to `out`.
pub fn encode_frame(out: &mut Vec<u8>, payload: &[u8]) {
    debug_assert!(!payload.is_empty() && payload.len() <= MAX_RECORD);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
}

/// The payload of the frame at `at`, if one is whole there and passes its checks. A payload is never empty: eight
/// zero bytes (a length of 0 and the CRC-32 of nothing) are what a crash can leave in a file's unwritten tail, not
/// a record.
fn frame_at(bytes: &[u8], at: usize) -> Option<&[u8]> {
    let h = bytes.get(at..at + FRAME_HEADER)?;
    let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize;
    let crc = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
    if len == 0 || len > MAX_RECORD {
        return None;
    }
    bytes.get(at + FRAME_HEADER..at + FRAME_HEADER + len).filter(|p| crc32fast::hash(p) == crc)
}

/// Splits `bytes` into the payloads of its valid frames; also returns how many leading bytes they cover (the
/// length to truncate a file to).
pub fn decode_frames(bytes: &[u8]) -> (Vec<&[u8]>, usize) {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(payload) = frame_at(bytes, at) {
        out.push(payload);
        at += FRAME_HEADER + payload.len();
    }
    (out, at)
}

/// The first valid frame ([`frame_at`]) at or after `from`.
fn next_valid_frame(bytes: &[u8], from: usize) -> Option<usize> {
    (from..bytes.len()).find(|&at| frame_at(bytes, at).is_some())
}

/// A journal damaged before its end: valid records follow a frame that fails its checks. Its `Display` says
/// where and how to go on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damaged {
    /// The journal file.
    pub path: PathBuf,
    /// Byte offset of the first bad frame (the length of the good part before it).
    pub offset: u64,
    /// Valid records before the damage.
    pub records_before: usize,
    /// Byte offset of the first valid frame after the damage.
    pub resumes_at: u64,
    /// Valid records from there on (up to the next damage, if any).
    pub records_after: usize,
}

impl std::fmt::Display for Damaged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let p = self.path.display();
        write!(
            f,
            "journal {p} is damaged at byte {}: the frame there fails its length or checksum check, yet {} valid \
             records follow from byte {} (after {} good records before the damage). Marquee does not drop \
             acknowledged records on its own. Keep a copy of the file (cp {p} {p}.damaged), then either restore the \
             data directory from a backup, or start from the records before the damage by cutting the file there \
             (truncate -s {} {p}; the {} records after it are lost). See docs/AUCTION.md, \"Journal damage\".",
            self.offset, self.records_after, self.resumes_at, self.records_before, self.offset, self.records_after
        )
    }
}

impl std::error::Error for Damaged {}

/// An open journal positioned at its end.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: File,
    /// Frames appended since the last commit.
    pending: Vec<u8>,
    n_pending: usize,
}

/// What [`Journal::open`] found.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Payloads of every valid record, in order.
    pub records: Vec<Vec<u8>>,
    /// Bytes of a torn tail that were cut off (0 after a clean stop).
    pub dropped_bytes: u64,
}

impl Journal {
    /// Opens (or creates) the journal at `path`, reads every valid record and cuts off a torn tail. A journal
    /// damaged before its end is refused with an [`io::ErrorKind::InvalidData`] error wrapping [`Damaged`], and
    /// left untouched.
    pub fn open(path: &Path) -> io::Result<(Journal, Recovered)> {
        let existed = path.exists();
        let mut file = OpenOptions::new().read(true).append(true).create(true).open(path)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let (records, valid_len) = decode_frames(&bytes);
        if valid_len < bytes.len()
            && let Some(resumes_at) = next_valid_frame(&bytes, valid_len + 1)
        {
            let damaged = Damaged {
                path: path.to_owned(),
                offset: valid_len as u64,
                records_before: records.len(),
                resumes_at: resumes_at as u64,
                records_after: decode_frames(&bytes[resumes_at..]).0.len(),
            };
            return Err(io::Error::new(io::ErrorKind::InvalidData, damaged));
        }
        let recovered = Recovered {
            records: records.into_iter().map(<[u8]>::to_vec).collect(),
            dropped_bytes: (bytes.len() - valid_len) as u64,
        };
        if valid_len < bytes.len() {
            file.set_len(valid_len as u64)?;
            file.sync_all()?;
        }
        file.seek(SeekFrom::End(0))?;
        if !existed {
            file.sync_all()?;
            // The new file's directory entry must be durable too.
            if let Some(dir) = path.parent() {
                File::open(dir)?.sync_all()?;
            }
        }
        Ok((Journal { path: path.to_owned(), file, pending: Vec::new(), n_pending: 0 }, recovered))
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Adds a record to the next commit.
    pub fn append(&mut self, payload: &[u8]) {
        encode_frame(&mut self.pending, payload);
        self.n_pending += 1;
    }

    /// Records appended and not committed yet.
    pub fn n_pending(&self) -> usize {
        self.n_pending
    }

    /// Writes every pending record with one write and makes them durable with one `fdatasync`. On error the
    /// pending records are dropped and the file may hold part of them: the caller must stop using the journal
    /// (a reopen cuts the torn part off).
    pub fn commit(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let r = self.file.write_all(&self.pending).and_then(|()| self.file.sync_data());
        self.pending.clear();
        self.n_pending = 0;
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("marquee-journal-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn journal_torn_last_record_is_dropped_at_every_cut() {
        let dir = temp_dir("torn");
        let path = dir.join("j.log");
        let payloads: [&[u8]; 3] = [b"{\"a\":1}", b"2", b"{\"last\":\"record, long enough\"}"];
        let mut whole = Vec::new();
        let mut last_start = 0;
        for p in payloads {
            last_start = whole.len();
            encode_frame(&mut whole, p);
        }
        for cut in last_start..whole.len() {
            std::fs::write(&path, &whole[..cut]).unwrap();
            let (mut j, rec) = Journal::open(&path).unwrap();
            assert_eq!(rec.records, [payloads[0].to_vec(), payloads[1].to_vec()], "cut at {cut}");
            assert_eq!(rec.dropped_bytes, (cut - last_start) as u64, "cut at {cut}");
            assert_eq!(std::fs::metadata(&path).unwrap().len(), last_start as u64, "truncated at {cut}");
            // The next append lands on a clean boundary.
            j.append(b"after");
            j.commit().unwrap();
            drop(j);
            let (_, rec) = Journal::open(&path).unwrap();
            assert_eq!(rec.records.last().unwrap(), b"after", "cut at {cut}");
            assert_eq!(rec.records.len(), 3);
        }
        std::fs::write(&path, &whole).unwrap();
        let (_, rec) = Journal::open(&path).unwrap();
        assert_eq!(rec.records.len(), 3);
        assert_eq!(rec.dropped_bytes, 0);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn journal_flipped_bit_in_last_record_is_dropped() {
        let mut whole = Vec::new();
        encode_frame(&mut whole, b"one");
        let start = whole.len();
        encode_frame(&mut whole, b"two");
        for i in start..whole.len() {
            let mut bad = whole.clone();
            bad[i] ^= 0x10;
            let (recs, valid) = decode_frames(&bad);
            assert_eq!((recs, valid), (vec![b"one".as_slice()], start), "byte {i}");
        }
    }

    /// A flipped byte anywhere before the last record stops the open with the offset, and leaves the file as it
    /// was; the same damage in the last record is a torn tail and is cut.
    #[test]
    fn journal_damage_before_the_last_record_is_refused_never_truncated() {
        let dir = temp_dir("damaged");
        let path = dir.join("j.log");
        let mut whole = Vec::new();
        let mut starts = Vec::new();
        for i in 0..50 {
            starts.push(whole.len());
            encode_frame(&mut whole, format!("{{\"bid\":{i},\"amount\":\"100.00\"}}").as_bytes());
        }
        let last = *starts.last().unwrap();
        for i in (0..last).step_by(7) {
            let mut bad = whole.clone();
            bad[i] ^= 0x01;
            std::fs::write(&path, &bad).unwrap();
            let err = Journal::open(&path).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData, "byte {i}");
            let damaged = err.get_ref().and_then(|e| e.downcast_ref::<Damaged>()).expect("a Damaged error");
            let record = starts.iter().rposition(|&s| s <= i).unwrap();
            assert_eq!(damaged.offset, starts[record] as u64, "byte {i}");
            assert_eq!(damaged.records_before, record, "byte {i}");
            assert_eq!(damaged.records_after, 49 - record, "byte {i}");
            assert!(err.to_string().contains(&format!("truncate -s {} ", starts[record])), "{err}");
            assert_eq!(std::fs::read(&path).unwrap(), bad, "the file is left as it was (byte {i})");
        }
        let mut bad = whole.clone();
        bad[last + 9] ^= 0x01;
        std::fs::write(&path, &bad).unwrap();
        let (_, rec) = Journal::open(&path).unwrap();
        assert_eq!(rec.records.len(), 49);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), last as u64);
        // A crash can leave zeros where the last group of frames should be: still a torn tail.
        let mut zeros = whole.clone();
        zeros.extend_from_slice(&[0; 4096]);
        std::fs::write(&path, &zeros).unwrap();
        let (_, rec) = Journal::open(&path).unwrap();
        assert_eq!((rec.records.len(), rec.dropped_bytes), (50, 4096));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn journal_group_commit_appends_many_records_in_one_write() {
        let dir = temp_dir("group");
        let path = dir.join("j.log");
        let (mut j, rec) = Journal::open(&path).unwrap();
        assert!(rec.records.is_empty());
        for i in 0..100 {
            j.append(format!("r{i}").as_bytes());
        }
        assert_eq!(j.n_pending(), 100);
        j.commit().unwrap();
        assert_eq!(j.n_pending(), 0);
        drop(j);
        let (_, rec) = Journal::open(&path).unwrap();
        assert_eq!(rec.records.len(), 100);
        assert_eq!(rec.records[99], b"r99");
        let _ = std::fs::remove_dir_all(&dir);
    }

    proptest::proptest! {
        /// Whatever bytes a journal holds, reading it never panics and never returns more than it holds.
        #[test]
        fn journal_decoder_survives_arbitrary_bytes(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let (recs, valid) = decode_frames(&bytes);
            proptest::prop_assert!(valid <= bytes.len());
            proptest::prop_assert_eq!(recs.iter().map(|r| r.len() + FRAME_HEADER).sum::<usize>(), valid);
        }
    }
}
