//! Markers and marker expressions.
//!
//! A marker is a named tag on a test (`integration`, `compliance`, `slow`, …).
//! Markers are Rust items: `#[service_test(compliance)]` refers to the constant
//! [`markers::compliance`], so a misspelt marker fails to compile with rustc's
//! own "did you mean" hint. User markers are declared with [`marker!`](crate::marker!).
//!
//! At run time a marker *expression* selects tests, as pytest's `-m` does:
//!
//! ```text
//! cargo test -- --marker "integration and not slow"
//! cargo test -- -m "(compliance or security) and not real_services"
//! ```
//!
//! Precedence is `or` < `and` < `not`; parentheses group. [`Expr::parse`]
//! reports a syntax error with the byte offset of the fault, and
//! [`Expr::check_known`] names an unknown marker with the closest known one.

use std::fmt;

/// A marker a test can carry: its name and what it means.
///
/// Built-in markers live in [`markers`]; user markers are declared with
/// [`marker!`](crate::marker!). Both are registered so `--markers` can list
/// them and an expression can be checked against them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marker {
    /// The marker's name, as written in `#[service_test(...)]` and expressions.
    pub name: &'static str,
    /// One line saying what the marker means, shown by `--markers`.
    pub description: &'static str,
}

inventory::collect!(Marker);

/// The built-in markers (from the seeds' test taxonomy).
///
/// They are lower-case constants on purpose: `#[service_test(compliance)]`
/// names the constant directly.
#[allow(non_upper_case_globals)]
pub mod markers {
    use super::Marker;

    macro_rules! builtin {
        ($($name:ident => $desc:literal,)*) => {
            $(
                #[doc = $desc]
                pub const $name: Marker = Marker { name: stringify!($name), description: $desc };
            )*
            /// Every built-in marker, in declaration order.
            pub const ALL: &[Marker] = &[$($name),*];
        };
    }

    builtin! {
        unit => "fast, in-process tests with no network and no real services",
        integration => "tests that talk to real servers over real sockets",
        e2e => "end-to-end workflows across the whole mesh",
        interservice => "service-to-service communication",
        resilience => "behaviour under failures: outages, slowness, partitions",
        circuit_breaker => "circuit breaker transitions and thresholds",
        retry => "retry policies, backoff and idempotency",
        bulkhead => "per-dependency concurrency limits: a hanging dependency holds a bounded share",
        chaos => "faults injected through the chaos proxy",
        compliance => "HIPAA compliance: audit trails, PHI handling, access rules",
        phi_safe => "everything the test emits is scanned for PHI; a hit fails the test",
        audit => "audit trail completeness and accuracy",
        performance => "latency and throughput figures",
        load => "sustained load from the load generator",
        security => "authentication, authorisation, tenant isolation",
        api_contract => "request and response shapes of the public API",
        config => "configuration loading and validation",
        health => "health and readiness endpoints",
        real_services => "needs real PostgreSQL and Redis; skipped (with the reason) when they cannot be had",
        slow => "takes long; filter out with `not slow`",
    }
}

/// Every marker this binary knows: the built-ins, then user markers sorted by name.
pub fn known_markers() -> Vec<Marker> {
    let mut user: Vec<Marker> = inventory::iter::<Marker>
        .into_iter()
        .copied()
        .filter(|m| !markers::ALL.iter().any(|b| b.name == m.name))
        .collect();
    user.sort_by_key(|m| m.name);
    user.dedup_by_key(|m| m.name);
    markers::ALL.iter().copied().chain(user).collect()
}

/// A parsed marker expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    /// A marker name; true when the test carries it.
    Marker {
        /// The name as written.
        name: String,
        /// Byte offset of the name in the source expression.
        at: usize,
    },
    /// Logical negation.
    Not(Box<Expr>),
    /// Both sides hold.
    And(Box<Expr>, Box<Expr>),
    /// Either side holds.
    Or(Box<Expr>, Box<Expr>),
}

/// Why a marker expression was rejected. Carries the expression and the byte
/// offset of the fault so [`fmt::Display`] can draw a caret under it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ExprError {
    /// The whole expression as given.
    pub expr: String,
    /// Byte offset of the fault.
    pub at: usize,
    /// How many bytes to underline (at least one caret is drawn).
    pub len: usize,
    /// What is wrong.
    pub kind: ExprErrorKind,
}

/// The kinds of fault in a marker expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExprErrorKind {
    /// Nothing but white space.
    Empty,
    /// A character that cannot start a name, an operator or a parenthesis.
    BadCharacter(char),
    /// An operator or `)` where a marker name, `not` or `(` was expected.
    ExpectedOperand(String),
    /// The expression ended where a marker name, `not` or `(` was expected.
    UnexpectedEnd,
    /// A `(` without its `)`; `open` is the offset of the `(`.
    Unclosed {
        /// Byte offset of the unmatched `(`.
        open: usize,
    },
    /// A name or `(` where `and`, `or` or `)` was expected.
    ExpectedOperator(String),
    /// Parentheses or `not`s nested deeper than [`MAX_DEPTH`].
    TooDeep,
    /// More than [`MAX_TOKENS`] names and operators.
    TooLong,
    /// A marker name this binary does not know; `suggestion` is the closest known one.
    UnknownMarker {
        /// The unknown name.
        name: String,
        /// The closest known marker, when one is close enough.
        suggestion: Option<String>,
    },
}

impl fmt::Display for ExprError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match &self.kind {
            ExprErrorKind::Empty => "the marker expression is empty".to_string(),
            ExprErrorKind::BadCharacter(c) => format!("unexpected character `{c}`"),
            ExprErrorKind::ExpectedOperand(tok) => {
                format!("expected a marker name, `not` or `(`, found `{tok}`")
            }
            ExprErrorKind::UnexpectedEnd => {
                "the expression ends where a marker name, `not` or `(` was expected".to_string()
            }
            ExprErrorKind::Unclosed { open } => {
                format!("`(` at column {} is never closed: expected `)`", open + 1)
            }
            ExprErrorKind::ExpectedOperator(tok) => {
                format!("expected `and`, `or` or `)`, found `{tok}`")
            }
            ExprErrorKind::UnknownMarker { name, .. } => format!("unknown marker `{name}`"),
            ExprErrorKind::TooDeep => {
                format!("parentheses and `not`s nest deeper than {MAX_DEPTH} levels")
            }
            ExprErrorKind::TooLong => {
                format!("more than {MAX_TOKENS} names, operators and parentheses")
            }
        };
        writeln!(f, "invalid --marker expression: {what}")?;
        writeln!(f, "  {}", self.expr)?;
        let pad: String = self.expr[..self.at.min(self.expr.len())]
            .chars()
            .map(|c| if c == '\t' { '\t' } else { ' ' })
            .collect();
        write!(f, "  {pad}{}", "^".repeat(self.len.max(1)))?;
        if let ExprErrorKind::UnknownMarker { suggestion, .. } = &self.kind {
            match suggestion {
                Some(s) => write!(f, "\n  help: did you mean `{s}`?")?,
                None => write!(
                    f,
                    "\n  help: `--markers` lists the markers this binary knows"
                )?,
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok<'a> {
    Name(&'a str),
    And,
    Or,
    Not,
    Open,
    Close,
}

impl Tok<'_> {
    fn text(&self) -> &str {
        match self {
            Tok::Name(n) => n,
            Tok::And => "and",
            Tok::Or => "or",
            Tok::Not => "not",
            Tok::Open => "(",
            Tok::Close => ")",
        }
    }
}

/// How deep parentheses and `not`s may nest in a marker expression (the
/// parser recurses; an expression from the environment must not be able to
/// overflow the stack).
pub const MAX_DEPTH: usize = 64;

/// How many tokens a marker expression may have.
pub const MAX_TOKENS: usize = 4096;

struct Parser<'a> {
    src: &'a str,
    toks: Vec<(Tok<'a>, usize)>,
    pos: usize,
    depth: usize,
}

impl<'a> Parser<'a> {
    fn err(&self, at: usize, len: usize, kind: ExprErrorKind) -> ExprError {
        ExprError {
            expr: self.src.to_string(),
            at,
            len,
            kind,
        }
    }

    fn peek(&self) -> Option<&(Tok<'a>, usize)> {
        self.toks.get(self.pos)
    }

    fn or_expr(&mut self) -> Result<Expr, ExprError> {
        let mut lhs = self.and_expr()?;
        while matches!(self.peek(), Some((Tok::Or, _))) {
            self.pos += 1;
            let rhs = self.and_expr()?;
            lhs = Expr::Or(Box::new(lhs), Box::new(rhs));
        }
        Ok(lhs)
    }

    fn and_expr(&mut self) -> Result<Expr, ExprError> {
        let mut lhs = self.not_expr()?;
        while matches!(self.peek(), Some((Tok::And, _))) {
            self.pos += 1;
            let rhs = self.not_expr()?;
            lhs = Expr::And(Box::new(lhs), Box::new(rhs));
        }
        Ok(lhs)
    }

    /// Enters one level of nesting at the token at `at`.
    fn descend(&mut self, at: usize, len: usize) -> Result<(), ExprError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.err(at, len, ExprErrorKind::TooDeep));
        }
        Ok(())
    }

    fn not_expr(&mut self) -> Result<Expr, ExprError> {
        if let Some((Tok::Not, at)) = self.peek().cloned() {
            self.pos += 1;
            self.descend(at, 3)?;
            let inner = self.not_expr()?;
            self.depth -= 1;
            return Ok(Expr::Not(Box::new(inner)));
        }
        self.atom()
    }

    fn atom(&mut self) -> Result<Expr, ExprError> {
        let Some((tok, at)) = self.peek().cloned() else {
            return Err(self.err(self.src.len(), 1, ExprErrorKind::UnexpectedEnd));
        };
        self.pos += 1;
        match tok {
            Tok::Name(name) => Ok(Expr::Marker {
                name: name.to_string(),
                at,
            }),
            Tok::Open => {
                self.descend(at, 1)?;
                let inner = self.or_expr()?;
                self.depth -= 1;
                match self.peek() {
                    Some((Tok::Close, _)) => {
                        self.pos += 1;
                        Ok(inner)
                    }
                    Some((other, at)) => Err(self.err(
                        *at,
                        other.text().len(),
                        ExprErrorKind::ExpectedOperator(other.text().to_string()),
                    )),
                    None => Err(self.err(self.src.len(), 1, ExprErrorKind::Unclosed { open: at })),
                }
            }
            other => Err(self.err(
                at,
                other.text().len(),
                ExprErrorKind::ExpectedOperand(other.text().to_string()),
            )),
        }
    }
}

fn tokenize(src: &str) -> Result<Vec<(Tok<'_>, usize)>, ExprError> {
    let mut toks = Vec::new();
    let bytes = src.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c.is_ascii_whitespace() {
            i += 1;
        } else if c == b'(' {
            toks.push((Tok::Open, i));
            i += 1;
        } else if c == b')' {
            toks.push((Tok::Close, i));
            i += 1;
        } else if c.is_ascii_alphabetic() || c == b'_' {
            let start = i;
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                i += 1;
            }
            let word = &src[start..i];
            toks.push((
                match word {
                    "and" => Tok::And,
                    "or" => Tok::Or,
                    "not" => Tok::Not,
                    _ => Tok::Name(word),
                },
                start,
            ));
        } else {
            let ch = src[i..].chars().next().unwrap_or('?');
            return Err(ExprError {
                expr: src.to_string(),
                at: i,
                len: 1,
                kind: ExprErrorKind::BadCharacter(ch),
            });
        }
    }
    Ok(toks)
}

impl Expr {
    /// Parses a marker expression (`or` < `and` < `not`, parentheses group).
    ///
    /// ```
    /// # extern crate service_test_harness as service_test;
    /// use service_test::marker::Expr;
    /// let e = Expr::parse("integration and not slow").unwrap();
    /// assert!(e.matches(&["integration"]));
    /// assert!(!e.matches(&["integration", "slow"]));
    /// ```
    pub fn parse(src: &str) -> Result<Expr, ExprError> {
        let toks = tokenize(src)?;
        let mut p = Parser {
            src,
            toks,
            pos: 0,
            depth: 0,
        };
        if let Some((tok, at)) = p.toks.get(MAX_TOKENS) {
            return Err(p.err(*at, tok.text().len(), ExprErrorKind::TooLong));
        }
        if p.toks.is_empty() {
            return Err(p.err(0, src.len().max(1), ExprErrorKind::Empty));
        }
        let expr = p.or_expr()?;
        if let Some((tok, at)) = p.peek() {
            let kind = match tok {
                Tok::Close => ExprErrorKind::ExpectedOperator(")".into()),
                other => ExprErrorKind::ExpectedOperator(other.text().to_string()),
            };
            return Err(p.err(*at, tok.text().len(), kind));
        }
        Ok(expr)
    }

    /// True when a test carrying `markers` is selected by this expression.
    pub fn matches(&self, markers: &[&str]) -> bool {
        match self {
            Expr::Marker { name, .. } => markers.contains(&name.as_str()),
            Expr::Not(e) => !e.matches(markers),
            Expr::And(a, b) => a.matches(markers) && b.matches(markers),
            Expr::Or(a, b) => a.matches(markers) || b.matches(markers),
        }
    }

    /// Every marker name the expression mentions, with its byte offset.
    pub fn names(&self) -> Vec<(&str, usize)> {
        let mut out = Vec::new();
        self.collect_names(&mut out);
        out
    }

    fn collect_names<'a>(&'a self, out: &mut Vec<(&'a str, usize)>) {
        match self {
            Expr::Marker { name, at } => out.push((name, *at)),
            Expr::Not(e) => e.collect_names(out),
            Expr::And(a, b) | Expr::Or(a, b) => {
                a.collect_names(out);
                b.collect_names(out);
            }
        }
    }

    /// Checks that every name in the expression is one of `known`; the first
    /// unknown one is reported with the closest known name as a suggestion.
    pub fn check_known(&self, src: &str, known: &[&str]) -> Result<(), ExprError> {
        for (name, at) in self.names() {
            if !known.contains(&name) {
                return Err(ExprError {
                    expr: src.to_string(),
                    at,
                    len: name.len(),
                    kind: ExprErrorKind::UnknownMarker {
                        name: name.to_string(),
                        suggestion: closest(name, known).map(str::to_string),
                    },
                });
            }
        }
        Ok(())
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::Marker { name, .. } => f.write_str(name),
            Expr::Not(e) => write!(f, "not {e}"),
            Expr::And(a, b) => write!(f, "({a} and {b})"),
            Expr::Or(a, b) => write!(f, "({a} or {b})"),
        }
    }
}

/// The known name closest to `name` by edit distance, if it is close enough
/// to be a plausible typo (at most a third of the name's length, and at least 1).
pub fn closest<'a>(name: &str, known: &[&'a str]) -> Option<&'a str> {
    let limit = (name.chars().count() / 3).max(1);
    known
        .iter()
        .map(|k| (levenshtein(name, k), *k))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, k)| (*d, *k))
        .map(|(_, k)| k)
}

/// Edit distance where swapping two neighbouring characters counts as one
/// edit (optimal string alignment), so `complaince` is one step from `compliance`.
fn levenshtein(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}
