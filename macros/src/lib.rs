//! Proc-macros of the service test harness. Use them through the
//! `service-test` crate (`service_test::service_test`,
//! `service_test::fixture`). The expansions name that crate by the name the
//! user's `Cargo.toml` gives it (found with `proc-macro-crate`, so a renamed
//! dependency works), or `service-test-harness` when only that is a
//! dependency.
//!
//! Each macro parses its input into a small typed struct first
//! ([`test::TestArgs`], [`fixture::FixtureArgs`], [`params::Param`]) and
//! expands from that struct. Every user mistake becomes a `syn::Error` on
//! the offending token; several are reported together.
#![deny(missing_docs)]

use proc_macro::TokenStream;

mod fixture;
mod params;
mod service_test;

/// Registers a test: `#[service_test(markers…, timeout = "10s", retries = 2,
/// ignore = "why", group = "name", services(a, b))]` on an `async fn` or `fn`.
///
/// Parameters are fixtures, resolved by type. Markers are Rust items, so a
/// misspelt marker is a compile error with rustc's suggestion.
#[proc_macro_attribute]
pub fn service_test(attr: TokenStream, item: TokenStream) -> TokenStream {
    service_test::expand(attr.into(), item.into()).into()
}

/// Turns an `async fn` (or `fn`) returning `T` or `Result<T, E>` into the
/// fixture that provides `T`: `#[fixture]`, `#[fixture(suite)]`,
/// `#[fixture(scope = session)]`. Its parameters are fixtures too, plus an
/// optional `&mut FixtureCx`.
#[proc_macro_attribute]
pub fn fixture(attr: TokenStream, item: TokenStream) -> TokenStream {
    fixture::expand(attr.into(), item.into())
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

/// The path the expansions start from: the `service-test` facade as the
/// calling crate names it, else `service-test-harness` as it names that,
/// else `::service_test` (whose absence rustc then reports).
pub(crate) fn krate() -> proc_macro2::TokenStream {
    use proc_macro_crate::{FoundCrate, crate_name};
    let named = |name: &str| {
        let ident = proc_macro2::Ident::new(name, proc_macro2::Span::call_site());
        quote::quote!(::#ident)
    };
    match crate_name("service-test") {
        Ok(FoundCrate::Name(name)) => return named(&name),
        Ok(FoundCrate::Itself) => return named("service_test"),
        Err(_) => {}
    }
    match crate_name("service-test-harness") {
        Ok(FoundCrate::Name(name)) => named(&name),
        Ok(FoundCrate::Itself) => named("service_test_harness"),
        Err(_) => named("service_test"),
    }
}

/// Collects errors so a macro can report all of them at once.
#[derive(Default)]
pub(crate) struct Errors(Option<syn::Error>);

impl Errors {
    pub(crate) fn push(&mut self, e: syn::Error) {
        match &mut self.0 {
            Some(all) => all.combine(e),
            None => self.0 = Some(e),
        }
    }

    pub(crate) fn finish(self) -> syn::Result<()> {
        self.0.map_or(Ok(()), Err)
    }
}

/// Checks what neither macro supports on a function: generics, receivers,
/// `const`, `unsafe`, `extern`, variadics.
pub(crate) fn check_plain_fn(sig: &syn::Signature, what: &str, errors: &mut Errors) {
    use syn::spanned::Spanned;
    if let Some(c) = &sig.constness {
        errors.push(syn::Error::new(
            c.span,
            format!("{what} cannot be `const fn`"),
        ));
    }
    if let Some(u) = &sig.unsafety {
        errors.push(syn::Error::new(
            u.span,
            format!("{what} cannot be `unsafe fn`"),
        ));
    }
    if let Some(abi) = &sig.abi {
        errors.push(syn::Error::new(
            abi.span(),
            format!("{what} cannot have an `extern` ABI"),
        ));
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        errors.push(syn::Error::new(
            sig.generics.span(),
            format!("{what} cannot be generic: fixtures are resolved by concrete type"),
        ));
    }
    if let Some(v) = &sig.variadic {
        errors.push(syn::Error::new(
            v.span(),
            format!("{what} cannot be variadic"),
        ));
    }
    for input in &sig.inputs {
        if let syn::FnArg::Receiver(r) = input {
            errors.push(syn::Error::new(
                r.span(),
                format!("{what} must be a free function, not a method taking `self`"),
            ));
        }
    }
}
