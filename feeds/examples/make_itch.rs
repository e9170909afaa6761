//! Writes a synthetic NASDAQ TotalView-ITCH 5.0 file (see `marquee_feeds::itch_gen`): nothing is downloaded.
//!
//! ```sh
//! cargo run --release -p marquee-feeds --example make_itch -- OUT.itch [MESSAGES] [SYMBOLS] [SPACING_NS]
//! ```
//!
//! Defaults: 1,000,000 messages, 50 symbols, 100 µs apart on average (so `--speed 1` replays 10,000
//! messages/s). `feeds/data/sample.itch` is `make_itch feeds/data/sample.itch 20000 8 2000000` (20,000
//! messages over about 40 seconds). The same arguments give the same file.

use marquee_feeds::itch_gen::ItchGenerator;
use std::io::Write;

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(path) = args.first() else {
        eprintln!("usage: make_itch OUT.itch [MESSAGES] [SYMBOLS] [SPACING_NS]");
        std::process::exit(2);
    };
    let num = |i: usize, default: u64| args.get(i).map_or(Ok(default), |s| s.replace('_', "").parse::<u64>());
    let (Ok(n), Ok(symbols), Ok(spacing)) = (num(1, 1_000_000), num(2, 50), num(3, 100_000)) else {
        eprintln!("MESSAGES, SYMBOLS and SPACING_NS are whole numbers");
        std::process::exit(2);
    };
    let mut generator = ItchGenerator::new(2024, symbols as usize, spacing);
    let mut file = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    let mut buf = Vec::with_capacity(1 << 20);
    generator.write_header(&mut buf);
    let mut left = n;
    while left > 0 {
        let chunk = left.min(20_000);
        generator.write_messages(&mut buf, chunk);
        file.write_all(&buf)?;
        buf.clear();
        left -= chunk;
    }
    file.flush()?;
    eprintln!("wrote {n} order-flow messages over {symbols} symbols to {path}");
    Ok(())
}
