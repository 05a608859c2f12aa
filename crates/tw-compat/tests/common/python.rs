//! Runs the Python scripts of `tests/scripts/` with the real client libraries
//! (elasticsearch-py) from the test venv, through `tw_testkit::python` as the binary's tests
//! do.
//!
//! The interpreter is `tw_testkit::python`'s (`TIDEWATCH_TEST_PYTHON`, set by `scripts/test.sh`,
//! else the test venv). A missing interpreter or module fails the test with a message saying
//! how to get it, never a skip.

use serde_json::Value;

/// The interpreter, after checking it imports `module`.
pub fn require(module: &str) -> String {
    tw_testkit::python::require(&[module])
}

/// Runs `tests/scripts/{script}` with `args` and returns the JSON document it prints on its
/// last line of stdout. Panics with the script's output when it fails (a Python `assert`
/// failing fails the test).
pub async fn run(python: &str, script: &str, args: &[&str]) -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/scripts")
        .join(script);
    tw_testkit::python::run_script(python, &path, args, &[]).await
}
