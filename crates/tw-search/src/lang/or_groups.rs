//! The OR grouping of one level of a query: which clauses tantivy's grammar flattened into
//! one list are one required OR group, and which lists are refused as ambiguous.
//!
//! Why the rule exists: a space (no operator) is AND, what `AccessDenied root` means in a log
//! search. `OR` binds tighter than a space, looser than `AND`: `x a OR b` is `x AND (a OR b)`,
//! `a AND b OR c` is `(a AND b) OR c`. tantivy's grammar marks a term next to `OR` as `Should`
//! and a term between spaces as no occur, and flattens a level into one list: `x a OR b` is
//! `[x, ?a, ?b]`. Kept as such, `Should` would be optional next to a required clause (the
//! query would match every `x`), so when a level mixes `Should` clauses with others, each run
//! of `Should` clauses becomes one required OR group.
//!
//! The list does not always say where the spaces were: `x a OR b c OR d` and
//! `x a OR b OR c OR d` both give `[x, ?a, ?b, ?c, ?d]`, and an `AND` chain is `Should` next
//! to a space as next to an `OR` (`x a AND b c AND d` is `x a AND b OR c AND d`). A run that
//! reads two ways is refused, never guessed. A level of `Should` clauses only is one OR, as
//! tantivy reads it. The shapes of tantivy's grammar this relies on are pinned by the test
//! `grammar_shapes_the_or_grouping_relies_on`.

use tantivy::query::Occur;
use tantivy::query_grammar::{Delimiter, UserInputAst, UserInputLeaf};

use super::bad;
use crate::SearchError;

/// The clauses of one level of the query with their `Occur`, a space meaning AND (see the
/// module documentation).
pub(super) fn or_groups(
    clauses: Vec<(Option<Occur>, UserInputAst)>,
) -> Result<Vec<(Occur, UserInputAst)>, SearchError> {
    let should = |occur: &Option<Occur>| *occur == Some(Occur::Should);
    if clauses.iter().all(|(occur, _)| should(occur)) {
        return Ok(clauses
            .into_iter()
            .map(|(_, clause)| (Occur::Should, clause))
            .collect());
    }
    let mut grouped = Vec::with_capacity(clauses.len());
    let mut run = Vec::new();
    for (occur, clause) in clauses {
        if should(&occur) {
            run.push(clause);
            continue;
        }
        grouped.extend(or_group(std::mem::take(&mut run))?);
        grouped.push((occur.unwrap_or(Occur::Must), clause));
    }
    grouped.extend(or_group(run)?);
    Ok(grouped)
}

/// A run of `Should` clauses between other clauses (or the ends) as one required clause, or
/// an error when the run reads two ways.
///
/// A term is `Should` only next to an `OR`, so a space inside a run needs at least two terms
/// on each side: a run of two or three terms is all ORs. An `AND` chain says nothing about
/// its neighbours: two chains may be joined by a space, and so may a chain at either end of
/// a run of three.
fn or_group(mut run: Vec<UserInputAst>) -> Result<Option<(Occur, UserInputAst)>, SearchError> {
    let clear = match run.as_slice() {
        [] => return Ok(None),
        [_] => true,
        [first, second] => !(and_chain(first) && and_chain(second)),
        [first, _, last] => !and_chain(first) && !and_chain(last),
        _ => false,
    };
    if !clear {
        let terms: Vec<String> = run.iter().map(show).collect();
        return Err(bad(format!(
            "ambiguous use of OR next to terms joined by a space: {} are joined by OR, but a \
             space (AND) may separate some of them; write the query with explicit AND and \
             parentheses, e.g. `... AND ({})` if one OR joins them all",
            terms.join(", "),
            terms.join(" OR ")
        )));
    }
    let group = if run.len() == 1 {
        run.pop().expect("one clause")
    } else {
        UserInputAst::Clause(
            run.into_iter()
                .map(|clause| (Some(Occur::Should), clause))
                .collect(),
        )
    };
    Ok(Some((Occur::Must, group)))
}

/// Whether `clause` may be an `a AND b` chain of the same level (tantivy gives it as a
/// clause of required and excluded terms, as it gives a parenthesized `(a AND b)`).
fn and_chain(clause: &UserInputAst) -> bool {
    matches!(clause, UserInputAst::Clause(clauses)
        if clauses.len() > 1
            && clauses
                .iter()
                .all(|(occur, _)| matches!(occur, Some(Occur::Must | Occur::MustNot))))
}

/// `clause` as query text, for messages.
fn show(clause: &UserInputAst) -> String {
    match clause {
        UserInputAst::Leaf(leaf) => match leaf.as_ref() {
            UserInputLeaf::Literal(literal) if literal.slop == 0 && !literal.prefix => {
                let field = literal
                    .field_name
                    .as_deref()
                    .map(|f| format!("{f}:"))
                    .unwrap_or_default();
                match literal.delimiter {
                    Delimiter::None => format!("{field}{}", literal.phrase),
                    _ => format!("{field}{:?}", literal.phrase),
                }
            }
            other => format!("{other:?}"),
        },
        UserInputAst::Clause(clauses) => {
            let joiner = if and_chain(clause) {
                " AND "
            } else if clauses.iter().all(|(o, _)| *o == Some(Occur::Should)) {
                " OR "
            } else {
                " "
            };
            let parts: Vec<String> = clauses
                .iter()
                .map(|(occur, clause)| match occur {
                    Some(Occur::MustNot) => format!("NOT {}", show(clause)),
                    _ => show(clause),
                })
                .collect();
            match parts.as_slice() {
                [one] => one.clone(),
                _ => format!("({})", parts.join(joiner)),
            }
        }
        UserInputAst::Boost(inner, _) => show(inner),
    }
}
