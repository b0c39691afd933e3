//! Tokens → typed structs: the attribute's arguments, the function with its
//! `#[case(...)]` attributes and `#[case]` parameters taken out.

use std::collections::HashMap;

use proc_macro2::{Span, TokenStream, TokenTree};
use syn::spanned::Spanned;

use crate::{Errors, check_plain_fn, params};

/// The arguments of `#[service_test(...)]`.
#[derive(Default)]
pub(crate) struct TestArgs {
    /// Marker paths, checked as Rust items (`compliance`, `my::marker`).
    pub(crate) markers: Vec<syn::Path>,
    /// `timeout = "10s"`, in milliseconds.
    pub(crate) timeout_ms: Option<u64>,
    /// `retries = N`.
    pub(crate) retries: Option<u32>,
    /// `ignore` (None inside) or `ignore = "reason"`.
    pub(crate) ignore: Option<Option<syn::LitStr>>,
    /// `group = "name"`.
    pub(crate) group: Option<syn::LitStr>,
    /// `services(a, b)`.
    pub(crate) services: Vec<syn::Ident>,
    /// `isolated`: a process of its own.
    pub(crate) isolated: bool,
    /// `exclusive`: runs with no other test at once.
    pub(crate) exclusive: bool,
    /// Every key and marker as given, with where: for the duplicate check.
    pub(crate) seen: Vec<(String, Span)>,
}

const KEYS: &str = "markers, `timeout = \"10s\"`, `retries = N`, `ignore`, `ignore = \"reason\"`, `group = \"name\"`, `services(a, b)`, `isolated`, `exclusive`";

/// Parses a timeout as the runtime does (`humantime`, shared by both), and
/// refuses zero: a test with no time at all cannot run.
fn parse_timeout_ms(text: &str) -> Result<u64, String> {
    let d = humantime::parse_duration(text.trim()).map_err(|e| {
        format!("invalid duration `{text}`: {e}; expected e.g. \"500ms\", \"10s\" or \"1m 30s\"")
    })?;
    match u64::try_from(d.as_millis()) {
        Ok(ms) if ms > 0 => Ok(ms),
        Ok(_) => Err(format!(
            "invalid duration `{text}`: a timeout must be at least 1ms"
        )),
        Err(_) => Err(format!("invalid duration `{text}`: too long")),
    }
}

/// Splits an attribute's tokens at its top-level commas, so each argument
/// is parsed on its own and every syntax error is reported.
fn split_args(attr: TokenStream) -> Vec<TokenStream> {
    let mut out = vec![TokenStream::new()];
    for tt in attr {
        match &tt {
            TokenTree::Punct(p) if p.as_char() == ',' => out.push(TokenStream::new()),
            _ => out.last_mut().expect("never empty").extend([tt]),
        }
    }
    out.retain(|ts| !ts.is_empty());
    out
}

impl TestArgs {
    pub(crate) fn parse(attr: TokenStream, errors: &mut Errors) -> TestArgs {
        let mut args = TestArgs::default();
        for arg in split_args(attr) {
            match syn::parse2::<syn::Meta>(arg) {
                Ok(meta) => args.take(meta, errors),
                Err(e) => errors.push(e),
            }
        }
        args
    }

    fn take(&mut self, meta: syn::Meta, errors: &mut Errors) {
        let key = meta.path().get_ident().map(ToString::to_string);
        let str_value = |nv: &syn::MetaNameValue, errors: &mut Errors| match &nv.value {
            syn::Expr::Lit(syn::ExprLit {
                lit: syn::Lit::Str(s),
                ..
            }) => Some(s.clone()),
            other => {
                errors.push(syn::Error::new(
                    other.span(),
                    format!(
                        "`{}` takes a string, e.g. `{} = \"...\"`",
                        key_text(&nv.path),
                        key_text(&nv.path)
                    ),
                ));
                None
            }
        };
        match (&meta, key.as_deref()) {
            (syn::Meta::NameValue(nv), Some("timeout")) => {
                self.seen.push(("timeout".into(), nv.path.span()));
                if let Some(lit) = str_value(nv, errors) {
                    match parse_timeout_ms(&lit.value()) {
                        Ok(ms) => self.timeout_ms = Some(ms),
                        Err(m) => errors.push(syn::Error::new(lit.span(), m)),
                    }
                }
            }
            (syn::Meta::NameValue(nv), Some("retries")) => {
                self.seen.push(("retries".into(), nv.path.span()));
                match &nv.value {
                    syn::Expr::Lit(syn::ExprLit {
                        lit: syn::Lit::Int(lit),
                        ..
                    }) => match lit.base10_parse::<u32>() {
                        Ok(n) => self.retries = Some(n),
                        Err(e) => errors.push(syn::Error::new(lit.span(), format!("retries: {e}"))),
                    },
                    other => errors.push(syn::Error::new(
                        other.span(),
                        "`retries` takes a whole number, e.g. `retries = 2`",
                    )),
                }
            }
            (syn::Meta::NameValue(nv), Some("ignore")) => {
                self.seen.push(("ignore".into(), nv.path.span()));
                if let Some(lit) = str_value(nv, errors) {
                    self.ignore = Some(Some(lit));
                }
            }
            (syn::Meta::Path(p), Some("isolated")) => {
                self.seen.push(("isolated".into(), p.span()));
                self.isolated = true;
            }
            (syn::Meta::Path(p), Some("exclusive")) => {
                self.seen.push(("exclusive".into(), p.span()));
                self.exclusive = true;
            }
            (syn::Meta::Path(p), Some("ignore")) => {
                self.seen.push(("ignore".into(), p.span()));
                self.ignore = Some(None);
            }
            (syn::Meta::NameValue(nv), Some("group")) => {
                self.seen.push(("group".into(), nv.path.span()));
                if let Some(lit) = str_value(nv, errors) {
                    if lit.value().trim().is_empty() {
                        errors.push(syn::Error::new(lit.span(), "a group needs a name"));
                    }
                    self.group = Some(lit);
                }
            }
            (syn::Meta::List(list), Some("services")) => {
                self.seen.push(("services".into(), list.path.span()));
                let parsed = list.parse_args_with(
                    syn::punctuated::Punctuated::<syn::Path, syn::Token![,]>::parse_terminated,
                );
                match parsed {
                    Ok(paths) => {
                        for p in paths {
                            match p.get_ident() {
                                Some(id) => self.services.push(id.clone()),
                                None => errors.push(syn::Error::new(
                                    p.span(),
                                    "a service is a plain name, e.g. `services(insurance, billing)`",
                                )),
                            }
                        }
                    }
                    Err(e) => errors.push(e),
                }
            }
            (syn::Meta::Path(p), _) => {
                self.seen
                    .push((format!("marker `{}`", key_text(p)), p.span()));
                self.markers.push(p.clone());
            }
            (other, _) => errors.push(syn::Error::new(
                other.path().span(),
                format!(
                    "unknown #[service_test] argument `{}`; expected {KEYS}",
                    key_text(other.path())
                ),
            )),
        }
    }
}

fn key_text(p: &syn::Path) -> String {
    quote::ToTokens::to_token_stream(p)
        .to_string()
        .replace(' ', "")
}

/// One `#[case(...)]` or `#[case::name(...)]` on the function.
pub(crate) struct CaseAttr {
    /// `name` of `#[case::name(...)]`.
    pub(crate) name: Option<syn::Ident>,
    /// The values, one per `#[case]` parameter.
    pub(crate) values: Vec<syn::Expr>,
    /// The whole attribute, for messages spanning it.
    pub(crate) tokens: TokenStream,
}

/// A parameter: a fixture resolved by type, or a case value.
#[allow(clippy::large_enum_variant)] // a handful per function, at compile time
pub(crate) enum TestParam {
    /// Resolved by type.
    Fixture(params::Param),
    /// `#[case] x: T`: the value comes from each case.
    Case {
        /// The parameter, for messages.
        span: Span,
    },
}

/// The function, its parameters and its cases.
pub(crate) struct TestFn {
    /// The function as it is emitted: `#[case...]` attributes removed.
    pub(crate) item: syn::ItemFn,
    pub(crate) params: Vec<TestParam>,
    pub(crate) cases: Vec<CaseAttr>,
}

impl TestFn {
    pub(crate) fn parse(mut item: syn::ItemFn, errors: &mut Errors) -> TestFn {
        check_plain_fn(&item.sig, "a #[service_test] function", errors);
        let mut cases = Vec::new();
        item.attrs.retain(|a| {
            let path = a.path();
            let is_case = path.segments.first().is_some_and(|s| s.ident == "case");
            if !is_case {
                return true;
            }
            let name = match path.segments.len() {
                1 => None,
                2 => Some(path.segments[1].ident.clone()),
                _ => {
                    errors.push(syn::Error::new(
                        path.span(),
                        "a case is `#[case(...)]` or `#[case::name(...)]`",
                    ));
                    return false;
                }
            };
            let values = match &a.meta {
                syn::Meta::List(list) => list
                    .parse_args_with(
                        syn::punctuated::Punctuated::<syn::Expr, syn::Token![,]>::parse_terminated,
                    )
                    .map(|p| p.into_iter().collect())
                    .unwrap_or_else(|e| {
                        errors.push(e);
                        Vec::new()
                    }),
                _ => {
                    errors.push(syn::Error::new(
                        a.span(),
                        "a case lists its values: `#[case(1, 2)]`, or `#[case::name(1, 2)]`",
                    ));
                    Vec::new()
                }
            };
            cases.push(CaseAttr {
                name,
                values,
                tokens: quote::ToTokens::to_token_stream(a),
            });
            false
        });
        let mut kinds = Vec::new();
        for input in &mut item.sig.inputs {
            if let syn::FnArg::Typed(pt) = input {
                let before = pt.attrs.len();
                pt.attrs.retain(|a| !a.path().is_ident("case"));
                kinds.push(pt.attrs.len() != before);
            }
        }
        let fixture_params = params::parse(&item.sig, false, errors);
        // `params::parse` skips receivers and `impl Trait` (with an error);
        // pair what it kept with the typed inputs in order.
        let mut fixtures = fixture_params.into_iter();
        let mut params = Vec::new();
        for (input, is_case) in item
            .sig
            .inputs
            .iter()
            .filter_map(|i| match i {
                syn::FnArg::Typed(pt) => Some(pt),
                syn::FnArg::Receiver(_) => None,
            })
            .zip(kinds)
        {
            let fixture = (!matches!(&*input.ty, syn::Type::ImplTrait(_)))
                .then(|| fixtures.next())
                .flatten();
            if is_case {
                params.push(TestParam::Case { span: input.span() });
            } else if let Some(p) = fixture {
                params.push(TestParam::Fixture(p));
            }
        }
        TestFn {
            item,
            params,
            cases,
        }
    }

    /// The `#[case]` parameters' spans.
    pub(crate) fn case_params(&self) -> impl Iterator<Item = Span> + '_ {
        self.params.iter().filter_map(|p| match p {
            TestParam::Case { span } => Some(*span),
            TestParam::Fixture(_) => None,
        })
    }
}

/// Where each key was first given, to report the second.
pub(crate) fn duplicates(seen: &[(String, Span)]) -> Vec<(String, Span)> {
    let mut first: HashMap<&str, Span> = HashMap::new();
    let mut out = Vec::new();
    for (key, span) in seen {
        if first.insert(key.as_str(), *span).is_some() {
            out.push((key.clone(), *span));
        }
    }
    out
}
