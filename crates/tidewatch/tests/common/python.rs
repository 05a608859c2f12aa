//! Runs Python scripts with the real client libraries (boto3, elasticsearch) from the test venv.
//!
//! The interpreter is `tw_testkit::python`'s (`TIDEWATCH_TEST_PYTHON`, set by `scripts/test.sh`,
//! else the test venv). A missing interpreter or module fails the test with a message saying
//! how to get it, never a skip.

#![allow(dead_code)]

use std::path::Path;

use serde_json::Value;

/// The interpreter, after checking it imports every module in `modules`.
pub fn require(modules: &[&str]) -> String {
    tw_testkit::python::require(modules)
}

/// Writes `script` into `dir`, runs it with `args` and `env`, and returns the JSON document it
/// prints on its last line of stdout. Panics with the script's stderr when it fails (a Python
/// `assert` failing fails the test).
pub async fn run(
    python: &str,
    dir: &Path,
    name: &str,
    script: &str,
    args: &[String],
    env: &[(&str, &str)],
) -> Value {
    let path = dir.join(name);
    std::fs::write(&path, script).expect("write script");
    tw_testkit::python::run_script(python, &path, args, env).await
}
