//! The check of a user-given SQL predicate (delete-by-query's `WHERE` clause): exactly one
//! expression, so it cannot close the `WHERE` and smuggle in more SQL.

use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::Token;

use crate::error::QueryError;

/// Deepest expression nesting accepted (as for queries).
const RECURSION_LIMIT: usize = 64;

/// Accepts `predicate` only if it parses as one whole SQL expression.
pub fn check_predicate(predicate: &str) -> Result<(), QueryError> {
    if predicate.trim().is_empty() {
        return Err(QueryError::Syntax("the predicate is empty".to_string()));
    }
    let dialect = GenericDialect {};
    let mut parser = Parser::new(&dialect)
        .with_recursion_limit(RECURSION_LIMIT)
        .try_with_sql(predicate)
        .map_err(|e| QueryError::Syntax(format!("predicate: {e}")))?;
    parser
        .parse_expr()
        .map_err(|e| QueryError::Syntax(format!("predicate: {e}")))?;
    let next = parser.peek_token().token;
    if next != Token::EOF {
        return Err(QueryError::Syntax(format!(
            "predicate must be one SQL expression; found {next} after it"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_expression_only() {
        assert!(check_predicate("userIdentity.userName = 'alice' AND n > 3").is_ok());
        assert!(check_predicate("cidr_match(sourceIPAddress, '10.0.0.0/8')").is_ok());
        for bad in [
            "",
            "   ",
            "a = 1; DROP TABLE x",
            "a = 1) UNION SELECT 1 --",
            "a = 1 ORDER BY b",
            "a =",
        ] {
            assert!(check_predicate(bad).is_err(), "{bad}");
        }
    }
}
