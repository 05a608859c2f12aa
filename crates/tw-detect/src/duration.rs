//! Durations as written in rules: an integer and a unit (`500ms`, `30s`, `5m`, `1h`, `1d`).

/// Longest accepted duration (366 days), so window arithmetic on millisecond timestamps can
/// never overflow.
pub const MAX_DURATION_MS: i64 = 366 * 86_400_000;

/// Parses a duration into milliseconds; the error says what is accepted.
pub fn parse_duration_ms(text: &str) -> Result<i64, String> {
    let invalid = || {
        format!(
            "invalid duration {text:?} (expected a positive integer and a unit: ms, s, m, h or d, e.g. 30s)"
        )
    };
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(digits_end);
    let amount: i64 = digits.parse().map_err(|_| invalid())?;
    let unit_ms = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(invalid()),
    };
    let millis = amount.checked_mul(unit_ms).ok_or_else(invalid)?;
    if millis <= 0 {
        return Err(format!("duration {text:?} must be greater than zero"));
    }
    if millis > MAX_DURATION_MS {
        return Err(format!(
            "duration {text:?} is longer than the maximum of 366d"
        ));
    }
    Ok(millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_unit_and_refuses_the_rest() {
        assert_eq!(parse_duration_ms("500ms"), Ok(500));
        assert_eq!(parse_duration_ms("30s"), Ok(30_000));
        assert_eq!(parse_duration_ms("5m"), Ok(300_000));
        assert_eq!(parse_duration_ms("1h"), Ok(3_600_000));
        assert_eq!(parse_duration_ms("1d"), Ok(86_400_000));
        assert_eq!(parse_duration_ms("366d"), Ok(MAX_DURATION_MS));
        for bad in [
            "",
            "5",
            "m",
            "5x",
            "-5m",
            "1.5m",
            " 5m",
            "5 m",
            "0s",
            "367d",
            "99999999999999999999d",
        ] {
            assert!(parse_duration_ms(bad).is_err(), "{bad:?} should be refused");
        }
        assert!(parse_duration_ms("5x").unwrap_err().contains("\"5x\""));
    }
}
