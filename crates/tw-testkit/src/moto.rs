//! A real S3-compatible server for tests: [`Moto`] runs moto's server mode (Python
//! `moto.server`) on a free port of 127.0.0.1 until dropped, says how to reach it
//! ([`Moto::connection`]), and creates, fills and lists buckets with boto3, the client most
//! S3 tooling is written against. The one launcher of the workspace's S3 tests (the lake, the
//! S3 watcher, the binary's end-to-end tests).
//!
//! The interpreter is [`crate::python::interpreter`]'s; one without boto3 and moto's server
//! fails the test with a message naming `scripts/test.sh`: never a skip.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tw_s3::S3Connection;

/// The access key and the secret key moto accepts (it accepts any; these are the tests').
pub const KEY: &str = "testing";
/// The region of the tests' buckets.
pub const REGION: &str = "us-east-1";

/// How long the server may take to serve, on a loaded machine too.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// moto's S3 server on a free port of 127.0.0.1, serving once started, killed on drop.
pub struct Moto {
    child: Child,
    /// `http://127.0.0.1:{port}`.
    pub endpoint: String,
    python: String,
}

impl Moto {
    /// Starts a server with moto's defaults (no bucket yet).
    pub fn start() -> Moto {
        Moto::start_with_env(&[])
    }

    /// Starts a server with extra environment variables, e.g. `MOTO_S3_DEFAULT_MAX_KEYS`
    /// (keys per listing page) to make a few objects span several pages.
    pub fn start_with_env(env: &[(&str, &str)]) -> Moto {
        let python = crate::python::require(&["boto3", "moto.server"]);
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new(&python)
            .args(["-m", "moto.server", "-H", "127.0.0.1", "-p"])
            .arg(port.to_string())
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start moto's server with {python}: {e}"));
        let mut moto = Moto {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
            python,
        };
        // The port may accept before moto serves (seen refused on a loaded machine): wait for
        // an HTTP answer, not a connection.
        let deadline = Instant::now() + START_TIMEOUT;
        while !serves(port) {
            if let Ok(Some(status)) = moto.child.try_wait() {
                panic!(
                    "moto's server exited ({status}) before serving on port {port}: try `{} -m \
                     moto.server -p {port}`",
                    moto.python
                );
            }
            assert!(
                Instant::now() < deadline,
                "moto's server does not serve on port {port} after {START_TIMEOUT:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        moto
    }

    /// How to reach this server: its endpoint, [`REGION`], [`KEY`] as both keys, plain HTTP.
    pub fn connection(&self) -> S3Connection {
        S3Connection {
            endpoint: Some(self.endpoint.clone()),
            region: Some(REGION.into()),
            access_key_id: Some(KEY.into()),
            secret_access_key: Some(KEY.into()),
            allow_http: true,
            ..S3Connection::default()
        }
    }

    /// Creates `bucket` (no error if it exists).
    pub fn create_bucket(&self, bucket: &str) {
        self.boto3(CREATE_BUCKET, bucket, &[]);
    }

    /// Puts objects (key, text body) into `bucket`, keys exactly as given (also those
    /// `object_store` cannot represent, like `a//b`), creating the bucket first.
    pub fn put(&self, bucket: &str, objects: &[(impl AsRef<str>, impl AsRef<str>)]) {
        let args: Vec<&str> = objects
            .iter()
            .flat_map(|(key, body)| [key.as_ref(), body.as_ref()])
            .collect();
        let script = format!(
            "{CREATE_BUCKET}
for key, body in zip(args[::2], args[1::2]):
    s3.put_object(Bucket=bucket, Key=key, Body=body.encode())
"
        );
        self.boto3(&script, bucket, &args);
    }

    /// Uploads local files (key, path) into `bucket`, creating the bucket first.
    pub fn upload(&self, bucket: &str, files: &[(&str, &Path)]) {
        let args: Vec<String> = files
            .iter()
            .flat_map(|(key, path)| [key.to_string(), path.display().to_string()])
            .collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let script = format!(
            "{CREATE_BUCKET}
for key, path in zip(args[::2], args[1::2]):
    s3.upload_file(path, bucket, key)
"
        );
        self.boto3(&script, bucket, &args);
    }

    /// Every key of `bucket` under `prefix` with its size, as boto3 lists them.
    pub fn list(&self, bucket: &str, prefix: &str) -> Vec<(String, u64)> {
        let script = r#"
for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=args[0]):
    for item in page.get("Contents", []):
        print(item["Key"], item["Size"])
"#;
        self.boto3(script, bucket, &[prefix])
            .lines()
            .map(|line| {
                let (key, size) = line.rsplit_once(' ').expect("key and size");
                (key.to_string(), size.parse().expect("size"))
            })
            .collect()
    }

    /// Runs `body`, Python with `s3` (a boto3 client of this server), `bucket` and `args`
    /// defined; returns its stdout, panics with its stderr if it fails.
    fn boto3(&self, body: &str, bucket: &str, args: &[&str]) -> String {
        let script = format!(
            r#"
import sys, boto3
endpoint, bucket, *args = sys.argv[1:]
s3 = boto3.client("s3", endpoint_url=endpoint, region_name="{REGION}",
                  aws_access_key_id="{KEY}", aws_secret_access_key="{KEY}")
{body}
"#
        );
        // boto3 would pick up a developer's AWS profile or proxy otherwise.
        let output = Command::new(&self.python)
            .args(["-c", &script, &self.endpoint, bucket])
            .args(args)
            .env("AWS_CONFIG_FILE", "/dev/null")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
            .env("NO_PROXY", "127.0.0.1,localhost")
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.python));
        assert!(
            output.status.success(),
            "boto3 failed against {}: {}",
            self.endpoint,
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).expect("boto3 printed UTF-8")
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The Python creating `bucket` unless this account already has it.
const CREATE_BUCKET: &str = "
try:
    s3.create_bucket(Bucket=bucket)
except s3.exceptions.BucketAlreadyOwnedByYou:
    pass
";

/// Whether an HTTP server answers on `port` of 127.0.0.1 (any status). A connection whose
/// local end is the very port asked for is the kernel connecting the socket to itself (its
/// ephemeral source port happened to be the free port the server has not bound yet), not a
/// server.
fn serves(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    if stream.local_addr().is_ok_and(|local| local.port() == port) {
        return false;
    }
    let mut answer = [0u8; 5];
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .and_then(|()| stream.write_all(b"GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n"))
        .and_then(|()| stream.read_exact(&mut answer))
        .is_ok_and(|()| &answer == b"HTTP/")
}
