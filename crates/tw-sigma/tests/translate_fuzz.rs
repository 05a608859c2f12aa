//! Mutation fuzzing of the Sigma translator (seeded, like `tw-detect`'s parser fuzzing): no
//! mutated Sigma text panics the YAML reader, the translator, the validator or the compiler,
//! and whatever translates also compiles and evaluates.

use serde_json::json;
use tw_sigma::{SigmaConfig, translate};

const RULE: &str = r#"title: Fuzz
id: 6f1d4e4a-1f0e-4d8c-9a55-000000000001
level: high
logsource:
    product: windows
    category: process_creation
detection:
    selection_img:
        Image|endswith:
            - '\powershell.exe'
            - '\pwsh.exe'
    selection_cli:
        CommandLine|windash|contains|all:
            - ' -enc '
            - 'hidden'
        Data|base64offset|contains: 'http'
        Other|wide|base64: 'ab'
        Ip|cidr: '10.0.0.0/8'
        Text|re|i: 'a.?b'
        Count|gte: 5
        Ref|fieldref: Image
        Flag|exists: true
    keywords:
        - 'mimikatz'
    filter_main:
        User: null
    condition: all of selection_* and not 1 of filter_* or keywords
"#;

#[test]
fn mutated_sigma_rules_never_panic() {
    let mut state = 0x853c_49e6_748f_ea9b_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let config = SigmaConfig::default();
    let event =
        json!({"Image": "C:\\x\\powershell.exe", "CommandLine": "a /enc hidden", "Count": 7});
    assert!(translate(RULE, &config).is_ok(), "the seed rule translates");
    let mut translated = 0;
    for _ in 0..3_000 {
        let mut bytes = RULE.as_bytes().to_vec();
        for _ in 0..1 + next() % 4 {
            if bytes.is_empty() {
                break;
            }
            let at = (next() as usize) % bytes.len();
            match next() % 3 {
                0 => {
                    const PIECES: &[u8] = b"{}[]:,-|'\n #*?()\\%";
                    bytes[at] = PIECES[(next() % PIECES.len() as u64) as usize];
                }
                1 => {
                    bytes.remove(at);
                }
                _ => bytes.truncate(at.max(1)),
            }
        }
        let text = String::from_utf8_lossy(&bytes);
        if let Ok(rule) = translate(&text, &config) {
            let compiled = rule.compile().expect("a translated rule compiles");
            let _ = compiled.matches(&event);
            translated += 1;
        }
    }
    assert!(
        translated > 10,
        "some mutations should still translate ({translated})"
    );
}
