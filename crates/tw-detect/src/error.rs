//! Errors of rule parsing, validation and compilation.

use std::fmt;

/// One problem found in a rule, located by its field path inside the rule document
/// (for example `match.all[2].cidr`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleProblem {
    /// Where in the rule document the problem is (`threshold.window`, `match.any[0].regex`).
    pub path: String,
    /// What is wrong there, in lowercase.
    pub message: String,
}

impl RuleProblem {
    pub(crate) fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for RuleProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Why a rule could not be parsed, validated or compiled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    /// The text is not well-formed YAML or JSON.
    #[error("rule is not valid {format}: {message}")]
    Syntax {
        /// `json` or `yaml`.
        format: &'static str,
        /// The parser's message (with line and column when the parser gives them).
        message: String,
    },
    /// The document is well-formed but the rule is wrong; every problem found is listed.
    #[error("invalid rule: {}", join_problems(.problems))]
    Invalid {
        /// All problems, in document order.
        problems: Vec<RuleProblem>,
    },
}

impl RuleError {
    /// The located problems (empty for a syntax error).
    pub fn problems(&self) -> &[RuleProblem] {
        match self {
            Self::Syntax { .. } => &[],
            Self::Invalid { problems } => problems,
        }
    }
}

fn join_problems(problems: &[RuleProblem]) -> String {
    let texts: Vec<String> = problems.iter().map(ToString::to_string).collect();
    texts.join("; ")
}
