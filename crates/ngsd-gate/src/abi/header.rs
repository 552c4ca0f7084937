//! The C header generator: turns the ABI's Rust definitions into `include/ngsd_gate.h`.
//!
//! The `c_*!` macros below define each ABI item in Rust and, from the same tokens, record
//! its name, its Rust type text (`stringify!`), its doc comments and, for structs, the
//! size and field offsets the Rust compiler chose. [`c_header`] translates the type text to
//! C declarators and emits `_Static_assert`s on the recorded layout, so a C compiler
//! checks that the header and the Rust definitions agree.

use std::fmt::Write as _;

/// One `#define` constant.
pub(crate) struct Const {
    pub name: &'static str,
    pub ty: &'static str,
    pub value: i64,
    pub docs: &'static [&'static str],
}

/// One field of a `#[repr(C)]` struct.
pub(crate) struct Field {
    pub name: &'static str,
    pub ty: &'static str,
    pub docs: &'static [&'static str],
    pub offset: usize,
}

/// One item of the header, in the order it is emitted.
pub(crate) enum Item {
    Consts(Vec<Const>),
    Alias {
        name: &'static str,
        ty: &'static str,
        docs: &'static [&'static str],
    },
    Opaque {
        name: &'static str,
        docs: &'static [&'static str],
    },
    Struct {
        name: &'static str,
        docs: &'static [&'static str],
        size: usize,
        fields: Vec<Field>,
    },
    Function {
        symbol: &'static str,
        ty: &'static str,
        docs: &'static [&'static str],
    },
}

/// Define `pub const` items and a function `$list()` returning them for the header.
macro_rules! c_consts {
    (fn $list:ident; $( $(#[doc = $doc:literal])* pub const $name:ident : $ty:ty = $val:expr; )*) => {
        $( $(#[doc = $doc])* pub const $name: $ty = $val; )*

        pub(crate) fn $list() -> $crate::abi::header::Item {
            $crate::abi::header::Item::Consts(vec![$(
                $crate::abi::header::Const {
                    name: stringify!($name),
                    ty: stringify!($ty),
                    value: i64::from($name),
                    docs: &[$($doc),*],
                },
            )*])
        }
    };
}

/// Define a type alias and a function `$item()` describing it for the header.
macro_rules! c_alias {
    (fn $item:ident; $(#[doc = $doc:literal])* pub type $name:ident = $ty:ty;) => {
        $(#[doc = $doc])*
        pub type $name = $ty;

        pub(crate) fn $item() -> $crate::abi::header::Item {
            $crate::abi::header::Item::Alias {
                name: stringify!($name),
                ty: stringify!($ty),
                docs: &[$($doc),*],
            }
        }
    };
}

/// Define a `#[repr(C)]` struct whose layout is recorded for the header.
macro_rules! c_struct {
    (
        $(#[doc = $doc:literal])*
        $(#[derive($($derive:ident),*)])?
        pub struct $name:ident {
            $( $(#[doc = $fdoc:literal])* pub $field:ident : $fty:ty ),* $(,)?
        }
    ) => {
        $(#[doc = $doc])*
        #[repr(C)]
        $(#[derive($($derive),*)])?
        pub struct $name {
            $( $(#[doc = $fdoc])* pub $field: $fty ),*
        }

        impl $name {
            pub(crate) fn c_item() -> $crate::abi::header::Item {
                $crate::abi::header::Item::Struct {
                    name: stringify!($name),
                    docs: &[$($doc),*],
                    size: ::std::mem::size_of::<$name>(),
                    fields: vec![$(
                        $crate::abi::header::Field {
                            name: stringify!($field),
                            ty: stringify!($fty),
                            docs: &[$($fdoc),*],
                            offset: ::std::mem::offset_of!($name, $field),
                        },
                    )*],
                }
            }
        }
    };
}

/// Define the type of a symbol every plugin exports, its name constant, and a function
/// `$item()` describing the prototype for the header.
macro_rules! c_export {
    (
        fn $item:ident;
        $(#[doc = $doc:literal])*
        pub type $alias:ident = $ty:ty;
        pub const $symconst:ident = $sym:literal;
    ) => {
        $(#[doc = $doc])*
        pub type $alias = $ty;

        #[doc = concat!("The symbol name of [`", stringify!($alias), "`]: `", $sym, "`.")]
        pub const $symconst: &str = $sym;

        pub(crate) fn $item() -> $crate::abi::header::Item {
            $crate::abi::header::Item::Function { symbol: $sym, ty: stringify!($ty), docs: &[$($doc),*] }
        }
    };
}

pub(crate) use {c_alias, c_consts, c_export, c_struct};

/// A parsed Rust type, restricted to what an ABI may contain.
#[derive(Debug)]
enum Ty {
    Named(String),
    Ptr {
        is_const: bool,
        to: Box<Ty>,
    },
    Fn {
        params: Vec<(String, Ty)>,
        ret: Option<Box<Ty>>,
    },
}

fn tokenize(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {}
            c if c.is_alphanumeric() || c == '_' => {
                let mut word = c.to_string();
                while let Some(&n) = chars.peek().filter(|n| n.is_alphanumeric() || **n == '_') {
                    word.push(n);
                    chars.next();
                }
                out.push(word);
            }
            '"' => {
                let mut lit = String::from('"');
                for n in chars.by_ref() {
                    lit.push(n);
                    if n == '"' {
                        break;
                    }
                }
                out.push(lit);
            }
            '-' if chars.peek() == Some(&'>') => {
                chars.next();
                out.push("->".to_owned());
            }
            ':' if chars.peek() == Some(&':') => {
                chars.next();
                out.push("::".to_owned());
            }
            c => out.push(c.to_string()),
        }
    }
    out
}

struct Parser {
    tokens: Vec<String>,
    pos: usize,
    text: String,
}

impl Parser {
    fn new(text: &str) -> Parser {
        Parser {
            tokens: tokenize(text),
            pos: 0,
            text: text.to_owned(),
        }
    }

    fn peek(&self) -> Option<&str> {
        self.tokens.get(self.pos).map(String::as_str)
    }

    fn next(&mut self) -> String {
        let t = self.tokens.get(self.pos).cloned();
        self.pos += 1;
        t.unwrap_or_else(|| panic!("unexpected end of ABI type `{}`", self.text))
    }

    fn expect(&mut self, want: &str) {
        let got = self.next();
        assert_eq!(got, want, "in ABI type `{}`", self.text);
    }

    fn ty(&mut self) -> Ty {
        match self.next().as_str() {
            "*" => {
                let is_const = match self.next().as_str() {
                    "const" => true,
                    "mut" => false,
                    other => panic!("`*{other}` in ABI type `{}`", self.text),
                };
                Ty::Ptr {
                    is_const,
                    to: Box::new(self.ty()),
                }
            }
            "Option" => {
                self.expect("<");
                let inner = self.ty();
                if self.peek() == Some(",") {
                    self.next();
                }
                self.expect(">");
                assert!(
                    matches!(inner, Ty::Fn { .. }),
                    "Option of a non-fn in `{}`",
                    self.text
                );
                inner
            }
            "unsafe" => self.ty(),
            "extern" => {
                self.expect("\"C\"");
                self.ty()
            }
            "fn" => {
                self.expect("(");
                let mut params = Vec::new();
                while self.peek() != Some(")") {
                    let name = self.next();
                    self.expect(":");
                    params.push((name, self.ty()));
                    if self.peek() == Some(",") {
                        self.next();
                    }
                }
                self.expect(")");
                let ret = if self.peek() == Some("->") {
                    self.next();
                    Some(Box::new(self.ty()))
                } else {
                    None
                };
                Ty::Fn { params, ret }
            }
            name => {
                let mut name = name.to_owned();
                while self.peek() == Some("::") {
                    self.next();
                    name = self.next();
                }
                Ty::Named(name)
            }
        }
    }
}

fn parse(text: &str) -> Ty {
    let mut p = Parser::new(text);
    let ty = p.ty();
    assert!(p.peek().is_none(), "trailing tokens in ABI type `{text}`");
    ty
}

/// The C spelling of a Rust type name.
fn c_name(rust: &str) -> String {
    match rust {
        "u8" => "uint8_t",
        "u16" => "uint16_t",
        "u32" => "uint32_t",
        "u64" => "uint64_t",
        "i32" => "int32_t",
        "i64" => "int64_t",
        "usize" => "size_t",
        "f32" => "float",
        "f64" => "double",
        "c_char" => "char",
        other => return format!("Ngsd{other}"),
    }
    .to_owned()
}

/// A C declaration of `declarator` with type `ty` (`uint32_t size`, `float (*f)(void)`).
fn declare(ty: &Ty, declarator: &str) -> String {
    let join = |base: String| {
        if declarator.is_empty() {
            base
        } else {
            format!("{base} {declarator}")
        }
    };
    match ty {
        Ty::Named(n) => join(c_name(n)),
        Ty::Ptr { is_const, to } => match &**to {
            Ty::Named(n) => {
                let base = format!("{}{} *", if *is_const { "const " } else { "" }, c_name(n));
                format!("{base}{declarator}")
            }
            inner => {
                assert!(
                    !is_const,
                    "`*const` to a pointer is not supported by the header generator"
                );
                declare(inner, &format!("*{declarator}"))
            }
        },
        Ty::Fn { .. } => declare_fn(ty, &format!("(*{declarator})")),
    }
}

/// A C function declaration: `ret name(params)`.
fn declare_fn(ty: &Ty, name: &str) -> String {
    let Ty::Fn { params, ret } = ty else {
        panic!("not a function type: {ty:?}")
    };
    let params = if params.is_empty() {
        "void".to_owned()
    } else {
        params
            .iter()
            .map(|(n, t)| declare(t, n))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let head = format!("{name}({params})");
    match ret {
        None => format!("void {head}"),
        Some(r) => declare(r, &head),
    }
}

fn c_define_name(rust: &str) -> String {
    format!("NGSD_{rust}")
}

fn write_docs(out: &mut String, docs: &[&str], indent: &str) {
    if docs.is_empty() {
        return;
    }
    if docs.len() == 1 {
        let _ = writeln!(out, "{indent}/**{} */", docs[0]);
        return;
    }
    let _ = writeln!(out, "{indent}/**");
    for line in docs {
        let _ = writeln!(out, "{indent} *{line}");
    }
    let _ = writeln!(out, "{indent} */");
}

/// The C header for the current ABI, exactly as committed in `include/ngsd_gate.h`.
pub fn c_header() -> String {
    let mut out = String::new();
    write_preamble(&mut out);
    // Layout checks are gathered as the structs are written and come after the declarations.
    let mut asserts = String::new();
    for item in &super::header_items() {
        out.push('\n');
        write_item(&mut out, &mut asserts, item);
    }
    write_layout_checks(&mut out, &asserts);
    out
}

/// The opening comment, include guard, includes and `extern "C"`.
fn write_preamble(out: &mut String) {
    let _ = write!(
        out,
        "/* ngsd_gate.h: the ngsd gate plugin ABI, version {major}.{minor}.
 *
 * Generated from crates/ngsd-gate/src/abi.rs by ngsd_gate::abi::c_header(); do not edit.
 * Regenerate: NGSD_UPDATE_HEADER=1 cargo test -p ngsd-gate header_is_fresh
 *
 * A plugin exports ngsd_gate_abi_version() and ngsd_gate_v1(); see plugins/README.md and
 * plugins/gate-c-example/gate_c_example.c.
 */
#ifndef NGSD_GATE_H
#define NGSD_GATE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern \"C\" {{
#endif
",
        major = super::ABI_MAJOR,
        minor = super::ABI_MINOR,
    );
}

/// One item's declaration (with its docs); a struct's layout checks go to `asserts`.
fn write_item(out: &mut String, asserts: &mut String, item: &Item) {
    match item {
        Item::Consts(consts) => {
            for c in consts {
                write_docs(out, c.docs, "");
                let suffix = if c.ty.starts_with('u') { "u" } else { "" };
                let _ = writeln!(
                    out,
                    "#define {} {}{}",
                    c_define_name(c.name),
                    c.value,
                    suffix
                );
            }
        }
        Item::Alias { name, ty, docs } => {
            write_docs(out, docs, "");
            let _ = writeln!(out, "typedef {};", declare(&parse(ty), &c_name(name)));
        }
        Item::Opaque { name, docs } => {
            write_docs(out, docs, "");
            let c = c_name(name);
            let _ = writeln!(out, "typedef struct {c} {c};");
        }
        Item::Struct {
            name,
            docs,
            size,
            fields,
        } => write_struct(out, asserts, name, docs, *size, fields),
        Item::Function { symbol, ty, docs } => {
            write_docs(out, docs, "");
            let _ = writeln!(out, "{};", declare_fn(&parse(ty), symbol));
        }
    }
}

/// A struct's typedef, and the static asserts of its field offsets and size.
fn write_struct(
    out: &mut String,
    asserts: &mut String,
    name: &str,
    docs: &[&str],
    size: usize,
    fields: &[Field],
) {
    write_docs(out, docs, "");
    let c = c_name(name);
    let _ = writeln!(out, "typedef struct {c} {{");
    for f in fields {
        write_docs(out, f.docs, "    ");
        let _ = writeln!(out, "    {};", declare(&parse(f.ty), f.name));
        let _ = writeln!(
            asserts,
            "NGSD_STATIC_ASSERT(offsetof({c}, {}) == {}, \"{c}.{} offset\");",
            f.name, f.offset, f.name
        );
    }
    let _ = writeln!(out, "}} {c};");
    let _ = writeln!(
        asserts,
        "NGSD_STATIC_ASSERT(sizeof({c}) == {size}, \"{c} size\");"
    );
}

/// The layout checks (64-bit targets), then the closing of `extern "C"` and the guard.
fn write_layout_checks(out: &mut String, asserts: &str) {
    let _ = write!(
        out,
        "
/* Layout checks: the offsets and sizes the Rust compiler chose (64-bit targets). */
#if UINTPTR_MAX == 0xFFFFFFFFFFFFFFFFu
#ifdef __cplusplus
#define NGSD_STATIC_ASSERT static_assert
#else
#define NGSD_STATIC_ASSERT _Static_assert
#endif
{asserts}#undef NGSD_STATIC_ASSERT
#endif

#ifdef __cplusplus
}}
#endif

#endif /* NGSD_GATE_H */
"
    );
}

#[cfg(test)]
mod tests;
