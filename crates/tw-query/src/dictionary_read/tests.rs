//! Dictionary reads: the hints, the adapter, and both on a lake scan planned by DataFusion.

use bytes::Bytes;
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, DictionaryArray, Int64Array, RecordBatch, StringArray,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{Field, Int32Type, Schema};
use datafusion::common::ScalarValue;
use datafusion::common::config::ConfigOptions;
use datafusion::execution::SessionStateBuilder;
use datafusion::logical_expr::Operator;
use datafusion::physical_expr::expressions::{BinaryExpr, CastExpr, Column, lit};
use datafusion::physical_expr::{PhysicalExpr, ScalarFunctionExpr};
use datafusion::physical_expr_adapter::PhysicalExprAdapterFactory;
use datafusion::prelude::{SessionConfig, SessionContext};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ParquetRecordBatchReaderBuilder};
use parquet::file::metadata::ParquetMetaDataReader;
use parquet::file::properties::WriterProperties;

use super::hints::with_dictionary_hints;
use super::*;
use crate::per_value::PerValuePredicates;

const AGENTS: [&str; 3] = [
    "curl/8.5.0 kali",
    "aws-cli/2.15.0",
    "Mozilla/5.0 (X11; Kali)",
];
const ROWS: usize = 4000;

/// A Parquet file of [`ROWS`] rows: `agent` repeating (dictionary-encoded on every page),
/// `id` unique (its dictionary outgrows the writer's limit, so later pages are plain),
/// `n` an integer, and `name` repeating but never asked for.
fn file() -> Bytes {
    let agent: StringArray = (0..ROWS).map(|i| Some(AGENTS[i % 3])).collect();
    let id: StringArray = (0..ROWS).map(|i| Some(format!("request-{i:08}"))).collect();
    let n: Int64Array = (0..ROWS as i64).map(Some).collect();
    let batch = RecordBatch::try_from_iter([
        ("agent", Arc::new(agent.clone()) as ArrayRef),
        ("id", Arc::new(id)),
        ("n", Arc::new(n)),
        ("name", Arc::new(agent)),
    ])
    .expect("batch");
    let properties = WriterProperties::builder()
        .set_dictionary_page_size_limit(1024)
        .build();
    let mut out = Vec::new();
    let mut writer =
        ArrowWriter::try_new(&mut out, batch.schema(), Some(properties)).expect("writer");
    writer.write(&batch).expect("write");
    writer.close().expect("close");
    Bytes::from(out)
}

fn names(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|name| name.to_string()).collect()
}

#[test]
fn only_columns_dictionary_encoded_on_every_page_are_hinted() {
    let bytes = file();
    let metadata = Arc::new(
        ParquetMetaDataReader::new()
            .parse_and_finish(&bytes)
            .expect("metadata"),
    );
    let hinted = with_dictionary_hints(
        Arc::clone(&metadata),
        &names(&["agent", "id", "n", "absent"]),
    )
    .expect("hinted");
    let reader = ArrowReaderMetadata::try_new(hinted, Default::default()).expect("schema");
    let types: Vec<(&str, &DataType)> = reader
        .schema()
        .fields()
        .iter()
        .map(|field| (field.name().as_str(), field.data_type()))
        .collect();
    assert_eq!(
        types,
        [
            ("agent", &dictionary_type()),
            ("id", &DataType::Utf8),
            ("n", &DataType::Int64),
            ("name", &DataType::Utf8),
        ]
    );
    // The reader keeps the file's dictionary: the same values, as keys into it.
    let batches = ParquetRecordBatchReaderBuilder::new_with_metadata(bytes, reader)
        .build()
        .expect("reader")
        .collect::<std::result::Result<Vec<_>, _>>()
        .expect("rows");
    let mut row = 0;
    for batch in &batches {
        let agents = batch.column(0);
        assert_eq!(agents.data_type(), &dictionary_type());
        let agents = cast(agents, &DataType::Utf8).expect("cast");
        for value in agents.as_string::<i32>().iter() {
            assert_eq!(value, Some(AGENTS[row % 3]));
            row += 1;
        }
    }
    assert_eq!(row, ROWS);
    // Nothing asked for can be read as a dictionary: the very same metadata.
    let same =
        with_dictionary_hints(Arc::clone(&metadata), &names(&["id", "n"])).expect("unchanged");
    assert!(Arc::ptr_eq(&same, &metadata));
}

#[test]
fn per_value_predicates_get_the_dictionary_other_expressions_a_cast() {
    let logical = Arc::new(Schema::new(vec![Field::new(
        "agent",
        DataType::Utf8View,
        true,
    )]));
    let physical = Arc::new(Schema::new(vec![Field::new(
        "agent",
        dictionary_type(),
        true,
    )]));
    let agent: Arc<dyn PhysicalExpr> = Arc::new(Column::new("agent", 0));
    let ilike = ScalarFunctionExpr::try_new(
        Arc::new(ScalarUDF::from(PerValuePredicate::new(
            Operator::ILikeMatch,
            None,
        ))),
        vec![
            Arc::clone(&agent),
            lit(ScalarValue::Utf8View(Some("%kali%".into()))),
        ],
        &logical,
        Arc::new(ConfigOptions::default()),
    )
    .expect("call");
    let equal = BinaryExpr::new(
        agent,
        Operator::Eq,
        lit(ScalarValue::Utf8View(Some(AGENTS[1].into()))),
    );
    let expr: Arc<dyn PhysicalExpr> = Arc::new(BinaryExpr::new(
        Arc::new(ilike),
        Operator::Or,
        Arc::new(equal),
    ));

    let rewritten = PerValueAdapterFactory::around(None)
        .create(logical, Arc::clone(&physical))
        .and_then(|adapter| adapter.rewrite(expr))
        .expect("rewrite");
    let or = rewritten.downcast_ref::<BinaryExpr>().expect("OR");
    let call = or
        .left()
        .downcast_ref::<ScalarFunctionExpr>()
        .expect("the predicate");
    assert!(call.args()[0].downcast_ref::<Column>().is_some(), "{call}");
    let compared = or.right().downcast_ref::<BinaryExpr>().expect("=");
    assert!(
        compared.left().downcast_ref::<CastExpr>().is_some(),
        "{compared}"
    );

    // Evaluated over a dictionary column, NULL rows included.
    let values: Vec<Option<&str>> = (0..100)
        .map(|i| (i % 7 != 0).then_some(AGENTS[i % 3]))
        .collect();
    let column: DictionaryArray<Int32Type> = values.iter().copied().collect();
    let batch = RecordBatch::try_new(physical, vec![Arc::new(column)]).expect("batch");
    let answers = rewritten
        .evaluate(&batch)
        .and_then(|answers| answers.into_array(batch.num_rows()))
        .expect("evaluates");
    let expected: BooleanArray = values
        .iter()
        .map(|value| value.map(|v| v.to_lowercase().contains("kali") || v == AGENTS[1]))
        .collect();
    assert_eq!(answers.as_boolean(), &expected);
}

/// Whether a Parquet scan of `plan` reads through [`DictionaryHints`].
fn reads_as_dictionaries(plan: &Arc<dyn ExecutionPlan>) -> bool {
    let mut found = false;
    plan.apply(|node| {
        if let Some(scan) = node.downcast_ref::<DataSourceExec>()
            && let Some(config) = scan.data_source().downcast_ref::<FileScanConfig>()
            && let Some(source) = config.file_source().downcast_ref::<ParquetSource>()
            && let Some(factory) = source.parquet_file_reader_factory()
        {
            found |= format!("{factory:?}").starts_with("DictionaryHints");
        }
        Ok(TreeNodeRecursion::Continue)
    })
    .expect("visits");
    found
}

/// Through DataFusion's planning: a per-value predicate puts the hints and the adapter
/// on the lake scan and answers right; a plain comparison leaves the scan as planned.
#[tokio::test]
async fn lake_scans_read_per_value_columns_as_dictionaries() {
    let dir = tempfile::tempdir().expect("temp dir");
    let hour = dir.path().join("year=2024/month=03/day=01/hour=09");
    std::fs::create_dir_all(&hour).expect("hour dir");
    std::fs::write(hour.join("a.parquet"), file()).expect("file");
    // As the engine sets it: filters evaluated in the scan, where the adapter is.
    let mut config = SessionConfig::new();
    config.options_mut().execution.parquet.pushdown_filters = true;
    let state = SessionStateBuilder::new()
        .with_config(config)
        .with_default_features()
        .with_optimizer_rule(Arc::new(PerValuePredicates))
        .build();
    let ctx = SessionContext::new_with_state(state);
    let schema = Arc::new(Schema::new(vec![
        Field::new("agent", DataType::Utf8View, true),
        Field::new("id", DataType::Utf8View, true),
        Field::new("n", DataType::Int64, true),
        Field::new("name", DataType::Utf8View, true),
    ]));
    let location = format!("{}/", dir.path().display());
    let table = crate::table::listing_table(&ctx, &location, &schema).expect("table");
    ctx.register_table("t", table).expect("registered");
    let kali = (0..ROWS)
        .filter(|i| AGENTS[i % 3].to_lowercase().contains("kali"))
        .count();
    for (sql, expected, reads_dictionaries) in [
        (
            "SELECT count(*) FROM t WHERE agent ILIKE '%kali%'",
            kali,
            true,
        ),
        (
            "SELECT count(*) FROM t WHERE lower(agent) NOT LIKE '%kali%' OR id = 'request-00000000'",
            ROWS - kali + 1,
            true,
        ),
        (
            "SELECT count(*) FROM t WHERE agent = 'aws-cli/2.15.0'",
            ROWS / 3,
            false,
        ),
    ] {
        let frame = ctx.sql(sql).await.expect("planned");
        let plan = frame.clone().create_physical_plan().await.expect("plan");
        assert_eq!(reads_as_dictionaries(&plan), reads_dictionaries, "{sql}");
        let batches = frame.collect().await.expect("runs");
        let count = batches[0]
            .column(0)
            .as_primitive::<datafusion::arrow::datatypes::Int64Type>()
            .value(0);
        assert_eq!(count as usize, expected, "{sql}");
    }
    // The file's hinted metadata is kept in the engine's footer cache, beside the file's own
    // metadata, and found again by later opens.
    let cached: Vec<_> = ctx
        .runtime_env()
        .cache_manager
        .get_file_metadata_cache()
        .list_entries()
        .into_iter()
        .filter(|(key, _)| key.as_ref().ends_with("a.parquet:dictionaries:5.agent"))
        .collect();
    assert_eq!(cached.len(), 1, "{cached:?}");
    assert!(cached[0].1.hits >= 1);
}
