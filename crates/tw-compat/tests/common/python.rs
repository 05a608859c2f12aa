//! Runs the Python scripts of `tests/scripts/` with the real client libraries
//! (elasticsearch-py) from the test venv, as `crates/tidewatch/tests/common/python.rs` does
//! for the binary's tests (a test crate cannot share another crate's test modules).
//!
//! The interpreter is `tw_testkit::python`'s (`TIDEWATCH_TEST_PYTHON`, set by `scripts/test.sh`,
//! else the test venv). A missing interpreter or module fails the test with a message saying
//! how to get it, never a skip.

use std::process::Command;

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
    let mut command = Command::new(python);
    command.arg(&path).args(args);
    // A developer's proxy would otherwise receive the requests to 127.0.0.1.
    command.env("NO_PROXY", "127.0.0.1,localhost");
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("join")
        .expect("run python");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{script} failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last)
        .unwrap_or_else(|e| panic!("{script} printed no JSON ({e}): {stdout}"))
}
