//! Event time: reading it out of events and printing it back.

use chrono::{DateTime, NaiveDateTime, SecondsFormat, Utc};
use serde_json::Value;

use crate::FieldPath;

/// Numbers at or above this are taken as milliseconds, below as seconds (1e11 s is year 5138).
const MILLIS_THRESHOLD: f64 = 1e11;

/// Wall-clock now in Unix milliseconds.
pub fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// Parses a time value: an RFC 3339 / ISO-8601 string (`2024-05-01T10:00:00Z`, with or without
/// fraction and offset, or a space instead of `T` and no zone meaning UTC), or a number of Unix
/// seconds or milliseconds. Returns Unix milliseconds.
pub fn parse_time_ms(value: &Value) -> Option<i64> {
    match value {
        Value::String(text) => parse_time_text(text),
        Value::Number(number) => {
            let raw = number.as_f64()?;
            if !raw.is_finite() || raw < 0.0 {
                return None;
            }
            let millis = if raw >= MILLIS_THRESHOLD {
                raw
            } else {
                raw * 1000.0
            };
            (millis < i64::MAX as f64).then_some(millis as i64)
        }
        _ => None,
    }
}

fn parse_time_text(text: &str) -> Option<i64> {
    let text = text.trim();
    if let Ok(parsed) = DateTime::parse_from_rfc3339(text) {
        return Some(parsed.timestamp_millis());
    }
    for format in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
        if let Ok(naive) = NaiveDateTime::parse_from_str(text, format) {
            return Some(naive.and_utc().timestamp_millis());
        }
    }
    if let Ok(number) = text.parse::<f64>() {
        return parse_time_ms(&serde_json::Number::from_f64(number).map(Value::Number)?);
    }
    None
}

/// The event time of `event` from `field` (or ingest time when the field is absent or
/// unparseable). The second element says whether the event's own time was used.
pub fn event_time_ms(event: &Value, field: Option<&FieldPath>, ingest_time_ms: i64) -> (i64, bool) {
    match field
        .and_then(|path| path.get(event))
        .and_then(parse_time_ms)
    {
        Some(millis) => (millis, true),
        None => (ingest_time_ms, false),
    }
}

/// Formats Unix milliseconds as RFC 3339 UTC with millisecond precision.
pub fn format_rfc3339_ms(millis: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(millis)
        .map(|time| time.to_rfc3339_opts(SecondsFormat::Millis, true))
        .unwrap_or_else(|| millis.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_the_usual_spellings() {
        let expected = 1_714_557_600_000;
        for value in [
            json!("2024-05-01T10:00:00Z"),
            json!("2024-05-01T12:00:00+02:00"),
            json!("2024-05-01T10:00:00.000Z"),
            json!("2024-05-01 10:00:00"),
            json!(1_714_557_600),
            json!(1_714_557_600_000_i64),
            json!("1714557600"),
        ] {
            assert_eq!(parse_time_ms(&value), Some(expected), "{value}");
        }
        assert_eq!(parse_time_ms(&json!("yesterday")), None);
        assert_eq!(parse_time_ms(&json!(-5)), None);
        assert_eq!(parse_time_ms(&json!(true)), None);
    }

    #[test]
    fn falls_back_to_ingest_time() {
        let path = FieldPath::new("eventTime");
        assert_eq!(
            event_time_ms(&json!({"eventTime": "bad"}), Some(&path), 7),
            (7, false)
        );
        assert_eq!(event_time_ms(&json!({}), None, 7), (7, false));
        assert_eq!(
            format_rfc3339_ms(1_714_557_600_123),
            "2024-05-01T10:00:00.123Z"
        );
    }
}
