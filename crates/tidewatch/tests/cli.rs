//! The command line as a user runs it: `gen` writes deterministic files, `send` batches files
//! and stdin to a running server, `query` prints CSV and JSON.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::{Server, binary};

fn run(args: &[&str], stdin: Option<&[u8]>) -> (bool, String, String) {
    let mut child = Command::new(binary())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(bytes) = stdin {
        input.write_all(bytes).unwrap();
    }
    drop(input);
    let output = child.wait_with_output().unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gen_send_and_query_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ct.ndjson");
    let file_arg = file.to_str().unwrap();
    let (ok, _, err) = run(
        &[
            "gen",
            "--kind",
            "cloudtrail",
            "--count",
            "2500",
            "--seed",
            "9",
            "--out",
            file_arg,
        ],
        None,
    );
    assert!(ok, "{err}");
    let again = dir.path().join("again.ndjson");
    assert!(
        run(
            &[
                "gen",
                "--kind",
                "cloudtrail",
                "--count",
                "2500",
                "--seed",
                "9",
                "--out",
                again.to_str().unwrap()
            ],
            None
        )
        .0
    );
    assert_eq!(
        std::fs::read(&file).unwrap(),
        std::fs::read(&again).unwrap(),
        "same seed, same bytes"
    );

    let server = Server::start(&dir.path().join("data"), None, &[]);
    // A file in small batches, then stdin with one bad line.
    let (ok, _, err) = run(
        &[
            "send",
            "--server",
            &server.url,
            "--stream",
            "ct",
            "--batch-lines",
            "700",
            file_arg,
        ],
        None,
    );
    assert!(ok, "{err}");
    assert!(err.contains("2500 accepted, 0 rejected"), "{err}");
    let (ok, _, err) = run(
        &["send", "--server", &server.url, "--stream", "ct", "-"],
        Some(b"{\"eventName\":\"X\"}\nnot json\n"),
    );
    assert!(!ok, "a rejected line makes send exit non-zero");
    assert!(err.contains("-:2: invalid JSON"), "{err}");
    assert!(err.contains("1 accepted, 1 rejected"), "{err}");
    // CloudTrail files one per line (as `zcat *.json.gz` pipes them): each record is an
    // event, and a bad record is named by its line and place in the file.
    let (ok, _, err) = run(
        &["send", "--server", &server.url, "--stream", "ct", "-"],
        Some(
            b"{\"Records\": [{\"eventName\":\"A\"}, {\"eventName\":\"B\"}]}\n\
              {\"Records\":[{\"eventName\":\"C\"},7]}\n",
        ),
    );
    assert!(!ok, "{err}");
    assert!(
        err.contains("-:2 (record 2): an event must be a JSON object"),
        "{err}"
    );
    assert!(err.contains("3 accepted, 1 rejected"), "{err}");

    let (ok, out, err) = run(
        &[
            "query",
            "--server",
            &server.url,
            "--format",
            "csv",
            "SELECT count(*) AS n FROM ct",
        ],
        None,
    );
    assert!(ok, "{err}");
    assert_eq!(out, "n\n2504\n");
    let (ok, out, _) = run(
        &[
            "query",
            "--server",
            &server.url,
            "--format",
            "json",
            "SELECT eventName FROM ct WHERE eventName = 'X'",
        ],
        None,
    );
    assert!(ok);
    assert_eq!(out.trim(), r#"{"eventName":"X"}"#);
    // Piped, the default is CSV: nested values as JSON text in one cell.
    let (ok, out, err) = run(
        &[
            "query",
            "--server",
            &server.url,
            "SELECT eventName, array_agg(eventName) AS names, regexp_match(eventName, '(X)') AS m \
             FROM ct WHERE eventName = 'X' GROUP BY eventName",
        ],
        None,
    );
    assert!(ok, "{err}");
    assert_eq!(
        out,
        "eventName,names,m\nX,\"[\"\"X\"\"]\",\"[\"\"X\"\"]\"\n"
    );
    // No row: CSV keeps its header, the table its column names, JSON has no line.
    let nothing = "SELECT eventName, count(*) AS n FROM ct WHERE eventName = 'nope' GROUP BY 1";
    let (ok, out, err) = run(
        &["query", "--server", &server.url, "--format", "csv", nothing],
        None,
    );
    assert!(ok, "{err}");
    assert_eq!(out, "eventName,n\n");
    let (ok, out, err) = run(
        &[
            "query",
            "--server",
            &server.url,
            "--format",
            "table",
            nothing,
        ],
        None,
    );
    assert!(ok, "{err}");
    assert!(out.contains("| eventName | n |"), "{out}");
    assert!(err.contains("0 row(s)"), "{err}");
    let (ok, out, err) = run(
        &[
            "query",
            "--server",
            &server.url,
            "--format",
            "json",
            nothing,
        ],
        None,
    );
    assert!(ok, "{err}");
    assert_eq!(out, "");
    let (ok, _, err) = run(
        &["query", "--server", &server.url, "SELECT nope FROM ct"],
        None,
    );
    assert!(!ok);
    assert!(err.contains("query failed (400"), "{err}");
}
