//! Randomised test of the disk log against an in-memory model, with "crash and reopen"
//! (optionally cutting the last segment at a random byte) as one of the operations.

mod common;

use common::*;
use tw_core::AppendRecord;
use tw_log::Log;

const PARTITIONS: u32 = 2;

/// What the model expects a read to return: records from `from`, at most `max_records`,
/// at least one, then more while the payload total stays within `max_bytes`.
fn expected_read(
    model: &[AppendRecord],
    from: u64,
    max_records: usize,
    max_bytes: usize,
) -> &[AppendRecord] {
    let from = (from as usize).min(model.len());
    let mut n = 0;
    let mut bytes = 0;
    for record in &model[from..] {
        if n == max_records || (n > 0 && bytes + record.payload.len() > max_bytes) {
            break;
        }
        bytes += record.payload.len();
        n += 1;
    }
    &model[from..from + n]
}

fn run_seed(seed: u64) {
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().unwrap();
    let s = stream("model");
    let mut segment_max = 200 + rng.below(3000);
    let mut log = open(dir.path(), segment_max);
    log.create_stream(&s, PARTITIONS).unwrap();
    let mut model: Vec<Vec<AppendRecord>> = vec![Vec::new(); PARTITIONS as usize];
    let mut tag = 0;
    for step in 0..300 {
        let p = rng.below(u64::from(PARTITIONS)) as u32;
        let ctx = format!("seed {seed} step {step} partition {p}");
        match rng.below(10) {
            0..=4 => {
                let n = 1 + rng.below(5);
                let records: Vec<_> = (0..n)
                    .map(|_| {
                        tag += 1;
                        record(tag, tag as i64, rng.below(300) as usize)
                    })
                    .collect();
                let range = append(&log, &s, p, records.clone());
                let len = model[p as usize].len() as u64;
                assert_eq!(range, len..len + n, "{ctx}: append range");
                model[p as usize].extend(records);
            }
            5..=7 => {
                let m = &model[p as usize];
                let from = rng.below(m.len() as u64 + 2);
                let max_records = 1 + rng.below(10) as usize;
                let max_bytes = rng.below(1000) as usize;
                let got = log.read(&s, p, from, max_records, max_bytes).unwrap();
                let want = expected_read(m, from, max_records, max_bytes);
                assert_eq!(
                    got.len(),
                    want.len(),
                    "{ctx}: read({from}, {max_records}, {max_bytes}) length"
                );
                for (k, (r, a)) in got.iter().zip(want).enumerate() {
                    assert!(same(r, from + k as u64, a), "{ctx}: read record {k}");
                }
            }
            _ => {
                drop(log);
                if rng.below(3) == 0 {
                    // Crash that lost the end of the last segment (as an unsynced tail would).
                    let files = segment_files(dir.path(), "model", p);
                    let last = files.last().unwrap();
                    let bytes = std::fs::read(last).unwrap();
                    let cut = rng.below(bytes.len() as u64 + 1) as usize;
                    std::fs::OpenOptions::new()
                        .write(true)
                        .open(last)
                        .unwrap()
                        .set_len(cut as u64)
                        .unwrap();
                    let base: u64 = last.file_stem().unwrap().to_str().unwrap().parse().unwrap();
                    let kept = base as usize + frame_ends(&bytes[..cut]).len();
                    model[p as usize].truncate(kept);
                }
                segment_max = 200 + rng.below(3000);
                log = open(dir.path(), segment_max);
            }
        }
        for q in 0..PARTITIONS {
            let end = log.end_offset(&s, q).unwrap();
            assert_eq!(
                end,
                model[q as usize].len() as u64,
                "{ctx}: end offset of partition {q}"
            );
        }
    }
    for q in 0..PARTITIONS {
        let all = read_all(&log, &s, q);
        let m = &model[q as usize];
        assert_eq!(all.len(), m.len(), "seed {seed}: final length of {q}");
        assert!(
            all.iter()
                .zip(m)
                .enumerate()
                .all(|(i, (r, a))| same(r, i as u64, a)),
            "seed {seed}: final content"
        );
    }
}

#[test]
fn disk_log_matches_the_model_under_random_operations_and_crashes() {
    let base = std::env::var("TW_LOG_MODEL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x71de);
    for seed in base..base + 16 {
        run_seed(seed);
    }
}
