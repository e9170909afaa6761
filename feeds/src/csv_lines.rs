//! Line numbers for CSV rows, counted on the bytes as the csv reader pulls them.
//!
//! The csv crate's own positions do not serve: its line count leaves out comment lines, and a record's position
//! is where the previous record ended, before any comment or blank lines in between. [`LineCounter`] wraps the
//! file, counts lines itself and notes which lines csv skips between records; memory stays bounded by the csv
//! reader's read-ahead.

use std::collections::VecDeque;
use std::io::Read;

/// A reader that remembers where lines start, to give each row the number of the line it starts on.
///
/// Line breaks are `\n`, `\r\n` and a lone `\r`, as for the csv crate. Lines that csv skips between records are
/// those that are empty or start with `#`; a row starts on the first line at or after its csv position that is
/// not skipped. Only lines from the last position asked about on are kept, and a run of skipped lines as one.
pub(crate) struct LineCounter {
    inner: Box<dyn Read + Send>,
    /// Bytes read so far.
    read: u64,
    /// The last byte read was `\r`, so a `\n` now ends the same line.
    after_cr: bool,
    /// The last line's first byte is still to come.
    need_first: bool,
    /// Lines from the last offset asked about on.
    lines: VecDeque<Line>,
}

#[derive(Clone, Copy, Debug)]
struct Line {
    /// Offset of the line's first byte.
    start: u64,
    /// 1-based line number.
    number: u64,
    /// Empty or a comment: csv skips it between records.
    skipped: bool,
}

impl LineCounter {
    pub(crate) fn new(inner: Box<dyn Read + Send>) -> LineCounter {
        let first = Line { start: 0, number: 1, skipped: true };
        LineCounter { inner, read: 0, after_cr: false, need_first: true, lines: VecDeque::from([first]) }
    }

    /// The line a row starts on, given the row's csv position. Positions must not decrease between calls.
    pub(crate) fn line_at(&mut self, offset: u64) -> u64 {
        while self.lines.len() > 1 && self.lines[1].start <= offset {
            self.lines.pop_front();
        }
        let mut found = self.lines.iter().filter(|l| l.start >= offset);
        let first = self.lines.front().map_or(1, |l| l.number);
        found.find(|l| !l.skipped).map_or(first, |l| l.number)
    }

    fn on_byte(&mut self, offset: u64, b: u8) {
        if b == b'\n' && self.after_cr {
            // The second half of `\r\n`: the line the `\r` opened starts after this byte.
            if let Some(last) = self.lines.back_mut() {
                last.start = offset + 1;
            }
            self.need_first = true;
        } else {
            if self.need_first {
                if let Some(last) = self.lines.back_mut() {
                    last.skipped = matches!(b, b'#' | b'\r' | b'\n');
                }
                self.need_first = false;
            }
            if b == b'\r' || b == b'\n' {
                let number = self.lines.back().map_or(1, |l| l.number + 1);
                // Two skipped lines in a row: the second adds nothing `line_at` needs.
                let n = self.lines.len();
                if n >= 2 && self.lines[n - 1].skipped && self.lines[n - 2].skipped {
                    self.lines.pop_back();
                }
                self.lines.push_back(Line { start: offset + 1, number, skipped: true });
                self.need_first = true;
            }
        }
        self.after_cr = b == b'\r';
    }
}

impl Read for LineCounter {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        // `get` rather than indexing: a reader claiming more bytes than `buf` holds is wrong, not fatal.
        for (i, &b) in buf.get(..n).unwrap_or(buf).iter().enumerate() {
            self.on_byte(self.read + i as u64, b);
        }
        self.read += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads `data` through a counter in chunks of `chunk` bytes, then asks for the line of each offset.
    fn lines_at(data: &'static [u8], chunk: usize, offsets: &[u64]) -> Vec<u64> {
        let mut c = LineCounter::new(Box::new(data));
        let mut buf = vec![0; chunk];
        while c.read(&mut buf).unwrap() > 0 {}
        offsets.iter().map(|&o| c.line_at(o)).collect()
    }

    #[test]
    fn csv_lines_skip_comments_and_blank_lines_after_a_position() {
        // line 1 "h", 2 "#c", 3 "", 4 "#d", 5 "r1", 6 "r2"
        let data = b"h\n#c\n\n#d\nr1\nr2\n";
        for chunk in [1, 2, 3, 64] {
            assert_eq!(lines_at(data, chunk, &[2, 9, 12]), [5, 5, 6], "chunk {chunk}");
        }
    }

    #[test]
    fn csv_lines_crlf_and_lone_cr_break_once() {
        // line 1 "h", 2 "", 3 "r1", 4 "r2"
        let data = b"h\r\n\r\nr1\rr2";
        for chunk in [1, 2, 64] {
            assert_eq!(lines_at(data, chunk, &[3, 8]), [3, 4], "chunk {chunk}");
        }
    }
}
