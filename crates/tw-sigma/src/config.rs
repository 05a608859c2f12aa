//! What a Sigma rule's names mean here: logsource → stream, Sigma field → event field path,
//! `%placeholder%` → values (for the `expand` modifier).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::SigmaError;

/// Translation settings (the `[sigma]` section of the server configuration).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SigmaConfig {
    /// Logsource → stream table. The entry whose given keys all equal the rule's logsource
    /// (case-insensitively) and which gives the most keys wins. With no matching entry the
    /// stream is the rule's product, service and category joined with `_` (those present, in
    /// that order, lowercased, other characters than letters, digits, `_`, `-`, `.` as `_`).
    pub logsources: Vec<LogsourceMapping>,
    /// Field-name mapping; names not in it are used unchanged.
    pub fields: FieldMapping,
    /// Values of `%name%` placeholders for the `expand` modifier (name without `%`).
    pub placeholders: BTreeMap<String, Vec<String>>,
}

impl Default for SigmaConfig {
    fn default() -> Self {
        Self {
            logsources: default_logsources(),
            fields: FieldMapping::default(),
            placeholders: BTreeMap::new(),
        }
    }
}

fn default_logsources() -> Vec<LogsourceMapping> {
    vec![LogsourceMapping {
        product: Some("aws".into()),
        service: Some("cloudtrail".into()),
        category: None,
        stream: "cloudtrail".into(),
    }]
}

/// One row of the logsource table; absent keys match anything.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogsourceMapping {
    /// Sigma `logsource.product` (`aws`, `windows`).
    #[serde(default)]
    pub product: Option<String>,
    /// Sigma `logsource.service` (`cloudtrail`, `security`).
    #[serde(default)]
    pub service: Option<String>,
    /// Sigma `logsource.category` (`process_creation`).
    #[serde(default)]
    pub category: Option<String>,
    /// The Tidewatch stream whose events such rules evaluate.
    pub stream: String,
}

/// How Sigma field names become event field paths.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FieldMapping {
    /// Exact renames (`EventID = "Event.System.EventID"`).
    pub rename: BTreeMap<String, String>,
    /// Put before every name that `rename` does not cover (`Event.EventData.` for Windows
    /// events converted from EVTX to JSON); empty by default.
    pub prefix: String,
}

impl FieldMapping {
    /// The event field path for a Sigma field name.
    pub fn path_for(&self, sigma_field: &str) -> String {
        match self.rename.get(sigma_field) {
            Some(path) => path.clone(),
            None => format!("{}{sigma_field}", self.prefix),
        }
    }
}

fn logsource_key<'a>(
    logsource: &'a Map<String, Value>,
    key: &str,
) -> Result<Option<&'a str>, SigmaError> {
    match logsource.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text)),
        Some(_) => Err(SigmaError::invalid(
            "expected a string",
            format!("logsource.{key}"),
        )),
    }
}

impl SigmaConfig {
    /// The stream for a rule's `logsource`.
    pub fn stream_for(&self, logsource: &Map<String, Value>) -> Result<String, SigmaError> {
        let product = logsource_key(logsource, "product")?;
        let service = logsource_key(logsource, "service")?;
        let category = logsource_key(logsource, "category")?;
        let fits = |wanted: &Option<String>, got: Option<&str>| match wanted {
            None => true,
            Some(wanted) => got.is_some_and(|got| got.eq_ignore_ascii_case(wanted)),
        };
        let best = self
            .logsources
            .iter()
            .filter(|row| {
                fits(&row.product, product)
                    && fits(&row.service, service)
                    && fits(&row.category, category)
            })
            .max_by_key(|row| {
                [&row.product, &row.service, &row.category]
                    .iter()
                    .filter(|key| key.is_some())
                    .count()
            });
        if let Some(row) = best {
            return Ok(row.stream.clone());
        }
        let parts: Vec<String> = [product, service, category]
            .into_iter()
            .flatten()
            .map(|part| {
                part.chars()
                    .map(|c| {
                        if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') {
                            c.to_ascii_lowercase()
                        } else {
                            '_'
                        }
                    })
                    .collect()
            })
            .collect();
        if parts.is_empty() {
            return Err(SigmaError::invalid(
                "logsource names no product, service or category",
                "logsource",
            ));
        }
        Ok(parts.join("_"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn stream(config: &SigmaConfig, logsource: Value) -> Result<String, SigmaError> {
        config.stream_for(logsource.as_object().unwrap())
    }

    #[test]
    fn logsource_table_and_fallback() {
        let mut config = SigmaConfig::default();
        assert_eq!(
            stream(&config, json!({"product": "aws", "service": "cloudtrail"})).unwrap(),
            "cloudtrail"
        );
        assert_eq!(
            stream(&config, json!({"product": "AWS", "service": "CloudTrail"})).unwrap(),
            "cloudtrail"
        );
        assert_eq!(
            stream(
                &config,
                json!({"product": "windows", "category": "process_creation"})
            )
            .unwrap(),
            "windows_process_creation"
        );
        assert_eq!(
            stream(
                &config,
                json!({"product": "linux", "service": "auditd", "category": "x y"})
            )
            .unwrap(),
            "linux_auditd_x_y"
        );
        config.logsources.push(LogsourceMapping {
            product: Some("windows".into()),
            service: None,
            category: None,
            stream: "winlog".into(),
        });
        config.logsources.push(LogsourceMapping {
            product: Some("windows".into()),
            service: None,
            category: Some("process_creation".into()),
            stream: "sysmon".into(),
        });
        assert_eq!(
            stream(
                &config,
                json!({"product": "windows", "category": "process_creation"})
            )
            .unwrap(),
            "sysmon",
            "the most specific row wins"
        );
        assert_eq!(
            stream(
                &config,
                json!({"product": "windows", "service": "security"})
            )
            .unwrap(),
            "winlog"
        );
        assert!(stream(&config, json!({})).is_err());
        assert!(stream(&config, json!({"product": 5})).is_err());
    }

    #[test]
    fn field_mapping() {
        let mapping = FieldMapping {
            rename: [("EventID".to_string(), "Event.System.EventID".to_string())].into(),
            prefix: "Event.EventData.".into(),
        };
        assert_eq!(mapping.path_for("EventID"), "Event.System.EventID");
        assert_eq!(mapping.path_for("Image"), "Event.EventData.Image");
        assert_eq!(FieldMapping::default().path_for("a.b"), "a.b");
    }
}
