//! `#[sql_function(...)]`: the one registration of a SQL function of event_store.
//!
//! Put on the Rust body of an entry point (`fn(&mut Call<'_>) -> Result<Datum, EventStoreError>`),
//! it emits, from one place:
//! - the SQL: `CREATE FUNCTION <sql> AS 'MODULE_PATHNAME', '<symbol>'`, its `COMMENT ON
//!   FUNCTION`, and its privileges, as a pgrx `extension_sql!` block of the install script;
//! - the C entry point `<symbol>` (the SQL name with `.` as `_`, e.g. `es_append_events`) and
//!   its `pg_finfo_` record: it runs the body under pgrx's guard, inside the function's span
//!   when it has one, and raises a user error with its own SQLSTATE after the guard returned
//!   (`crate::pg::error::raise`), which a `#[pg_extern]` cannot;
//! - a module `<body>_args` with one `Param` constant per SQL argument (name and position),
//!   which the body reads its arguments through: a misspelled or missing argument is a build
//!   error, never a silent NULL;
//! - the span: its name, its constant fields, the fields recorded from arguments (by SQL name,
//!   checked at build time) and from the result.
//!
//! Keys (all string literals): `sql` (the declaration after `CREATE FUNCTION`, up to `AS`),
//! `comment`, `access` (`"public"`, the default; `"owner"`: `REVOKE ALL … FROM PUBLIC`; or
//! `"owner, <role>"`: also `GRANT EXECUTE … TO <role>`), `span` (its name), `span_fields`
//! (constant fields, as `tracing` writes them: `db.system = "postgresql", …`), `span_args`
//! (`field = argument` or `field = len(argument)`, comma-separated), `span_result` (fields that
//! get the returned uuid).

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as TokenStream2};
use quote::{format_ident, quote};
use syn::punctuated::Punctuated;
use syn::{Expr, ItemFn, Lit, MetaNameValue, Token, parse_macro_input};

/// One SQL argument of the declaration.
struct Param {
    /// Its name, or `arg<N>` for an unnamed one (N from 1).
    name: String,
    /// Its type, as written (without a DEFAULT).
    ty: String,
}

/// The parts of a declaration: the qualified name, the IN arguments, the return type's text.
struct Declaration {
    name: String,
    params: Vec<Param>,
    returns: String,
}

fn parse_declaration(sql: &str) -> Result<Declaration, String> {
    let open = sql.find('(').ok_or("no argument list in `sql`")?;
    let name = sql[..open].trim().to_owned();
    let mut depth = 0usize;
    let mut close = None;
    for (i, c) in sql[open..].char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    close = Some(open + i);
                    break;
                }
            }
            _ => {}
        }
    }
    let close = close.ok_or("unbalanced parentheses in `sql`")?;
    let list = &sql[open + 1..close];
    let mut params = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    let mut pieces = Vec::new();
    for (i, c) in list.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                pieces.push(&list[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if !list.trim().is_empty() {
        pieces.push(&list[start..]);
    }
    for piece in pieces {
        let mut words: Vec<&str> = piece.split_whitespace().collect();
        let mode = words.first().map(|w| w.to_ascii_uppercase());
        if matches!(mode.as_deref(), Some("OUT")) {
            continue;
        }
        if matches!(mode.as_deref(), Some("IN" | "INOUT" | "VARIADIC")) {
            words.remove(0);
        }
        let default = words
            .iter()
            .position(|w| w.eq_ignore_ascii_case("DEFAULT"))
            .unwrap_or(words.len());
        let words = &words[..default];
        let (name, ty) = match words {
            [] => return Err(format!("an empty argument in `sql`: {piece:?}")),
            [ty] => (format!("arg{}", params.len() + 1), (*ty).to_owned()),
            // a quoted name ("position", a keyword PostgreSQL refuses bare) is the same
            // argument to the body
            [name, ty @ ..] => (name.trim_matches('"').to_owned(), ty.join(" ")),
        };
        params.push(Param { name, ty });
    }
    let rest = &sql[close + 1..];
    let returns = rest
        .split_whitespace()
        .skip_while(|w| !w.eq_ignore_ascii_case("RETURNS"))
        .skip(1)
        .take_while(|w| !w.eq_ignore_ascii_case("LANGUAGE"))
        .collect::<Vec<_>>()
        .join(" ");
    Ok(Declaration {
        name,
        params,
        returns,
    })
}

fn string_value(nv: &MetaNameValue) -> Result<String, syn::Error> {
    match &nv.value {
        Expr::Lit(lit) => match &lit.lit {
            Lit::Str(s) => Ok(s.value()),
            other => Err(syn::Error::new_spanned(other, "expected a string literal")),
        },
        other => Err(syn::Error::new_spanned(other, "expected a string literal")),
    }
}

fn sql_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// See the crate's documentation.
#[proc_macro_attribute]
pub fn sql_function(attr: TokenStream, item: TokenStream) -> TokenStream {
    let args =
        parse_macro_input!(attr with Punctuated::<MetaNameValue, Token![,]>::parse_terminated);
    let body = parse_macro_input!(item as ItemFn);
    match expand(args, body) {
        Ok(tokens) => tokens.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

fn expand(
    args: Punctuated<MetaNameValue, Token![,]>,
    body: ItemFn,
) -> Result<TokenStream2, syn::Error> {
    let mut sql = None;
    let mut comment = None;
    let mut access = String::from("public");
    let mut span_name = None;
    let mut span_fields = String::new();
    let mut span_args = String::new();
    let mut span_result = String::new();
    for nv in &args {
        let key = nv
            .path
            .get_ident()
            .map(|i| i.to_string())
            .unwrap_or_default();
        let value = string_value(nv)?;
        match key.as_str() {
            "sql" => sql = Some(value),
            "comment" => comment = Some(value),
            "access" => access = value,
            "span" => span_name = Some(value),
            "span_fields" => span_fields = value,
            "span_args" => span_args = value,
            "span_result" => span_result = value,
            _ => return Err(syn::Error::new_spanned(&nv.path, "unknown key")),
        }
    }
    let here = Span::call_site();
    let sql = sql.ok_or_else(|| syn::Error::new(here, "`sql` is required"))?;
    let comment = comment.ok_or_else(|| syn::Error::new(here, "`comment` is required"))?;
    let decl = parse_declaration(&sql).map_err(|e| syn::Error::new(here, e))?;
    let symbol = decl.name.replace('.', "_");
    let signature = format!(
        "{}({})",
        decl.name,
        decl.params
            .iter()
            .map(|p| p.ty.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );

    // The SQL of the install script.
    let mut script = format!(
        "CREATE FUNCTION {sql}\nAS 'MODULE_PATHNAME', '{symbol}';\nCOMMENT ON FUNCTION {signature} IS\n  {};\n",
        sql_quote(&comment)
    );
    let mut roles = access.split(',').map(str::trim);
    match roles.next() {
        Some("public") => {}
        Some("owner") => {
            script.push_str(&format!(
                "REVOKE ALL ON FUNCTION {signature} FROM PUBLIC;\n"
            ));
            for role in roles {
                script.push_str(&format!(
                    "GRANT EXECUTE ON FUNCTION {signature} TO {role};\n"
                ));
            }
        }
        _ => {
            return Err(syn::Error::new(
                here,
                "`access` is \"public\", \"owner\" or \"owner, <role>\"",
            ));
        }
    }

    let body_ident = &body.sig.ident;
    let args_mod = format_ident!("{}_args", body_ident);
    let symbol_ident = format_ident!("{}", symbol);
    let finfo_ident = format_ident!("pg_finfo_{}", symbol);
    let symbol_cstr = syn::LitCStr::new(
        &std::ffi::CString::new(symbol.clone()).expect("no NUL in a SQL name"),
        here,
    );
    let param_consts = decl.params.iter().enumerate().map(|(i, p)| {
        let ident = format_ident!("{}", p.name);
        let name = &p.name;
        let doc = format!(
            "Argument {} of `{}`: `{} {}`.",
            i + 1,
            decl.name,
            p.name,
            p.ty
        );
        quote! {
            #[doc = #doc]
            pub const #ident: crate::pg::call::Param = crate::pg::call::Param::new(#i, #name);
        }
    });

    let run = match &span_name {
        None => quote! { #body_ident(&mut call) },
        Some(name) => {
            // the span record keeps this many bytes of a name (telemetry::record::NAME_BYTES)
            if name.len() > 48 {
                return Err(syn::Error::new(
                    here,
                    format!("`span`: {name:?} is longer than the 48 bytes a span record keeps"),
                ));
            }
            let mut declared = Vec::new();
            let mut records = Vec::new();
            for piece in span_args
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
            {
                let (field, source) = piece.split_once('=').ok_or_else(|| {
                    syn::Error::new(
                        here,
                        format!("`span_args`: `{piece}` is not field = argument"),
                    )
                })?;
                let (field, source) = (field.trim(), source.trim());
                let (counted, param) = match source
                    .strip_prefix("len(")
                    .and_then(|s| s.strip_suffix(')'))
                {
                    Some(inner) => (true, inner.trim()),
                    None => (false, source),
                };
                let p = decl
                    .params
                    .iter()
                    .find(|p| p.name == param)
                    .ok_or_else(|| {
                        syn::Error::new(
                            here,
                            format!("`span_args`: `{}` has no argument `{param}`", decl.name),
                        )
                    })?;
                let param_ident = format_ident!("{}", param);
                declared.push(field.to_owned());
                let record = if counted {
                    quote! {
                        if let Some(n) = call.array_len(#args_mod::#param_ident) {
                            span.record(#field, n);
                        }
                    }
                } else {
                    match p.ty.as_str() {
                        "uuid" => quote! {
                            if let Some(id) = call.uuid_or_null(#args_mod::#param_ident) {
                                span.record(#field, id.as_u128());
                            }
                        },
                        "bigint" | "integer" => quote! {
                            if let Some(v) = call.i64(#args_mod::#param_ident) {
                                span.record(#field, v);
                            }
                        },
                        "text" => quote! {
                            if let Some(v) = call.optional_text(#args_mod::#param_ident) {
                                span.record(#field, v.as_str());
                            }
                        },
                        other => {
                            return Err(syn::Error::new(
                                here,
                                format!(
                                    "`span_args`: a span cannot record `{param}` of type {other}"
                                ),
                            ));
                        }
                    }
                };
                records.push(record);
            }
            let mut result_records = Vec::new();
            for field in span_result
                .split(',')
                .map(str::trim)
                .filter(|f| !f.is_empty())
            {
                if decl.returns != "uuid" {
                    return Err(syn::Error::new(
                        here,
                        "`span_result` records a returned uuid",
                    ));
                }
                if !declared.iter().any(|d| d == field) {
                    declared.push(field.to_owned());
                }
                result_records.push(quote! {
                    // SAFETY: the function returns a uuid (its SQL declaration), which the body
                    // just built in the function's memory context.
                    span.record(#field, unsafe { crate::pg::call::uuid_from_datum(datum) }.as_u128());
                });
            }
            let declared = declared.iter().map(|f| {
                let f = format_ident!("{}", f);
                quote! { #f = ::tracing::field::Empty, }
            });
            let fields: TokenStream2 = span_fields
                .parse()
                .map_err(|e| syn::Error::new(here, format!("`span_fields`: {e}")))?;
            quote! {
                crate::trace::entry(
                    &mut call,
                    #body_ident,
                    || ::tracing::info_span!(#name, #(#declared)* #fields),
                    |span: &::tracing::Span, call: &crate::pg::call::Call<'_>| { #(#records)* },
                    |span: &::tracing::Span, datum: ::pgrx::pg_sys::Datum| {
                        let _ = (span, datum);
                        #(#result_records)*
                    },
                )
            }
        }
    };

    let entry_doc = format!("C entry point of `{signature}`.");
    let args_doc = format!("The arguments of `{}`, by SQL name.", decl.name);
    Ok(quote! {
        #body

        #[doc = #args_doc]
        #[allow(non_upper_case_globals, dead_code)]
        mod #args_mod {
            #(#param_consts)*
        }

        #[doc = #entry_doc]
        ///
        /// # Safety
        /// Called by PostgreSQL's fmgr with a valid `fcinfo` for the declared SQL signature.
        #[unsafe(no_mangle)]
        pub unsafe extern "C-unwind" fn #symbol_ident(
            fcinfo: ::pgrx::pg_sys::FunctionCallInfo,
        ) -> ::pgrx::pg_sys::Datum {
            // The guard converts PostgreSQL errors and Rust panics raised inside into ERRORs;
            // nothing with a destructor lives in this frame when `raise` jumps away.
            // SAFETY: fmgr passes a valid fcinfo, alive until we return (Call::new's contract).
            let outcome = unsafe {
                ::pgrx::pgrx_extern_c_guard(|| {
                    let mut call = crate::pg::call::Call::new(fcinfo);
                    #run
                })
            };
            match outcome {
                Ok(datum) => datum,
                Err(err) => crate::pg::error::raise(err, #symbol_cstr),
            }
        }

        #[doc(hidden)]
        #[unsafe(no_mangle)]
        pub extern "C" fn #finfo_ident() -> &'static ::pgrx::pg_sys::Pg_finfo_record {
            const V1: ::pgrx::pg_sys::Pg_finfo_record =
                ::pgrx::pg_sys::Pg_finfo_record { api_version: 1 };
            &V1
        }

        ::pgrx::extension_sql!(#script, name = #symbol);
    })
}

#[cfg(test)]
mod tests {
    use super::parse_declaration;

    #[test]
    fn declarations_give_names_types_and_the_return_type() {
        let d = parse_declaration(
            "es.load_events(stream_id uuid, from_version bigint DEFAULT 0, max_count bigint DEFAULT NULL) RETURNS SETOF es.events LANGUAGE c STABLE",
        )
        .unwrap();
        assert_eq!(d.name, "es.load_events");
        let names: Vec<_> = d.params.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["stream_id", "from_version", "max_count"]);
        let types: Vec<_> = d.params.iter().map(|p| p.ty.as_str()).collect();
        assert_eq!(types, ["uuid", "bigint", "bigint"]);
        assert_eq!(d.returns, "SETOF es.events");
        let d = parse_declaration(
            "es.account_replay_step(internal, jsonb) RETURNS internal LANGUAGE c",
        )
        .unwrap();
        let names: Vec<_> = d.params.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["arg1", "arg2"]);
        let d = parse_declaration(
            "es.tracing_stats(OUT available boolean, OUT n bigint) RETURNS SETOF record",
        )
        .unwrap();
        assert!(d.params.is_empty());
        let d = parse_declaration("es.append_events(stream_id uuid, expected_version bigint, events jsonb[]) RETURNS bigint LANGUAGE c").unwrap();
        assert_eq!(d.params[2].ty, "jsonb[]");
        assert_eq!(d.returns, "bigint");
    }
}
