//! Runs the Python scripts of `tests/scripts/` with the real client libraries
//! (elasticsearch-py) from the test venv, as `crates/tidewatch/tests/common/python.rs` does
//! for the binary's tests (a test crate cannot share another crate's test modules).
//!
//! The interpreter comes from `TIDEWATCH_TEST_PYTHON` (set by `scripts/test.sh`). A missing
//! interpreter or module fails the test with a message saying how to get it, never a skip.

use std::process::Command;

use serde_json::Value;

/// The interpreter, after checking it imports `module`.
pub fn require(module: &str) -> String {
    let python = std::env::var("TIDEWATCH_TEST_PYTHON").unwrap_or_else(|_| {
        panic!(
            "TIDEWATCH_TEST_PYTHON is not set: run scripts/test.sh (it builds the venv with \
             elasticsearch), or export TIDEWATCH_TEST_PYTHON=$HOME/.cache/tidewatch/test-venv/bin/python"
        )
    });
    let probe = Command::new(&python)
        .args(["-c", &format!("import {module}")])
        .output();
    match probe {
        Ok(output) if output.status.success() => python,
        Ok(output) => panic!(
            "{python} cannot import {module} (run scripts/test.sh to install it): {}",
            String::from_utf8_lossy(&output.stderr)
        ),
        Err(error) => panic!("cannot run {python}: {error}"),
    }
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
