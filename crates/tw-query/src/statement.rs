//! Parsing, the read-only gate, and the rewrite of dotted field names.
//!
//! Users write flattened JSON fields as written (`requestParameters.policyArn`), which SQL
//! reads as a table or struct access. Before planning, a compound identifier whose parts
//! joined with `.` name a column of a queried table becomes that single quoted column.

use std::collections::HashSet;
use std::ops::ControlFlow;

use datafusion::sql::parser::{DFParserBuilder, Statement as DfStatement};
use datafusion::sql::sqlparser::ast::{Expr, Ident, Statement, visit_expressions_mut};
use datafusion::sql::sqlparser::dialect::GenericDialect;

use crate::error::QueryError;

/// Deepest expression nesting accepted, so a hostile query cannot exhaust the stack.
const RECURSION_LIMIT: usize = 64;

/// Parses exactly one statement and refuses anything that is not a read.
pub fn parse_read_only(sql: &str) -> Result<DfStatement, QueryError> {
    let mut statements = DFParserBuilder::new(sql)
        .with_dialect(&GenericDialect {})
        .with_recursion_limit(RECURSION_LIMIT)
        .build()
        .and_then(|mut parser| parser.parse_statements())
        .map_err(|e| QueryError::Syntax(e.to_string()))?;
    if statements.len() > 1 {
        return Err(QueryError::Syntax(format!(
            "expected one statement, found {}",
            statements.len()
        )));
    }
    let statement = statements
        .pop_front()
        .ok_or_else(|| QueryError::Syntax("the query is empty".to_string()))?;
    check_read_only(&statement)?;
    Ok(statement)
}

fn check_read_only(statement: &DfStatement) -> Result<(), QueryError> {
    match statement {
        DfStatement::Statement(inner) => check_sql_statement(inner),
        DfStatement::Explain(explain) => check_read_only(&explain.statement),
        DfStatement::CreateExternalTable(_) => Err(refused("CREATE EXTERNAL TABLE")),
        DfStatement::CopyTo(_) => Err(refused("COPY")),
        DfStatement::Reset(_) => Err(refused("RESET")),
    }
}

fn check_sql_statement(statement: &Statement) -> Result<(), QueryError> {
    match statement {
        Statement::Query(_)
        | Statement::ShowTables { .. }
        | Statement::ShowColumns { .. }
        | Statement::ShowFunctions { .. }
        | Statement::ShowVariable { .. }
        | Statement::ExplainTable { .. } => Ok(()),
        Statement::Explain { statement, .. } => check_sql_statement(statement),
        other => {
            // The first keywords name the statement without echoing a long query back.
            let text = other.to_string();
            let head: Vec<&str> = text.split_whitespace().take(2).collect();
            Err(refused(&head.join(" ")))
        }
    }
}

fn refused(what: &str) -> QueryError {
    QueryError::Refused(what.to_string())
}

/// Rewrites compound identifiers that name a dotted column (`a.b.c` → `"a.b.c"`,
/// `t.a.b` → `t."a.b"`). `dotted` holds the column names containing a dot.
pub fn rewrite_dotted_identifiers(statement: &mut DfStatement, dotted: &HashSet<String>) {
    if dotted.is_empty() {
        return;
    }
    match statement {
        DfStatement::Statement(inner) => rewrite_sql_statement(inner, dotted),
        DfStatement::Explain(explain) => rewrite_dotted_identifiers(&mut explain.statement, dotted),
        DfStatement::CreateExternalTable(_) | DfStatement::CopyTo(_) | DfStatement::Reset(_) => {}
    }
}

fn rewrite_sql_statement(statement: &mut Statement, dotted: &HashSet<String>) {
    let _ = visit_expressions_mut(statement, |expr| {
        if let Expr::CompoundIdentifier(parts) = expr
            && let Some(rewritten) = rewrite_compound(parts, dotted)
        {
            *expr = rewritten;
        }
        ControlFlow::<()>::Continue(())
    });
}

/// The longest suffix of `parts` (two parts or more) naming a dotted column becomes one quoted
/// identifier; what precedes it stays as the qualifier. Quoted parts are kept as written:
/// `"a.b"` already names the column and `"a"."b"` is an explicit qualified reference.
fn rewrite_compound(parts: &[Ident], dotted: &HashSet<String>) -> Option<Expr> {
    if parts.iter().any(|part| part.quote_style.is_some()) {
        return None;
    }
    for start in 0..parts.len().saturating_sub(1) {
        let name = parts[start..]
            .iter()
            .map(|p| p.value.as_str())
            .collect::<Vec<_>>()
            .join(".");
        if dotted.contains(&name) {
            let column = Ident::with_quote('"', name);
            return Some(if start == 0 {
                Expr::Identifier(column)
            } else {
                let mut qualified = parts[..start].to_vec();
                qualified.push(column);
                Expr::CompoundIdentifier(qualified)
            });
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dotted() -> HashSet<String> {
        [
            "requestParameters.policyArn",
            "userIdentity.userName",
            "a.b.c",
        ]
        .into_iter()
        .map(String::from)
        .collect()
    }

    fn rewrite(sql: &str) -> String {
        let mut statement = parse_read_only(sql).expect("parses");
        rewrite_dotted_identifiers(&mut statement, &dotted());
        statement.to_string()
    }

    #[test]
    fn dotted_names_become_single_columns() {
        assert_eq!(
            rewrite(
                "SELECT userIdentity.userName FROM t WHERE requestParameters.policyArn LIKE '%Admin%'"
            ),
            r#"SELECT "userIdentity.userName" FROM t WHERE "requestParameters.policyArn" LIKE '%Admin%'"#
        );
        assert_eq!(
            rewrite("SELECT x.a.b.c FROM t AS x"),
            r#"SELECT x."a.b.c" FROM t AS x"#
        );
        assert_eq!(
            rewrite("SELECT count(a.b.c) FROM t GROUP BY a.b.c"),
            r#"SELECT count("a.b.c") FROM t GROUP BY "a.b.c""#
        );
        // Not dotted columns: left to the planner (table qualifiers, struct fields).
        assert_eq!(
            rewrite("SELECT t.eventName, a.b FROM t"),
            "SELECT t.eventName, a.b FROM t"
        );
        assert_eq!(
            rewrite(r#"SELECT "a"."b"."c" FROM t"#),
            r#"SELECT "a"."b"."c" FROM t"#
        );
    }

    #[test]
    fn writes_are_refused() {
        for sql in [
            "CREATE TABLE x (a INT)",
            "INSERT INTO t VALUES (1)",
            "DROP TABLE t",
            "COPY t TO '/tmp/x.parquet'",
            "CREATE EXTERNAL TABLE x STORED AS PARQUET LOCATION '/tmp'",
            "SET datafusion.execution.batch_size = 1",
            "DELETE FROM t",
            "EXPLAIN INSERT INTO t VALUES (1)",
            "CREATE VIEW v AS SELECT 1",
        ] {
            match parse_read_only(sql) {
                Err(QueryError::Refused(_)) => {}
                other => panic!("{sql}: expected a refusal, got {other:?}"),
            }
        }
        for sql in [
            "SELECT 1",
            "EXPLAIN SELECT 1",
            "SHOW TABLES",
            "SHOW COLUMNS FROM t",
            "WITH x AS (SELECT 1) SELECT * FROM x",
        ] {
            assert!(parse_read_only(sql).is_ok(), "{sql} should be accepted");
        }
        assert!(matches!(
            parse_read_only("SELEC 1"),
            Err(QueryError::Syntax(_))
        ));
        assert!(matches!(
            parse_read_only("SELECT 1; SELECT 2"),
            Err(QueryError::Syntax(_))
        ));
        assert!(matches!(parse_read_only("  "), Err(QueryError::Syntax(_))));
    }
}
