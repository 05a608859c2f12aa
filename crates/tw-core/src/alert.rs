//! Alerts: what detection produces and every sink delivers.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// How bad an alert is; ordered from least to most severe.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth recording.
    Info,
    /// Low.
    Low,
    /// Medium (the default).
    #[default]
    Medium,
    /// High.
    High,
    /// Page someone now.
    Critical,
}

impl std::str::FromStr for Severity {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.to_ascii_lowercase().as_str() {
            "info" | "informational" => Ok(Self::Info),
            "low" => Ok(Self::Low),
            "medium" => Ok(Self::Medium),
            "high" => Ok(Self::High),
            "critical" => Ok(Self::Critical),
            other => Err(format!(
                "unknown severity {other:?} (expected info, low, medium, high or critical)"
            )),
        }
    }
}

/// Where an event lives in the log, so an alert can point back at it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventLocation {
    /// Partition of the stream.
    pub partition: u32,
    /// Offset inside the partition.
    pub offset: u64,
}

/// One alert raised by a rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// Unique id of the alert, derived from `dedup_key` (so a replay yields the same id).
    pub id: String,
    /// Identity of what fired: `rule, group, window` for aggregates, `rule, event` for matches.
    /// A replay that raises an alert with a known key does not page twice.
    pub dedup_key: String,
    /// Id of the rule that fired.
    pub rule_id: String,
    /// Title of the rule at the time it fired.
    pub rule_title: String,
    /// Revision of the rule that fired.
    pub rule_version: u64,
    /// Severity of the rule.
    pub severity: Severity,
    /// Stream the events came from.
    pub stream: String,
    /// Event time of the (last) triggering event, Unix milliseconds.
    pub event_time_ms: i64,
    /// Wall-clock time at which the alert was raised, Unix milliseconds.
    pub created_at_ms: i64,
    /// For aggregate rules: the group-by field values of the group that crossed the threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<BTreeMap<String, String>>,
    /// For windowed rules: `[start, end)` of the window, Unix milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<(i64, i64)>,
    /// For aggregate rules: the value that crossed the threshold (a count).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// The triggering event(s) themselves (at most a handful for aggregate rules), shared with
    /// the detection state that holds them.
    pub events: Vec<crate::SharedEvent>,
    /// Where the triggering events live in the log.
    pub event_refs: Vec<EventLocation>,
    /// Tags of the rule (for example ATT&CK technique ids).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

impl Alert {
    /// The alert id for a dedup key: 16 hex digits of FNV-1a 64 (stable across versions).
    pub fn id_for(dedup_key: &str) -> String {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in dedup_key.as_bytes() {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        // By hand: `format!` cost more than the hash itself (~550 instructions an alert).
        const HEX: &[u8; 16] = b"0123456789abcdef";
        (0..16)
            .rev()
            .map(|digit| char::from(HEX[(hash >> (digit * 4)) as usize & 0xf]))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::Alert;

    #[test]
    fn alert_ids_are_fnv1a_in_sixteen_hex_digits() {
        // Published FNV-1a 64 test vectors: ids are stored, so they must never change.
        assert_eq!(Alert::id_for(""), "cbf29ce484222325");
        assert_eq!(Alert::id_for("a"), "af63dc4c8601ec8c");
        assert_eq!(Alert::id_for("foobar"), "85944171f73967e8");
        // Leading zero digits are kept.
        let with_leading_zero = (0..10_000)
            .map(|i| format!("rule|{i}"))
            .find(|key| Alert::id_for(key).starts_with('0'))
            .expect("one in sixteen ids starts with 0");
        assert_eq!(Alert::id_for(&with_leading_zero).len(), 16);
    }
}
