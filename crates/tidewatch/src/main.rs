//! `tidewatch`: real-time security and event analytics in one binary.
//!
//! This crate is the wiring: the command line, configuration, and the start and stop of every
//! stage. It is the only crate where `anyhow` is used.

mod bench;
mod bench_compat;
mod bench_search;
mod bench_sustained;
mod client;
mod config;
mod datagen;
mod demo;
mod detection;
mod lake_cli;
mod lake_maintenance;
mod replay;
mod rules_cli;
mod search_cli;
mod serve;

use std::io::Write;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::Config;

/// Every stage builds and drops many small JSON values per event; glibc's allocator spent about
/// a quarter of all CPU in the profile of a 1M-event ingest (see BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use crate::datagen::{Generator, Kind};

#[derive(Parser)]
#[command(
    name = "tidewatch",
    version,
    about = "Real-time security and event analytics in one binary"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (ingest, detection, lake, SQL) on 127.0.0.1:7070 with data in ./tidewatch-data.
    Serve {
        /// TOML configuration file. Every setting of it can also be set by an environment
        /// variable, TIDEWATCH_ and its key path in upper case with `__` between table levels
        /// (TIDEWATCH_LAKE__FLUSH_MAX_AGE_MS=5000); flags win over the environment, which wins
        /// over the file.
        #[arg(long, env = "TIDEWATCH_CONFIG")]
        config: Option<PathBuf>,
        /// Data directory (log, lake, rules, alerts, offsets) [env: TIDEWATCH_DATA_DIR].
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Listen address: IP:PORT or HOST:PORT (port 0 picks a free port)
        /// [env: TIDEWATCH_LISTEN].
        #[arg(long)]
        listen: Option<String>,
        /// Directory of rule files (YAML/JSON) loaded at start [env: TIDEWATCH_RULES_DIR].
        #[arg(long)]
        rules_dir: Option<PathBuf>,
        /// Generate live CloudTrail and clickstream traffic and install example rules.
        #[arg(long)]
        demo: bool,
    },
    /// Send NDJSON / JSON files, directories of them (or stdin) to a running server, in
    /// batches, with retries.
    Send {
        /// Target stream.
        #[arg(long)]
        stream: String,
        /// Server URL.
        #[arg(
            long,
            env = "TIDEWATCH_SERVER",
            default_value = "http://127.0.0.1:7070"
        )]
        server: String,
        /// Lines per request.
        #[arg(long, default_value_t = 10_000)]
        batch_lines: usize,
        /// Bytes per request (about).
        #[arg(long, default_value_t = 8 << 20)]
        batch_bytes: usize,
        /// Files or directories to send (`-` or none: stdin); a directory sends every
        /// `.json`, `.ndjson`, `.json.gz` and `.ndjson.gz` file below it. NDJSON is sent in
        /// batches of lines (`.gz` decompressed here); a `.json` document (array, CloudTrail
        /// `{"Records": [...]}`) is sent whole, gzip files with `Content-Encoding: gzip`.
        files: Vec<PathBuf>,
    },
    /// Write realistic events deterministically (same seed, same bytes).
    Gen {
        /// Kind of events.
        #[arg(long, value_enum, default_value = "cloudtrail")]
        kind: Kind,
        /// Number of events.
        #[arg(long, default_value_t = 1000)]
        count: u64,
        /// Random seed.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Events per simulated second.
        #[arg(long, default_value_t = 1000)]
        rate: u64,
        /// Simulated start time (RFC 3339, UTC).
        #[arg(long, default_value = "2024-03-01T00:00:00Z")]
        start: String,
        /// Output file (`-`: stdout).
        #[arg(long, default_value = "-")]
        out: PathBuf,
    },
    /// Measure a running server (see BENCHMARKS.md); prints one JSON document.
    Bench {
        #[command(subcommand)]
        what: BenchCommand,
        /// Server URL.
        #[arg(
            long,
            global = true,
            env = "TIDEWATCH_SERVER",
            default_value = "http://127.0.0.1:7070"
        )]
        server: String,
    },
    /// Manage the rules of a running server.
    Rules {
        #[command(subcommand)]
        what: RulesCommand,
        /// Server URL.
        #[arg(
            long,
            global = true,
            env = "TIDEWATCH_SERVER",
            default_value = "http://127.0.0.1:7070"
        )]
        server: String,
    },
    /// Run SQL on a running server.
    Query {
        /// The SQL statement.
        sql: String,
        /// Server URL.
        #[arg(
            long,
            env = "TIDEWATCH_SERVER",
            default_value = "http://127.0.0.1:7070"
        )]
        server: String,
        /// Output format.
        #[arg(long, value_enum, default_value = "auto")]
        format: client::OutputFormat,
    },
    /// Full-text search of a stream on a running server (Lucene-like query), newest first.
    Search {
        /// The query: terms, "phrases", field.path:value, AND/OR/NOT, prefix*, [a TO b].
        query: String,
        /// The stream to search.
        #[arg(long)]
        stream: String,
        /// Earliest event time: RFC 3339, Unix ms, or now-<N><s|m|h|d>.
        #[arg(long)]
        from: Option<String>,
        /// Latest event time (exclusive), same forms.
        #[arg(long)]
        to: Option<String>,
        /// Most events to print.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Server URL.
        #[arg(
            long,
            env = "TIDEWATCH_SERVER",
            default_value = "http://127.0.0.1:7070"
        )]
        server: String,
    },
    /// Maintain the lake of a running server.
    Lake {
        #[command(subcommand)]
        what: LakeCommand,
        /// Server URL.
        #[arg(
            long,
            global = true,
            env = "TIDEWATCH_SERVER",
            default_value = "http://127.0.0.1:7070"
        )]
        server: String,
    },
    /// Backtest a rule file over stored events of a running server (dry run, nothing alerts).
    Replay {
        /// The rule (YAML or JSON).
        #[arg(long)]
        rule: PathBuf,
        /// Start of the range of ingest times (RFC 3339 or Unix ms); default: the beginning.
        #[arg(long)]
        from: Option<String>,
        /// End of the range (inclusive); default: now.
        #[arg(long)]
        to: Option<String>,
        /// Server URL.
        #[arg(
            long,
            env = "TIDEWATCH_SERVER",
            default_value = "http://127.0.0.1:7070"
        )]
        server: String,
    },
}

#[derive(Subcommand)]
enum LakeCommand {
    /// Merge the small Parquet files of closed hours now (sorted, bloom filters), print the report.
    Compact {
        /// Compact hours that ended at least this many seconds ago (0: every hour, the
        /// current one too); default: the server's `lake.compaction.min_age_secs`.
        #[arg(long)]
        min_age_secs: Option<u64>,
    },
    /// Import existing NDJSON / JSON (CloudTrail `Records`, arrays; `.gz` too) and Parquet
    /// files straight into a stream's lake, without detection or search (that is `send`).
    /// Each file is imported once: the same content again adds nothing, an interrupted import
    /// is completed by running it again. Prints a report per file; exits with 2 if any record
    /// or file was refused.
    Import {
        /// Target stream (created with the defaults if it does not exist).
        #[arg(long)]
        stream: String,
        /// Files or directories; a directory imports every `.json`, `.ndjson`, `.json.gz`,
        /// `.ndjson.gz` and `.parquet` file below it.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
}

#[derive(Subcommand)]
enum RulesCommand {
    /// Load every .yml/.yaml/.json rule file of a directory (Sigma or native; recursively);
    /// prints ok/refused with the reason per file and fails if any file was refused.
    Import {
        /// The directory.
        dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Full-text search latency (p50/p99/max) on data already in a stream.
    Search {
        #[arg(long, default_value = "bench")]
        stream: String,
        /// Repetitions of each query (after one warm-up).
        #[arg(long, default_value_t = 100)]
        runs: usize,
        /// A query to time (repeatable), e.g. one eventID as a phrase for a rare term.
        #[arg(long = "query", required = true)]
        queries: Vec<String>,
    },
    /// Durable HTTP ingest throughput and latency, then consumer drain times.
    Ingest {
        #[arg(long, default_value = "bench")]
        stream: String,
        #[arg(long, default_value_t = 1_000_000)]
        events: u64,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Events per simulated second of event time (as `tidewatch gen --rate`): with the
        /// same seed and rate the events are byte for byte those `gen` writes.
        #[arg(long, default_value_t = 1000)]
        rate: u64,
        /// Events per request.
        #[arg(long, default_value_t = 5000)]
        batch: usize,
        /// Requests in flight.
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
    },
    /// Event-accepted → alert latency at a steady rate.
    Latency {
        #[arg(long, default_value_t = 50_000)]
        rate: u64,
        #[arg(long, default_value_t = 30)]
        seconds: u64,
        #[arg(long, default_value_t = 42)]
        seed: u64,
    },
    /// Holds a fixed ingest rate and reports whether detection, the lake and search keep up
    /// (their lag stays under a second of events).
    Sustained {
        #[arg(long, default_value = "bench")]
        stream: String,
        /// Events per second.
        #[arg(long, default_value_t = 200_000)]
        rate: u64,
        #[arg(long, default_value_t = 15)]
        seconds: u64,
        #[arg(long, default_value_t = 42)]
        seed: u64,
    },
    /// Kinesis PutRecords and Elasticsearch _bulk against native NDJSON on the same records.
    Compat {
        /// Events per protocol.
        #[arg(long, default_value_t = 200_000)]
        events: u64,
        /// Requests in flight.
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
        /// Pid of a local server: also report its CPU seconds per protocol.
        #[arg(long)]
        server_pid: Option<u32>,
    },
    /// Time SQL statements (median of `runs`).
    Queries {
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// The statements.
        sql: Vec<String>,
    },
}

fn main() -> anyhow::Result<()> {
    // First, so that what the allocator maps from here on is backed by ordinary pages.
    let huge_pages = tw_os::disable_transparent_huge_pages();
    let c_heap =
        tw_os::retain_freed_c_memory(tw_os::C_HEAP_LARGEST_REUSED, tw_os::C_HEAP_KEPT_FREE);
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TIDEWATCH_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    if let Err(error) = huge_pages {
        tracing::warn!(%error, "transparent huge pages could not be turned off");
    }
    if let Err(error) = c_heap {
        tracing::warn!(%error, "the C allocator keeps its defaults");
    }
    let cli = Cli::parse();
    match cli.command {
        Command::Serve {
            config,
            data_dir,
            listen,
            rules_dir,
            demo,
        } => {
            let flags = crate::config::Flags {
                data_dir,
                listen,
                rules_dir,
            };
            let settings =
                Config::for_serve(config.as_deref(), &crate::config::environment()?, flags)?;
            runtime()?.block_on(serve::serve(settings, demo))
        }
        Command::Send {
            stream,
            server,
            batch_lines,
            batch_bytes,
            files,
        } => runtime()?.block_on(client::send(
            &server,
            &stream,
            &files,
            batch_lines.max(1),
            batch_bytes.max(1),
        )),
        Command::Gen {
            kind,
            count,
            seed,
            rate,
            start,
            out,
        } => generate(kind, count, seed, rate, &start, &out),
        Command::Bench { what, server } => {
            let server = server.trim_end_matches('/').to_string();
            let report = runtime()?.block_on(async {
                match what {
                    BenchCommand::Ingest {
                        stream,
                        events,
                        seed,
                        rate,
                        batch,
                        concurrency,
                    } => {
                        let plan = bench::IngestPlan {
                            stream,
                            events,
                            seed,
                            rate: rate.max(1),
                            batch: batch.max(1),
                            concurrency,
                        };
                        bench::ingest(&server, plan).await
                    }
                    BenchCommand::Latency {
                        rate,
                        seconds,
                        seed,
                    } => bench::latency(&server, rate, seconds, seed).await,
                    BenchCommand::Sustained {
                        stream,
                        rate,
                        seconds,
                        seed,
                    } => {
                        let plan = bench_sustained::SustainedPlan {
                            stream,
                            rate,
                            seconds,
                            seed,
                        };
                        bench_sustained::sustained(&server, plan).await
                    }
                    BenchCommand::Compat {
                        events,
                        concurrency,
                        server_pid,
                    } => bench_compat::compat(&server, events, concurrency, server_pid).await,
                    BenchCommand::Queries { runs, sql } => {
                        bench::queries(&server, &sql, runs).await
                    }
                    BenchCommand::Search {
                        stream,
                        runs,
                        queries,
                    } => bench_search::search(&server, &stream, &queries, runs).await,
                }
            })?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(())
        }
        Command::Query {
            sql,
            server,
            format,
        } => runtime()?.block_on(client::query(&server, &sql, format)),
        Command::Rules { what, server } => match what {
            RulesCommand::Import { dir } => runtime()?.block_on(rules_cli::import(&server, &dir)),
        },
        Command::Search {
            query,
            stream,
            from,
            to,
            limit,
            server,
        } => runtime()?.block_on(search_cli::search(
            &server,
            &stream,
            &query,
            from.as_deref(),
            to.as_deref(),
            limit,
        )),
        Command::Lake { what, server } => match what {
            LakeCommand::Compact { min_age_secs } => {
                runtime()?.block_on(lake_cli::compact(&server, min_age_secs))
            }
            LakeCommand::Import { stream, paths } => {
                runtime()?.block_on(lake_cli::import(&server, &stream, &paths))
            }
        },
        Command::Replay {
            rule,
            from,
            to,
            server,
        } => runtime()?.block_on(replay::replay(
            &server,
            &rule,
            from.as_deref(),
            to.as_deref(),
        )),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

fn generate(
    kind: Kind,
    count: u64,
    seed: u64,
    rate: u64,
    start: &str,
    out: &PathBuf,
) -> anyhow::Result<()> {
    let start_secs = tw_core::parse_time_ms(&serde_json::Value::String(start.to_string()))
        .ok_or_else(|| anyhow::anyhow!("--start {start:?} is not a time"))?
        / 1000;
    let mut writer: Box<dyn Write> = if out.as_os_str() == "-" {
        Box::new(std::io::BufWriter::with_capacity(
            1 << 20,
            std::io::stdout().lock(),
        ))
    } else {
        Box::new(std::io::BufWriter::with_capacity(
            1 << 20,
            std::fs::File::create(out)?,
        ))
    };
    let mut generator = Generator::new(kind, seed, rate, start_secs);
    let mut buffer = String::with_capacity(1 << 20);
    for _ in 0..count {
        generator.next_into(&mut buffer);
        if buffer.len() > 900_000 {
            writer.write_all(buffer.as_bytes())?;
            buffer.clear();
        }
    }
    writer.write_all(buffer.as_bytes())?;
    writer.flush()?;
    Ok(())
}
