//! The CSV reader on real files: the committed sample, and bad input whose errors must name file, line and column.

use marquee_engine::Price;
use marquee_feeds::{CsvRow, CsvSource, OpenError, TsUnit, scan_symbols};
use std::path::{Path, PathBuf};

const SAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/sample.csv");
const HEADER: &str = "timestamp,symbol,price,size\n";

/// A file in the temp dir, removed on drop.
struct TempCsv(PathBuf);

impl TempCsv {
    fn new(name: &str, content: &str) -> TempCsv {
        let path = std::env::temp_dir().join(format!("marquee-feeds-{}-{name}.csv", std::process::id()));
        std::fs::write(&path, content).unwrap();
        TempCsv(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }

    /// Every row, errors as their text.
    fn rows(&self, unit: TsUnit) -> Vec<Result<CsvRow, String>> {
        CsvSource::open(self.path(), unit).unwrap().map(|r| r.map_err(|e| e.to_string())).collect()
    }

    /// The text of the first bad row's error.
    fn first_error(&self) -> String {
        self.rows(TsUnit::Auto).into_iter().find_map(Result::err).expect("a bad row")
    }

    /// `path:line: reason`, as errors print.
    fn at(&self, line: u64, reason: &str) -> String {
        format!("{}:{line}: {reason}", self.path().display())
    }
}

impl Drop for TempCsv {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn price(s: &str) -> Price {
    s.parse().unwrap()
}

#[test]
fn csv_sample_reads_every_row() {
    let rows: Vec<CsvRow> = CsvSource::open(SAMPLE, TsUnit::Auto).unwrap().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 300);
    assert_eq!(rows[0].line, 6, "after four comment lines and the header");
    assert_eq!(rows[0].symbol, "TSLA");
    assert_eq!(rows[0].tick.price, price("248.75"));
    assert_eq!(rows[0].tick.bid_size, Some(800));
    let span_ms = (rows[299].ts_ns - rows[0].ts_ns) / 1_000_000;
    assert!((15_000..=25_000).contains(&span_ms), "{span_ms} ms");
    for w in rows.windows(2) {
        assert!(w[0].ts_ns <= w[1].ts_ns && w[0].line + 1 == w[1].line);
    }
    for r in &rows {
        let t = r.tick;
        assert!(t.bid.unwrap() < t.ask.unwrap() && t.bid_size.is_some() && t.ask_size.is_some(), "line {}", r.line);
    }
    let symbols = scan_symbols(SAMPLE, TsUnit::Auto).unwrap();
    assert_eq!(symbols, ["TSLA", "NVDA", "AMZN", "AAPL", "MSFT", "META"]);
}

#[test]
fn csv_missing_file_names_the_file() {
    let path = std::env::temp_dir().join("marquee-feeds-no-such-file.csv");
    let e = CsvSource::open(&path, TsUnit::Auto).unwrap_err();
    assert!(matches!(&e, OpenError::Io { error, .. } if error.kind() == std::io::ErrorKind::NotFound), "{e:?}");
    assert!(e.to_string().starts_with(&format!("{}: ", path.display())), "{e}");
    assert!(scan_symbols(&path, TsUnit::Auto).is_err());
}

#[test]
fn csv_missing_column_names_file_and_column() {
    let f = TempCsv::new("missing-col", "# no size\ntimestamp,symbol,price,bid\n1,A,1,1\n");
    let e = CsvSource::open(f.path(), TsUnit::Auto).unwrap_err();
    assert_eq!(e.to_string(), format!("{}: missing required column \"size\" in header", f.path().display()));
    assert!(matches!(e, OpenError::MissingColumn { column: "size", .. }));
}

#[test]
fn csv_bad_price_names_file_line_and_column() {
    let mut content = String::from("# comment lines count\n#\n");
    content.push_str(HEADER);
    for i in 0..10 {
        content.push_str(&format!("{},AAPL,187.{i},100\n", 1_710_509_400 + i));
    }
    content.push_str("1710509410,AAPL,$187.23,100\n"); // line 14
    content.push_str("1710509411,AAPL,1.87e2,100\n");
    content.push_str("1710509412,AAPL,187.2300000001,100\n");
    let f = TempCsv::new("bad-price", &content);
    let rows = f.rows(TsUnit::Auto);
    assert_eq!(rows.iter().filter(|r| r.is_ok()).count(), 10);
    assert_eq!(rows[10], Err(f.at(14, "price: invalid character in price")));
    assert_eq!(rows[11], Err(f.at(15, "price: invalid character in price")));
    assert_eq!(rows[12], Err(f.at(16, "price: more than 9 decimal places")));
    assert_eq!(rows[9].as_ref().unwrap().tick.price, price("187.9"));
}

#[test]
fn csv_bad_timestamp_and_symbol() {
    let f = TempCsv::new("bad-ts", &format!("{HEADER}2024-03-15 13:30:00,A,1,1\n"));
    assert_eq!(
        f.first_error(),
        f.at(2, "timestamp: invalid \"2024-03-15 13:30:00\" (expected RFC 3339 or an integer epoch)")
    );
    let f = TempCsv::new("bad-sym", &format!("{HEADER}1,BRK.B,1,1\n1,,1,1\n"));
    let rows = f.rows(TsUnit::Auto);
    assert_eq!(rows[0], Err(f.at(2, "symbol: invalid \"BRK.B\" (expected 1 to 16 of A-Z a-z 0-9 _ -)")));
    assert_eq!(rows[1], Err(f.at(3, "symbol: empty")));
    let long = TempCsv::new("long-sym", &format!("{HEADER}1,ABCDEFGHIJKLMNOPQ,1,1\n"));
    assert!(long.first_error().contains("symbol: invalid \"ABCDEFGHIJKLMNOPQ\""));
}

#[test]
fn csv_epoch_units_auto_detect_per_value() {
    let content =
        format!("{HEADER}1710509400,A,1,1\n1710509400250,A,1,1\n1710509400250500,A,1,1\n1710509400250500750,A,1,1\n");
    let f = TempCsv::new("epochs", &content);
    let ts: Vec<i64> = f.rows(TsUnit::Auto).into_iter().map(|r| r.unwrap().ts_ns).collect();
    let s = 1_710_509_400_000_000_000;
    assert_eq!(ts, [s, s + 250_000_000, s + 250_500_000, s + 250_500_750]);
    let ms: Vec<i64> = f.rows(TsUnit::Ms).into_iter().take(1).map(|r| r.unwrap().ts_ns).collect();
    assert_eq!(ms, [1_710_509_400_000_000], "an explicit unit is not second-guessed");
    assert_eq!(f.rows(TsUnit::S)[1], Err(f.at(3, "timestamp: epoch \"1710509400250\" out of range")));
}

#[test]
fn csv_rfc3339_offsets_are_the_same_instant() {
    let content = format!(
        "{HEADER}2024-03-15T13:30:00.250Z,A,1,1\n2024-03-15T09:30:00.250-04:00,A,1,1\n\
         2024-03-15T19:00:00.25+05:30,A,1,1\n2024-03-15t13:30:00.250z,A,1,1\n"
    );
    let f = TempCsv::new("rfc3339", &content);
    for r in f.rows(TsUnit::Ns) {
        assert_eq!(r.unwrap().ts_ns, 1_710_509_400_250_000_000);
    }
}

#[test]
fn csv_scan_symbols_skips_bad_rows_and_keeps_first_appearance_order() {
    let f = TempCsv::new("scan", &format!("{HEADER}1,MSFT,1,1\n1,BAD.X,1,1\n1,AAPL,x,1\n1,AAPL,1,1\n1,MSFT,1,1\n"));
    assert_eq!(scan_symbols(f.path(), TsUnit::Auto).unwrap(), ["MSFT", "AAPL"]);
}
