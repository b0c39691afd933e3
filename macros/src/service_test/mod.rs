//! `#[service_test(...)]`, in three steps as dtolnay's crates do:
//! [`parse`] builds typed structs from the tokens (every syntax error of the
//! attribute collected, not just the first), [`valid`] checks what the
//! types cannot say (cases against `#[case]` parameters, duplicates), and
//! [`expand`] emits the code and cannot fail.
//!
//! On any error the function itself is still emitted beside the messages,
//! so one mistake is one message.

mod expand;
mod parse;
mod valid;

use proc_macro2::TokenStream;
use quote::quote;

use crate::Errors;

pub(crate) fn expand(attr: TokenStream, item: TokenStream) -> TokenStream {
    let mut errors = Errors::default();
    let func: syn::ItemFn = match syn::parse2(item) {
        Ok(f) => f,
        Err(e) => return e.into_compile_error(),
    };
    let args = parse::TestArgs::parse(attr, &mut errors);
    let test = parse::TestFn::parse(func, &mut errors);
    valid::check(&args, &test, &mut errors);
    match errors.finish() {
        Ok(()) => expand::expand(&args, &test),
        Err(e) => {
            let func = &test.item;
            let errors = e.into_compile_error();
            quote! {
                #[allow(dead_code, unused_variables)]
                #func
                #errors
            }
        }
    }
}
