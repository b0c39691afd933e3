//! `#[fixture]`: implement `harness::Fixture` for a function's return type.

use proc_macro2::TokenStream;
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;

use crate::{Errors, check_plain_fn, params};

/// The parsed arguments of `#[fixture(...)]`.
pub(crate) struct FixtureArgs {
    /// `test` (default), `suite` or `session`.
    scope: syn::Ident,
}

impl FixtureArgs {
    fn parse(attr: TokenStream, errors: &mut Errors) -> syn::Result<FixtureArgs> {
        let mut scope: Option<syn::Ident> = None;
        let parser = syn::meta::parser(|meta| {
            let value: syn::Ident = if meta.path.is_ident("scope") {
                meta.value()?.parse()?
            } else if let Some(id) = meta.path.get_ident() {
                id.clone()
            } else {
                errors.push(syn::Error::new(
                    meta.path.span(),
                    "expected a scope: test, suite or session",
                ));
                return Ok(());
            };
            if !matches!(value.to_string().as_str(), "test" | "suite" | "session") {
                errors.push(syn::Error::new(
                    value.span(),
                    format!("unknown fixture scope `{value}`; expected test, suite or session"),
                ));
            } else if scope.is_some() {
                errors.push(syn::Error::new(value.span(), "the scope is given twice"));
            } else {
                scope = Some(value);
            }
            Ok(())
        });
        syn::parse::Parser::parse2(parser, attr)?;
        Ok(FixtureArgs {
            scope: scope.unwrap_or_else(|| format_ident!("test")),
        })
    }
}

/// The fixture type of a return type: `T` in `Result<T, E>`, else the type itself.
fn provided_type(ret: &syn::Type) -> (syn::Type, bool) {
    if let syn::Type::Path(p) = ret {
        if let Some(last) = p.path.segments.last() {
            if last.ident == "Result" {
                if let syn::PathArguments::AngleBracketed(ab) = &last.arguments {
                    if let Some(syn::GenericArgument::Type(t)) = ab.args.first() {
                        return (t.clone(), true);
                    }
                }
            }
        }
    }
    (ret.clone(), false)
}

pub(crate) fn expand(attr: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    let mut errors = Errors::default();
    let func: syn::ItemFn = syn::parse2(item)?;
    let args = FixtureArgs::parse(attr, &mut errors)?;
    check_plain_fn(&func.sig, "a #[fixture] function", &mut errors);
    let params = params::parse(&func.sig, true, &mut errors);
    let ret = match &func.sig.output {
        syn::ReturnType::Type(_, ty) => Some((**ty).clone()),
        syn::ReturnType::Default => {
            errors.push(syn::Error::new(
                func.sig.ident.span(),
                "a #[fixture] function returns the value it provides: `-> T` or `-> Result<T, E>`",
            ));
            None
        }
    };
    errors.finish()?;
    let Some(ret) = ret else {
        return Ok(TokenStream::new());
    };

    let name = &func.sig.ident;
    let (provided, fallible) = provided_type(&ret);
    let cx = quote!(__cx);
    let (lets, call_args) = params::resolve(&params, &cx, "get", "get_ref");
    let call = if func.sig.asyncness.is_some() {
        quote!(#name(#(#call_args),*).await)
    } else {
        quote!(#name(#(#call_args),*))
    };
    let result = if fallible {
        quote_spanned!(ret.span()=> #call.map_err(::harness::__private::fixture_error))
    } else {
        quote!(::core::result::Result::Ok(#call))
    };
    let scope_variant = match args.scope.to_string().as_str() {
        "suite" => quote!(Suite),
        "session" => quote!(Session),
        _ => quote!(Test),
    };
    let scope_name = args.scope.to_string();
    let narrower_checks = params::dependency_types(&params).map(|dep| {
        let msg = format!(
            "fixture `{name}` ({scope_name} scope) depends on `{}`, which has a narrower scope: a fixture may only depend on fixtures of its own or a wider scope",
            quote::ToTokens::to_token_stream(dep)
        );
        quote_spanned!(dep.span()=>
            const _: () = ::core::assert!(
                !::harness::__private::is_narrower::<#dep>(::harness::Scope::#scope_variant),
                #msg
            );
        )
    });
    let by_value = params::by_value_checks(&params);

    Ok(quote! {
        #[allow(dead_code)]
        #func

        impl ::harness::Fixture for #provided {
            const SCOPE: ::harness::Scope = ::harness::Scope::#scope_variant;

            async fn setup(
                #cx: &mut ::harness::FixtureCx,
            ) -> ::core::result::Result<Self, ::harness::FixtureError> {
                #(#lets)*
                #result
            }
        }
        #(#narrower_checks)*
        #(#by_value)*
    })
}
