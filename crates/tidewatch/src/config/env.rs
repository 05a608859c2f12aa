//! `TIDEWATCH_*` environment variables: every setting of `tidewatch.toml`, by one naming rule.
//!
//! The variable of a setting is `TIDEWATCH_` followed by the setting's key path in upper case,
//! table levels joined by a double underscore: `shutdown_timeout_secs` is
//! `TIDEWATCH_SHUTDOWN_TIMEOUT_SECS`, `[lake] flush_max_age_ms` is
//! `TIDEWATCH_LAKE__FLUSH_MAX_AGE_MS`, `[lake.s3] endpoint` is `TIDEWATCH_LAKE__S3__ENDPOINT`.
//!
//! A value is read as a TOML value (`5000`, `true`, `["a", "b"]`, `{ key = "v" }`, `'text'`);
//! when it is not TOML, or not of the setting's type, as the plain string, so paths, addresses
//! and URLs need no quotes. A table value sets the keys it names and keeps the others; an array
//! (`TIDEWATCH_SINKS='[{ type = "file", name = "f", path = "a.ndjson" }]'`) replaces the whole
//! list. Variables apply in name order, so one for a whole table comes before those for its
//! keys. An empty variable counts as unset.
//!
//! Invariants: each variable is checked by deserialising the configuration with it applied, so
//! a variable's type and its key's existence are those of the file's own serde structs, and
//! every error names the variable. A `TIDEWATCH_` variable that names no setting is an error,
//! except those in [`NOT_SETTINGS`] and those starting with `TIDEWATCH_TEST_`.

use super::Config;

/// What every variable of Tidewatch starts with.
const PREFIX: &str = "TIDEWATCH_";

/// Separates the table levels of a setting's path in its variable name.
const LEVEL: &str = "__";

/// `TIDEWATCH_` variables that are not settings of `tidewatch.toml`: read by the command line
/// (`CONFIG`, `SERVER`, `API_KEY`), the log filter (`LOG`), and tests and scripts.
pub const NOT_SETTINGS: &[&str] = &[
    "TIDEWATCH_CONFIG",
    "TIDEWATCH_LOG",
    "TIDEWATCH_SERVER",
    "TIDEWATCH_API_KEY",
    "TIDEWATCH_PYTHON",
    "TIDEWATCH_SIGMA_DATA",
    "TIDEWATCH_DUCKDB_TEST",
];

/// Variables of tests and scripts (`TIDEWATCH_TEST_BINARY`, `TIDEWATCH_TEST_PYTHON`, …).
const TEST_PREFIX: &str = "TIDEWATCH_TEST_";

/// Every `TIDEWATCH_*` variable of this process, sorted by name; a value that is not UTF-8 is
/// an error naming the variable.
pub fn from_process() -> anyhow::Result<Vec<(String, String)>> {
    let mut vars = Vec::new();
    for (name, value) in std::env::vars_os() {
        if !name.to_string_lossy().starts_with(PREFIX) {
            continue;
        }
        let name = name
            .into_string()
            .map_err(|name| anyhow::anyhow!("environment variable {name:?} is not valid UTF-8"))?;
        let value = value
            .into_string()
            .map_err(|_| anyhow::anyhow!("the value of {name} is not valid UTF-8"))?;
        vars.push((name, value));
    }
    vars.sort();
    Ok(vars)
}

/// The key path a variable sets (`TIDEWATCH_LAKE__FLUSH_MAX_AGE_MS` → `lake.flush_max_age_ms`);
/// `None` for a variable that is not a setting, `Err` for a name no setting can have.
pub fn setting_path(name: &str) -> Option<Result<Vec<String>, String>> {
    let rest = name.strip_prefix(PREFIX)?;
    if NOT_SETTINGS.contains(&name) || name.starts_with(TEST_PREFIX) {
        return None;
    }
    let path: Vec<String> = rest.split(LEVEL).map(str::to_ascii_lowercase).collect();
    if path.iter().any(String::is_empty) {
        return Some(Err(format!(
            "{name} names no setting: a setting's variable is TIDEWATCH_ and its key path in \
             upper case, levels joined by `__` (e.g. TIDEWATCH_LAKE__FLUSH_MAX_AGE_MS)"
        )));
    }
    Some(Ok(path))
}

/// The variable that sets a key path (`["lake", "flush_max_age_ms"]` →
/// `TIDEWATCH_LAKE__FLUSH_MAX_AGE_MS`).
pub fn variable_name<S: AsRef<str>>(path: &[S]) -> String {
    let levels: Vec<String> = path
        .iter()
        .map(|key| key.as_ref().to_ascii_uppercase())
        .collect();
    format!("{PREFIX}{}", levels.join(LEVEL))
}

/// Applies the variables over `table` (the configuration file as parsed, valid on entry), in
/// name order. Returns every problem, each naming its variable; `table` then holds the
/// variables that were valid.
pub fn apply(table: &mut toml::Table, vars: &[(String, String)]) -> Result<(), Vec<String>> {
    let mut vars: Vec<&(String, String)> = vars.iter().collect();
    vars.sort();
    let mut problems = Vec::new();
    for (name, raw) in vars {
        let path = match setting_path(name) {
            None => continue,
            Some(Err(problem)) => {
                problems.push(problem);
                continue;
            }
            Some(Ok(path)) => path,
        };
        if raw.is_empty() {
            continue;
        }
        if let Err(problem) = apply_one(table, name, &path, raw) {
            problems.push(problem);
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

/// Sets one variable: its TOML value if that suits the setting, else its plain string.
fn apply_one(
    table: &mut toml::Table,
    name: &str,
    path: &[String],
    raw: &str,
) -> Result<(), String> {
    let parsed = raw.trim().parse::<toml::Value>();
    let mut candidates = Vec::new();
    if let Ok(value) = &parsed {
        candidates.push(value.clone());
    }
    if !matches!(&parsed, Ok(toml::Value::String(_))) {
        candidates.push(toml::Value::String(raw.to_string()));
    }
    let mut first_error = None;
    for value in candidates {
        let mut candidate = table.clone();
        set(&mut candidate, path, value).map_err(|problem| format!("{name}: {problem}"))?;
        match candidate.clone().try_into::<Config>() {
            Ok(_) => {
                *table = candidate;
                return Ok(());
            }
            Err(error) => {
                first_error.get_or_insert((error, candidate));
            }
        }
    }
    let (error, candidate) = first_error.expect("at least the plain string was tried");
    let mut problem = describe(name, path, &error, &candidate);
    // A value meant as TOML (an array, a table, a quoted string) that did not parse.
    if let Err(parse_error) = &parsed
        && raw.trim_start().starts_with(['[', '{', '"', '\''])
    {
        problem.push_str(&format!(
            " (the value is not valid TOML either: {})",
            parse_error.message()
        ));
    }
    Err(problem)
}

/// Sets `path` to `value`, creating missing tables; a table value is merged into an existing
/// table key by key.
fn set(table: &mut toml::Table, path: &[String], value: toml::Value) -> Result<(), String> {
    let (last, parents) = path.split_last().expect("a setting path has a key");
    let mut current = table;
    for (depth, key) in parents.iter().enumerate() {
        let entry = current
            .entry(key.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        current = match entry {
            toml::Value::Table(inner) => inner,
            other => {
                return Err(format!(
                    "`{}` is {} in the configuration, so its keys cannot be set one by one \
                     (set {} to the whole value)",
                    path[..=depth].join("."),
                    describe_type(other),
                    variable_name(&path[..=depth]),
                ));
            }
        };
    }
    match (current.get_mut(last), value) {
        (Some(toml::Value::Table(existing)), toml::Value::Table(new)) => merge(existing, new),
        (_, value) => {
            current.insert(last.clone(), value);
        }
    }
    Ok(())
}

fn merge(into: &mut toml::Table, from: toml::Table) {
    for (key, value) in from {
        match (into.get_mut(&key), value) {
            (Some(toml::Value::Table(existing)), toml::Value::Table(new)) => merge(existing, new),
            (_, value) => {
                into.insert(key, value);
            }
        }
    }
}

fn describe_type(value: &toml::Value) -> &'static str {
    match value {
        toml::Value::String(_) => "a string",
        toml::Value::Integer(_) => "an integer",
        toml::Value::Float(_) => "a float",
        toml::Value::Boolean(_) => "a boolean",
        toml::Value::Datetime(_) => "a date-time",
        toml::Value::Array(_) => "an array",
        toml::Value::Table(_) => "a table",
    }
}

/// The problem of a variable whose value the configuration refused, with the nearest setting
/// when the variable (or a key of its table value) names none.
fn describe(name: &str, path: &[String], error: &toml::de::Error, table: &toml::Table) -> String {
    let message = error.message();
    // toml adds the key path of a value's error as a last line "in `a.b`".
    let text = error.to_string();
    let at: Vec<String> = text
        .rsplit_once("\nin `")
        .and_then(|(_, rest)| rest.split_once('`'))
        .map(|(keys, _)| keys.split('.').map(str::to_string).collect())
        .unwrap_or_default();
    let Some(unknown) = backticked(message)
        .into_iter()
        .next()
        .filter(|_| message.starts_with("unknown field"))
    else {
        let setting = if at.is_empty() {
            path.join(".")
        } else {
            at.join(".")
        };
        return format!("{name} (setting `{setting}`): {message}");
    };
    let expected = message
        .split_once("expected")
        .map(|(_, rest)| backticked(rest))
        .unwrap_or_default();
    let within_name =
        path.len() > at.len() && path[..at.len()] == at[..] && path[at.len()] == unknown;
    let mut suggestion = nearest(&unknown, &expected).map(|best| {
        let mut suggested = at.clone();
        suggested.push(best.to_string());
        if within_name {
            suggested.extend(path[at.len() + 1..].iter().cloned());
        }
        suggested
    });
    let place = if at.is_empty() {
        String::new()
    } else {
        format!(" in `{}`", at.join("."))
    };
    let mut problem = if within_name {
        format!("{name} names no setting (no key `{unknown}`{place})")
    } else {
        format!("{name}: its value has an unknown key `{unknown}`{place}")
    };
    // A misspelt variable of the command line or the log filter.
    if path.len() == 1 && at.is_empty() {
        let distance = |candidate: &str| levenshtein(name, candidate);
        let best_setting = suggestion.as_ref().map(|s| distance(&variable_name(s)));
        if let Some(other) = NOT_SETTINGS.iter().min_by_key(|other| distance(other))
            && best_setting.is_none_or(|best| distance(other) < best)
        {
            problem.push_str(&format!("; the nearest variable is {other}"));
            suggestion = None;
        }
    }
    match suggestion {
        // A key of a list's items (`sinks.name`) has no variable of its own.
        Some(suggested) if crosses_array(table, &suggested) => {
            problem.push_str(&format!("; the nearest key is `{}`", suggested.join(".")));
        }
        Some(suggested) => problem.push_str(&format!(
            "; the nearest setting is `{}` ({})",
            suggested.join("."),
            variable_name(&suggested)
        )),
        None => {}
    }
    problem
}

/// Whether `path` goes through an array of `table`.
fn crosses_array(table: &toml::Table, path: &[String]) -> bool {
    let mut current = table;
    for key in path {
        match current.get(key) {
            Some(toml::Value::Table(inner)) => current = inner,
            Some(toml::Value::Array(_)) => return true,
            _ => return false,
        }
    }
    false
}

/// The names between backticks in a serde message (`a`, `b` → ["a", "b"]).
fn backticked(text: &str) -> Vec<String> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

fn nearest<'a>(wanted: &str, candidates: &'a [String]) -> Option<&'a str> {
    candidates
        .iter()
        .min_by_key(|candidate| levenshtein(wanted, candidate))
        .map(String::as_str)
}

/// Edit distance (insertions, deletions, substitutions) between two short names.
fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        previous = current;
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect()
    }

    fn config(file: &str, pairs: &[(&str, &str)]) -> Result<Config, Vec<String>> {
        let mut table: toml::Table = toml::from_str(file).unwrap();
        apply(&mut table, &vars(pairs))?;
        Ok(table.try_into::<Config>().unwrap())
    }

    fn problems(file: &str, pairs: &[(&str, &str)]) -> String {
        config(file, pairs).unwrap_err().join("\n")
    }

    #[test]
    fn the_naming_rule_maps_variables_to_key_paths_and_back() {
        for (name, path) in [
            ("TIDEWATCH_SHUTDOWN_TIMEOUT_SECS", "shutdown_timeout_secs"),
            ("TIDEWATCH_LAKE__FLUSH_MAX_AGE_MS", "lake.flush_max_age_ms"),
            ("TIDEWATCH_LAKE__S3__ENDPOINT", "lake.s3.endpoint"),
            (
                "TIDEWATCH_LAKE__COMPACTION__INTERVAL_SECS",
                "lake.compaction.interval_secs",
            ),
            ("TIDEWATCH_LOG__SEGMENT_MAX_BYTES", "log.segment_max_bytes"),
        ] {
            let parsed = setting_path(name).unwrap().unwrap();
            assert_eq!(parsed.join("."), path);
            assert_eq!(variable_name(&parsed), name);
        }
        for name in [
            "TIDEWATCH_LOG",
            "TIDEWATCH_CONFIG",
            "TIDEWATCH_SERVER",
            "TIDEWATCH_API_KEY",
            "TIDEWATCH_TEST_BINARY",
            "TIDEWATCH_TEST_PYTHON",
            "PATH",
            "XTIDEWATCH_LISTEN",
        ] {
            assert!(setting_path(name).is_none(), "{name}");
        }
        for name in ["TIDEWATCH_", "TIDEWATCH_LAKE____FLUSH", "TIDEWATCH_LAKE__"] {
            assert!(setting_path(name).unwrap().is_err(), "{name}");
        }
    }

    #[test]
    fn every_kind_of_setting_is_set_from_the_environment() {
        let config = config(
            "",
            &[
                ("TIDEWATCH_LAKE__FLUSH_MAX_AGE_MS", "5000"),
                ("TIDEWATCH_DETECT__MAX_TIME_AHEAD_MS", "-1"),
                ("TIDEWATCH_SHUTDOWN_TIMEOUT_SECS", "7"),
                ("TIDEWATCH_DATA_DIR", "/srv/tidewatch data"),
                ("TIDEWATCH_LISTEN", "localhost:7171"),
                ("TIDEWATCH_LAKE__LOCATION", "s3://bucket/lake"),
                ("TIDEWATCH_LAKE__S3__ALLOW_HTTP", "true"),
                ("TIDEWATCH_LAKE__S3__ENDPOINT", "http://127.0.0.1:9000"),
                ("TIDEWATCH_AUTH__API_KEYS", r#"["k1", "k2"]"#),
                (
                    "TIDEWATCH_STREAMS__PARTITION_KEYS__CLOUDTRAIL",
                    "userIdentity.arn",
                ),
                ("TIDEWATCH_STREAMS__LAKE__RETENTION", "30d"),
                (
                    "TIDEWATCH_SINKS",
                    r#"[{ type = "file", name = "f", path = "alerts.ndjson" }]"#,
                ),
                // Not settings: left alone.
                ("TIDEWATCH_LOG", "debug"),
                ("TIDEWATCH_TEST_ANYTHING", "1"),
            ],
        )
        .unwrap();
        assert_eq!(config.lake.flush_max_age_ms, 5000);
        assert_eq!(config.detect.max_time_ahead_ms, -1);
        assert_eq!(config.shutdown_timeout_secs, 7);
        assert_eq!(
            config.data_dir,
            std::path::PathBuf::from("/srv/tidewatch data")
        );
        assert_eq!(config.listen, "localhost:7171");
        assert_eq!(config.lake.location.as_deref(), Some("s3://bucket/lake"));
        let s3 = config.lake.s3.as_ref().unwrap();
        assert!(s3.allow_http);
        assert_eq!(s3.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert_eq!(config.auth.api_keys, ["k1", "k2"]);
        assert_eq!(
            config.streams.partition_keys["cloudtrail"],
            "userIdentity.arn"
        );
        assert_eq!(config.streams.lake.retention.as_deref(), Some("30d"));
        assert_eq!(config.sinks.len(), 1);
        config.validate().unwrap();
    }

    #[test]
    fn a_value_that_is_toml_of_another_type_is_taken_as_a_string() {
        let config = config(
            "",
            &[
                ("TIDEWATCH_DATA_DIR", "2024"),
                ("TIDEWATCH_RULES_DIR", "true"),
                ("TIDEWATCH_STREAMS__PARTITION_KEY", "'quoted'"),
                ("TIDEWATCH_STREAMS__EVENT_TIME_FIELD", " spaced "),
            ],
        )
        .unwrap();
        assert_eq!(config.data_dir, std::path::PathBuf::from("2024"));
        assert_eq!(config.rules_dir, Some(std::path::PathBuf::from("true")));
        assert_eq!(config.streams.partition_key.as_deref(), Some("quoted"));
        assert_eq!(config.streams.event_time_field.as_deref(), Some(" spaced "));
    }

    #[test]
    fn variables_override_the_file_and_keep_its_other_keys() {
        let file = "[lake]\nflush_max_rows = 10\nflush_max_age_ms = 100\n[lake.compaction]\ngrace_secs = 9\n";
        let config = config(
            file,
            &[
                ("TIDEWATCH_LAKE__FLUSH_MAX_AGE_MS", "200"),
                (
                    "TIDEWATCH_LAKE",
                    "{ flush_max_bytes = 4096, compaction = { min_age_secs = 1 } }",
                ),
            ],
        )
        .unwrap();
        assert_eq!(config.lake.flush_max_rows, 10);
        assert_eq!(config.lake.flush_max_bytes, 4096);
        // The variable of the key applies after the one of its table.
        assert_eq!(config.lake.flush_max_age_ms, 200);
        assert_eq!(config.lake.compaction.min_age_secs, 1);
        assert_eq!(config.lake.compaction.grace_secs, 9);
    }

    #[test]
    fn an_empty_variable_counts_as_unset() {
        let config = config("listen = \"127.0.0.1:1\"", &[("TIDEWATCH_LISTEN", "")]).unwrap();
        assert_eq!(config.listen, "127.0.0.1:1");
    }

    #[test]
    fn a_misspelt_variable_is_an_error_naming_it_and_the_nearest_setting() {
        let text = problems("", &[("TIDEWATCH_LAKE__FLUSH_MAX_AGE_MSS", "5000")]);
        assert!(
            text.starts_with("TIDEWATCH_LAKE__FLUSH_MAX_AGE_MSS names no setting"),
            "{text}"
        );
        assert!(
            text.contains("`lake.flush_max_age_ms` (TIDEWATCH_LAKE__FLUSH_MAX_AGE_MS)"),
            "{text}"
        );

        let text = problems("", &[("TIDEWATCH_LAK__FLUSH_MAX_AGE_MS", "5000")]);
        assert!(
            text.contains("TIDEWATCH_LAK__FLUSH_MAX_AGE_MS names no setting"),
            "{text}"
        );
        assert!(
            text.contains("(TIDEWATCH_LAKE__FLUSH_MAX_AGE_MS)"),
            "{text}"
        );

        let text = problems("", &[("TIDEWATCH_SHUTDOWN_TIMEOUT_SEC", "5")]);
        assert!(text.contains("(TIDEWATCH_SHUTDOWN_TIMEOUT_SECS)"), "{text}");

        let text = problems("", &[("TIDEWATCH_LAKE__S3__ENDPIONT", "http://x")]);
        assert!(text.contains("(TIDEWATCH_LAKE__S3__ENDPOINT)"), "{text}");

        // The single-underscore spelling of a table level.
        let text = problems("", &[("TIDEWATCH_LAKE_FLUSH_MAX_AGE_MS", "5000")]);
        assert!(
            text.contains("TIDEWATCH_LAKE_FLUSH_MAX_AGE_MS names no setting"),
            "{text}"
        );

        // Close to a variable that is not a setting.
        let text = problems("", &[("TIDEWATCH_API_KY", "secret")]);
        assert!(
            text.contains("the nearest variable is TIDEWATCH_API_KEY"),
            "{text}"
        );
    }

    #[test]
    fn a_value_of_the_wrong_type_is_an_error_naming_the_variable() {
        let text = problems("", &[("TIDEWATCH_LAKE__FLUSH_MAX_AGE_MS", "soon")]);
        assert!(
            text.starts_with("TIDEWATCH_LAKE__FLUSH_MAX_AGE_MS (setting `lake.flush_max_age_ms`)"),
            "{text}"
        );
        let text = problems("", &[("TIDEWATCH_LAKE__FLUSH_MAX_AGE_MS", "-5")]);
        assert!(text.contains("integer `-5`"), "{text}");
        let text = problems(
            "",
            &[("TIDEWATCH_SINKS", r#"[{ type = "slak", name = "s" }]"#)],
        );
        assert!(text.starts_with("TIDEWATCH_SINKS"), "{text}");
        assert!(text.contains("unknown variant `slak`"), "{text}");
        let text = problems(
            "",
            &[(
                "TIDEWATCH_SINKS",
                r#"[{ type = "file", name = "f", pth = "a.ndjson" }]"#,
            )],
        );
        assert!(text.contains("the nearest key is `sinks.path`"), "{text}");
        let text = problems("", &[("TIDEWATCH_AUTH__API_KEYS", r#"["unclosed"#)]);
        assert!(text.contains("not valid TOML either"), "{text}");
        // A key of a table value, and a key below a value that is not a table.
        let text = problems("", &[("TIDEWATCH_LAKE", "{ flush_max_row = 5 }")]);
        assert!(
            text.contains("unknown key `flush_max_row` in `lake`"),
            "{text}"
        );
        assert!(text.contains("(TIDEWATCH_LAKE__FLUSH_MAX_ROWS)"), "{text}");
        let text = problems(
            "[[sinks]]\ntype = \"file\"\nname = \"f\"\npath = \"a\"\n",
            &[("TIDEWATCH_SINKS__NAME", "g")],
        );
        assert!(text.contains("`sinks` is an array"), "{text}");
        assert!(
            text.contains("set TIDEWATCH_SINKS to the whole value"),
            "{text}"
        );
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let problems = config(
            "",
            &[
                ("TIDEWATCH_QUERY__THREADZ", "2"),
                ("TIDEWATCH_QUERY__TIMEOUT_MS", "x"),
                ("TIDEWATCH_DETECT__MAX_KEYS_PER_RULE", "5"),
            ],
        )
        .unwrap_err();
        assert_eq!(problems.len(), 2, "{problems:?}");
    }
}
