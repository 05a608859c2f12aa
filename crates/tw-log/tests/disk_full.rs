//! A real full filesystem: needs root (it mounts a tiny tmpfs), so it is run by hand:
//! `sudo cargo test -p tw-log --test disk_full -- --ignored`.

mod common;

use std::process::Command;

use common::*;
use tw_log::{Log, LogError};

#[test]
#[ignore = "mounts a tmpfs: needs root; run by hand"]
fn a_full_disk_fails_appends_keeps_stored_data_and_recovers_when_space_returns() {
    let dir = tempfile::tempdir().unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=256k", "tw-log-full"])
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(mounted.success(), "mount failed (not root?)");
    let outcome = std::panic::catch_unwind(|| {
        let data = dir.path().join("log");
        let log = open(&data, 1 << 30);
        let s = stream("s");
        log.create_stream(&s, 1).unwrap();
        // Fill the disk with appends of ~10 KiB until one fails.
        let mut stored = Vec::new();
        let error = loop {
            let r = record(stored.len() as u64, 1, 10_000);
            match futures::executor::block_on(log.append(&s, 0, vec![r.clone()])) {
                Ok(range) => {
                    assert_eq!(range.start, stored.len() as u64);
                    stored.push(r);
                }
                Err(e) => break e,
            }
        };
        assert!(matches!(error, LogError::DiskFull { .. }), "{error:?}");
        let file = segment_files(&data, "s", 0).pop().unwrap();
        let frame = 8 + 28 + stored[0].key.len() + stored[0].payload.len();
        let on_disk = std::fs::metadata(&file).unwrap().len();
        let expected: usize = stored
            .iter()
            .map(|r| 8 + 28 + r.key.len() + r.payload.len())
            .sum();
        assert_eq!(
            on_disk as usize, expected,
            "the partial write was cut back (frame {frame})"
        );
        let read = read_all(&log, &s, 0);
        assert_eq!(
            read.len(),
            stored.len(),
            "everything stored before is intact"
        );
        assert!(
            read.iter()
                .zip(&stored)
                .enumerate()
                .all(|(i, (r, a))| same(r, i as u64, a))
        );
        // Space comes back (retention elsewhere): appends continue at the next offset.
        let small = record(1, 1, 10);
        let range = futures::executor::block_on(log.append(&s, 0, vec![small])).unwrap();
        assert_eq!(range.start, stored.len() as u64);
        drop(log);
        let log = open(&data, 1 << 30);
        assert_eq!(log.end_offset(&s, 0).unwrap(), stored.len() as u64 + 1);
    });
    let _ = Command::new("umount").arg(dir.path()).status();
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}
