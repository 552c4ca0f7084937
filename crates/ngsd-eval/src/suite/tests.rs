//! Id ranges and line/column location.

use super::*;

fn check_ids(spec: &str, inside: &[u64], outside: &[u64]) {
    let r = IdRange::parse(spec).expect("valid range");
    for &i in inside {
        assert!(r.contains(i), "{spec} should hold {i}");
    }
    for &i in outside {
        assert!(!r.contains(i), "{spec} should not hold {i}");
    }
}

#[test]
fn id_ranges() {
    check_ids("400-519", &[400, 450, 519], &[0, 399, 520]);
    check_ids("7", &[7], &[6, 8]);
    check_ids("0-2, 10 ,20-21", &[0, 2, 10, 21], &[3, 11, 22]);
    assert!(IdRange::parse("").is_err());
    assert!(IdRange::parse("1-").is_err());
    assert!(IdRange::parse("-3").is_err());
}

#[test]
fn line_and_column_are_one_based() {
    let text = "a = 1\nbb = \"é\"\nc";
    let loc = Locator {
        text,
        path: Path::new("s.toml"),
    };
    assert_eq!(loc.line_col(&(0..1)), (1, 1));
    assert_eq!(loc.line_col(&(6..7)), (2, 1));
    assert_eq!(loc.line_col(&(11..12)), (2, 6));
    assert_eq!(loc.line_col(&(text.len()..text.len())), (3, 2));
}
