//! The S3 watcher against a real S3-compatible server (moto's server mode, started here) with
//! keys `object_store` cannot represent (`logs//x.ndjson`): the server lists them, and
//! `object_store` fails the whole page that holds one. Regression test of issue 4: such a key
//! ended every poll before any file was taken; now it is reported and every other object,
//! before and after it, on any page, is taken exactly once.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Deserialize;
use tokio::sync::watch;
use tw_core::StreamName;
use tw_log::{DiskLog, Log, LogConfig};
use tw_pipeline::{DeadLetterQueue, IngestLimits, Ingestor, StreamDefaults, StreamRegistry};
use tw_sources::{FileState, Source, SourceConfig, SourceContext};
use tw_testkit::moto::Moto;

const BUCKET: &str = "bad-keys";
/// Keys per listing page, small so that the objects span several pages.
const PAGE_KEYS: &str = "4";

#[derive(Deserialize)]
struct Config {
    sources: Vec<SourceConfig>,
}

fn ndjson(prefix: &str, count: usize) -> String {
    (1..=count)
        .map(|i| format!("{{\"id\":\"{prefix}-{i}\"}}\n"))
        .collect()
}

fn no_shutdown() -> watch::Receiver<bool> {
    let (sender, receiver) = watch::channel(false);
    std::mem::forget(sender);
    receiver
}

fn stored(log: &dyn Log) -> BTreeMap<String, usize> {
    let stream = StreamName::new("trail").unwrap();
    let mut stored = BTreeMap::new();
    for partition in 0..log.partitions(&stream).unwrap_or(0) {
        for record in log.read(&stream, partition, 0, 1_000_000, 1 << 30).unwrap() {
            let text = String::from_utf8(record.payload.to_vec()).unwrap();
            *stored.entry(text).or_default() += 1;
        }
    }
    stored
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_object_store_cannot_represent_do_not_block_the_bucket() {
    let moto = Moto::start_with_env(&[("MOTO_S3_DEFAULT_MAX_KEYS", PAGE_KEYS)]);
    // 13 good objects over several pages of 4, with bad keys first of all ('/' sorts before
    // letters), in the middle, two in a row, and last.
    let mut objects: Vec<(String, String)> = (0..13)
        .map(|i| {
            (
                format!("logs/f{i:02}.ndjson"),
                ndjson(&format!("f{i:02}"), 2),
            )
        })
        .collect();
    let bad = [
        "logs//first.ndjson",
        "logs/f05//x.ndjson",
        "logs/f09//y.ndjson",
        "logs/f09//z.ndjson",
        "logs/zz//last.ndjson",
    ];
    objects.extend(bad.iter().map(|k| (k.to_string(), ndjson("bad", 1))));
    moto.put(BUCKET, &objects);

    let dir = tempfile::tempdir().unwrap();
    let log: Arc<dyn Log> = DiskLog::open(LogConfig::new(dir.path().join("log"))).unwrap();
    let dlq = DeadLetterQueue::open(log.clone()).unwrap();
    let registry = Arc::new(
        StreamRegistry::open(
            &dir.path().join("streams"),
            log.clone(),
            StreamDefaults::default(),
        )
        .unwrap(),
    );
    let context = SourceContext {
        ingestor: Arc::new(Ingestor::new(
            log.clone(),
            registry,
            dlq,
            IngestLimits::default(),
        )),
        log: log.clone(),
        state_dir: dir.path().join("sources"),
    };
    let config: Config = toml::from_str(&format!(
        r#"
[[sources]]
kind = "s3"
name = "bad-keys"
stream = "trail"
bucket = "{BUCKET}"
prefix = "logs/"
endpoint = "{}"
region = "us-east-1"
access_key_id = "testing"
secret_access_key = "testing"
allow_http = true
settle_ms = 0
"#,
        moto.endpoint
    ))
    .unwrap();
    let Source::Files(mut source) = tw_sources::build(&config.sources[0], &context).unwrap() else {
        panic!("an s3 source is a file source");
    };

    source.poll_once(&no_shutdown()).await.unwrap();

    let expected: BTreeMap<String, usize> = (0..13)
        .flat_map(|i| (1..=2).map(move |n| (format!("{{\"id\":\"f{i:02}-{n}\"}}"), 1)))
        .collect();
    assert_eq!(stored(&*log), expected);
    let unreadable: Vec<&str> = source.unreadable().keys().map(String::as_str).collect();
    assert_eq!(unreadable, bad);

    // The next poll takes nothing twice and still reports the bad keys; a restart neither.
    source.poll_once(&no_shutdown()).await.unwrap();
    assert_eq!(stored(&*log), expected);
    assert_eq!(source.unreadable().len(), bad.len());
    drop(source);
    let Source::Files(mut source) = tw_sources::build(&config.sources[0], &context).unwrap() else {
        panic!("an s3 source is a file source");
    };
    source.poll_once(&no_shutdown()).await.unwrap();
    assert_eq!(stored(&*log), expected);
    let state = FileState::open(&context.state_dir.join("bad-keys")).unwrap();
    assert_eq!(state.finished_count(), 13);
}
