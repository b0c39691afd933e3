//! Checks the types cannot express: duplicate arguments, and cases that
//! match the `#[case]` parameters.

use std::collections::HashMap;

use super::parse::{TestArgs, TestFn, duplicates};
use crate::Errors;

pub(crate) fn check(args: &TestArgs, test: &TestFn, errors: &mut Errors) {
    for (key, span) in duplicates(&args.seen) {
        errors.push(syn::Error::new(
            span,
            format!("{key} is given twice in #[service_test]"),
        ));
    }
    let case_params: Vec<_> = test.case_params().collect();
    match (test.cases.is_empty(), case_params.is_empty()) {
        (true, false) => {
            for span in &case_params {
                errors.push(syn::Error::new(
                    *span,
                    "this `#[case]` parameter has no cases: add `#[case(...)]` attributes to the function, one per case",
                ));
            }
        }
        (false, true) => errors.push(syn::Error::new_spanned(
            &test.cases[0].tokens,
            "this test has cases but no `#[case]` parameter to receive their values: mark parameters with `#[case]`",
        )),
        _ => {}
    }
    if !case_params.is_empty() {
        for (i, case) in test.cases.iter().enumerate() {
            if case.values.len() != case_params.len() {
                errors.push(syn::Error::new_spanned(
                    &case.tokens,
                    format!(
                        "case {} gives {} value{}, but the function has {} `#[case]` parameter{}",
                        i + 1,
                        case.values.len(),
                        if case.values.len() == 1 { "" } else { "s" },
                        case_params.len(),
                        if case_params.len() == 1 { "" } else { "s" },
                    ),
                ));
            }
        }
    }
    let mut named: HashMap<String, usize> = HashMap::new();
    for case in &test.cases {
        if let Some(name) = &case.name {
            let n = named.entry(name.to_string()).or_insert(0);
            *n += 1;
            if *n == 2 {
                errors.push(syn::Error::new(
                    name.span(),
                    format!("two cases are named `{name}`: each case's name must be unique"),
                ));
            }
        }
    }
}
