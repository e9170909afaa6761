//! Every committed fuzz input (`fuzz/corpus/<target>/`, seeds and any crash found since) runs through its
//! target's harness on stable Rust: a decoder that panics on one of them fails here.

use std::path::Path;

fn corpus(target: &str, harness: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus").join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        let run = std::panic::catch_unwind(|| harness(&bytes));
        assert!(run.is_ok(), "{} panics the {target} harness", path.display());
        n += 1;
    }
    assert!(n > 0, "no corpus for {target} in {}", dir.display());
}

#[test]
fn fuzz_corpus_itch() {
    corpus("itch", marquee_feeds::fuzzing::itch);
}

#[test]
fn fuzz_corpus_dbn() {
    corpus("dbn", marquee_feeds::fuzzing::dbn);
}

#[test]
fn fuzz_corpus_bin_batch() {
    corpus("bin_batch", marquee_protocol::decode::fuzz_bin_batch);
}

#[test]
fn fuzz_corpus_native_frames() {
    corpus("native_frames", marquee_protocol::fuzzing::native_frames);
}

#[test]
fn fuzz_corpus_hub_frames() {
    corpus("hub_frames", marquee_protocol::fuzzing::hub_frames);
}

#[test]
fn fuzz_corpus_msgpack() {
    corpus("msgpack", marquee_protocol::fuzzing::msgpack);
}

#[test]
fn fuzz_corpus_journal() {
    corpus("journal", marquee_feeds::fuzzing::journal);
}
