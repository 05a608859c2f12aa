//! Runs Python scripts with the real client libraries (boto3, elasticsearch) from the test venv.
//!
//! The interpreter is `tw_testkit::python`'s (`TIDEWATCH_TEST_PYTHON`, set by `scripts/test.sh`,
//! else the test venv). A missing interpreter or module fails the test with a message saying
//! how to get it, never a skip.

#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

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
    let mut command = Command::new(python);
    command.arg(&path).args(args);
    for (key, value) in env {
        command.env(key, value);
    }
    // Python clients would pick up a developer's AWS profile or proxy otherwise.
    command
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env("NO_PROXY", "127.0.0.1,localhost");
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("join")
        .expect("run python");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{name} failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("{name} printed no JSON ({e}): {stdout}"))
}
