//! Mutation fuzzing of the condition-string parser and of rules with named selections
//! (seeded, like `parse_fuzz.rs`): no input panics, recursion stays bounded, and whatever
//! parses also compiles and evaluates.

use serde_json::json;
use tw_detect::condition_parse::parse_condition;
use tw_detect::{RuleFormat, parse_rule};

const CONDITIONS: &[&str] = &[
    "sel1 and not (sel2 or 1 of filter_*)",
    "all of them",
    "1 of sel* and not all of filter_*",
    "(a or b) and (c or not d)",
    "not not a",
];

const RULE: &str = r#"
id: fuzz
title: Fuzz
stream: s
match:
  selections:
    sel1: { field: a, wildcard: "x*y?z", ignore_case: true }
    sel2: { field: "*", contains: "evil" }
    filter_a: { field: t, gt: "2026-01-01T00:00:00Z" }
    filter_b: { field: u, equals_field: v }
  condition: "sel1 and not (sel2 or 1 of filter_*)"
"#;

fn xorshift(mut state: u64) -> impl FnMut() -> u64 {
    move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    }
}

fn mutate(base: &[u8], next: &mut impl FnMut() -> u64, pieces: &[u8]) -> Vec<u8> {
    let mut bytes = base.to_vec();
    for _ in 0..1 + next() % 5 {
        if bytes.is_empty() {
            break;
        }
        let at = (next() as usize) % bytes.len();
        match next() % 4 {
            0 => bytes[at] = pieces[(next() % pieces.len() as u64) as usize],
            1 => {
                bytes.remove(at);
            }
            2 => {
                let piece = pieces[(next() % pieces.len() as u64) as usize];
                for _ in 0..next() % 64 {
                    bytes.insert(at, piece);
                }
            }
            _ => bytes.truncate(at.max(1)),
        }
    }
    bytes
}

#[test]
fn mutated_conditions_never_panic() {
    let mut next = xorshift(0x9e37_79b9_7f4a_7c15);
    let mut parsed = 0;
    for round in 0..20_000 {
        let base = CONDITIONS[round % CONDITIONS.len()].as_bytes();
        let bytes = mutate(base, &mut next, b"() *|aon1t_ \t");
        let text = String::from_utf8_lossy(&bytes);
        if parse_condition(&text).is_ok() {
            parsed += 1;
        }
    }
    assert!(
        parsed > 100,
        "the mutations should leave some conditions valid ({parsed})"
    );
}

#[test]
fn mutated_selection_rules_never_panic() {
    let mut next = xorshift(0x2545_f491_4f6c_dd1d);
    let event = json!({"a": "XaYbZ", "t": "2026-02-01T00:00:00Z", "u": 1, "v": 1, "w": "evil"});
    let mut compiled = 0;
    for _ in 0..5_000 {
        let bytes = mutate(RULE.as_bytes(), &mut next, b"{}[]:,-\"'\n #*?()|\\");
        let text = String::from_utf8_lossy(&bytes);
        if let Ok(rule) = parse_rule(&text, RuleFormat::Yaml) {
            let rule = rule.compile().expect("a parsed rule compiles");
            let _ = rule.matches(&event);
            compiled += 1;
        }
    }
    assert!(
        compiled > 10,
        "some mutated rules should still parse ({compiled})"
    );
}
