//! The lake is plain Parquet in Hive-style partitions: Apache Spark (PySpark, a real JVM) reads
//! it as it is — partition discovery, schema merging across files written before and after a
//! new field appeared, dotted column names, UTC millisecond timestamps — and finds every event
//! exactly once.

mod common;
#[path = "common/python.rs"]
mod python;

use common::{Server, generate};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spark_reads_the_lake_as_it_is() {
    let python = python::require(&["pyspark"]);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, None, &[]);
    // 5,000 events at one per simulated second cross an hour boundary: two hour partitions.
    let text = generate("cloudtrail", 5_000, 11, 1);
    let expected_admin = text
        .lines()
        .filter(|l| l.contains("policy/AdministratorAccess"))
        .count();
    assert_eq!(server.send("cloudtrail", text).await.0, 200);
    // A field that appears only in later events: the files written before lack the column.
    let late = r#"{"eventTime":"2024-03-01T02:00:00Z","eventID":"late-1","lateField":"x"}"#;
    assert_eq!(server.send("cloudtrail", late.to_string()).await.0, 200);
    assert_eq!(
        server.sql_count("SELECT count(*) FROM cloudtrail").await,
        5_001
    );
    assert!(server.terminate(), "graceful stop flushes the lake");

    let lake = data.join("lake").display().to_string();
    let result = python::run(&python, dir.path(), "check.py", CHECK, &[lake], &[]).await;
    assert_eq!(result["total"], 5_001, "{result}");
    assert_eq!(result["ids"], 5_001, "{result}");
    assert_eq!(result["late"], 1, "{result}");
    assert_eq!(result["hours"], 3, "{result}");
    assert_eq!(result["admin"], expected_admin, "{result}");
    assert_eq!(result["first"], "2024-03-01T00:00:00", "{result}");
}

/// Reads the lake with the peer and prints the counts as one JSON line.
const CHECK: &str = r#"
import json, sys
from pyspark.sql import SparkSession
lake = sys.argv[1]
spark = (SparkSession.builder.master("local[1]").appName("tidewatch-lake-check")
         .config("spark.ui.enabled", "false")
         .config("spark.sql.session.timeZone", "UTC")
         .getOrCreate())
spark.sparkContext.setLogLevel("ERROR")
spark.read.option("mergeSchema", "true").parquet(f"{lake}/cloudtrail").createOrReplaceTempView("ct")
row = spark.sql("""SELECT count(*) AS total, count(DISTINCT eventID) AS ids,
                          count(DISTINCT year, month, day, hour) AS hours,
                          min(_time) AS first, count(lateField) AS late
                   FROM ct""").collect()[0]
admin = spark.sql("SELECT count(*) FROM ct WHERE `requestParameters.policyArn` LIKE '%AdministratorAccess%'").collect()[0][0]
print(json.dumps({"total": row["total"], "ids": row["ids"], "hours": row["hours"],
                  "first": row["first"].isoformat(), "late": row["late"], "admin": admin}))
spark.stop()
"#;
