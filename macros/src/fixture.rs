//! `#[fixture]`: implement `harness::Fixture` for a function's return type.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;

use crate::{Errors, check_plain_fn, params};

/// A fixture's scope, as `#[fixture(...)]` names it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Scope {
    Test,
    Suite,
    Session,
}

impl Scope {
    fn from_name(name: &str) -> Option<Scope> {
        match name {
            "test" => Some(Scope::Test),
            "suite" => Some(Scope::Suite),
            "session" => Some(Scope::Session),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Scope::Test => "test",
            Scope::Suite => "suite",
            Scope::Session => "session",
        }
    }

    fn variant(self) -> TokenStream {
        match self {
            Scope::Test => quote!(Test),
            Scope::Suite => quote!(Suite),
            Scope::Session => quote!(Session),
        }
    }
}

/// The parsed arguments of `#[fixture(...)]`.
pub(crate) struct FixtureArgs {
    /// `test` (default), `suite` or `session`.
    scope: Scope,
}

impl FixtureArgs {
    fn parse(attr: TokenStream, errors: &mut Errors) -> syn::Result<FixtureArgs> {
        let mut scope: Option<Scope> = None;
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
            match Scope::from_name(&value.to_string()) {
                None => errors.push(syn::Error::new(
                    value.span(),
                    format!("unknown fixture scope `{value}`; expected test, suite or session"),
                )),
                Some(_) if scope.is_some() => {
                    errors.push(syn::Error::new(value.span(), "the scope is given twice"));
                }
                Some(s) => scope = Some(s),
            }
            Ok(())
        });
        syn::parse::Parser::parse2(parser, attr)?;
        Ok(FixtureArgs {
            scope: scope.unwrap_or(Scope::Test),
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
    let krate = crate::krate();
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
    if let Err(e) = errors.finish() {
        // Still define the function and, when the type is known, a stub
        // `impl Fixture`, so the tests that use it raise no second error.
        let errors = e.into_compile_error();
        let stub = ret.map(|ret| {
            let (provided, _) = provided_type(&ret);
            quote! {
                impl #krate::Fixture for #provided {
                    const SCOPE: #krate::Scope = #krate::Scope::Test;
                    async fn setup(
                        _: &mut #krate::FixtureCx,
                    ) -> ::core::result::Result<Self, #krate::FixtureError> {
                        ::core::unreachable!("a #[fixture] that failed to compile")
                    }
                }
            }
        });
        return Ok(quote! {
            #[allow(dead_code)]
            #func
            #errors
            #stub
        });
    }
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
        quote_spanned!(ret.span()=> #call.map_err(#krate::__private::fixture_error))
    } else {
        quote!(::core::result::Result::Ok(#call))
    };
    let scope_variant = args.scope.variant();
    let scope_name = args.scope.name();
    let narrower_checks = params::dependency_types(&params).map(|dep| {
        let msg = format!(
            "fixture `{name}` ({scope_name} scope) depends on `{}`, which has a narrower scope: a fixture may only depend on fixtures of its own or a wider scope",
            quote::ToTokens::to_token_stream(dep)
        );
        quote_spanned!(dep.span()=>
            const _: () = ::core::assert!(
                !#krate::__private::is_narrower::<#dep>(#krate::Scope::#scope_variant),
                #msg
            );
        )
    });
    let by_value = params::by_value_checks(&params);

    Ok(quote! {
        #[allow(dead_code)]
        #func

        impl #krate::Fixture for #provided {
            const SCOPE: #krate::Scope = #krate::Scope::#scope_variant;

            async fn setup(
                #cx: &mut #krate::FixtureCx,
            ) -> ::core::result::Result<Self, #krate::FixtureError> {
                #(#lets)*
                #result
            }
        }
        #(#narrower_checks)*
        #(#by_value)*
    })
}
