//! Tests for the Rust-type-to-C translation of the header generator.

use super::*;

fn check(rust: &str, name: &str, expected: &str) {
    assert_eq!(
        declare(&parse(rust), name),
        expected,
        "translating `{rust}`"
    );
}

#[test]
fn translates_types_to_c_declarations() {
    check("u32", "size", "uint32_t size");
    check("usize", "len", "size_t len");
    check("* const f32", "hidden", "const float *hidden");
    check("*const c_char", "ptr", "const char *ptr");
    check("*mut *mut GateState", "out", "NgsdGateState **out");
    check(
        "Option<unsafe extern \"C\" fn() -> StrRef>",
        "name",
        "NgsdStrRef (*name)(void)",
    );
    check(
        "Option < unsafe extern \"C\" fn(state: *mut GateState, out: *mut Decision) -> Status >",
        "decide",
        "NgsdStatus (*decide)(NgsdGateState *state, NgsdDecision *out)",
    );
    check(
        "Option<unsafe extern \"C\" fn(state: *mut GateState)>",
        "destroy",
        "void (*destroy)(NgsdGateState *state)",
    );
}

#[test]
fn translates_prototypes() {
    let proto = declare_fn(
        &parse("unsafe extern \"C\" fn() -> *const GateVTableV1"),
        "entry",
    );
    assert_eq!(proto, "const NgsdGateVTableV1 *entry(void)");
}

#[test]
#[should_panic(expected = "not supported")]
fn rejects_what_it_cannot_translate() {
    declare(&parse("*const *const u8"), "x");
}
