//! The Python interpreter of the tests: `TIDEWATCH_TEST_PYTHON` (set by `scripts/test.sh`),
//! else the venv `scripts/test.sh` builds (`$TIDEWATCH_TEST_VENV`, default
//! `~/.cache/tidewatch/test-venv`), else `python3`.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// The interpreter, without checking what it can import.
pub fn interpreter() -> String {
    if let Ok(python) = std::env::var("TIDEWATCH_TEST_PYTHON") {
        return python;
    }
    let venv = std::env::var_os("TIDEWATCH_TEST_VENV")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .map(|home| PathBuf::from(home).join(".cache/tidewatch/test-venv"))
        });
    venv.map(|venv| venv.join("bin/python"))
        .filter(|python| python.exists())
        .map_or_else(|| "python3".to_string(), |p| p.display().to_string())
}

/// The interpreter, checked to import every module of `modules` (`"boto3"`, `"moto.server"`);
/// panics saying how to get them otherwise.
pub fn require(modules: &[&str]) -> String {
    let python = interpreter();
    let probe = Command::new(&python)
        .args(["-c", &format!("import {}", modules.join(", "))])
        .output();
    let problem = match probe {
        Ok(output) if output.status.success() => return python,
        Ok(output) => String::from_utf8_lossy(&output.stderr).trim().to_string(),
        Err(error) => error.to_string(),
    };
    panic!(
        "this test needs the Python modules {modules:?}, which {python} cannot import: run \
         scripts/test.sh (it builds the venv ~/.cache/tidewatch/test-venv with them), or set \
         TIDEWATCH_TEST_PYTHON to a python that has them ({problem})"
    )
}

/// Runs the script at `path` with `args` and `env`, away from a developer's AWS profile and
/// proxy, and returns the JSON document it prints on its last line of stdout. Panics with the
/// script's output when it fails (a Python `assert` failing fails the test).
pub async fn run_script(
    python: &str,
    path: &Path,
    args: impl IntoIterator<Item = impl AsRef<OsStr>>,
    env: &[(&str, &str)],
) -> Value {
    let name = path.display().to_string();
    let mut command = Command::new(python);
    command.arg(path).args(args);
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
