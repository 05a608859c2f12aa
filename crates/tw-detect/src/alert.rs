//! How the alerts of a rule are built: the fields every alert of a rule shares (the stateful
//! kinds in [`crate::state`] add group, window and value) and the single-event alert, whose
//! dedup key names the event's place in the log so a replay raises the same alert.

use tw_core::{Alert, EventLocation, SharedEvent};

use crate::compile::CompiledRule;

/// Fields every alert of `rule` shares; the caller sets `stream` and `created_at_ms`.
pub(crate) fn alert_base(rule: &CompiledRule, dedup_key: String, event_time_ms: i64) -> Alert {
    let definition = rule.rule();
    Alert {
        id: Alert::id_for(&dedup_key),
        dedup_key,
        rule_id: definition.id.clone(),
        rule_title: definition.title.clone(),
        rule_version: definition.version,
        severity: definition.severity,
        stream: String::new(),
        event_time_ms,
        created_at_ms: 0,
        group: None,
        window: None,
        value: None,
        events: Vec::new(),
        event_refs: Vec::new(),
        tags: definition.tags.clone(),
    }
}

pub(crate) fn single_event_alert(
    rule: &CompiledRule,
    stream: &str,
    event: &SharedEvent,
    event_time_ms: i64,
    location: EventLocation,
) -> Alert {
    // `"{rule id}|{stream}|{partition}|{offset}"`, by hand: `format!` cost as much as the
    // rest of the alert.
    let (mut partition, mut offset) = (itoa::Buffer::new(), itoa::Buffer::new());
    let (partition, offset) = (
        partition.format(location.partition),
        offset.format(location.offset),
    );
    let id = rule.id();
    let mut key =
        String::with_capacity(id.len() + stream.len() + partition.len() + offset.len() + 3);
    for (index, part) in [id, stream, partition, offset].into_iter().enumerate() {
        if index > 0 {
            key.push('|');
        }
        key.push_str(part);
    }
    let mut alert = alert_base(rule, key, event_time_ms);
    alert.events = vec![event.clone()];
    alert.event_refs = vec![location];
    alert
}
