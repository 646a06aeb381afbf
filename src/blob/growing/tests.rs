//! The streamed blob end to end: a writer compressing a layer on one
//! thread, a stream reading it on another, against the bytes a spool holds.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::*;
use crate::blob::range::tests::range_of;
use crate::blob::{prepare_layer, FileRange, PreparedLayer};
// Bytes that do not compress: stored, so the output is as large.
use crate::compress::tests::pseudo_random;

/// Everything a [`GrowingBlob::stream`] yields, read while `write`
/// runs on another thread.
fn stream_while(
    growing: &Arc<GrowingBlob>,
    write: impl FnOnce() + Send + 'static,
) -> io::Result<Vec<u8>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let writer = std::thread::spawn(write);
    let got = runtime.block_on(async {
        use futures::TryStreamExt as _;
        let chunks: Vec<bytes::Bytes> = Arc::clone(growing).stream().try_collect().await?;
        Ok(chunks.concat())
    });
    writer.join().unwrap();
    got
}

#[test]
fn a_growing_blob_streams_the_bytes_a_spool_would_hold() {
    let dir = tempfile::tempdir().unwrap();
    // Blocks that shrink to small pieces (copied into upload chunks)
    // and random ones (stored: queued in their own buffers).
    let mut content: Vec<u8> = (0..3_000_000u32)
        .map(|i| ((i % 251) ^ (i / 7)) as u8)
        .collect();
    content.extend(pseudo_random(1_000_000, 3));
    let src = range_of(&content, dir.path(), "layer");
    let spool = dir.path().join("spool.gz");
    let spooled = prepare_layer(&src, &spool, 6, None).unwrap();
    let spill = dir.path().join("spill.gz");
    let growing = GrowingBlob::new(spill.clone());
    let g = Arc::clone(&growing);
    let (tx, rx) = std::sync::mpsc::channel();
    let streamed = stream_while(&growing, move || {
        tx.send(prepare_layer(&src, &spill, 6, Some(&g)).unwrap())
            .unwrap();
    })
    .unwrap();
    let prepared = rx.recv().unwrap();
    assert_eq!(streamed, std::fs::read(&spool).unwrap());
    assert_eq!(growing.written(), streamed.len() as u64);
    assert_eq!(
        (&prepared.digest, &prepared.diff_id, prepared.size),
        (&spooled.digest, &spooled.diff_id, spooled.size)
    );
    assert_eq!(prepared.body, None, "a streamed layer keeps no copy");
    assert!(prepared.compressed_here());
}

/// `len` random bytes as layer `name` in `dir`, and that layer compressed
/// at level 1 to the spool file `name.gz` the ordinary way.
fn spooled_random_layer(
    dir: &Path,
    name: &str,
    len: usize,
    seed: u64,
) -> (FileRange, PathBuf, PreparedLayer) {
    let src = range_of(&pseudo_random(len, seed), dir, name);
    let spool = dir.join(format!("{name}.gz"));
    let prepared = prepare_layer(&src, &spool, 1, None).unwrap();
    (src, spool, prepared)
}

#[test]
fn a_blob_the_upload_lags_behind_spills_to_its_file_and_streams_in_order() {
    let dir = tempfile::tempdir().unwrap();
    // Three times what all streams may hold in memory, written before
    // the stream reads anything.
    let (src, spool, _) = spooled_random_layer(dir.path(), "layer", 3 * STREAM_MEMORY, 7);
    let spill = dir.path().join("spill.gz");
    // An upload that keeps no pace at all: no waiting for it.
    let impatient = Pace {
        rate: f64::INFINITY,
        slack: std::time::Duration::ZERO,
    };
    let growing = GrowingBlob::with_pace(spill.clone(), impatient);
    prepare_layer(&src, &spill, 1, Some(&growing)).unwrap();
    assert!(spill.exists(), "the rest of the blob went to its file");
    let streamed = stream_while(&growing, || {}).unwrap();
    assert_eq!(streamed, std::fs::read(&spool).unwrap());
    drop(growing);
    assert!(!spill.exists(), "the spill file goes with its blob");
}

#[test]
fn an_upload_that_keeps_pace_is_waited_for_and_nothing_spills() {
    let dir = tempfile::tempdir().unwrap();
    let (src, spool, _) = spooled_random_layer(dir.path(), "layer", 3 * STREAM_MEMORY, 9);
    let spill = dir.path().join("spill.gz");
    let patient = Pace {
        rate: 1.0,
        slack: std::time::Duration::from_secs(600),
    };
    let growing = GrowingBlob::with_pace(spill.clone(), patient);
    let g = Arc::clone(&growing);
    let writer = std::thread::spawn(move || {
        prepare_layer(&src, &g.spill_path.clone(), 1, Some(&g)).unwrap();
    });
    // Read nothing until the writer waits (it must, to finish: the blob
    // is three times what may be queued), then everything.
    while growing.lock().waits == 0 && !writer.is_finished() {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let streamed = stream_while(&growing, || {}).unwrap();
    writer.join().unwrap();
    assert_eq!(streamed, std::fs::read(&spool).unwrap());
    assert!(!spill.exists(), "nothing went to the spill file");
    assert!(growing.lock().waits > 0);
}

#[test]
fn a_blob_no_stream_read_is_kept_whole_as_its_spool() {
    let dir = tempfile::tempdir().unwrap();
    // One that fits in memory, and one that spills part of itself.
    for (name, len) in [("small", 100_000), ("large", 3 * STREAM_MEMORY)] {
        let (src, spool, expected) = spooled_random_layer(dir.path(), name, len, 5);
        let spill = dir.path().join(format!("{name}-spill.gz"));
        let growing = GrowingBlob::new(spill.clone());
        let prepared = prepare_layer(&src, &spill, 1, Some(&growing)).unwrap();
        // The registry turned out to have the image: nobody streams.
        growing.abandon();
        assert_eq!(growing.keep().unwrap(), Some(spill.clone()));
        drop(growing);
        assert_eq!(prepared.digest, expected.digest);
        assert_eq!(
            std::fs::read(&spill).unwrap(),
            std::fs::read(&spool).unwrap(),
            "{name}: the spill file holds the whole blob"
        );
    }
}

#[test]
fn a_reader_that_stops_abandons_the_blob_which_then_keeps_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let src = range_of(&pseudo_random(2 << 20, 3), dir.path(), "layer");
    let spill = dir.path().join("spill.gz");
    let growing = GrowingBlob::new(spill.clone());
    let g = Arc::clone(&growing);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let writer = std::thread::spawn(move || prepare_layer(&src, &spill, 1, Some(&g)));
    runtime.block_on(async {
        use futures::StreamExt as _;
        let mut stream = std::pin::pin!(Arc::clone(&growing).stream());
        let first = stream.next().await.unwrap().unwrap();
        assert!(!first.is_empty());
    });
    let prepared = writer.join().unwrap().unwrap();
    assert!(growing.lock().dropping);
    assert!(growing.lock().queue.is_empty(), "memory given back");
    assert_eq!(growing.written(), prepared.size, "counted all the same");
    assert_eq!(growing.keep().unwrap(), None, "its start is gone");
}

#[test]
fn a_growing_blob_whose_writer_fails_ends_its_stream_with_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut src = range_of(&[7u8; 100_000], dir.path(), "layer");
    src.len = 200_000; // truncated
    let growing = GrowingBlob::new(dir.path().join("spool.gz"));
    let g = Arc::clone(&growing);
    let spool = dir.path().join("spool.gz");
    let streamed = stream_while(&growing, move || {
        prepare_layer(&src, &spool, 6, Some(&g)).unwrap_err();
    });
    assert!(streamed.is_err(), "a failed layer must not look complete");
}
