//! `#[service_test(...)]`: parse the arguments, check the function, register it.

use proc_macro2::TokenStream;
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;

use crate::{Errors, check_plain_fn, params};

/// The parsed arguments of `#[service_test(...)]`.
#[derive(Default)]
pub(crate) struct TestArgs {
    /// Marker paths, checked as Rust items (`compliance`, `my::marker`).
    markers: Vec<syn::Path>,
    /// `timeout = "10s"`, in milliseconds.
    timeout_ms: Option<u64>,
    /// `retries = N`.
    retries: Option<u32>,
    /// `ignore` (None inside) or `ignore = "reason"`.
    ignore: Option<Option<syn::LitStr>>,
    /// `group = "name"`.
    group: Option<syn::LitStr>,
    /// `services(a, b)`.
    services: Vec<syn::Ident>,
}

const KEYS: &str = "markers, `timeout = \"10s\"`, `retries = N`, `ignore`, `ignore = \"reason\"`, `group = \"name\"`, `services(a, b)`";

/// Parses `<number><ms|s|m|h>`; the proc-macro twin of `harness::duration::parse`.
fn parse_duration_ms(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (num, unit) = t.split_at(split);
    let factor = match unit.trim() {
        "ms" => 1.0,
        "s" => 1_000.0,
        "m" => 60_000.0,
        "h" => 3_600_000.0,
        _ => return None,
    };
    let n: f64 = num.parse().ok()?;
    (n.is_finite() && n > 0.0)
        .then(|| (n * factor).round() as u64)
        .filter(|ms| *ms > 0)
}

impl TestArgs {
    fn parse(attr: TokenStream, errors: &mut Errors) -> syn::Result<TestArgs> {
        let mut args = TestArgs::default();
        let parser = syn::meta::parser(|meta| {
            let key = meta.path.get_ident().map(ToString::to_string);
            let is_assign = meta.input.peek(syn::Token![=]);
            let is_list = meta.input.peek(syn::token::Paren);
            match key.as_deref() {
                Some("timeout") if is_assign => {
                    let lit: syn::LitStr = meta.value()?.parse()?;
                    match parse_duration_ms(&lit.value()) {
                        Some(ms) => args.timeout_ms = Some(ms),
                        None => errors.push(syn::Error::new(
                            lit.span(),
                            format!(
                                "invalid duration `{}`: expected a positive number and a unit (ms, s, m, h), e.g. \"500ms\" or \"10s\"",
                                lit.value()
                            ),
                        )),
                    }
                }
                Some("retries") if is_assign => {
                    let lit: syn::LitInt = meta.value()?.parse()?;
                    match lit.base10_parse::<u32>() {
                        Ok(n) => args.retries = Some(n),
                        Err(e) => errors.push(syn::Error::new(lit.span(), format!("retries: {e}"))),
                    }
                }
                Some("ignore") if is_assign => {
                    args.ignore = Some(Some(meta.value()?.parse()?));
                }
                Some("ignore") => args.ignore = Some(None),
                Some("group") if is_assign => {
                    let lit: syn::LitStr = meta.value()?.parse()?;
                    if lit.value().trim().is_empty() {
                        errors.push(syn::Error::new(lit.span(), "a group needs a name"));
                    }
                    args.group = Some(lit);
                }
                Some("services") if is_list => {
                    meta.parse_nested_meta(|svc| {
                        match svc.path.get_ident() {
                            Some(id) => args.services.push(id.clone()),
                            None => errors.push(syn::Error::new(
                                svc.path.span(),
                                "a service is a plain name, e.g. `services(insurance, billing)`",
                            )),
                        }
                        Ok(())
                    })?;
                }
                _ if is_assign || is_list => {
                    // Consume the value so the remaining arguments are still checked.
                    if is_assign {
                        let _: syn::Expr = meta.value()?.parse()?;
                    } else {
                        let content;
                        syn::parenthesized!(content in meta.input);
                        let _: TokenStream = content.parse()?;
                    }
                    errors.push(syn::Error::new(
                        meta.path.span(),
                        format!(
                            "unknown #[service_test] argument `{}`; expected {KEYS}",
                            quote::ToTokens::to_token_stream(&meta.path)
                        ),
                    ));
                }
                _ => args.markers.push(meta.path.clone()),
            }
            Ok(())
        });
        syn::parse::Parser::parse2(parser, attr)?;
        Ok(args)
    }
}

pub(crate) fn expand(attr: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    let mut errors = Errors::default();
    let func: syn::ItemFn = syn::parse2(item)?;
    let args = TestArgs::parse(attr, &mut errors)?;
    check_plain_fn(&func.sig, "a #[service_test] function", &mut errors);
    let params = params::parse(&func.sig, false, &mut errors);
    errors.finish()?;

    let name = &func.sig.ident;
    let is_async = func.sig.asyncness.is_some();
    let body_fn = format_ident!("__service_test_body_{}", name);
    let cx = quote!(__cx);
    let (lets, call_args) = params::resolve(&params, &cx, "owned", "held");
    let ret_span = match &func.sig.output {
        syn::ReturnType::Default => name.span(),
        syn::ReturnType::Type(_, ty) => ty.span(),
    };
    let verdict = quote_spanned!(ret_span=> ::harness::__private::verdict);
    let run = if is_async {
        quote!(#verdict(#name(#(#call_args),*).await))
    } else {
        // Parameters move into the blocking closure; `&mut` ones re-bind there.
        let moved: Vec<TokenStream> = params
            .iter()
            .enumerate()
            .filter(|(_, p)| matches!(p, params::Param::OwnedMut(_)))
            .map(|(i, _)| {
                let v = format_ident!("__p{i}");
                quote!(let mut #v = #v;)
            })
            .collect();
        quote!(::harness::__private::blocking(move || {
            #(#moved)*
            #verdict(#name(#(#call_args),*))
        }).await)
    };

    let marker_checks = args
        .markers
        .iter()
        .map(|m| quote_spanned!(m.span()=> let _: ::harness::Marker = #m;));
    let marker_names: Vec<String> = args
        .markers
        .iter()
        .map(|m| {
            m.segments
                .last()
                .map(|s| s.ident.to_string())
                .unwrap_or_default()
        })
        .collect();
    let service_names: Vec<String> = args.services.iter().map(ToString::to_string).collect();
    let timeout = match args.timeout_ms {
        Some(ms) => quote!(::core::option::Option::Some(::core::time::Duration::from_millis(#ms))),
        None => quote!(::core::option::Option::None),
    };
    let retries = match args.retries {
        Some(n) => quote!(::core::option::Option::Some(#n)),
        None => quote!(::core::option::Option::None),
    };
    let ignored = args.ignore.is_some();
    let ignore = match args.ignore.as_ref().and_then(Option::as_ref) {
        Some(reason) => quote!(::core::option::Option::Some(#reason)),
        None => quote!(::core::option::Option::None),
    };
    let group = match &args.group {
        Some(g) => quote!(::core::option::Option::Some(#g)),
        None => quote!(::core::option::Option::None),
    };
    let by_value = params::by_value_checks(&params);
    let fn_name = name.to_string();

    Ok(quote! {
        #func

        #[allow(unused_imports, non_upper_case_globals)]
        const _: () = {
            use ::harness::markers::*;
            #(#marker_checks)*
        };
        #(#by_value)*

        #[doc(hidden)]
        #[allow(non_snake_case)]
        fn #body_fn(
            #cx: ::harness::__private::TestCx,
        ) -> ::harness::BoxFuture<::harness::__private::BodyResult> {
            ::std::boxed::Box::pin(async move {
                #(#lets)*
                ::core::result::Result::Ok(#run)
            })
        }

        ::harness::__private::inventory::submit! {
            ::harness::__private::TestDef {
                fn_name: #fn_name,
                module: ::core::module_path!(),
                file: ::core::file!(),
                line: ::core::line!(),
                markers: &[#(#marker_names),*],
                services: &[#(#service_names),*],
                timeout: #timeout,
                retries: #retries,
                ignore: #ignore,
                ignored: #ignored,
                group: #group,
                is_async: #is_async,
                body: #body_fn,
            }
        }
    })
}
