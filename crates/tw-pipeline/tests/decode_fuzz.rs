//! Mutation fuzzing of the body decoder (seeded, so a failure reproduces): no input panics,
//! every non-blank line of an NDJSON body is either an event or a rejection — never lost — and
//! a body split as it arrives, cut anywhere, gives exactly what the gathered body gives.

use std::io::Write;

use bytes::Bytes;
use tw_core::{FieldPath, FieldSelection};
use tw_pipeline::{
    BodySplitter, ContentEncoding, IngestError, IngestLimits, ParsedEvent, Rejection, decode_body,
    split_events, split_events_selecting,
};
use tw_testkit::rng::Rng;

const SEEDS: [&str; 6] = [
    "{\"a\":1,\"b\":[1,2,{\"c\":null}]}\n{\"d\":\"x\\u00e9\"}\n",
    "[{\"a\":1},{\"b\":2}]",
    "{\"Records\":[{\"eventTime\":\"2024-01-01T00:00:00Z\"}]}",
    "{\n  \"pretty\": {\"nested\": [true, false]}\n}",
    "{\"n\":1e308}\n{\"n\":-0}\n{\"s\":\"\\ud83d\\ude00\"}",
    "\n\n  \r\n{\"x\":1}\r\n",
];

fn mutate(rng: &mut Rng, input: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..1 + rng.below(6) {
        let at = rng.below(out.len() + 1);
        match rng.below(6) {
            0 if !out.is_empty() => {
                let i = at.min(out.len() - 1);
                out[i] = rng.next_u64() as u8;
            }
            1 if !out.is_empty() => {
                out.remove(at.min(out.len() - 1));
            }
            2 => {
                const PIECES: &[u8] = b"{}[]\",:\n\\0e-9";
                out.insert(at, PIECES[rng.below(PIECES.len())]);
            }
            3 => out.truncate(at),
            4 => {
                let piece = out[..at].to_vec();
                out.extend_from_slice(&piece);
            }
            _ => out.insert(at, 0xff),
        }
    }
    out
}

#[test]
fn mutated_bodies_never_panic_and_ndjson_lines_are_all_accounted_for() {
    let limits = IngestLimits {
        max_event_bytes: 4096,
        ..IngestLimits::default()
    };
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut checked = 0;
    for round in 0..20_000 {
        let seed = SEEDS[round % SEEDS.len()].as_bytes();
        let body = mutate(&mut rng, seed);
        let Ok((events, rejected)) = split_events(&Bytes::from(body.clone()), &limits) else {
            continue;
        };
        // The NDJSON path is taken unless the body is an array or one whole JSON document.
        let first = body.iter().find(|b| !b.is_ascii_whitespace());
        let whole_document =
            first == Some(&b'{') && serde_json::from_slice::<serde_json::Value>(&body).is_ok();
        if first.is_some_and(|b| *b != b'[') && !whole_document {
            checked += 1;
            let selection = FieldSelection::new(&[FieldPath::new("a"), FieldPath::new("b.c")]);
            let (selected, selected_rejected) =
                split_events_selecting(&Bytes::from(body.clone()), &limits, Some(&selection))
                    .unwrap();
            let lines_total = events.len() + rejected.len();
            assert_eq!(
                selected.len() + selected_rejected.len(),
                lines_total,
                "round {round}"
            );
            let lines = body
                .split(|b| *b == b'\n')
                .filter(|l| !l.trim_ascii().is_empty())
                .count();
            assert_eq!(
                events.len() + rejected.len(),
                lines,
                "round {round}: {:?}",
                String::from_utf8_lossy(&body)
            );
        }
        assert!(events.iter().all(|e| e.value.is_object()));
    }
    assert!(
        checked > 5_000,
        "the NDJSON path was exercised only {checked} times"
    );
}

#[test]
fn mutated_gzip_never_panics() {
    let limits = IngestLimits {
        max_decompressed_bytes: 1 << 16,
        ..IngestLimits::default()
    };
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(SEEDS[0].repeat(50).as_bytes()).unwrap();
    let gzip = encoder.finish().unwrap();
    let mut rng = Rng(7);
    for _ in 0..5_000 {
        let body = Bytes::from(mutate(&mut rng, &gzip));
        if let Ok(decoded) = decode_body(body, ContentEncoding::Gzip, &limits) {
            assert!(decoded.len() <= limits.max_decompressed_bytes);
            let _ = split_events(&decoded, &limits);
        }
    }
}

/// Events and rejections as comparable values (line, parsed value or reason, bytes).
fn summary(
    split: Result<(Vec<ParsedEvent>, Vec<Rejection>), IngestError>,
) -> Result<Vec<(usize, String, Vec<u8>)>, String> {
    let (events, rejected) = split.map_err(|error| error.to_string())?;
    let mut out: Vec<_> = events
        .into_iter()
        .map(|e| (e.line, e.value.to_string(), e.raw.to_vec()))
        .chain(
            rejected
                .into_iter()
                .map(|r| (r.line, r.reason, r.raw.to_vec())),
        )
        .collect();
    out.sort();
    Ok(out)
}

#[test]
fn mutated_bodies_split_as_they_arrive_exactly_as_gathered() {
    // A small event limit, so that some lines (and first lines) are too large.
    let limits = IngestLimits {
        max_event_bytes: 48,
        ..IngestLimits::default()
    };
    let selection = FieldSelection::new(&[FieldPath::new("a"), FieldPath::new("b.c")]);
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    for round in 0..10_000 {
        let body = mutate(&mut rng, SEEDS[round % SEEDS.len()].as_bytes());
        let gathered =
            split_events_selecting(&Bytes::from(body.clone()), &limits, Some(&selection));
        // Cut anywhere: single bytes, small pieces, or large ones.
        let mut splitter = BodySplitter::new(&limits, Some(&selection));
        let mut rest = &body[..];
        while !rest.is_empty() {
            let most = [1, 4, 16, rest.len()][rng.below(4)].min(rest.len());
            let cut = 1 + rng.below(most);
            splitter
                .push(Bytes::copy_from_slice(&rest[..cut]))
                .expect("under the body limit");
            rest = &rest[cut..];
        }
        assert_eq!(
            summary(splitter.finish()),
            summary(gathered),
            "round {round}: {:?}",
            String::from_utf8_lossy(&body)
        );
    }
}

fn split_in_chunks(
    body: &[u8],
    cut: usize,
    limits: &IngestLimits,
) -> Result<Vec<(usize, String, Vec<u8>)>, String> {
    let mut splitter = BodySplitter::new(limits, None);
    for chunk in body.chunks(cut.max(1)) {
        splitter.push(Bytes::copy_from_slice(chunk)).unwrap();
    }
    summary(splitter.finish())
}

/// Bodies of every format the ingest path reads, good and bad lines, blank lines, CRLF,
/// whitespace around lines, a line over the event limit, a line of invalid UTF-8.
fn bodies() -> Vec<Vec<u8>> {
    let mut bad_utf8 = b"{\"a\":\"".to_vec();
    bad_utf8.extend_from_slice(&[0xff, 0xfe]);
    bad_utf8.extend_from_slice(b"\"}\n{\"ok\":1}\n");
    let long = format!("{{\"x\":\"{}\"}}", "y".repeat(90));
    vec![
        b"{\"a\":1}\n\n  {\"b\": 2}  \nnot json\n[1]\n{\"c\":3}".to_vec(),
        b"\r\n\t {\"a\":1}\r\n{\"b\":\"two\"}\r\n   \r\n{\"c\":3}\n\n".to_vec(),
        format!(
            "{{\"a\":1}}\n{long}\n{{\"b\":2}}   {}\n{{\"c\":3}}",
            " ".repeat(40)
        )
        .into_bytes(),
        format!("{long}\n{{\"b\":2}}").into_bytes(),
        bad_utf8,
        b"not json at all".to_vec(),
        b"{\"a\":1} \n   ".to_vec(),
        b"[{\"a\":1}, 5, {\"a\":2}]".to_vec(),
        b"{\"Records\": [{\"eventName\":\"X\"}, {\"eventName\":\"Y\"}]}".to_vec(),
        b"{\n  \"pretty\": true\n}\n".to_vec(),
        b"{\"broken\": \n{\"a\":1}\n".to_vec(),
        b"   \n\n ".to_vec(),
        Vec::new(),
    ]
}

#[test]
fn every_cut_of_every_body_splits_as_the_gathered_body() {
    let limits = IngestLimits {
        max_event_bytes: 64,
        ..IngestLimits::default()
    };
    for body in bodies() {
        let whole = summary(split_events(&Bytes::from(body.clone()), &limits));
        for cut in 1..=body.len().max(1) {
            assert_eq!(
                split_in_chunks(&body, cut, &limits),
                whole,
                "{:?} in chunks of {cut}",
                String::from_utf8_lossy(&body)
            );
        }
    }
}
