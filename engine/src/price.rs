//! Fixed-point prices: `i64` in units of 1e-9, as Databento's DBN does. Prices are never `f64` inside the
//! engine; JSON shows them as decimal numbers written straight from the integer.
//!
//! ```
//! use marquee_engine::Price;
//! let p: Price = "187.23".parse().unwrap();
//! assert_eq!(p.units(), 187_230_000_000);
//! assert_eq!(p.to_string(), "187.23");
//! assert!("1e3".parse::<Price>().is_err());
//! ```

use std::fmt;
use std::str::FromStr;

/// Units per whole currency unit.
pub const PRICE_SCALE: i64 = 1_000_000_000;

/// A price in units of 1e-9.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Price(pub i64);

impl Price {
    /// The raw fixed-point value (units of 1e-9).
    pub const fn units(self) -> i64 {
        self.0
    }

    /// Builds a price from whole units and nano units (`from_parts(187, 230_000_000)` is 187.23).
    pub const fn from_parts(whole: i64, nanos: i64) -> Price {
        Price(whole * PRICE_SCALE + nanos)
    }

    /// A price of whole cents (`from_cents(18723)` is 187.23).
    pub const fn from_cents(cents: i64) -> Price {
        Price(cents * (PRICE_SCALE / 100))
    }

    /// Appends the shortest exact decimal form (`187.23`, `100`, `-0.5`) to `out`.
    pub fn write_decimal(self, out: &mut impl bytes::BufMut) {
        if self.0 < 0 {
            out.put_u8(b'-');
        }
        // u64 arithmetic (no i128): divisions by a constant compile to multiplications.
        let abs = self.0.unsigned_abs();
        let whole = abs / PRICE_SCALE as u64;
        let frac = abs % PRICE_SCALE as u64;
        out.put_slice(itoa::Buffer::new().format(whole).as_bytes());
        if frac != 0 {
            // 1_000_000_000 + frac prints as "1" followed by exactly nine digits: the fraction, zero-padded.
            let mut ib = itoa::Buffer::new();
            let padded = ib.format(PRICE_SCALE as u64 + frac).as_bytes();
            let mut digits = &padded[1..];
            while let [rest @ .., b'0'] = digits {
                digits = rest;
            }
            out.put_u8(b'.');
            out.put_slice(digits);
        }
    }
}

impl Price {
    /// Appends the price as MessagePack the way [`crate::msgpack`] transcodes its JSON decimal: an integer when it
    /// has no fraction, else the float64 the decimal text parses to.
    pub fn write_msgpack(self, out: &mut Vec<u8>) {
        if self.0 % PRICE_SCALE == 0 {
            crate::msgpack::put_int(out, self.0 / PRICE_SCALE);
            return;
        }
        // Up to 2^53 units, both the units and the scale are exact f64s, and IEEE division rounds their exact
        // quotient correctly: the same f64 as parsing the decimal text, which is that quotient written out.
        const EXACT: i64 = 1 << 53;
        if (-EXACT..=EXACT).contains(&self.0) {
            out.push(0xcb);
            out.extend_from_slice(&(self.0 as f64 / PRICE_SCALE as f64).to_be_bytes());
            return;
        }
        let mut text = [0u8; 32];
        let mut w = &mut text[..];
        self.write_decimal(&mut w);
        let n = 32 - w.len();
        let f: f64 = std::str::from_utf8(&text[..n]).ok().and_then(|t| t.parse().ok()).unwrap_or(f64::NAN);
        out.push(0xcb);
        out.extend_from_slice(&f.to_be_bytes());
    }
}

impl fmt::Display for Price {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = Vec::with_capacity(24);
        self.write_decimal(&mut out);
        // write_decimal only emits ASCII digits, '-' and '.'.
        f.write_str(std::str::from_utf8(&out).map_err(|_| fmt::Error)?)
    }
}

/// Why a decimal string is not a price.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ParsePriceError {
    /// Empty input.
    Empty,
    /// A character other than digits, one `.` and a leading sign.
    InvalidDigit,
    /// More than nine digits after the point (finer than 1e-9).
    TooPrecise,
    /// Does not fit in an `i64` of nano units.
    OutOfRange,
}

impl fmt::Display for ParsePriceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ParsePriceError::Empty => "empty price",
            ParsePriceError::InvalidDigit => "invalid character in price",
            ParsePriceError::TooPrecise => "more than 9 decimal places",
            ParsePriceError::OutOfRange => "price out of range",
        })
    }
}

impl std::error::Error for ParsePriceError {}

impl FromStr for Price {
    type Err = ParsePriceError;

    /// Parses `123`, `-4.5`, `+0.000000001`, `.5` exactly, without floating point.
    fn from_str(s: &str) -> Result<Price, ParsePriceError> {
        let s = s.trim();
        let (neg, body) = match s.as_bytes().first() {
            None => return Err(ParsePriceError::Empty),
            Some(b'-') => (true, &s[1..]),
            Some(b'+') => (false, &s[1..]),
            Some(_) => (false, s),
        };
        let (whole, frac) = body.split_once('.').unwrap_or((body, ""));
        if whole.is_empty() && frac.is_empty() {
            return Err(ParsePriceError::Empty);
        }
        if !whole.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
            return Err(ParsePriceError::InvalidDigit);
        }
        if frac.len() > 9 {
            return Err(ParsePriceError::TooPrecise);
        }
        let mut units: i128 = 0;
        for b in whole.bytes() {
            units = units * 10 + i128::from(b - b'0');
            if units > i128::from(i64::MAX) {
                return Err(ParsePriceError::OutOfRange);
            }
        }
        let mut f: i128 = 0;
        for b in frac.bytes() {
            f = f * 10 + i128::from(b - b'0');
        }
        f *= 10i128.pow(9 - frac.len() as u32);
        let total = units * i128::from(PRICE_SCALE) + f;
        let total = if neg { -total } else { total };
        i64::try_from(total).map(Price).map_err(|_| ParsePriceError::OutOfRange)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn price_parse_and_print_exact() {
        for (s, units, shown) in [
            ("187.23", 187_230_000_000, "187.23"),
            ("100", 100_000_000_000, "100"),
            ("100.000", 100_000_000_000, "100"),
            ("-0.5", -500_000_000, "-0.5"),
            (".000000001", 1, "0.000000001"),
            ("0", 0, "0"),
        ] {
            let p: Price = s.parse().unwrap();
            assert_eq!(p.units(), units, "{s}");
            assert_eq!(p.to_string(), shown, "{s}");
        }
    }

    #[test]
    fn price_rejects_bad_input() {
        assert_eq!("".parse::<Price>(), Err(ParsePriceError::Empty));
        assert_eq!("-".parse::<Price>(), Err(ParsePriceError::Empty));
        assert_eq!("1.2.3".parse::<Price>(), Err(ParsePriceError::InvalidDigit));
        assert_eq!("1e3".parse::<Price>(), Err(ParsePriceError::InvalidDigit));
        assert_eq!("0.0000000001".parse::<Price>(), Err(ParsePriceError::TooPrecise));
        assert_eq!("99999999999".parse::<Price>(), Err(ParsePriceError::OutOfRange));
    }

    proptest! {
        #[test]
        fn price_display_round_trips(units in any::<i64>()) {
            let p = Price(units);
            prop_assert_eq!(p.to_string().parse::<Price>(), Ok(p));
        }
    }
}
