//! `tidewatch serve` configured as a user does it: a file, `TIDEWATCH_*` variables and flags,
//! in that order of precedence; a misspelt variable or a bad setting stops the start with a
//! message naming it.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::binary;

/// `tidewatch serve` with `args` and `env`, and no inherited `TIDEWATCH_*` setting.
fn serve(data_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Child {
    let mut command = Command::new(binary());
    command
        .arg("serve")
        .arg("--data-dir")
        .arg(data_dir)
        .args(args);
    for (name, _) in std::env::vars() {
        if name.starts_with("TIDEWATCH_") && !name.starts_with("TIDEWATCH_TEST_") {
            command.env_remove(name);
        }
    }
    command
        .envs(env.iter().copied())
        .env("TIDEWATCH_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tidewatch")
}

/// The address the server announces; the server is stopped afterwards.
fn listening_address(mut child: Child) -> String {
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let announced = loop {
        match lines.next() {
            Some(Ok(line)) => {
                if let Some(rest) = line.strip_prefix("tidewatch listening on http://") {
                    break Some(
                        rest.split_whitespace()
                            .next()
                            .unwrap_or_default()
                            .to_string(),
                    );
                }
            }
            _ => break None,
        }
    };
    let _ = child.kill();
    let output = child.wait_with_output().expect("wait");
    announced.unwrap_or_else(|| {
        panic!(
            "the server did not start: {}",
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

/// What the server printed on stderr before it exited; it must exit with a failure.
fn refused_start(mut child: Child) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the server started although its configuration is wrong");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = child.wait().expect("wait");
    assert!(!status.success());
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("read stderr");
    stderr
}

#[test]
fn a_host_name_is_accepted_as_listen_address() {
    let dir = tempfile::tempdir().unwrap();
    let address = listening_address(serve(dir.path(), &["--listen", "localhost:0"], &[]));
    assert!(address.starts_with("127.0.0.1:"), "{address}");
}

#[test]
fn the_environment_overrides_the_file_and_the_flag_overrides_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tidewatch.toml");
    // Checked only once every layer applied: the environment replaces it.
    std::fs::write(&config, "listen = \"not an address\"\n").unwrap();
    let config = config.to_str().unwrap();
    let data = dir.path().join("data");
    let address = listening_address(serve(
        &data,
        &["--config", config],
        &[("TIDEWATCH_LISTEN", "localhost:0")],
    ));
    assert!(address.starts_with("127.0.0.1:"), "{address}");
    let address = listening_address(serve(
        &data,
        &["--config", config, "--listen", "127.0.0.1:0"],
        &[("TIDEWATCH_LISTEN", "no-port")],
    ));
    assert!(address.starts_with("127.0.0.1:"), "{address}");
}

#[test]
fn a_misspelt_variable_stops_the_start_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let stderr = refused_start(serve(
        dir.path(),
        &["--listen", "127.0.0.1:0"],
        &[("TIDEWATCH_LAKE__FLUSH_MAX_AGE_MSS", "5000")],
    ));
    assert!(
        stderr.contains("TIDEWATCH_LAKE__FLUSH_MAX_AGE_MSS names no setting"),
        "{stderr}"
    );
    assert!(
        stderr.contains("TIDEWATCH_LAKE__FLUSH_MAX_AGE_MS)"),
        "{stderr}"
    );
}

#[test]
fn a_bad_setting_from_the_environment_stops_the_start_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let stderr = refused_start(serve(
        dir.path(),
        &["--listen", "127.0.0.1:0"],
        &[
            ("TIDEWATCH_QUERY__TIMEOUT_MS", "0"),
            ("TIDEWATCH_DETECT__MAX_TIME_AHEAD_MS", "soon"),
        ],
    ));
    assert!(
        stderr.contains("TIDEWATCH_DETECT__MAX_TIME_AHEAD_MS (setting `detect.max_time_ahead_ms`)"),
        "{stderr}"
    );
    let stderr = refused_start(serve(
        dir.path(),
        &["--listen", "localhost"],
        &[("TIDEWATCH_QUERY__TIMEOUT_MS", "0")],
    ));
    assert!(
        stderr.contains("query.timeout_ms must be at least 1"),
        "{stderr}"
    );
    assert!(
        stderr.contains("listen: \"localhost\" has no port"),
        "{stderr}"
    );
}
