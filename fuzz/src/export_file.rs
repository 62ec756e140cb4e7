//! The export-file reader under arbitrary bytes: opening a file (its magic, header, trailer
//! and manifest), then, with the signature check skipped (a fuzzer cannot sign), every
//! chunk check and every batch. Nothing may panic, and what verifies must read back: the
//! batches the reader returns are as many as the manifest lists.

use std::io::Cursor;

use sitesync_archive::Archive;

pub fn check(data: &[u8]) {
    let Ok(mut archive) = Archive::open(Cursor::new(data)) else {
        return;
    };
    let _ = archive.header();
    // The seed generator builds this module too, without the fuzzing cfg.
    #[cfg(fuzzing)]
    archive.trust_unverified_for_fuzzing();
    let verified = archive.verify(|_, _| {});
    let chunks = archive.chunk_count();
    let read = archive.batches(0).take_while(Result::is_ok).count();
    if let Ok(verified) = verified {
        assert_eq!(verified.chunks, chunks);
        assert_eq!(read, chunks, "a verified file's chunks must read back");
    }
}
