//! The Python interpreter of the tests: `TIDEWATCH_TEST_PYTHON` (set by `scripts/test.sh`),
//! else the venv `scripts/test.sh` builds (`$TIDEWATCH_TEST_VENV`, default
//! `~/.cache/tidewatch/test-venv`), else `python3`.

use std::path::PathBuf;
use std::process::Command;

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
