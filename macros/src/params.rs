//! Parameters of tests and fixture functions: how each is resolved.

use proc_macro2::TokenStream;
use quote::{format_ident, quote_spanned};
use syn::spanned::Spanned;

use crate::Errors;

/// How one parameter is provided.
#[derive(Clone)]
pub(crate) enum Param {
    /// `T`: a test-scoped fixture, moved in.
    Owned(syn::Type),
    /// `&mut T`: a test-scoped fixture, lent mutably.
    OwnedMut(syn::Type),
    /// `&T`: a fixture of any scope, lent.
    Ref(syn::Type),
    /// `&mut FixtureCx` (fixture functions only): the setup context itself.
    Cx,
}

impl Param {
    fn ty(&self) -> Option<&syn::Type> {
        match self {
            Param::Owned(t) | Param::OwnedMut(t) | Param::Ref(t) => Some(t),
            Param::Cx => None,
        }
    }
}

fn is_fixture_cx(ty: &syn::Type) -> bool {
    matches!(ty, syn::Type::Path(p) if p.path.segments.last().is_some_and(|s| s.ident == "FixtureCx"))
}

/// Classifies a function's parameters. `allow_cx` admits `&mut FixtureCx`.
pub(crate) fn parse(sig: &syn::Signature, allow_cx: bool, errors: &mut Errors) -> Vec<Param> {
    let mut out = Vec::new();
    for input in &sig.inputs {
        let syn::FnArg::Typed(pt) = input else {
            continue;
        };
        let ty = &*pt.ty;
        if let syn::Type::ImplTrait(_) = ty {
            errors.push(syn::Error::new(
                ty.span(),
                "a fixture parameter needs a concrete type, not `impl Trait`",
            ));
            continue;
        }
        let param = match ty {
            syn::Type::Reference(r) if r.mutability.is_some() && is_fixture_cx(&r.elem) => {
                if !allow_cx {
                    errors.push(syn::Error::new(
                        ty.span(),
                        "`&mut FixtureCx` is for #[fixture] functions; a test asks for `TestInfo` or `TestRng` instead",
                    ));
                    continue;
                }
                Param::Cx
            }
            syn::Type::Reference(r) if r.mutability.is_some() => Param::OwnedMut((*r.elem).clone()),
            syn::Type::Reference(r) => Param::Ref((*r.elem).clone()),
            other => Param::Owned(other.clone()),
        };
        out.push(param);
    }
    out
}

/// Statements that resolve each parameter into `__pN`, and the arguments
/// that pass them to the function. `cx` is the resolving context's
/// expression; `owned`/`held` name its methods for `T` and `&T`.
pub(crate) fn resolve(
    params: &[Param],
    cx: &TokenStream,
    owned: &str,
    held: &str,
) -> (Vec<TokenStream>, Vec<TokenStream>) {
    let owned = format_ident!("{owned}");
    let held = format_ident!("{held}");
    let mut lets = Vec::new();
    let mut args = Vec::new();
    for (i, p) in params.iter().enumerate() {
        let var = format_ident!("__p{i}");
        let span = p
            .ty()
            .map_or_else(proc_macro2::Span::call_site, Spanned::span);
        match p {
            Param::Owned(ty) => {
                lets.push(quote_spanned!(span=> let #var = #cx.#owned::<#ty>().await?;));
                args.push(quote_spanned!(span=> #var));
            }
            Param::OwnedMut(ty) => {
                lets.push(quote_spanned!(span=> let mut #var = #cx.#owned::<#ty>().await?;));
                args.push(quote_spanned!(span=> &mut #var));
            }
            Param::Ref(ty) => {
                lets.push(quote_spanned!(span=> let #var = #cx.#held::<#ty>().await?;));
                args.push(quote_spanned!(span=> &*#var));
            }
            Param::Cx => args.push(cx.clone()),
        }
    }
    (lets, args)
}

/// Compile-time checks that by-value parameters are test-scoped (a shared
/// fixture cannot be moved into one test).
pub(crate) fn by_value_checks(params: &[Param]) -> Vec<TokenStream> {
    let krate = crate::krate();
    params
        .iter()
        .filter_map(|p| match p {
            Param::Owned(ty) | Param::OwnedMut(ty) => {
                let msg = format!(
                    "`{}` is a suite- or session-scoped fixture, shared between tests: take it by reference (`&{}`)",
                    quote::ToTokens::to_token_stream(ty),
                    quote::ToTokens::to_token_stream(ty)
                );
                Some(quote_spanned!(ty.span()=>
                    const _: () = ::core::assert!(#krate::__private::is_test_scoped::<#ty>(), #msg);
                ))
            }
            _ => None,
        })
        .collect()
}

/// The fixture types a function depends on.
pub(crate) fn dependency_types(params: &[Param]) -> impl Iterator<Item = &syn::Type> {
    params.iter().filter_map(Param::ty)
}
