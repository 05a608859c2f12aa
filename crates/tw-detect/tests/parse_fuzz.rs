//! Mutation fuzzing of the rule parser (seeded): no rule text, YAML or JSON, panics the parser,
//! the validator or the compiler; whatever parses also compiles and evaluates.

use serde_json::json;
use tw_detect::{RuleFormat, parse_rule};

const RULE: &str = r#"
id: fuzz
title: Fuzz
stream: s
severity: high
match:
  all:
    - { field: a.b, equals: "x", ignore_case: true }
    - any: [ { field: ip, cidr: ["10.0.0.0/8", "::1/128"] }, { field: n, gte: 5 } ]
    - not: { field: ua, regex: "^curl/[0-9]+" }
threshold: { more_than: 2, window: 5m, group_by: [ip] }
"#;

#[test]
fn mutated_rules_never_panic() {
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let json_rule = serde_json::to_string(&parse_rule(RULE, RuleFormat::Yaml).unwrap()).unwrap();
    let event = json!({"a": {"b": "X"}, "ip": "10.1.2.3", "n": 7, "ua": "curl/8"});
    for round in 0..5_000 {
        let base = if round % 2 == 0 {
            RULE
        } else {
            json_rule.as_str()
        };
        let mut bytes = base.as_bytes().to_vec();
        for _ in 0..1 + next() % 4 {
            if bytes.is_empty() {
                break;
            }
            let at = (next() as usize) % bytes.len();
            match next() % 3 {
                0 => {
                    const PIECES: &[u8] = b"{}[]:,-\"'\n #*&!|>0a";
                    bytes[at] = PIECES[(next() % PIECES.len() as u64) as usize];
                }
                1 => {
                    bytes.remove(at);
                }
                _ => bytes.truncate(at.max(1)),
            }
        }
        let text = String::from_utf8_lossy(&bytes);
        if let Ok(rule) = parse_rule(&text, RuleFormat::Auto) {
            let compiled = rule.compile().expect("a parsed rule compiles");
            let _ = compiled.matches(&event);
        }
    }
}
