//! Removing what agents stored: `DELETE /_index_template/{name}`, `DELETE /_template/{name}`
//! and `DELETE /_ilm/policy/{name}`, durably (a deletion record in [`super::store`]).
//!
//! Which names a DELETE may take follows Elasticsearch 8, which treats the three differently:
//! - an index template DELETE takes one name or `*` pattern, or a comma-separated list of
//!   plain names (no wildcards in a list; every name must exist, else none is deleted);
//! - a legacy template DELETE takes one name or `*` pattern (a comma is part of the name);
//! - a policy DELETE takes exactly one name (no pattern).
//!
//! A name or pattern that selects nothing is ES's 404 (`index_template_missing_exception` for
//! templates, `resource_not_found_exception` for policies), except `*` alone, which succeeds
//! when there is nothing to delete.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;

use super::store::{Kind, glob_matches};
use super::{SetupError, SetupState, acknowledged, guarded};

/// `DELETE /_index_template/{name}`.
pub(super) async fn delete_index_template(
    State(state): State<Arc<SetupState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    let select = |stored: &[&str]| index_templates_to_delete(&name, stored);
    delete(
        &state,
        &headers,
        Kind::IndexTemplate,
        "delete_index_template",
        select,
    )
    .await
}

/// `DELETE /_template/{name}`.
pub(super) async fn delete_legacy_template(
    State(state): State<Arc<SetupState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    let select = |stored: &[&str]| matching_pattern(&name, stored);
    delete(
        &state,
        &headers,
        Kind::LegacyTemplate,
        "delete_template",
        select,
    )
    .await
}

/// `DELETE /_ilm/policy/{name}`.
pub(super) async fn delete_policy(
    State(state): State<Arc<SetupState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    let select = |stored: &[&str]| policy_to_delete(&name, stored);
    delete(
        &state,
        &headers,
        Kind::IlmPolicy,
        "delete_lifecycle",
        select,
    )
    .await
}

/// Deletes the definitions of `kind` that `select` picks among the stored names, as the
/// operation `operation` (its metric label), behind the same guard as every setup call.
async fn delete(
    state: &SetupState,
    headers: &HeaderMap,
    kind: Kind,
    operation: &'static str,
    select: impl FnOnce(&[&str]) -> Result<Vec<String>, SetupError>,
) -> Response {
    let call = async {
        state.store().await?.delete(kind, select).await?;
        acknowledged()
    };
    guarded(state, headers, operation, false, call).await
}

/// The index templates `expression` deletes: a list of plain names that must all be stored, or
/// one name or pattern.
fn index_templates_to_delete(expression: &str, stored: &[&str]) -> Result<Vec<String>, SetupError> {
    let names: Vec<&str> = expression.split(',').filter(|n| !n.is_empty()).collect();
    if names.len() <= 1 {
        // `logs,` is `logs`, as ES splits it.
        return matching_pattern(names.first().copied().unwrap_or(expression), stored);
    }
    // In a list a `*` is a literal character, which no stored name has: ES reports such a name
    // missing rather than expanding it.
    let missing: Vec<&str> = names
        .iter()
        .copied()
        .filter(|name| !stored.contains(name))
        .collect();
    if !missing.is_empty() {
        return Err(SetupError::TemplateMissing(missing.join(",")));
    }
    Ok(names.into_iter().map(str::to_string).collect())
}

/// The stored names one name or `*` pattern selects; selecting none is a 404 except for `*`.
fn matching_pattern(pattern: &str, stored: &[&str]) -> Result<Vec<String>, SetupError> {
    let found: Vec<String> = stored
        .iter()
        .filter(|name| glob_matches(pattern, name))
        .map(|name| name.to_string())
        .collect();
    if found.is_empty() && pattern != "*" {
        return Err(SetupError::TemplateMissing(pattern.to_string()));
    }
    Ok(found)
}

/// The policy `name` deletes: itself, when stored (a policy DELETE takes no pattern).
fn policy_to_delete(name: &str, stored: &[&str]) -> Result<Vec<String>, SetupError> {
    if stored.contains(&name) {
        Ok(vec![name.to_string()])
    } else {
        Err(SetupError::NotFound(format!(
            "Lifecycle policy not found: {name}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STORED: [&str; 3] = ["logs", "logs-app", "metrics"];

    fn missing(result: Result<Vec<String>, SetupError>) -> String {
        match result {
            Err(SetupError::TemplateMissing(names)) => names,
            other => panic!("expected index_template_missing_exception, got {other:?}"),
        }
    }

    #[test]
    fn index_template_deletes_take_a_pattern_or_a_list_of_names_like_elasticsearch() {
        let delete = |expression| index_templates_to_delete(expression, &STORED);
        assert_eq!(delete("logs").unwrap(), ["logs"]);
        assert_eq!(delete("logs*").unwrap(), ["logs", "logs-app"]);
        assert_eq!(delete("*").unwrap(), STORED);
        assert_eq!(delete("metrics,logs").unwrap(), ["metrics", "logs"]);
        assert_eq!(
            delete("logs,").unwrap(),
            ["logs"],
            "an empty part is dropped"
        );
        assert_eq!(missing(delete("nope")), "nope");
        assert_eq!(missing(delete("nope*")), "nope*");
        assert_eq!(
            missing(delete("logs,nope,metrics,gone")),
            "nope,gone",
            "a list with a missing name deletes nothing and names every missing one"
        );
        assert_eq!(
            missing(delete("metrics,logs*")),
            "logs*",
            "no wildcards in a list"
        );
        assert!(
            index_templates_to_delete("*", &[]).unwrap().is_empty(),
            "`*` with nothing stored succeeds"
        );
    }

    #[test]
    fn legacy_template_deletes_take_one_pattern_and_policy_deletes_one_name() {
        assert_eq!(
            matching_pattern("logs*", &STORED).unwrap(),
            ["logs", "logs-app"]
        );
        assert_eq!(
            missing(matching_pattern("logs,metrics", &STORED)),
            "logs,metrics"
        );
        assert_eq!(policy_to_delete("logs", &STORED).unwrap(), ["logs"]);
        for name in ["logs*", "nope", "*"] {
            let error = policy_to_delete(name, &STORED).unwrap_err();
            assert!(
                matches!(&error, SetupError::NotFound(reason) if reason == &format!("Lifecycle policy not found: {name}")),
                "{error:?}"
            );
        }
    }
}
