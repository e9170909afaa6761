//! Reading ticks from CSV: a header-driven reader whose every bad row becomes an error naming the file and line.
//!
//! ## Schema
//! The first non-comment line is the header. Columns are found by name (trimmed, ASCII case-insensitive), in any
//! order; unknown columns are ignored.
//!
//! | column | required | value |
//! | --- | --- | --- |
//! | `timestamp` | yes | RFC 3339 (`2024-03-15T13:30:00.125Z`, `...-04:00`) or an integer Unix epoch |
//! | `symbol` | yes | `[A-Za-z0-9_-]{1,16}`; it becomes the topic `ticks.<symbol>` |
//! | `price` | yes | decimal, parsed exactly into a [`Price`] (at most 9 decimal places, no exponent) |
//! | `size` | yes | unsigned integer |
//! | `bid`, `ask` | no | decimal like `price`; an empty field means unknown |
//! | `bid_size`, `ask_size` | no | unsigned integer; an empty field means unknown |
//!
//! Lines starting with `#` are comments, blank lines (or lines of spaces) are skipped, fields are trimmed, a
//! UTF-8 byte-order mark is ignored. Values are parsed, not judged: crossed quotes or zero prices pass through as
//! the file has them.
//!
//! ## Epoch timestamps
//! An integer timestamp is read in the [`TsUnit`] given to [`CsvSource::open`]. With [`TsUnit::Auto`] the unit is
//! chosen per value by its magnitude: below 1e11 seconds, below 1e14 milliseconds, below 1e17 microseconds,
//! otherwise nanoseconds. That is unambiguous for any instant from 1973 to 2262 (where `i64` nanoseconds end).
//!
//! ## Errors
//! Opening fails ([`OpenError`]) when the file cannot be read or the header lacks a required column. After that
//! every row is either a [`CsvRow`] or a [`RowError`] that reads `file:line: column: reason`; a bad row never
//! stops the iteration (only a read error does, after reporting it). No input makes the reader panic.
//!
//! ```
//! use marquee_feeds::{CsvSource, TsUnit};
//! let data = "# a comment\nsymbol,timestamp,price,size,venue\n\
//!             AAPL,1710509400,187.23,100,X\nAAPL,1710509401,1e3,5,X\n";
//! let mut rows = CsvSource::from_reader("ticks.csv", data.as_bytes(), TsUnit::Auto).unwrap();
//! let row = rows.next().unwrap().unwrap();
//! assert_eq!((row.line, row.ts_ns, row.tick.price.to_string()), (3, 1_710_509_400_000_000_000, "187.23".into()));
//! let err = rows.next().unwrap().unwrap_err();
//! assert_eq!(err.to_string(), "ticks.csv:4: price: invalid character in price");
//! assert!(rows.next().is_none());
//! ```

use crate::csv_lines::LineCounter;
use marquee_engine::{Price, Tick};
use std::collections::HashSet;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Longest symbol accepted.
pub const MAX_SYMBOL_LEN: usize = 16;

/// Errors quote at most this many characters of a bad value.
const QUOTE_MAX: usize = 40;

/// The unit of integer epoch timestamps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TsUnit {
    /// Chosen per value by magnitude (see the module docs).
    #[default]
    Auto,
    /// Seconds.
    S,
    /// Milliseconds.
    Ms,
    /// Microseconds.
    Us,
    /// Nanoseconds.
    Ns,
}

impl TsUnit {
    /// Nanoseconds per unit for `value` (Auto resolved by magnitude).
    fn nanos_per_unit(self, value: i64) -> i64 {
        match self {
            TsUnit::S => 1_000_000_000,
            TsUnit::Ms => 1_000_000,
            TsUnit::Us => 1_000,
            TsUnit::Ns => 1,
            TsUnit::Auto => match value.unsigned_abs() {
                0..100_000_000_000 => 1_000_000_000,
                100_000_000_000..100_000_000_000_000 => 1_000_000,
                100_000_000_000_000..100_000_000_000_000_000 => 1_000,
                _ => 1,
            },
        }
    }
}

/// An integer timestamp in `unit`, in Unix nanoseconds; `None` when it overflows.
pub(crate) fn epoch_to_ns(value: i64, unit: TsUnit) -> Option<i64> {
    value.checked_mul(unit.nanos_per_unit(value))
}

impl FromStr for TsUnit {
    type Err = crate::ParseOptionError;

    /// `auto`, `s`, `ms`, `us` or `ns`.
    fn from_str(s: &str) -> Result<TsUnit, crate::ParseOptionError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(TsUnit::Auto),
            "s" => Ok(TsUnit::S),
            "ms" => Ok(TsUnit::Ms),
            "us" => Ok(TsUnit::Us),
            "ns" => Ok(TsUnit::Ns),
            _ => Err(crate::ParseOptionError {
                option: "timestamp unit",
                input: s.to_owned(),
                expected: "auto, s, ms, us or ns",
            }),
        }
    }
}

/// One good row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CsvRow {
    /// 1-based line in the file where the row starts (comments and the header count).
    pub line: u64,
    /// The row's timestamp in Unix nanoseconds.
    pub ts_ns: i64,
    /// The symbol, as written.
    pub symbol: String,
    /// The tick.
    pub tick: Tick,
}

/// A row that could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RowError {
    /// The file, as given to [`CsvSource::open`].
    pub file: PathBuf,
    /// 1-based line where the row starts.
    pub line: u64,
    /// `column: what is wrong`, e.g. `price: invalid character in price`.
    pub reason: String,
}

impl fmt::Display for RowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file.display(), self.line, self.reason)
    }
}

impl std::error::Error for RowError {}

/// Why a CSV file could not be opened for reading ticks.
#[derive(Debug)]
#[non_exhaustive]
pub enum OpenError {
    /// The file is missing or unreadable, or reading its header failed.
    Io { file: PathBuf, error: std::io::Error },
    /// The file has no header line (it is empty or all comments).
    NoHeader { file: PathBuf },
    /// A required column is not in the header.
    MissingColumn { file: PathBuf, column: &'static str },
    /// A known column appears twice in the header.
    DuplicateColumn { file: PathBuf, column: &'static str },
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpenError::Io { file, error } => write!(f, "{}: {error}", file.display()),
            OpenError::NoHeader { file } => write!(f, "{}: no header line", file.display()),
            OpenError::MissingColumn { file, column } => {
                write!(f, "{}: missing required column {column:?} in header", file.display())
            }
            OpenError::DuplicateColumn { file, column } => {
                write!(f, "{}: column {column:?} appears twice in header", file.display())
            }
        }
    }
}

impl std::error::Error for OpenError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            OpenError::Io { error, .. } => Some(error),
            _ => None,
        }
    }
}

/// The column names, in the order of [`Columns`]' slots.
const COLUMNS: [&str; 8] = ["timestamp", "symbol", "price", "size", "bid", "ask", "bid_size", "ask_size"];
const REQUIRED: usize = 4;

/// Field index of each known column; `usize::MAX` when absent.
#[derive(Clone, Copy, Debug)]
struct Columns([usize; COLUMNS.len()]);

impl Columns {
    fn from_header(file: &Path, header: &csv::ByteRecord) -> Result<Columns, OpenError> {
        if header.iter().all(|f| f.is_empty()) {
            return Err(OpenError::NoHeader { file: file.to_owned() });
        }
        let mut at = [usize::MAX; COLUMNS.len()];
        for (i, field) in header.iter().enumerate() {
            let name = field.trim_ascii();
            if let Some(c) = COLUMNS.iter().position(|c| c.as_bytes().eq_ignore_ascii_case(name)) {
                if at[c] != usize::MAX {
                    return Err(OpenError::DuplicateColumn { file: file.to_owned(), column: COLUMNS[c] });
                }
                at[c] = i;
            }
        }
        if let Some(c) = (0..REQUIRED).find(|&c| at[c] == usize::MAX) {
            return Err(OpenError::MissingColumn { file: file.to_owned(), column: COLUMNS[c] });
        }
        Ok(Columns(at))
    }
}

/// An open CSV file of ticks: an iterator of rows, each good or a [`RowError`].
///
/// Holds the reader only; it is `Send`, so it can be opened on one thread and read on another.
pub struct CsvSource {
    file: PathBuf,
    unit: TsUnit,
    reader: csv::Reader<LineCounter>,
    columns: Columns,
    record: csv::ByteRecord,
    /// Set after a read error: the reader's state is unknown, so the iteration ends.
    done: bool,
}

impl fmt::Debug for CsvSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CsvSource").field("file", &self.file).field("unit", &self.unit).finish()
    }
}

impl CsvSource {
    /// Opens `path` and reads its header.
    pub fn open(path: impl AsRef<Path>, unit: TsUnit) -> Result<CsvSource, OpenError> {
        let path = path.as_ref();
        let file = std::fs::File::open(path).map_err(|error| OpenError::Io { file: path.to_owned(), error })?;
        CsvSource::from_reader(path, file, unit)
    }

    /// Reads CSV from `reader`; `name` stands for the file in errors.
    pub fn from_reader(
        name: impl Into<PathBuf>,
        reader: impl Read + Send + 'static,
        unit: TsUnit,
    ) -> Result<CsvSource, OpenError> {
        let file = name.into();
        let mut reader = csv::ReaderBuilder::new()
            .comment(Some(b'#'))
            .flexible(true)
            .has_headers(true)
            .from_reader(LineCounter::new(Box::new(reader)));
        let header = reader.byte_headers().map_err(|e| OpenError::Io { file: file.clone(), error: to_io(e) })?;
        let columns = Columns::from_header(&file, header)?;
        Ok(CsvSource { file, unit, reader, columns, record: csv::ByteRecord::new(), done: false })
    }

    /// The file, as given.
    pub fn path(&self) -> &Path {
        &self.file
    }

    fn row_error(&self, line: u64, reason: String) -> RowError {
        RowError { file: self.file.clone(), line, reason }
    }

    /// Field `c` of the current record, trimmed; empty when the row is short or the column absent.
    fn field(&self, c: usize) -> Result<&str, String> {
        let bytes = self.record.get(self.columns.0[c]).unwrap_or_default().trim_ascii();
        std::str::from_utf8(bytes).map_err(|_| format!("{}: not valid UTF-8", COLUMNS[c]))
    }

    fn required(&self, c: usize) -> Result<&str, String> {
        match self.field(c)? {
            "" => Err(format!("{}: empty", COLUMNS[c])),
            s => Ok(s),
        }
    }

    fn parse_record(&self, line: u64) -> Result<CsvRow, String> {
        let ts_ns = parse_timestamp(self.required(0)?, self.unit).map_err(|e| format!("timestamp: {e}"))?;
        let symbol = self.required(1)?;
        if !valid_symbol(symbol) {
            return Err(format!(
                "symbol: invalid {:?} (expected 1 to {MAX_SYMBOL_LEN} of A-Z a-z 0-9 _ -)",
                quote(symbol)
            ));
        }
        let price = |c: usize, s: &str| s.parse::<Price>().map_err(|e| format!("{}: {e}", COLUMNS[c]));
        let size = |c: usize, s: &str| {
            s.parse::<u64>()
                .map_err(|_| format!("{}: invalid size {:?} (expected an unsigned integer)", COLUMNS[c], quote(s)))
        };
        let opt_price = |c: usize| -> Result<Option<Price>, String> {
            match self.field(c)? {
                "" => Ok(None),
                s => price(c, s).map(Some),
            }
        };
        let opt_size = |c: usize| -> Result<Option<u64>, String> {
            match self.field(c)? {
                "" => Ok(None),
                s => size(c, s).map(Some),
            }
        };
        let tick = Tick {
            price: price(2, self.required(2)?)?,
            size: size(3, self.required(3)?)?,
            bid: opt_price(4)?,
            ask: opt_price(5)?,
            bid_size: opt_size(6)?,
            ask_size: opt_size(7)?,
        };
        Ok(CsvRow { line, ts_ns, symbol: symbol.to_owned(), tick })
    }
}

impl Iterator for CsvSource {
    type Item = Result<CsvRow, RowError>;

    fn next(&mut self) -> Option<Result<CsvRow, RowError>> {
        loop {
            if self.done {
                return None;
            }
            let mut record = std::mem::take(&mut self.record);
            let read = self.reader.read_byte_record(&mut record);
            self.record = record;
            return match read {
                Ok(false) => {
                    self.done = true;
                    None
                }
                // A line of spaces, or the empty record csv makes of a comment that ends the file without a
                // line break: nothing to read, so skipped like a blank line.
                Ok(true) if self.record.len() == 1 && self.record[0].trim_ascii().is_empty() => continue,
                Ok(true) => {
                    let byte = self.record.position().map_or(0, |p| p.byte());
                    let line = self.reader.get_mut().line_at(byte);
                    Some(self.parse_record(line).map_err(|reason| self.row_error(line, reason)))
                }
                Err(e) => {
                    // With byte records and flexible rows, only IO fails here; the reader cannot go on after it.
                    self.done = true;
                    let byte = e.position().map_or_else(|| self.reader.position().byte(), |p| p.byte());
                    let line = self.reader.get_mut().line_at(byte);
                    Some(Err(self.row_error(line, format!("read error: {}", to_io(e)))))
                }
            };
        }
    }
}

/// The symbols of `path` in order of first appearance, skipping bad rows, so that a server can create every
/// topic before a replay starts.
pub fn scan_symbols(path: impl AsRef<Path>, unit: TsUnit) -> Result<Vec<String>, OpenError> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for row in CsvSource::open(path, unit)?.flatten() {
        if !seen.contains(row.symbol.as_str()) {
            seen.insert(row.symbol.clone());
            out.push(row.symbol);
        }
    }
    Ok(out)
}

/// `[A-Za-z0-9_-]{1,16}`.
pub fn valid_symbol(s: &str) -> bool {
    (1..=MAX_SYMBOL_LEN).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
}

/// RFC 3339 or an integer epoch in `unit`, to Unix nanoseconds.
fn parse_timestamp(s: &str, unit: TsUnit) -> Result<i64, String> {
    let digits = s.strip_prefix(['-', '+']).unwrap_or(s);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        let v: i64 = s.parse().map_err(|_| format!("epoch {:?} out of range", quote(s)))?;
        return v.checked_mul(unit.nanos_per_unit(v)).ok_or_else(|| format!("epoch {:?} out of range", quote(s)));
    }
    let t = chrono::DateTime::parse_from_rfc3339(s)
        .map_err(|_| format!("invalid {:?} (expected RFC 3339 or an integer epoch)", quote(s)))?;
    t.timestamp_nanos_opt().ok_or_else(|| format!("{:?} out of range (years 1678 to 2261)", quote(s)))
}

/// At most [`QUOTE_MAX`] characters of `s`, for error messages.
fn quote(s: &str) -> &str {
    s.char_indices().nth(QUOTE_MAX).map_or(s, |(i, _)| &s[..i])
}

fn to_io(e: csv::Error) -> std::io::Error {
    match e.into_kind() {
        csv::ErrorKind::Io(e) => e,
        other => std::io::Error::other(format!("{other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rows(data: &str, unit: TsUnit) -> Vec<Result<CsvRow, String>> {
        let src = CsvSource::from_reader("t.csv", std::io::Cursor::new(data.to_owned()), unit).unwrap();
        src.map(|r| r.map_err(|e| e.to_string())).collect()
    }

    fn ts(data_ts: &str, unit: TsUnit) -> Result<i64, String> {
        let data = format!("timestamp,symbol,price,size\n{data_ts},A,1,1\n");
        rows(&data, unit).pop().unwrap().map(|r| r.ts_ns)
    }

    #[test]
    fn csv_epoch_units_by_magnitude_and_by_flag() {
        let ns = 1_710_509_400_000_000_000;
        assert_eq!(ts("1710509400", TsUnit::Auto), Ok(ns));
        assert_eq!(ts("1710509400123", TsUnit::Auto), Ok(ns + 123_000_000));
        assert_eq!(ts("1710509400123456", TsUnit::Auto), Ok(ns + 123_456_000));
        assert_eq!(ts("1710509400123456789", TsUnit::Auto), Ok(ns + 123_456_789));
        assert_eq!(ts("1710509400", TsUnit::Ms), Ok(1_710_509_400_000_000));
        assert_eq!(ts("1710509400", TsUnit::Ns), Ok(1_710_509_400));
        assert_eq!(ts("-1", TsUnit::Auto), Ok(-1_000_000_000));
        assert_eq!(ts("99999999999", TsUnit::S), Err("t.csv:2: timestamp: epoch \"99999999999\" out of range".into()));
        assert!(ts("99999999999999999999", TsUnit::Auto).unwrap_err().ends_with("out of range"));
    }

    #[test]
    fn csv_rfc3339_with_offsets() {
        let z = ts("2024-03-15T13:30:00.125Z", TsUnit::Auto).unwrap();
        assert_eq!(z, 1_710_509_400_125_000_000);
        assert_eq!(ts("2024-03-15T09:30:00.125-04:00", TsUnit::Auto), Ok(z));
        assert_eq!(ts("2024-03-15T14:30:00.125+01:00", TsUnit::Ms), Ok(z));
        assert_eq!(ts("2024-03-15T13:30:00.000000001Z", TsUnit::Auto), Ok(z - 124_999_999));
        assert!(ts("2024-03-15 13:30", TsUnit::Auto).unwrap_err().contains("expected RFC 3339"));
        assert!(ts("9999-01-01T00:00:00Z", TsUnit::Auto).unwrap_err().contains("out of range"));
    }

    #[test]
    fn csv_columns_any_order_optional_and_extra() {
        let data = "\u{feff}Size, PRICE ,venue,symbol,timestamp,ask\n100,1.5,X,ab_C-9,5,\n7,2,Y,Z,6,2.01\n";
        let got = rows(data, TsUnit::S);
        let r = got[0].as_ref().unwrap();
        assert_eq!((r.symbol.as_str(), r.tick.size, r.tick.ask, r.ts_ns), ("ab_C-9", 100, None, 5_000_000_000));
        let r = got[1].as_ref().unwrap();
        assert_eq!((r.tick.price, r.tick.ask, r.tick.bid), (Price(2_000_000_000), Some(Price(2_010_000_000)), None));
    }

    #[test]
    fn csv_bad_fields_name_the_column() {
        let data = "timestamp,symbol,price,size,bid,bid_size\n\
                    1,BRK.B,1,1,,\n1,A,1,-5,,\n1,A,1,1,x,\n1,A,1,1,1,1.5\n1,A\n,A,1,1\n1,A,1,1,1,1\n";
        let got = rows(data, TsUnit::S);
        let errs: Vec<&str> = got.iter().filter_map(|r| r.as_ref().err().map(String::as_str)).collect();
        assert_eq!(
            errs,
            [
                "t.csv:2: symbol: invalid \"BRK.B\" (expected 1 to 16 of A-Z a-z 0-9 _ -)",
                "t.csv:3: size: invalid size \"-5\" (expected an unsigned integer)",
                "t.csv:4: bid: invalid character in price",
                "t.csv:5: bid_size: invalid size \"1.5\" (expected an unsigned integer)",
                "t.csv:6: price: empty",
                "t.csv:7: timestamp: empty",
            ]
        );
        assert_eq!(got.last().unwrap().as_ref().unwrap().line, 8);
    }

    #[test]
    fn csv_line_numbers_count_comments_and_quoted_newlines() {
        let data = "# c1\ntimestamp,symbol,price,size,note\n# c2\n\n1,A,1,1,\"two\nlines\"\n2,A,x,1,\n";
        let got = rows(data, TsUnit::S);
        assert_eq!(got[0].as_ref().unwrap().line, 5);
        assert_eq!(got[1], Err("t.csv:7: price: invalid character in price".into()));
        let crlf = "timestamp,symbol,price,size\r\n#\r\n1,A,x,1\r\r\n1,A,y,1\r";
        let errs: Vec<_> = rows(crlf, TsUnit::S).into_iter().map(|r| r.unwrap_err()).collect();
        assert_eq!(errs, ["t.csv:3: price: invalid character in price", "t.csv:5: price: invalid character in price"]);
    }

    /// csv makes an empty record of a final comment with no line break; it showed as a second error on the line
    /// of the row before it.
    #[test]
    fn csv_comment_at_eof_without_newline_is_not_a_row() {
        let got = rows("timestamp,symbol,price,size\n1,A,1,1\r\n   \n# end", TsUnit::S);
        assert_eq!(got.len(), 1);
        assert!(got[0].is_ok());
    }

    #[test]
    fn csv_header_errors() {
        let open = |data: &'static str| CsvSource::from_reader("h.csv", data.as_bytes(), TsUnit::Auto).unwrap_err();
        assert_eq!(open("").to_string(), "h.csv: no header line");
        assert_eq!(open("# only\n").to_string(), "h.csv: no header line");
        assert_eq!(open("timestamp,symbol,size\n").to_string(), "h.csv: missing required column \"price\" in header");
        let dup = open("timestamp,symbol,price,size,Price\n").to_string();
        assert_eq!(dup, "h.csv: column \"price\" appears twice in header");
    }

    #[test]
    fn csv_ts_unit_from_str() {
        assert_eq!("MS".parse(), Ok(TsUnit::Ms));
        assert_eq!(" auto ".parse(), Ok(TsUnit::Auto));
        let e = "sec".parse::<TsUnit>().unwrap_err();
        assert_eq!(e.to_string(), "invalid timestamp unit \"sec\": expected auto, s, ms, us or ns");
    }

    #[test]
    fn csv_long_bad_values_are_cut_in_errors() {
        let long = "é".repeat(100);
        let got = rows(&format!("timestamp,symbol,price,size\n1,{long},1,1\n"), TsUnit::S);
        let e = got[0].as_ref().unwrap_err();
        assert!(e.contains(&"é".repeat(QUOTE_MAX)) && !e.contains(&"é".repeat(QUOTE_MAX + 1)), "{e}");
    }

    fn read_all(bytes: Vec<u8>) {
        if let Ok(src) = CsvSource::from_reader("f.csv", std::io::Cursor::new(bytes), TsUnit::Auto) {
            for r in src.take(10_000) {
                if let Err(e) = r {
                    assert!(e.to_string().starts_with("f.csv:"));
                }
            }
        }
    }

    /// A reader that hands out `step` bytes at a time, to cut rows and line breaks at every place.
    struct Chunked {
        data: Vec<u8>,
        at: usize,
        step: usize,
    }

    impl Read for Chunked {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.step.min(buf.len()).min(self.data.len() - self.at);
            buf[..n].copy_from_slice(&self.data[self.at..self.at + n]);
            self.at += n;
            Ok(n)
        }
    }

    /// Bytes that matter to CSV, timestamps, prices and symbols, plus one that is not UTF-8.
    const ALPHABET: &[u8] = b",,,\n\n\"#-.:TZ+\r\xff0123456789ABC";

    proptest! {
        #[test]
        fn csv_arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            read_all(bytes);
        }

        #[test]
        fn csv_csv_like_bytes_read_the_same_in_any_chunks(
            body in proptest::collection::vec(proptest::sample::select(ALPHABET), 0..400),
            unit in prop_oneof![Just(TsUnit::Auto), Just(TsUnit::S), Just(TsUnit::Ns)],
            step in 1..9usize,
        ) {
            let mut bytes = b"timestamp,symbol,price,size,bid,ask,bid_size,ask_size\n".to_vec();
            bytes.extend(body);
            let whole: Vec<_> =
                CsvSource::from_reader("f.csv", std::io::Cursor::new(bytes.clone()), unit).unwrap().collect();
            let chunked: Vec<_> =
                CsvSource::from_reader("f.csv", Chunked { data: bytes, at: 0, step }, unit).unwrap().collect();
            prop_assert_eq!(&whole, &chunked);
            let lines: Vec<u64> = whole.iter().map(|r| r.as_ref().map_or_else(|e| e.line, |r| r.line)).collect();
            prop_assert!(lines.windows(2).all(|w| w[0] < w[1]) && lines.first().is_none_or(|&l| l >= 2), "{:?}", lines);
            for row in whole.iter().flatten() {
                prop_assert!(valid_symbol(&row.symbol));
            }
        }
    }
}
