//! The auction's journal: an append-only file of length-prefixed, checksummed records, made durable with one
//! `fsync` per group of records (group commit).
//!
//! Frame: `len: u32 LE` (payload bytes), `crc: u32 LE` (CRC-32 of the payload), payload. Readers stop at the
//! first frame that is incomplete, too long or fails its checksum: that is a torn write from a crash in the middle
//! of an append (the only way the last frame can be wrong, since every frame is written after the previous one
//! was synced). [`Journal::open`] truncates the file there, so the next append starts on a clean boundary and a
//! torn record is dropped, never misread.
//!
//! ## Capacity
//! One payload is at most [`MAX_RECORD`] bytes; a larger length field is read as a torn frame.
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
    debug_assert!(payload.len() <= MAX_RECORD);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
}

/// Splits `bytes` into the payloads of its valid frames; also returns how many leading bytes they cover (the
/// length to truncate a file to).
pub fn decode_frames(bytes: &[u8]) -> (Vec<&[u8]>, usize) {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(header) = bytes.get(at..at + FRAME_HEADER) {
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        if len > MAX_RECORD {
            break;
        }
        let Some(payload) = bytes.get(at + FRAME_HEADER..at + FRAME_HEADER + len) else { break };
        if crc32fast::hash(payload) != crc {
            break;
        }
        out.push(payload);
        at += FRAME_HEADER + len;
    }
    (out, at)
}

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
    /// Opens (or creates) the journal at `path`, reads every valid record and cuts off a torn tail.
    pub fn open(path: &Path) -> io::Result<(Journal, Recovered)> {
        let existed = path.exists();
        let mut file = OpenOptions::new().read(true).append(true).create(true).open(path)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let (records, valid_len) = decode_frames(&bytes);
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
        let payloads: [&[u8]; 3] = [b"{\"a\":1}", b"", b"{\"last\":\"record, long enough\"}"];
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
