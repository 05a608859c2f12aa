use std::net::SocketAddr;

use super::listen::ListenAddress;
use super::*;

fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect()
}

/// Every TOML example of the README loads and validates as a config file: a user copies
/// them as they are (a duplicated `[detect]` table once made the main example refuse to load).
#[test]
fn every_toml_example_of_the_readme_is_a_valid_config() {
    let readme = include_str!("../../../../README.md");
    let mut examples = 0;
    for block in readme.split("```toml\n").skip(1) {
        let text = block.split("```").next().unwrap_or_default();
        let config: Config = toml::from_str(text)
            .unwrap_or_else(|e| panic!("README example does not load: {e}\n{text}"));
        config
            .validate()
            .unwrap_or_else(|e| panic!("README example does not validate: {e:#}\n{text}"));
        examples += 1;
    }
    assert!(examples >= 3, "only {examples} TOML examples found");
}

/// The README's example of the environment naming rule sets what it says.
#[test]
fn the_readme_example_of_a_variable_names_a_setting() {
    let readme = include_str!("../../../../README.md");
    assert!(readme.contains("TIDEWATCH_LAKE__FLUSH_MAX_AGE_MS=5000"));
    let config = Config::parse(
        None,
        None,
        &vars(&[("TIDEWATCH_LAKE__FLUSH_MAX_AGE_MS", "5000")]),
    )
    .unwrap();
    assert_eq!(config.lake.flush_max_age_ms, 5000);
}

#[test]
fn the_environment_overrides_the_file_and_flags_override_both() {
    let file = "listen = \"127.0.0.1:1001\"\ndata_dir = \"from-file\"\nrules_dir = \"rules-file\"\n\
                [lake]\nflush_max_age_ms = 100\nflush_max_rows = 10\n";
    let env = vars(&[
        ("TIDEWATCH_LISTEN", "127.0.0.1:1002"),
        ("TIDEWATCH_RULES_DIR", "rules-env"),
        ("TIDEWATCH_LAKE__FLUSH_MAX_AGE_MS", "200"),
    ]);
    let mut config = Config::parse(Some(file), None, &env).unwrap();
    // File < environment; what the environment does not set stays the file's.
    assert_eq!(config.listen, "127.0.0.1:1002");
    assert_eq!(config.rules_dir, Some(PathBuf::from("rules-env")));
    assert_eq!(config.lake.flush_max_age_ms, 200);
    assert_eq!(config.lake.flush_max_rows, 10);
    assert_eq!(config.data_dir, PathBuf::from("from-file"));
    // Environment < flags; a flag not given changes nothing.
    config.apply_flags(Flags {
        listen: Some("127.0.0.1:1003".into()),
        data_dir: Some("from-flag".into()),
        rules_dir: None,
    });
    assert_eq!(config.listen, "127.0.0.1:1003");
    assert_eq!(config.data_dir, PathBuf::from("from-flag"));
    assert_eq!(config.rules_dir, Some(PathBuf::from("rules-env")));
    // Defaults < environment without a file.
    let config = Config::parse(None, None, &env).unwrap();
    assert_eq!(config.listen, "127.0.0.1:1002");
    assert_eq!(config.data_dir, PathBuf::from("./tidewatch-data"));
}

#[test]
fn for_serve_reads_the_file_applies_every_layer_and_resolves_localhost() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tidewatch.toml");
    std::fs::write(
        &path,
        "listen = \"localhost:7171\"\nshutdown_timeout_secs = 5\n",
    )
    .unwrap();
    let env = vars(&[
        ("TIDEWATCH_SHUTDOWN_TIMEOUT_SECS", "6"),
        ("TIDEWATCH_LOG", "debug"),
    ]);
    let config = Config::for_serve(Some(&path), &env, Flags::default()).unwrap();
    assert_eq!(config.listen, "127.0.0.1:7171");
    assert_eq!(config.shutdown_timeout_secs, 6);
    let flags = Flags {
        listen: Some("LOCALHOST:0".into()),
        ..Flags::default()
    };
    let config = Config::for_serve(Some(&path), &env, flags).unwrap();
    assert_eq!(config.listen, "127.0.0.1:0");
}

#[test]
fn a_misspelt_variable_stops_the_start_naming_it_and_the_nearest_setting() {
    let env = vars(&[("TIDEWATCH_DETECT__MAX_TIME_AHEAD", "60000")]);
    let error = Config::for_serve(None, &env, Flags::default()).unwrap_err();
    let text = format!("{error:#}");
    assert!(
        text.contains("TIDEWATCH_DETECT__MAX_TIME_AHEAD names no setting"),
        "{text}"
    );
    assert!(
        text.contains("`detect.max_time_ahead_ms` (TIDEWATCH_DETECT__MAX_TIME_AHEAD_MS)"),
        "{text}"
    );
}

#[test]
fn a_mistake_in_the_file_is_reported_at_its_line() {
    let error = Config::parse(
        Some("[lake]\nflush_max_rows = 1\nflush_max_age = 5\n"),
        Some(Path::new("t.toml")),
        &[],
    )
    .unwrap_err();
    let text = format!("{error:#}");
    assert!(text.contains("invalid config t.toml"), "{text}");
    assert!(text.contains("line 3"), "{text}");
    assert!(text.contains("unknown field `flush_max_age`"), "{text}");
    let error = Config::parse(
        Some("[[sinks]]\ntype = \"slack\"\nname = \"s\"\n"),
        None,
        &[],
    )
    .unwrap_err();
    let text = format!("{error:#}");
    assert!(
        text.contains("unknown variant `slack`, expected `webhook` or `file`"),
        "{text}"
    );
}

#[test]
fn listen_takes_an_ip_address_or_a_host_name_with_a_port() {
    assert_eq!(
        parse_listen("127.0.0.1:7070"),
        Ok(ListenAddress::Ip("127.0.0.1:7070".parse().unwrap()))
    );
    assert_eq!(
        parse_listen("[::1]:0"),
        Ok(ListenAddress::Ip("[::1]:0".parse().unwrap()))
    );
    assert_eq!(
        parse_listen("localhost:7070"),
        Ok(ListenAddress::Host("localhost", 7070))
    );
    assert_eq!(
        parse_listen("tidewatch-1.internal.example:80"),
        Ok(ListenAddress::Host("tidewatch-1.internal.example", 80))
    );
    for (listen, expected) in [
        ("localhost", "has no port"),
        ("127.0.0.1", "has no port"),
        ("7070", "has no host"),
        (":7070", "has no host"),
        ("localhost:http", "is not a number from 0 to 65535"),
        ("localhost:70000", "is not a number from 0 to 65535"),
        ("::1:7070", "an IPv6 address goes in brackets"),
        (
            "local host:7070",
            "is neither a host name nor an IP address",
        ),
        ("", "has no port"),
    ] {
        let problem = parse_listen(listen).unwrap_err();
        assert!(problem.starts_with("listen: "), "{listen:?}: {problem}");
        assert!(problem.contains(expected), "{listen:?}: {problem}");
    }
    assert_eq!(
        resolve_listen("localhost:7070").unwrap(),
        "127.0.0.1:7070".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(
        resolve_listen("0.0.0.0:1").unwrap(),
        "0.0.0.0:1".parse::<SocketAddr>().unwrap()
    );
    // `.invalid` never resolves (RFC 6761).
    let problem = resolve_listen("tidewatch.invalid:7070").unwrap_err();
    assert!(
        problem.starts_with("listen: host \"tidewatch.invalid\" cannot be resolved"),
        "{problem}"
    );
}

#[test]
fn settings_that_make_no_sense_are_refused_at_load_naming_each() {
    let file = r#"
listen = "localhost"
data_dir = ""
rules_dir = ""
shutdown_timeout_secs = 0
unready_after_failing_secs = 0
[log]
segment_max_bytes = 100
[ingest]
max_body_bytes = 0
max_decompressed_bytes = 0
max_event_bytes = 0
[streams]
partitions = 0
partition_key = "a..b"
event_time_field = ""
[streams.partition_keys]
"bad name!" = "x"
ok = ""
[streams.lake]
retention = "forever"
[lake]
flush_max_rows = 0
flush_max_bytes = 0
flush_max_age_ms = 0
[lake.compaction]
row_group_rows = 0
target_file_bytes = 0
[detect]
allowed_lateness_ms = -1
max_keys_per_rule = 0
[query]
timeout_ms = 0
max_result_rows = 0
memory_limit_bytes = 1000
threads = 0
[[sigma.logsources]]
product = "linux"
stream = "bad stream"
[[sources]]
kind = "nats"
stream = "events"
subject = "events.>"
url = "http://nats.example:4222, ,nats://[::1"
[[sources]]
kind = "s3"
stream = "trail"
bucket = "logs"
endpoint = "http://exa mple:9000"
[[sinks]]
type = "webhook"
name = "soc"
url = "https://"
"#;
    let config = Config::parse(Some(file), None, &[]).unwrap();
    let text = format!("{:#}", config.validate().unwrap_err());
    for setting in [
        "listen: \"localhost\" has no port",
        "data_dir must not be empty",
        "rules_dir must not be empty",
        "shutdown_timeout_secs must be at least 1, got 0",
        "unready_after_failing_secs must be at least 1, got 0",
        "log.segment_max_bytes must be at least 65536, got 100",
        "ingest.max_body_bytes must be at least 1",
        "ingest.max_decompressed_bytes must be at least 1",
        "ingest.max_event_bytes must be at least 1",
        "streams.partitions must be 1 to 256",
        "streams.partition_key must be a dotted field path",
        "streams.event_time_field must be a dotted field path",
        "streams.partition_keys: invalid stream name \"bad name!\"",
        "streams.partition_keys.ok: \"\" is not a dotted field path",
        "streams.lake.retention",
        "lake.flush_max_rows must be at least 1",
        "lake.flush_max_bytes must be at least 1",
        "lake.flush_max_age_ms must be at least 1",
        "lake.compaction.row_group_rows must be at least 1",
        "lake.compaction.target_file_bytes must be at least 1",
        "detect.allowed_lateness_ms must not be negative",
        "detect.max_keys_per_rule must be at least 1",
        "query.timeout_ms must be at least 1",
        "query.max_result_rows must be at least 1",
        "query.memory_limit_bytes must be at least 1048576, got 1000",
        "query.threads must be at least 1",
        "sigma.logsources[0].stream: invalid stream name \"bad stream\"",
        "source \"nats-events\": url \"http://nats.example:4222\" must use nats://",
        "has an empty server",
        "url \"nats://[::1\" is not a valid URL",
        "source \"s3-trail\": endpoint \"http://exa mple:9000\" is not a valid URL",
        "sink \"soc\"",
    ] {
        assert!(text.contains(setting), "missing {setting:?} in:\n{text}");
    }
}

#[test]
fn the_lake_s3_endpoint_must_be_a_url() {
    let file = "[lake]\nlocation = \"s3://bucket/p\"\n[lake.s3]\nendpoint = \"http://\"\n";
    let config = Config::parse(Some(file), None, &[]).unwrap();
    let text = format!("{:#}", config.validate().unwrap_err());
    assert!(text.contains("lake.s3: endpoint \"http://\""), "{text}");
    let file =
        "[lake]\nlocation = \"s3://bucket/p\"\n[lake.s3]\nendpoint = \"http://127.0.0.1:9000\"\n";
    let config = Config::parse(Some(file), None, &[]).unwrap();
    config.validate().unwrap();
}

#[test]
fn the_defaults_are_valid() {
    Config::default().validate().unwrap();
    let config = Config::for_serve(None, &[], Flags::default()).unwrap();
    assert_eq!(config.listen, "127.0.0.1:7070");
}

#[test]
fn events_may_be_at_most_half_a_log_record() {
    let at_limit = format!("[ingest]\nmax_event_bytes = {}\n", 4 << 20);
    Config::parse(Some(&at_limit), None, &[])
        .unwrap()
        .validate()
        .unwrap();
    let over = format!("[ingest]\nmax_event_bytes = {}\n", (4 << 20) + 1);
    let config = Config::parse(Some(&over), None, &[]).unwrap();
    let text = format!("{:#}", config.validate().unwrap_err());
    assert!(
        text.contains("ingest.max_event_bytes must be at most 4194304 (4 MiB), got 4194305"),
        "{text}"
    );
}
