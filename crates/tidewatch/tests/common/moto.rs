//! A real S3-compatible server for tests: moto's server mode from the test venv, on a free
//! port, killed on drop; buckets and objects handled with boto3.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The credentials moto accepts (any would do; these are what the tests configure).
pub const KEY: &str = "testing";

/// The interpreter of `TIDEWATCH_TEST_PYTHON` (else `python3`), after checking it has boto3
/// and moto's server.
pub fn python() -> String {
    let python = std::env::var("TIDEWATCH_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let probe = Command::new(&python)
        .args(["-c", "import boto3, moto.server"])
        .status();
    assert!(
        probe.is_ok_and(|s| s.success()),
        "this test needs boto3 and moto[server] for Python: run scripts/test.sh (it installs \
         them), or set TIDEWATCH_TEST_PYTHON to a python that has them"
    );
    python
}

/// A moto S3 server on a free port, killed on drop.
pub struct Moto {
    child: Child,
    /// `http://127.0.0.1:{port}`.
    pub endpoint: String,
    python: String,
}

impl Moto {
    pub fn start(python: &str) -> Moto {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(python)
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto server");
        let endpoint = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(60);
        while !listening(port) {
            assert!(Instant::now() < deadline, "moto server did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        Moto {
            child,
            endpoint,
            python: python.to_string(),
        }
    }

    /// Runs a boto3 script with `s3` (a client of this server) and `bucket` defined, the
    /// bucket created; returns its stdout.
    fn boto3(&self, bucket: &str, body: &str, args: &[String]) -> String {
        let script = format!(
            r#"
import sys, boto3
endpoint, bucket, *args = sys.argv[1:]
s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                  aws_access_key_id="{KEY}", aws_secret_access_key="{KEY}")
try:
    s3.create_bucket(Bucket=bucket)
except s3.exceptions.BucketAlreadyOwnedByYou:
    pass
{body}
"#
        );
        let output = Command::new(&self.python)
            .args(["-c", &script, &self.endpoint, bucket])
            .args(args)
            .env("AWS_CONFIG_FILE", "/dev/null")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
            .env("NO_PROXY", "127.0.0.1,localhost")
            .output()
            .expect("run boto3");
        assert!(
            output.status.success(),
            "boto3 failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).expect("utf-8")
    }

    /// Creates `bucket` (no error if it exists).
    pub fn create_bucket(&self, bucket: &str) {
        self.boto3(bucket, "", &[]);
    }

    /// Uploads local files (`key`, path) into `bucket`, creating it first.
    pub fn upload(&self, bucket: &str, files: &[(&str, &Path)]) {
        let args: Vec<String> = files
            .iter()
            .map(|(key, path)| format!("{key}={}", path.display()))
            .collect();
        self.boto3(
            bucket,
            r#"
for pair in args:
    key, path = pair.split("=", 1)
    s3.upload_file(path, bucket, key)
"#,
            &args,
        );
    }

    /// Every key of `bucket` under `prefix` with its size, as boto3 lists them.
    pub fn list(&self, bucket: &str, prefix: &str) -> Vec<(String, u64)> {
        let output = self.boto3(
            bucket,
            r#"
for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=args[0]):
    for item in page.get("Contents", []):
        print(item["Key"], item["Size"])
"#,
            &[prefix.to_string()],
        );
        output
            .lines()
            .map(|line| {
                let (key, size) = line.rsplit_once(' ').expect("key and size");
                (key.to_string(), size.parse().expect("size"))
            })
            .collect()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether a server listens on `port` of 127.0.0.1. A connection whose local end is the very
/// port asked for is the kernel connecting the socket to itself (its ephemeral source port
/// happened to be the free port the server has not bound yet), not a server.
fn listening(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port))
        .and_then(|stream| stream.local_addr())
        .is_ok_and(|local| local.port() != port)
}
