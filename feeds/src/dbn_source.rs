//! Reading a DBN file record by record for [`crate::dbn_replay`]: bytes (decompressed when zstd) go into
//! Databento's sans-IO state machine (`DbnFsm`), records come out with their byte offsets. It does not interpret
//! records. It exists, rather than `dbn`'s `DynDecoder`, to see what that decoder hides: a file cut inside a
//! record (the decoder reports a clean end) and the offset of a record that cannot be read.

use crate::dbn_replay::DbnError;
use dbn::decode::DynReader;
use dbn::decode::dbn::fsm::{DbnFsm, ProcessResult};
use dbn::{Metadata, Record, VersionUpgradePolicy};
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::Path;

/// One step through the file's records.
pub(crate) enum Step {
    /// A record is in `fsm.last_record()`; it starts at this offset.
    Record(u64),
    /// The stream ended on a record boundary.
    End,
    /// The stream ended inside the record that starts at this offset.
    Truncated(u64),
    /// Nothing from this offset on can be read.
    Broken { offset: u64, reason: String },
}

/// The file being read: bytes (decompressed when zstd) into Databento's state machine, records out.
pub(crate) struct Source {
    reader: DynReader<'static, BufReader<File>>,
    fsm: DbnFsm,
    /// Bytes of the DBN stream handed to `fsm` so far: `fed - fsm.data().len()` is the offset of the next byte
    /// it will decode.
    fed: u64,
    /// The reader returned its last byte.
    eof: bool,
}

impl Source {
    /// Opens `path` and decodes its metadata; the source is then at the first record.
    pub(crate) fn open(path: &Path) -> Result<(Source, Metadata), DbnError> {
        let not_dbn = |reason: String| DbnError::NotDbn { file: path.to_owned(), reason };
        let file = File::open(path).map_err(|error| DbnError::Io { file: path.to_owned(), error })?;
        // Peeks at the first bytes for zstd's magic number; anything else is read as plain DBN.
        let reader = DynReader::inferred_with_buffer(BufReader::new(file)).map_err(|e| not_dbn(e.to_string()))?;
        let fsm =
            DbnFsm::builder().upgrade_policy(VersionUpgradePolicy::AsIs).build().map_err(|e| not_dbn(e.to_string()))?;
        let mut src = Source { reader, fsm, fed: 0, eof: false };
        loop {
            match src.fsm.process() {
                ProcessResult::Metadata(m) => return Ok((src, m)),
                ProcessResult::ReadMore(_) if src.eof => {
                    let reason = if src.fed == 0 { "the file is empty" } else { "the file ends inside the header" };
                    return Err(not_dbn(reason.to_owned()));
                }
                ProcessResult::ReadMore(_) => src.read().map_err(|e| not_dbn(e.to_string()))?,
                ProcessResult::Record(()) => return Err(not_dbn("a record before the metadata".to_owned())),
                ProcessResult::Err(e) => return Err(not_dbn(e.to_string())),
            }
        }
    }

    fn read(&mut self) -> io::Result<()> {
        match self.reader.read(self.fsm.space()) {
            Ok(0) => self.eof = true,
            Ok(n) => {
                self.fsm.fill(n);
                self.fed += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        Ok(())
    }

    /// The record [`Source::next`] last stepped onto.
    pub(crate) fn last_record(&self) -> Option<dbn::RecordRef<'_>> {
        self.fsm.last_record()
    }

    /// Offset of the first byte the state machine has not decoded.
    pub(crate) fn at(&self) -> u64 {
        self.fed - self.fsm.data().len() as u64
    }

    pub(crate) fn next(&mut self) -> Step {
        loop {
            match self.fsm.process() {
                ProcessResult::Record(()) => {
                    let len = self.fsm.last_record().map_or(0, |r| r.record_size());
                    return Step::Record(self.at() - len as u64);
                }
                ProcessResult::ReadMore(_) if self.eof => {
                    return if self.fsm.data().is_empty() { Step::End } else { Step::Truncated(self.at()) };
                }
                ProcessResult::ReadMore(_) => match self.read() {
                    Ok(()) => {}
                    // A cut zstd stream: what was decompressed is replayed, like a cut plain file.
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Step::Truncated(self.at()),
                    Err(e) => return Step::Broken { offset: self.at(), reason: format!("reading: {e}") },
                },
                ProcessResult::Metadata(_) => {
                    return Step::Broken { offset: self.at(), reason: "a second metadata header".to_owned() };
                }
                ProcessResult::Err(e) => return Step::Broken { offset: self.at(), reason: e.to_string() },
            }
        }
    }
}
