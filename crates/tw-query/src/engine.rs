//! The query engine: a dedicated runtime, a memory pool per query, one fresh context per query.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::{RecordBatch, RecordBatchOptions};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::TableReference;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::cache::cache_manager::CacheManagerConfig;
use datafusion::execution::object_store::{
    DefaultObjectStoreRegistry, ObjectStoreRegistry, ObjectStoreUrl,
};
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::prelude::{SQLOptions, SessionConfig, SessionContext};
use datafusion::sql::parser::Statement as DfStatement;
use futures::StreamExt;
use tokio::runtime::Runtime;
use tokio::task::JoinHandle;

use crate::catalog::LakeCatalog;
use crate::config::QueryConfig;
use crate::encode::{EncodedResult, ResultFormat};
use crate::error::{ErrorOutcome, QueryError};
use crate::live_files::{HotStarts, LiveFiles};
use crate::memory::{QueryMemoryPool, SharedQueryMemory};
use crate::per_value::{CountPerValueRule, PerValuePredicates};
use crate::statement::{parse_read_only, rewrite_dotted_identifiers};
use crate::table::stream_table;

/// Name of DataFusion's catalog schema.
const INFORMATION_SCHEMA: &str = "information_schema";

/// The rows of a finished query.
#[derive(Debug, Clone)]
pub struct QueryResult {
    /// Schema of the result (also when no row was returned).
    pub schema: SchemaRef,
    /// The rows, at most `max_result_rows` of them; never empty: a result without rows is
    /// one empty batch, so an encoder given only the batches (CSV, the text table) still
    /// writes the column names.
    pub batches: Vec<RecordBatch>,
    /// Whether rows were cut at `max_result_rows`.
    pub truncated: bool,
    /// Wall-clock time of planning and execution.
    pub elapsed_ms: u64,
}

impl QueryResult {
    /// Number of rows returned.
    pub fn num_rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }
}

/// SQL over the lake's Parquet files and its not-yet-flushed rows.
///
/// Queries run on a runtime owned by the engine, apart from ingest, so a heavy query cannot
/// starve appends; so does the encoding of their results ([`QueryEngine::query_encoded`]).
/// Each query has a memory pool of its own of `memory_limit_bytes`, all of them bounded
/// together by [`QueryConfig::all_queries_memory_bytes`].
pub struct QueryEngine {
    catalog: Arc<dyn LakeCatalog>,
    config: QueryConfig,
    /// Spill space and caches, shared by all queries; its memory pool is unused (each query
    /// has its own, see [`QueryJob::context`]).
    runtime_env: Arc<RuntimeEnv>,
    shared_memory: Arc<SharedQueryMemory>,
    lake_store: LakeStore,
    // Option so Drop can hand the runtime to `shutdown_background`: dropping a runtime
    // inside another runtime's async context panics.
    runtime: Option<Runtime>,
}

impl std::fmt::Debug for QueryEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryEngine")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl QueryEngine {
    /// Creates an engine over any [`LakeCatalog`].
    pub fn with_catalog(
        catalog: Arc<dyn LakeCatalog>,
        config: QueryConfig,
    ) -> Result<Self, QueryError> {
        config
            .validate()
            .map_err(|problems| QueryError::Setup(problems.join("; ")))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(config.threads)
            .thread_name("tw-query")
            .enable_all()
            .build()
            .map_err(|e| QueryError::Setup(format!("query runtime: {e}")))?;
        // DataFusion caches directory listings forever by default; the lake adds files on
        // every flush (and the rows leave the hot buffer), so a cached listing would hide
        // them. Footer and statistics caches stay: they are checked against size and mtime.
        let caches = CacheManagerConfig::default().with_list_files_cache_limit(0);
        let runtime_env = RuntimeEnvBuilder::new()
            .with_cache_manager(caches)
            .build_arc()
            .map_err(|e| QueryError::Setup(format!("query runtime environment: {e}")))?;
        let shared_memory = Arc::new(SharedQueryMemory::new(config.all_queries_memory_bytes()));
        // Each query lists the lake through its own `LiveFiles` over this store: the
        // catalog's (S3) or, for a local lake, the local file system.
        let (url, store) = catalog.object_store().unwrap_or_else(|| {
            let local: Arc<dyn object_store::ObjectStore> =
                Arc::new(object_store::local::LocalFileSystem::new());
            (
                ObjectStoreUrl::local_filesystem().as_str().to_string(),
                local,
            )
        });
        let url = ObjectStoreUrl::parse(&url)
            .map_err(|e| QueryError::Setup(format!("lake object store url {url}: {e}")))?;
        Ok(Self {
            catalog,
            config,
            runtime_env,
            shared_memory,
            lake_store: LakeStore { url, store },
            runtime: Some(runtime),
        })
    }

    /// The engine's settings.
    pub fn config(&self) -> &QueryConfig {
        &self.config
    }

    /// Runs one read-only SQL statement on the engine's runtime, within the time limit.
    ///
    /// Dropping the returned future cancels the query.
    pub async fn query(&self, sql: &str) -> Result<QueryResult, QueryError> {
        self.run_on_runtime(sql, Ok).await
    }

    /// Runs one read-only SQL statement like [`QueryEngine::query`] and encodes its result as
    /// `format`, also on the engine's runtime: writing up to `max_result_rows` rows is CPU
    /// work that must not hold the caller's (HTTP, ingest) threads.
    pub async fn query_encoded(
        &self,
        sql: &str,
        format: ResultFormat,
    ) -> Result<EncodedResult, QueryError> {
        self.run_on_runtime(sql, move |result| EncodedResult::encode(&result, format))
            .await
    }

    /// Runs `sql` on the engine's runtime, then `finish` on its result, in the same task.
    async fn run_on_runtime<T: Send + 'static>(
        &self,
        sql: &str,
        finish: impl FnOnce(QueryResult) -> Result<T, QueryError> + Send + 'static,
    ) -> Result<T, QueryError> {
        let runtime = self
            .runtime
            .as_ref()
            .ok_or_else(|| QueryError::Internal("query runtime is shut down".to_string()))?;
        let job = QueryJob {
            catalog: Arc::clone(&self.catalog),
            config: self.config.clone(),
            runtime_env: Arc::clone(&self.runtime_env),
            shared_memory: Arc::clone(&self.shared_memory),
            lake_store: self.lake_store.clone(),
            sql: sql.to_string(),
        };
        let timeout_ms = self.config.timeout_ms;
        let handle = runtime.spawn(async move {
            let started = Instant::now();
            let outcome = tokio::time::timeout(Duration::from_millis(timeout_ms), job.run()).await;
            // Elapsed time is measured here, on the query runtime, so a busy caller does not
            // inflate it.
            let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            let result = match outcome {
                Ok(Ok(mut result)) => {
                    result.elapsed_ms = elapsed_ms;
                    Ok(result)
                }
                Ok(Err(error)) => Err(error),
                Err(_) => Err(QueryError::Timeout { timeout_ms }),
            };
            record_metrics(&result);
            result.and_then(finish)
        });
        let mut guard = AbortOnDrop(handle);
        (&mut guard.0)
            .await
            .map_err(|e| QueryError::Internal(format!("query task failed: {e}")))?
    }

    /// Bytes reserved by all running queries now.
    #[cfg(test)]
    pub(crate) fn reserved_memory(&self) -> usize {
        self.shared_memory.reserved()
    }
}

impl Drop for QueryEngine {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Aborts the query task when the caller stops waiting (client gone, request cancelled).
struct AbortOnDrop<T>(JoinHandle<Result<T, QueryError>>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn record_metrics(result: &Result<QueryResult, QueryError>) {
    let outcome = match result {
        Ok(_) => "ok",
        Err(e) if e.is_user_error() => "user_error",
        Err(e) if e.is_unavailable() => "unavailable",
        Err(_) => "internal_error",
    };
    match result {
        Ok(result) => tracing::debug!(
            rows = result.num_rows(),
            truncated = result.truncated,
            elapsed_ms = result.elapsed_ms,
            "query finished"
        ),
        Err(error) if error.outcome() == ErrorOutcome::Internal => {
            tracing::error!(%error, "query failed")
        }
        Err(error) => tracing::debug!(%error, "query refused or cut short"),
    }
    metrics::counter!("tidewatch_queries_total", "outcome" => outcome).increment(1);
    if let Ok(result) = result {
        metrics::histogram!("tidewatch_query_duration_seconds")
            .record(result.elapsed_ms as f64 / 1000.0);
    }
}

/// `schema` with top-level `Utf8View` columns (how tables read strings, see `table.rs`) as
/// plain `Utf8`: results go to clients (JSON, CSV, Arrow IPC readers) that expect the
/// classic string type, and a result is small next to the data a query scans.
fn plain_strings_schema(schema: &SchemaRef) -> SchemaRef {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|field| match field.data_type() {
            DataType::Utf8View => field.as_ref().clone().with_data_type(DataType::Utf8),
            _ => field.as_ref().clone(),
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// Casts `batch` to `schema` (from [`plain_strings_schema`] of the batch's own schema).
fn with_plain_strings(batch: RecordBatch, schema: &SchemaRef) -> Result<RecordBatch, QueryError> {
    if batch.schema().fields() == schema.fields() {
        return Ok(batch);
    }
    batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(column, field)| {
            if column.data_type() == field.data_type() {
                Ok(Arc::clone(column))
            } else {
                cast(column, field.data_type())
            }
        })
        .collect::<Result<Vec<_>, _>>()
        .and_then(|columns| {
            RecordBatch::try_new_with_options(
                Arc::clone(schema),
                columns,
                &RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
            )
        })
        .map_err(|e| QueryError::Internal(format!("converting result strings: {e}")))
}

/// Where the lake's files are read from.
#[derive(Clone)]
struct LakeStore {
    url: ObjectStoreUrl,
    store: Arc<dyn object_store::ObjectStore>,
}

/// Everything one query needs, moved onto the query runtime.
struct QueryJob {
    catalog: Arc<dyn LakeCatalog>,
    config: QueryConfig,
    runtime_env: Arc<RuntimeEnv>,
    shared_memory: Arc<SharedQueryMemory>,
    lake_store: LakeStore,
    sql: String,
}

impl QueryJob {
    async fn run(self) -> Result<QueryResult, QueryError> {
        let mut statement = parse_read_only(&self.sql)?;
        let hot_starts = HotStarts::default();
        let ctx = self.context(&hot_starts);
        let wanted = referenced_streams(&ctx, &statement)?;
        let dotted = self.register_streams(&ctx, wanted.as_ref(), &hot_starts)?;
        rewrite_dotted_identifiers(&mut statement, &dotted);

        let plan = ctx.state().statement_to_plan(statement).await?;
        // Second gate after the AST check: e.g. `SELECT ... INTO` plans as DDL.
        SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false)
            .verify_plan(&plan)
            .map_err(|e| QueryError::Refused(e.to_string()))?;
        let frame = ctx.execute_logical_plan(plan).await?;
        let schema = plain_strings_schema(frame.schema().inner());
        let mut stream = frame.execute_stream().await?;

        let max_rows = self.config.max_result_rows;
        let (mut batches, mut rows, mut truncated) = (Vec::new(), 0usize, false);
        while let Some(batch) = stream.next().await {
            let batch = with_plain_strings(batch?, &schema)?;
            if batch.num_rows() == 0 {
                continue;
            }
            if rows + batch.num_rows() > max_rows {
                let keep = max_rows - rows;
                if keep > 0 {
                    batches.push(batch.slice(0, keep));
                }
                // Dropping the stream stops the rest of the work.
                truncated = true;
                break;
            }
            rows += batch.num_rows();
            batches.push(batch);
        }
        if batches.is_empty() {
            batches.push(RecordBatch::new_empty(Arc::clone(&schema)));
        }
        Ok(QueryResult {
            schema,
            batches,
            truncated,
            elapsed_ms: 0,
        })
    }

    /// A context whose lake listings are cut at the hot snapshots put into `hot_starts`.
    fn context(&self, hot_starts: &HotStarts) -> SessionContext {
        let mut config = SessionConfig::new()
            .with_information_schema(true)
            .with_target_partitions(self.config.threads)
            .with_collect_statistics(true)
            .with_parquet_pruning(true);
        let options = config.options_mut();
        // CloudTrail's camelCase fields must match as written, unquoted.
        options.sql_parser.enable_ident_normalization = false;
        // Prune row groups by statistics and bloom filters, pages by the page index, and
        // evaluate filters while decoding so only matching rows' other columns are read.
        options.execution.parquet.pruning = true;
        options.execution.parquet.enable_page_index = true;
        options.execution.parquet.bloom_filter_on_read = true;
        options.execution.parquet.pushdown_filters = true;
        options.execution.parquet.reorder_filters = true;
        // The engine's spill space and caches, with a memory pool of this query's own (its
        // limit is per query) and an object store registry of its own: its `LiveFiles` knows
        // this query's snapshots.
        let registry = DefaultObjectStoreRegistry::new();
        registry.register_store(
            self.lake_store.url.as_ref(),
            Arc::new(LiveFiles::new(
                Arc::clone(&self.lake_store.store),
                Arc::clone(hot_starts),
            )),
        );
        let runtime_env = RuntimeEnv {
            memory_pool: Arc::new(QueryMemoryPool::new(
                self.config.memory_limit_bytes,
                Arc::clone(&self.shared_memory),
            )),
            disk_manager: Arc::clone(&self.runtime_env.disk_manager),
            cache_manager: Arc::clone(&self.runtime_env.cache_manager),
            object_store_registry: Arc::new(registry),
        };
        let state = SessionStateBuilder::new()
            .with_config(config)
            .with_runtime_env(Arc::new(runtime_env))
            .with_default_features()
            .with_optimizer_rule(Arc::new(PerValuePredicates))
            .with_physical_optimizer_rule(Arc::new(CountPerValueRule))
            .build();
        let ctx = SessionContext::new_with_state(state);
        crate::functions::register(&ctx);
        ctx
    }

    /// Registers one table per stream (only those in `wanted`, when given); returns the
    /// dotted column names seen, for the rewrite.
    ///
    /// Order matters for the read-once invariant: the hot snapshot is taken here, before
    /// planning lists the files, and its `hot_start` goes into `hot_starts`. A flush in
    /// between writes files whose rows the snapshot still holds; the query's `LiveFiles`
    /// leaves them out of the listing. Listing first could miss rows that a flush moved out
    /// of the hot buffer after the listing.
    fn register_streams(
        &self,
        ctx: &SessionContext,
        wanted: Option<&HashSet<String>>,
        hot_starts: &HotStarts,
    ) -> Result<HashSet<String>, QueryError> {
        let mut dotted = HashSet::new();
        for stream in self.catalog.streams() {
            if wanted.is_some_and(|names| !names.contains(stream.as_str())) {
                continue;
            }
            let hot = self.catalog.hot_snapshot(&stream);
            hot_starts
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .insert(stream.to_string(), hot.hot_start.clone());
            let table = stream_table(
                ctx,
                self.catalog.table_schema(&stream),
                self.catalog.stream_location(&stream).as_deref(),
                hot,
            )?;
            dotted.extend(
                table
                    .schema()
                    .fields()
                    .iter()
                    .map(|f| f.name())
                    .filter(|n| n.contains('.'))
                    .cloned(),
            );
            // `bare` keeps names such as `vpc.flow` whole: users quote them, "vpc.flow".
            ctx.register_table(TableReference::bare(stream.as_str()), table)?;
        }
        Ok(dotted)
    }
}

/// The table names a statement reads, or None when it reads the catalog itself
/// (information_schema, SHOW) and so needs every stream registered.
///
/// Registering only what is read spares each query a hot snapshot of every stream.
fn referenced_streams(
    ctx: &SessionContext,
    statement: &DfStatement,
) -> Result<Option<HashSet<String>>, QueryError> {
    let references = ctx.state().resolve_table_references(statement)?;
    if references
        .iter()
        .any(|r| r.schema() == Some(INFORMATION_SCHEMA))
    {
        return Ok(None);
    }
    Ok(Some(
        references.iter().map(|r| r.table().to_string()).collect(),
    ))
}
