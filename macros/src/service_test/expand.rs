//! Typed structs → code. Nothing here can fail: [`super::valid`] checked it.

use proc_macro2::TokenStream;
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;

use super::parse::{TestArgs, TestFn, TestParam};
use crate::params::{self, Param};

pub(crate) fn expand(args: &TestArgs, test: &TestFn) -> TokenStream {
    let krate = crate::krate();
    let func = &test.item;
    let name = &func.sig.ident;
    let marker_checks = args
        .markers
        .iter()
        .map(|m| quote_spanned!(m.span()=> let _: #krate::Marker = #m;));
    let fixtures: Vec<Param> = test
        .params
        .iter()
        .filter_map(|p| match p {
            TestParam::Fixture(f) => Some(f.clone()),
            TestParam::Case { .. } => None,
        })
        .collect();
    let by_value = params::by_value_checks(&fixtures);
    let registrations: Vec<TokenStream> = if test.cases.is_empty() {
        vec![registration(args, test, &fixtures, None)]
    } else {
        let width = test.cases.len().to_string().len();
        test.cases
            .iter()
            .enumerate()
            .map(|(i, case)| {
                let index = i + 1;
                let label = match &case.name {
                    Some(n) => format!("case_{index:0width$}_{n}"),
                    None => format!("case_{index:0width$}"),
                };
                let case = CaseExpansion {
                    index: index as u32,
                    name: case.name.as_ref().map(ToString::to_string),
                    label,
                    values: &case.values,
                };
                registration(args, test, &fixtures, Some(case))
            })
            .collect()
    };
    let _ = name;
    quote! {
        #func

        #[allow(unused_imports, non_upper_case_globals)]
        const _: () = {
            use #krate::markers::*;
            #(#marker_checks)*
        };
        #(#by_value)*
        #(#registrations)*
    }
}

struct CaseExpansion<'a> {
    index: u32,
    name: Option<String>,
    label: String,
    values: &'a [syn::Expr],
}

/// One body function and its `inventory::submit!`: the test, or one case.
fn registration(
    args: &TestArgs,
    test: &TestFn,
    fixtures: &[Param],
    case: Option<CaseExpansion<'_>>,
) -> TokenStream {
    let krate = crate::krate();
    let func = &test.item;
    let name = &func.sig.ident;
    let is_async = func.sig.asyncness.is_some();
    let body_fn = match &case {
        Some(c) => format_ident!("__service_test_body_{}_{}", name, c.label),
        None => format_ident!("__service_test_body_{}", name),
    };
    let cx = quote!(__cx);
    let (lets, fixture_args) = params::resolve(fixtures, &cx, "owned", "held");
    let mut fixture_args = fixture_args.into_iter();
    let mut case_values = case.as_ref().map(|c| c.values.iter());
    let call_args: Vec<TokenStream> = test
        .params
        .iter()
        .filter_map(|p| match p {
            TestParam::Fixture(_) => fixture_args.next(),
            TestParam::Case { .. } => case_values
                .as_mut()
                .and_then(Iterator::next)
                .map(|v| quote_spanned!(v.span()=> (#v))),
        })
        .collect();
    let ret_span = match &func.sig.output {
        syn::ReturnType::Default => name.span(),
        syn::ReturnType::Type(_, ty) => ty.span(),
    };
    let verdict = quote_spanned!(ret_span=> #krate::__private::verdict);
    let run = if is_async {
        quote!(#verdict(#name(#(#call_args),*).await))
    } else {
        // Parameters move into the blocking closure; `&mut` ones re-bind there.
        let moved: Vec<TokenStream> = fixtures
            .iter()
            .enumerate()
            .filter(|(_, p)| matches!(p, Param::OwnedMut(_)))
            .map(|(i, _)| {
                let v = format_ident!("__p{i}");
                quote!(let mut #v = #v;)
            })
            .collect();
        quote!(#krate::__private::blocking(move || {
            #(#moved)*
            #verdict(#name(#(#call_args),*))
        }).await)
    };
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
    let some = |t: TokenStream| quote!(::core::option::Option::Some(#t));
    let none = quote!(::core::option::Option::None);
    let timeout = args.timeout_ms.map_or_else(
        || none.clone(),
        |ms| some(quote!(::core::time::Duration::from_millis(#ms))),
    );
    let retries = args
        .retries
        .map_or_else(|| none.clone(), |n| some(quote!(#n)));
    let ignored = args.ignore.is_some();
    let ignore = match args.ignore.as_ref().and_then(Option::as_ref) {
        Some(reason) => some(quote!(#reason)),
        None => none.clone(),
    };
    let group = args
        .group
        .as_ref()
        .map_or_else(|| none.clone(), |g| some(quote!(#g)));
    let case_def = match &case {
        None => none.clone(),
        Some(c) => {
            let (index, label) = (c.index, &c.label);
            let case_name = c
                .name
                .as_ref()
                .map_or_else(|| none.clone(), |n| some(quote!(#n)));
            some(quote!(#krate::__private::Case {
                index: #index,
                name: #case_name,
                label: #label,
            }))
        }
    };
    let fn_name = name.to_string();
    let isolated = args.isolated;
    let exclusive = args.exclusive;
    quote! {
        #[doc(hidden)]
        #[allow(non_snake_case)]
        fn #body_fn(
            #cx: #krate::__private::TestCx,
        ) -> #krate::BoxFuture<#krate::__private::BodyResult> {
            ::std::boxed::Box::pin(async move {
                #(#lets)*
                ::core::result::Result::Ok(#run)
            })
        }

        #krate::__private::inventory::submit! {
            #krate::__private::TestDef {
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
                case: #case_def,
                isolated: #isolated,
                exclusive: #exclusive,
            }
        }
    }
}
