//! Value transformations of Sigma modifiers that rewrite or multiply a value: `utf16*`,
//! `base64`, `base64offset`, `windash`, `expand`. A value is a sequence of byte runs and
//! wildcards; an expanding modifier returns alternatives, any of which may match.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use tw_detect::wildcard::{Piece, parse_pattern};

use crate::{SigmaConfig, SigmaError};

/// Most alternatives one value may expand into (`windash` multiplies by 5 per dash).
pub(crate) const MAX_VARIANTS: usize = 1024;

/// A value under transformation: literal byte runs and wildcards.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Part {
    /// Literal bytes (UTF-8 text until a `utf16` modifier).
    Bytes(Vec<u8>),
    /// `*`.
    Star,
    /// `?`.
    One,
}

pub(crate) type Variant = Vec<Part>;

pub(crate) fn parts_of(text: &str) -> Variant {
    parse_pattern(text)
        .into_iter()
        .map(|piece| match piece {
            Piece::Text(text) => Part::Bytes(text.into_bytes()),
            Piece::Star => Part::Star,
            Piece::One => Part::One,
        })
        .collect()
}

pub(crate) fn plain_bytes(
    variant: &Variant,
    what: &str,
    place: &str,
) -> Result<Vec<u8>, SigmaError> {
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

pub(crate) fn utf16(
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
pub(crate) fn base64_offsets(bytes: &[u8]) -> Vec<Variant> {
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
pub(crate) fn windash(variant: &Variant, place: &str) -> Result<Vec<Variant>, SigmaError> {
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
pub(crate) fn expand(
    text: &str,
    config: &SigmaConfig,
    place: &str,
) -> Result<Vec<String>, SigmaError> {
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
