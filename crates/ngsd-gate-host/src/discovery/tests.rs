//! Tests for plugin file lookup (the loading side is in tests/).

use super::*;

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ngsd-gate-host-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn names_map_to_platform_file_names() {
    assert_eq!(
        file_name("sigmoid"),
        format!("{DLL_PREFIX}gate_sigmoid{DLL_SUFFIX}")
    );
    assert_eq!(
        file_name("c-example"),
        format!("{DLL_PREFIX}gate_c_example{DLL_SUFFIX}")
    );
    assert!(is_path("./x") && is_path(&format!("x{DLL_SUFFIX}")) && !is_path("lif"));
}

#[test]
fn find_searches_dirs_in_order() {
    let (a, b) = (temp_dir("a"), temp_dir("b"));
    std::fs::write(b.join(file_name("lif")), b"").unwrap();
    assert_eq!(
        find("lif", &[a.clone(), b.clone()]).unwrap(),
        b.join(file_name("lif"))
    );
    std::fs::write(a.join(file_name("lif")), b"").unwrap();
    assert_eq!(
        find("lif", &[a.clone(), b.clone()]).unwrap(),
        a.join(file_name("lif"))
    );

    let err = find("sigmoid", &[a.clone(), b.clone()])
        .unwrap_err()
        .to_string();
    let expected = format!(
        "gate `sigmoid` not found: no {} in {}, {}; build the plugins (`cargo build --workspace`)",
        file_name("sigmoid"),
        a.display(),
        b.display()
    );
    assert!(err.starts_with(&expected), "{err}");
    let err = find("lif", &[]).unwrap_err().to_string();
    assert!(
        err.contains("in no directories (the gate search path is empty)"),
        "{err}"
    );
    assert!(
        find("../lif", &[])
            .unwrap_err()
            .to_string()
            .contains("does not exist")
    );
    let err = find("li f", &[]).unwrap_err().to_string();
    assert_eq!(
        err,
        "`li f` is not a valid gate name: use letters, digits, `-` and `_`, or give a path"
    );
}

#[test]
fn list_shadows_and_reports_broken_files() {
    let (a, b) = (temp_dir("la"), temp_dir("lb"));
    std::fs::write(a.join(file_name("x")), b"not a library").unwrap();
    std::fs::write(b.join(file_name("x")), b"shadowed").unwrap();
    std::fs::write(b.join("README.md"), b"").unwrap();
    let listed = list(&[a.clone(), b, a.join("missing")]);
    assert_eq!(listed.len(), 1);
    let err = listed[0].as_ref().unwrap_err().to_string();
    assert!(
        err.starts_with(&format!(
            "cannot load gate plugin {}",
            a.join(file_name("x")).display()
        )),
        "{err}"
    );
}

#[test]
fn default_dirs_include_the_deps_parent() {
    let dirs = default_dirs();
    assert!(dirs[0].ends_with("deps"), "{dirs:?}");
    assert_eq!(dirs[1], dirs[0].parent().unwrap());
}
