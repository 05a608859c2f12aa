//! Memory and time of one compaction pass over an existing lake directory (a copy: the pass
//! rewrites it), with every hour eligible. Built with the system allocator, so `heaptrack`
//! sees every allocation:
//! `cargo run --release -p tw-lake --example compact_memory -- LAKE_DIR`
//! prints the pass's report and the process's peak resident memory (VmHWM) as JSON.

use std::collections::BTreeMap;
use std::time::Instant;

use tw_core::Offset;
use tw_lake::{Lake, LakeConfig};

fn main() {
    let Some(dir) = std::env::args().nth(1) else {
        eprintln!("usage: compact_memory LAKE_DIR (a copy: it is compacted in place)");
        std::process::exit(2);
    };
    let lake = Lake::open(LakeConfig::new(&dir)).expect("the lake opens");
    // Every file counts as flushed (committed offsets beyond any file: nothing is cut), for
    // streams of up to 64 partitions.
    let mut committed = BTreeMap::new();
    for stream in lake.streams() {
        for partition in 0..64 {
            committed.insert((stream.clone(), partition), Offset::MAX / 2);
        }
    }
    let mut writer = lake.writer();
    writer.start_at(&committed).expect("the writer starts");
    let started = Instant::now();
    // Far in the future: every hour has ended long enough ago.
    let report = lake.compact(i64::MAX / 2, 0).expect("the pass succeeds");
    let peak_kb = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        });
    println!(
        "{}",
        serde_json::json!({
            "report": report,
            "seconds": started.elapsed().as_secs_f64(),
            "peak_rss_kb": peak_kb,
        })
    );
}
