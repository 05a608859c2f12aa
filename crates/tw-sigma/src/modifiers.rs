//! One detection item (`Field|mod1|mod2: value(s)`) → a native condition.
//!
//! String values go through the modifiers in the order written, as pySigma applies them:
//! a value is a sequence of byte runs and wildcards, and expanding modifiers (`windash`,
//! `base64offset`, `expand`) turn one value into several alternatives, any of which matches.
//! The result is classified into the cheapest native operator (`equals`, `contains`,
//! `startswith`, `endswith`, else `wildcard`).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::Value;
use tw_detect::wildcard::{Piece, parse_pattern, pieces_to_pattern};
use tw_detect::{ANY_FIELD, Condition, FieldCondition, FieldOp};

use crate::{SigmaConfig, SigmaError};

/// Most alternatives one value may expand into (`windash` multiplies by 5 per dash).
const MAX_VARIANTS: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Modifier {
    Contains,
    StartsWith,
    EndsWith,
    All,
    Re,
    ReI,
    ReM,
    ReS,
    Cidr,
    Base64,
    Base64Offset,
    Windash,
    Utf16,
    Utf16Le,
    Utf16Be,
    Exists,
    FieldRef,
    Compare(&'static str),
    Expand,
    Cased,
}

impl Modifier {
    fn name(self) -> &'static str {
        match self {
            Self::Contains => "contains",
            Self::StartsWith => "startswith",
            Self::EndsWith => "endswith",
            Self::All => "all",
            Self::Re => "re",
            Self::ReI => "i",
            Self::ReM => "m",
            Self::ReS => "s",
            Self::Cidr => "cidr",
            Self::Base64 => "base64",
            Self::Base64Offset => "base64offset",
            Self::Windash => "windash",
            Self::Utf16 => "utf16",
            Self::Utf16Le => "utf16le",
            Self::Utf16Be => "utf16be",
            Self::Exists => "exists",
            Self::FieldRef => "fieldref",
            Self::Compare(name) => name,
            Self::Expand => "expand",
            Self::Cased => "cased",
        }
    }
}

fn modifier(name: &str, place: &str) -> Result<Modifier, SigmaError> {
    Ok(match name {
        "contains" => Modifier::Contains,
        "startswith" => Modifier::StartsWith,
        "endswith" => Modifier::EndsWith,
        "all" => Modifier::All,
        "re" => Modifier::Re,
        "i" => Modifier::ReI,
        "m" => Modifier::ReM,
        "s" => Modifier::ReS,
        "cidr" => Modifier::Cidr,
        "base64" => Modifier::Base64,
        "base64offset" => Modifier::Base64Offset,
        "windash" => Modifier::Windash,
        "utf16" => Modifier::Utf16,
        "utf16le" | "wide" => Modifier::Utf16Le,
        "utf16be" => Modifier::Utf16Be,
        "exists" => Modifier::Exists,
        "fieldref" => Modifier::FieldRef,
        "lt" => Modifier::Compare("lt"),
        "lte" => Modifier::Compare("lte"),
        "gt" => Modifier::Compare("gt"),
        "gte" => Modifier::Compare("gte"),
        "expand" => Modifier::Expand,
        "cased" => Modifier::Cased,
        other => {
            return Err(SigmaError::unsupported(
                format!("value modifier `{other}`"),
                place,
            ));
        }
    })
}

/// A value under transformation: literal byte runs and wildcards.
#[derive(Debug, Clone, PartialEq)]
enum Part {
    Bytes(Vec<u8>),
    Star,
    One,
}

type Variant = Vec<Part>;

fn parts_of(text: &str) -> Variant {
    parse_pattern(text)
        .into_iter()
        .map(|piece| match piece {
            Piece::Text(text) => Part::Bytes(text.into_bytes()),
            Piece::Star => Part::Star,
            Piece::One => Part::One,
        })
        .collect()
}

fn plain_bytes(variant: &Variant, what: &str, place: &str) -> Result<Vec<u8>, SigmaError> {
    let mut out = Vec::new();
    for part in variant {
        match part {
            Part::Bytes(bytes) => out.extend_from_slice(bytes),
            _ => {
                return Err(SigmaError::unsupported(
                    format!("`{what}` of a value with wildcards"),
                    place,
                ));
            }
        }
    }
    Ok(out)
}

fn utf16(
    variant: &Variant,
    bom: &[u8],
    big_endian: bool,
    place: &str,
) -> Result<Variant, SigmaError> {
    let mut out = Vec::with_capacity(variant.len());
    for (index, part) in variant.iter().enumerate() {
        out.push(match part {
            Part::Bytes(bytes) => {
                let text = std::str::from_utf8(bytes).map_err(|_| {
                    SigmaError::unsupported("utf16 of a value that is no longer text", place)
                })?;
                let mut encoded = if index == 0 { bom.to_vec() } else { Vec::new() };
                for unit in text.encode_utf16() {
                    let pair = if big_endian {
                        unit.to_be_bytes()
                    } else {
                        unit.to_le_bytes()
                    };
                    encoded.extend_from_slice(&pair);
                }
                Part::Bytes(encoded)
            }
            other => other.clone(),
        });
    }
    Ok(out)
}

/// pySigma's `base64offset`: the value base64-encoded at the three byte alignments it can
/// have inside a longer encoded text, cut to the characters that do not depend on neighbours.
fn base64_offsets(bytes: &[u8]) -> Vec<Variant> {
    const START: [usize; 3] = [0, 2, 3];
    const END_CUT: [usize; 3] = [0, 3, 2];
    (0..3)
        .map(|shift| {
            let mut padded = vec![b' '; shift];
            padded.extend_from_slice(bytes);
            let encoded = BASE64.encode(&padded).into_bytes();
            let cut = END_CUT[(bytes.len() + shift) % 3];
            let end = encoded.len().saturating_sub(cut);
            let start = START[shift].min(end);
            vec![Part::Bytes(encoded[start..end].to_vec())]
        })
        .collect()
}

fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// pySigma's `windash`: every `-` or `/` that starts a word after a non-word character
/// (`\B[-/]\b`) becomes each of `-`, `/`, en dash, em dash and horizontal bar.
fn windash(variant: &Variant, place: &str) -> Result<Vec<Variant>, SigmaError> {
    let mut results: Vec<Variant> = vec![Vec::new()];
    for part in variant {
        let Part::Bytes(bytes) = part else {
            results.iter_mut().for_each(|r| r.push(part.clone()));
            continue;
        };
        let text = String::from_utf8_lossy(bytes).into_owned();
        let chars: Vec<char> = text.chars().collect();
        let mut pieces: Vec<Vec<String>> = Vec::new();
        let mut literal = String::new();
        for (index, &c) in chars.iter().enumerate() {
            let before_ok = index == 0 || !is_word(chars[index - 1]);
            let after_ok = chars.get(index + 1).is_some_and(|&n| is_word(n));
            if matches!(c, '-' | '/') && before_ok && after_ok {
                pieces.push(vec![std::mem::take(&mut literal)]);
                pieces.push(
                    ["-", "/", "\u{2013}", "\u{2014}", "\u{2015}"]
                        .map(String::from)
                        .to_vec(),
                );
            } else {
                literal.push(c);
            }
        }
        pieces.push(vec![literal]);
        for choices in pieces {
            if results.len() * choices.len() > MAX_VARIANTS {
                return Err(SigmaError::unsupported(
                    format!("`windash` expanding into more than {MAX_VARIANTS} alternatives"),
                    place,
                ));
            }
            let mut next = Vec::with_capacity(results.len() * choices.len());
            for result in &results {
                for choice in &choices {
                    let mut extended = result.clone();
                    match extended.last_mut() {
                        Some(Part::Bytes(tail)) => tail.extend_from_slice(choice.as_bytes()),
                        _ => extended.push(Part::Bytes(choice.as_bytes().to_vec())),
                    }
                    next.push(extended);
                }
            }
            results = next;
        }
    }
    Ok(results)
}

/// `%name%` placeholders replaced by every combination of their configured values.
fn expand(text: &str, config: &SigmaConfig, place: &str) -> Result<Vec<String>, SigmaError> {
    let mut results = vec![String::new()];
    let mut rest = text;
    while let Some(start) = rest.find('%') {
        let Some(length) = rest[start + 1..].find('%') else {
            break;
        };
        let name = &rest[start + 1..start + 1 + length];
        let values = config.placeholders.get(name).ok_or_else(|| {
            SigmaError::unsupported(
                format!("placeholder `%{name}%` (no values configured for it)"),
                place,
            )
        })?;
        if values.is_empty() || results.len() * values.len() > MAX_VARIANTS {
            return Err(SigmaError::unsupported(
                format!("placeholder `%{name}%` with no values or too many combinations"),
                place,
            ));
        }
        let prefix = &rest[..start];
        results = results
            .iter()
            .flat_map(|r| values.iter().map(move |v| format!("{r}{prefix}{v}")))
            .collect();
        rest = &rest[start + 2 + length..];
    }
    Ok(results.into_iter().map(|r| r + rest).collect())
}

/// The cheapest native operator for one final variant.
fn classify(variant: &Variant, place: &str) -> Result<FieldOp, SigmaError> {
    let mut pieces = Vec::with_capacity(variant.len());
    for part in variant {
        pieces.push(match part {
            Part::Bytes(bytes) => Piece::Text(String::from_utf8(bytes.clone()).map_err(|_| {
                SigmaError::unsupported(
                    "a value that is not text after its modifiers (utf16 without base64)",
                    place,
                )
            })?),
            Part::Star => Piece::Star,
            Part::One => Piece::One,
        });
    }
    // Adjacent literal runs (from expansions) merge; repeated stars mean one.
    let pieces = parse_pattern(&pieces_to_pattern(&pieces));
    Ok(match pieces.as_slice() {
        [] => FieldOp::Equals(Value::String(String::new())),
        [Piece::Text(t)] => FieldOp::Equals(Value::String(t.clone())),
        [Piece::Star, Piece::Text(t), Piece::Star] => FieldOp::Contains(vec![t.clone()]),
        [Piece::Text(t), Piece::Star] => FieldOp::StartsWith(vec![t.clone()]),
        [Piece::Star, Piece::Text(t)] => FieldOp::EndsWith(vec![t.clone()]),
        _ => FieldOp::Wildcard(vec![pieces_to_pattern(&pieces)]),
    })
}

fn leaf(field: &str, op: FieldOp, ignore_case: bool) -> Condition {
    let ignore_case = ignore_case && op.is_string_operator();
    Condition::Field(FieldCondition {
        field: field.to_string(),
        op,
        ignore_case,
    })
}

/// Merges alternatives on one field into as few leaves as possible (`In`, one list per text
/// operator), so a 30-value Sigma list is one test, not thirty.
fn any_of(field: &str, ops: Vec<FieldOp>, ignore_case: bool) -> Condition {
    let mut equals = Vec::new();
    let mut contains = Vec::new();
    let mut starts = Vec::new();
    let mut ends = Vec::new();
    let mut wildcards = Vec::new();
    let mut others = Vec::new();
    for op in ops {
        match op {
            FieldOp::Equals(value) => equals.push(value),
            FieldOp::Contains(mut v) => contains.append(&mut v),
            FieldOp::StartsWith(mut v) => starts.append(&mut v),
            FieldOp::EndsWith(mut v) => ends.append(&mut v),
            FieldOp::Wildcard(mut v) => wildcards.append(&mut v),
            other => others.push(other),
        }
    }
    let mut leaves: Vec<Condition> = Vec::new();
    match equals.len() {
        0 => {}
        1 => leaves.push(leaf(field, FieldOp::Equals(equals.remove(0)), ignore_case)),
        _ => leaves.push(leaf(field, FieldOp::In(equals), ignore_case)),
    }
    for (items, make) in [
        (contains, FieldOp::Contains as fn(Vec<String>) -> FieldOp),
        (starts, FieldOp::StartsWith as fn(Vec<String>) -> FieldOp),
        (ends, FieldOp::EndsWith as fn(Vec<String>) -> FieldOp),
        (wildcards, FieldOp::Wildcard as fn(Vec<String>) -> FieldOp),
    ] {
        if !items.is_empty() {
            leaves.push(leaf(field, make(items), ignore_case));
        }
    }
    leaves.extend(others.into_iter().map(|op| leaf(field, op, ignore_case)));
    if leaves.len() == 1 {
        leaves.remove(0)
    } else {
        Condition::Any(leaves)
    }
}

fn combine(mut items: Vec<Condition>, all: bool) -> Condition {
    if items.len() == 1 {
        items.remove(0)
    } else if all {
        Condition::All(items)
    } else {
        Condition::Any(items)
    }
}

fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        Value::Bool(flag) => Some(flag.to_string()),
        _ => None,
    }
}

/// Translates `key: value` of a selection (`place` names it in errors).
pub(crate) fn field_item(
    key: &str,
    value: &Value,
    config: &SigmaConfig,
    place: &str,
) -> Result<Condition, SigmaError> {
    let mut names = key.split('|');
    let sigma_field = names.next().unwrap_or_default();
    let modifiers: Vec<Modifier> = names
        .map(|name| modifier(name, place))
        .collect::<Result<_, _>>()?;
    let keyword = sigma_field.is_empty();
    let field = if keyword {
        ANY_FIELD.to_string()
    } else {
        config.fields.path_for(sigma_field)
    };
    let values: Vec<&Value> = match value {
        Value::Array(items) if items.is_empty() => {
            return Err(SigmaError::invalid("empty list of values", place));
        }
        Value::Array(items) => items.iter().collect(),
        Value::Object(_) => {
            return Err(SigmaError::invalid(
                "a field's value must be a scalar or a list",
                place,
            ));
        }
        one => vec![one],
    };
    let has = |m: Modifier| modifiers.contains(&m);
    let all = has(Modifier::All);
    let ignore_case = !has(Modifier::Cased);
    let special: Vec<Modifier> = modifiers
        .iter()
        .copied()
        .filter(|m| {
            matches!(
                m,
                Modifier::Exists
                    | Modifier::FieldRef
                    | Modifier::Cidr
                    | Modifier::Re
                    | Modifier::Compare(_)
            )
        })
        .collect();
    if let [first, _, ..] = special.as_slice() {
        return Err(SigmaError::unsupported(
            format!(
                "combination of `{}` with `{}`",
                first.name(),
                special[1].name()
            ),
            place,
        ));
    }
    let transforms: Vec<Modifier> = modifiers
        .iter()
        .copied()
        .filter(|m| !matches!(m, Modifier::All | Modifier::Cased))
        .filter(|m| !special.contains(m))
        .collect();
    if let Some(special) = special.first() {
        let allowed_extra: &[Modifier] = if *special == Modifier::Re {
            &[Modifier::ReI, Modifier::ReM, Modifier::ReS]
        } else {
            &[]
        };
        if let Some(extra) = transforms.iter().find(|m| !allowed_extra.contains(m)) {
            return Err(SigmaError::unsupported(
                format!(
                    "combination of `{}` with `{}`",
                    special.name(),
                    extra.name()
                ),
                place,
            ));
        }
        if keyword && *special != Modifier::Re {
            return Err(SigmaError::unsupported(
                format!("`{}` on a keyword search", special.name()),
                place,
            ));
        }
        let string = |value: &Value| {
            scalar_text(value)
                .ok_or_else(|| SigmaError::invalid("expected a string or number", place))
        };
        let mut items = Vec::with_capacity(values.len());
        for value in &values {
            let op = match *special {
                Modifier::Exists => match value {
                    Value::Bool(flag) => FieldOp::Exists(*flag),
                    _ => return Err(SigmaError::invalid("`exists` takes true or false", place)),
                },
                Modifier::FieldRef => FieldOp::EqualsField(config.fields.path_for(&string(value)?)),
                Modifier::Cidr => FieldOp::Cidr(vec![string(value)?]),
                Modifier::Re => {
                    let mut flags = String::new();
                    for (flag, letter) in [(Modifier::ReM, 'm'), (Modifier::ReS, 's')] {
                        if has(flag) {
                            flags.push(letter);
                        }
                    }
                    let pattern = string(value)?;
                    let pattern = if flags.is_empty() {
                        pattern
                    } else {
                        format!("(?{flags}){pattern}")
                    };
                    items.push(leaf(&field, FieldOp::Regex(pattern), has(Modifier::ReI)));
                    continue;
                }
                Modifier::Compare(name) => {
                    let number = match value {
                        Value::Number(n) => n.as_f64(),
                        Value::String(text) => text.trim().parse::<f64>().ok(),
                        _ => None,
                    }
                    .ok_or_else(|| {
                        SigmaError::invalid(format!("`{name}` takes a number"), place)
                    })?;
                    match name {
                        "lt" => FieldOp::Lt(number),
                        "lte" => FieldOp::Lte(number),
                        "gt" => FieldOp::Gt(number),
                        _ => FieldOp::Gte(number),
                    }
                }
                _ => return Err(misplaced(place)),
            };
            items.push(leaf(&field, op, ignore_case));
        }
        return Ok(combine(items, all));
    }
    if let Some(flag) = transforms
        .iter()
        .find(|m| matches!(m, Modifier::ReI | Modifier::ReM | Modifier::ReS))
    {
        return Err(SigmaError::invalid(
            format!("regex flag `{}` without `re`", flag.name()),
            place,
        ));
    }
    let mut per_value = Vec::with_capacity(values.len());
    for value in values {
        if value.is_null() {
            if !transforms.is_empty() || keyword {
                return Err(SigmaError::invalid(
                    "null with modifiers or as a keyword",
                    place,
                ));
            }
            per_value.push(leaf(&field, FieldOp::Exists(false), false));
            continue;
        }
        if !value.is_string() && transforms.is_empty() && !keyword {
            match value {
                Value::Number(_) | Value::Bool(_) => {
                    per_value.push(leaf(&field, FieldOp::Equals((*value).clone()), ignore_case));
                    continue;
                }
                _ => return Err(SigmaError::invalid("expected a scalar value", place)),
            }
        }
        let text = scalar_text(value)
            .ok_or_else(|| SigmaError::invalid("expected a scalar value", place))?;
        let texts = if has(Modifier::Expand) {
            expand(&text, config, place)?
        } else {
            vec![text]
        };
        let mut variants: Vec<Variant> = texts.iter().map(|t| parts_of(t)).collect();
        for modifier in &transforms {
            let mut next = Vec::with_capacity(variants.len());
            for variant in variants {
                match modifier {
                    Modifier::Contains => {
                        let mut v = variant;
                        if v.first() != Some(&Part::Star) {
                            v.insert(0, Part::Star);
                        }
                        if v.last() != Some(&Part::Star) {
                            v.push(Part::Star);
                        }
                        next.push(v);
                    }
                    Modifier::StartsWith => {
                        let mut v = variant;
                        if v.last() != Some(&Part::Star) {
                            v.push(Part::Star);
                        }
                        next.push(v);
                    }
                    Modifier::EndsWith => {
                        let mut v = variant;
                        if v.first() != Some(&Part::Star) {
                            v.insert(0, Part::Star);
                        }
                        next.push(v);
                    }
                    Modifier::Base64 => {
                        let bytes = plain_bytes(&variant, "base64", place)?;
                        next.push(vec![Part::Bytes(BASE64.encode(bytes).into_bytes())]);
                    }
                    Modifier::Base64Offset => {
                        let bytes = plain_bytes(&variant, "base64offset", place)?;
                        next.extend(base64_offsets(&bytes));
                    }
                    Modifier::Windash => next.extend(windash(&variant, place)?),
                    Modifier::Utf16 => next.push(utf16(&variant, &[0xFF, 0xFE], false, place)?),
                    Modifier::Utf16Le => next.push(utf16(&variant, &[], false, place)?),
                    Modifier::Utf16Be => next.push(utf16(&variant, &[], true, place)?),
                    // Applied to the text before wildcards were parsed (see above).
                    Modifier::Expand => next.push(variant),
                    _ => return Err(misplaced(place)),
                }
            }
            if next.len() > MAX_VARIANTS {
                return Err(SigmaError::unsupported(
                    format!("a value expanding into more than {MAX_VARIANTS} alternatives"),
                    place,
                ));
            }
            variants = next;
        }
        let mut ops = Vec::with_capacity(variants.len());
        for mut variant in variants {
            if keyword {
                // A keyword is a full-text search: it may occur anywhere in a value.
                if variant.first() != Some(&Part::Star) {
                    variant.insert(0, Part::Star);
                }
                if variant.last() != Some(&Part::Star) {
                    variant.push(Part::Star);
                }
            }
            ops.push(classify(&variant, place)?);
        }
        per_value.push(any_of(&field, ops, ignore_case));
    }
    if all {
        return Ok(combine(per_value, true));
    }
    // Without `all`, alternatives of every value merge into one test per operator.
    let mut ops = Vec::new();
    let mut others = Vec::new();
    for condition in per_value {
        collect_ops(condition, &field, &mut ops, &mut others);
    }
    if !ops.is_empty() {
        others.insert(0, any_of(&field, ops, ignore_case));
    }
    Ok(combine(others, false))
}

/// Flattens leaves of `field` (directly or inside `Any`) into `ops`; anything else (an
/// `exists: false` leaf from a null value) goes to `others` unchanged.
fn collect_ops(
    condition: Condition,
    field: &str,
    ops: &mut Vec<FieldOp>,
    others: &mut Vec<Condition>,
) {
    match condition {
        Condition::Field(leaf) if leaf.field == field && !matches!(leaf.op, FieldOp::Exists(_)) => {
            match leaf.op {
                FieldOp::In(values) => ops.extend(values.into_iter().map(FieldOp::Equals)),
                op => ops.push(op),
            }
        }
        Condition::Any(items) => {
            for item in items {
                collect_ops(item, field, ops, others);
            }
        }
        other => others.push(other),
    }
}

/// A modifier reached a branch that does not handle it (a bug, reported rather than panicking).
fn misplaced(place: &str) -> SigmaError {
    SigmaError::invalid("internal error: modifier handled in the wrong place", place)
}
