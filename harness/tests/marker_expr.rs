//! The marker expression language: precedence, grouping, and every error,
//! with the caret under the fault.

extern crate service_test_harness as harness;

use harness::marker::{Expr, ExprErrorKind, closest};
use harness::service_test;

fn sel(expr: &str, markers: &[&str]) -> bool {
    Expr::parse(expr)
        .unwrap_or_else(|e| panic!("{expr:?} should parse: {e}"))
        .matches(markers)
}

fn err(expr: &str) -> harness::marker::ExprError {
    match Expr::parse(expr) {
        Ok(e) => panic!("{expr:?} should not parse, got {e}"),
        Err(e) => e,
    }
}

#[service_test(unit)]
fn a_single_name_selects_tests_carrying_it() {
    assert!(sel("compliance", &["compliance", "audit"]));
    assert!(!sel("compliance", &["audit"]));
}

#[service_test(unit)]
fn and_binds_tighter_than_or() {
    // a or b and c  ==  a or (b and c)
    let e = Expr::parse("a or b and c").unwrap();
    assert_eq!(e.to_string(), "(a or (b and c))");
    assert!(e.matches(&["a"]));
    assert!(!e.matches(&["b"]));
    assert!(e.matches(&["b", "c"]));
}

#[service_test(unit)]
fn not_binds_tighter_than_and() {
    let e = Expr::parse("not a and b").unwrap();
    assert_eq!(e.to_string(), "(not a and b)");
    assert!(e.matches(&["b"]));
    assert!(!e.matches(&["a", "b"]));
}

#[service_test(unit)]
fn parentheses_override_precedence() {
    let e = Expr::parse("(a or b) and c").unwrap();
    assert_eq!(e.to_string(), "((a or b) and c)");
    assert!(!e.matches(&["a"]));
    assert!(e.matches(&["a", "c"]));
    assert!(sel("not (a or b)", &["c"]));
    assert!(!sel("not (a or b)", &["b"]));
}

#[service_test(unit)]
fn not_can_repeat_and_or_chains_associate_left() {
    assert!(sel("not not a", &["a"]));
    assert_eq!(
        Expr::parse("a or b or c").unwrap().to_string(),
        "((a or b) or c)"
    );
    assert_eq!(
        Expr::parse("a and b and c").unwrap().to_string(),
        "((a and b) and c)"
    );
}

#[service_test(unit)]
fn whitespace_is_free_form() {
    assert!(sel("  integration\tand(not   slow) ", &["integration"]));
}

#[service_test(unit)]
fn empty_expression_is_an_error() {
    assert_eq!(err("   ").kind, ExprErrorKind::Empty);
}

#[service_test(unit)]
fn unclosed_parenthesis_points_at_the_end() {
    let e = err("integration and (slow");
    assert_eq!(e.kind, ExprErrorKind::Unclosed { open: 16 });
    assert_eq!(e.at, "integration and (slow".len());
    let shown = e.to_string();
    assert!(
        shown.contains("`(` at column 17 is never closed"),
        "{shown}"
    );
    // The caret sits one past the last character.
    let lines: Vec<&str> = shown.lines().collect();
    assert_eq!(lines[1], "  integration and (slow");
    assert_eq!(lines[2], format!("  {}^", " ".repeat(21)));
}

#[service_test(unit)]
fn a_dangling_operator_is_an_unexpected_end() {
    let e = err("integration and");
    assert_eq!(e.kind, ExprErrorKind::UnexpectedEnd);
    assert_eq!(e.at, 15);
}

#[service_test(unit)]
fn an_operator_where_a_name_belongs_is_underlined() {
    let e = err("integration and or slow");
    assert_eq!(e.kind, ExprErrorKind::ExpectedOperand("or".into()));
    assert_eq!((e.at, e.len), (16, 2));
    assert!(e.to_string().lines().nth(2).unwrap().ends_with("^^"));
    assert_eq!(err(") a").kind, ExprErrorKind::ExpectedOperand(")".into()));
}

#[service_test(unit)]
fn two_names_in_a_row_need_an_operator() {
    let e = err("integration slow");
    assert_eq!(e.kind, ExprErrorKind::ExpectedOperator("slow".into()));
    assert_eq!(e.at, 12);
}

#[service_test(unit)]
fn a_stray_close_parenthesis_is_an_error() {
    let e = err("(a) )");
    assert_eq!(e.kind, ExprErrorKind::ExpectedOperator(")".into()));
    assert_eq!(e.at, 4);
}

#[service_test(unit)]
fn a_character_outside_the_language_is_an_error() {
    let e = err("integration && slow");
    assert_eq!(e.kind, ExprErrorKind::BadCharacter('&'));
    assert_eq!(e.at, 12);
}

#[service_test(unit)]
fn an_unknown_marker_suggests_the_closest_known_one() {
    let src = "integration and complaince";
    let known = ["integration", "compliance", "slow"];
    let e = Expr::parse(src)
        .unwrap()
        .check_known(src, &known)
        .unwrap_err();
    assert_eq!(
        e.kind,
        ExprErrorKind::UnknownMarker {
            name: "complaince".into(),
            suggestion: Some("compliance".into())
        }
    );
    assert_eq!((e.at, e.len), (16, 10));
    assert!(e.to_string().contains("did you mean `compliance`?"));
}

#[service_test(unit)]
fn a_name_far_from_every_marker_gets_no_suggestion() {
    assert_eq!(closest("zzzzzz", &["compliance", "slow"]), None);
    assert_eq!(closest("slwo", &["compliance", "slow"]), Some("slow"));
    assert_eq!(
        closest("intergation", &["integration", "interservice"]),
        Some("integration")
    );
}

#[service_test(unit)]
fn nesting_beyond_the_limit_is_an_error_not_a_stack_overflow() {
    let deep = format!("{}unit{}", "(".repeat(50_000), ")".repeat(50_000));
    let e = Expr::parse(&deep).unwrap_err();
    assert_eq!(e.kind, ExprErrorKind::TooLong);
    let nested = |n: usize| format!("{}unit{}", "(".repeat(n), ")".repeat(n));
    assert!(Expr::parse(&nested(harness::marker::MAX_DEPTH)).is_ok());
    let e = Expr::parse(&nested(harness::marker::MAX_DEPTH + 1)).unwrap_err();
    assert_eq!(e.kind, ExprErrorKind::TooDeep);
    assert_eq!(e.at, harness::marker::MAX_DEPTH);
    let nots = format!("{}unit", "not ".repeat(harness::marker::MAX_DEPTH + 1));
    assert_eq!(Expr::parse(&nots).unwrap_err().kind, ExprErrorKind::TooDeep);
    // A long flat chain is fine up to the token limit.
    let chain = vec!["unit"; 1000].join(" and ");
    assert!(Expr::parse(&chain).unwrap().matches(&["unit"]));
}

harness::main!();
