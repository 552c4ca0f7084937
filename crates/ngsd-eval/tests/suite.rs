//! Suite loading: the fixture suite, and one clear error per kind of mistake.

use std::path::PathBuf;

use ngsd_eval::{DatasetFormat, Label, Reflection, Suite};

const GATES: &[&str] = &["never", "always", "lif", "ema", "adam", "sigmoid"];

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

const DATASET: &str = r#"
[[datasets]]
name = "harmful"
path = "harmful.json"
text-field = "goal"
label = "harmful"
"#;

/// Parses `text` as if it were `tests/fixtures/bad.toml` and returns the error message.
fn check_error(text: &str, expected: &[&str]) {
    let err = Suite::parse(text, &fixtures().join("bad.toml"), GATES)
        .expect_err("suite should be rejected");
    let msg = err.to_string();
    for e in expected {
        assert!(msg.contains(e), "message {msg:?} lacks {e:?}");
    }
}

#[test]
fn fixture_suite_loads() {
    let suite = Suite::load(fixtures().join("suite.toml"), GATES).expect("fixture suite");
    assert_eq!(suite.generation.max_new_tokens, 16);
    assert!(suite.generation.greedy);
    assert_eq!(suite.datasets.len(), 5);
    assert_eq!(
        suite.datasets[0].format,
        DatasetFormat::Json,
        "format from the extension"
    );
    assert_eq!(suite.datasets[2].format, DatasetFormat::Csv);
    assert_eq!(suite.datasets[3].format, DatasetFormat::Jsonl);
    assert_eq!(suite.datasets[2].label, Label::Benign);
    assert!(
        suite.datasets[0]
            .path
            .ends_with("tests/fixtures/harmful.json")
    );
    let names: Vec<&str> = suite.configs.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "none",
            "always-prompt",
            "gate-lif-prompt",
            "gate-ema-prompt"
        ]
    );
    let c = &suite.configs[1];
    assert_eq!(
        (c.gate.as_str(), c.expert.as_str(), c.alpha),
        ("always", "prompt", 0.9)
    );
    assert_eq!(c.reflection, Reflection::Off);
    assert_eq!(suite.configs[0].expert, "none");
    assert_eq!(suite.configs[0].alpha, 1.0);
    assert_eq!(suite.baseline.as_deref(), Some("none"));
}

#[test]
fn default_generation_settings() {
    let text = format!("{DATASET}\n[[configs]]\nname = \"a\"\ngate = \"lif\"\n");
    let suite = Suite::parse(&text, &fixtures().join("x.toml"), GATES).expect("valid");
    assert_eq!(suite.generation.max_new_tokens, 64);
    assert!(suite.generation.greedy);
    assert_eq!(suite.baseline, None);
}

#[test]
fn missing_dataset_file_names_line_key_and_path() {
    let text = "[[datasets]]\nname = \"gone\"\npath = \"nope/missing.json\"\ntext-field = \"goal\"\nlabel = \"harmful\"\n";
    check_error(
        text,
        &[
            "bad.toml:3:8:",
            "`datasets[0].path`",
            "missing.json not found",
            "relative to the suite file",
        ],
    );
}

#[test]
fn unknown_field_names_line_and_key() {
    let text = format!("{DATASET}\n[[configs]]\nname = \"a\"\ngate = \"lif\"\nalpah = 0.5\n");
    check_error(
        &text,
        &["bad.toml:11:1:", "unknown field `alpah`", "expected one of"],
    );
}

#[test]
fn unknown_gate_names_line_key_and_known_gates() {
    let text = format!(
        "{DATASET}\n[[configs]]\nname = \"a\"\ngate = \"lif\"\n\n[[configs]]\nname = \"b\"\ngate = \"leaky\"\n"
    );
    check_error(
        &text,
        &[
            "bad.toml:14:8:",
            "`configs[1].gate`",
            "unknown gate `leaky` in configuration `b`",
            "known gates: never, always, lif",
        ],
    );
}

#[test]
fn unknown_gate_in_matrix() {
    let text = format!("{DATASET}\n[[matrix]]\ngates = [\"lif\", \"nope\"]\n");
    check_error(
        &text,
        &[
            "bad.toml:9:17:",
            "`matrix[0].gates[1]`",
            "unknown gate `nope`",
        ],
    );
}

#[test]
fn duplicate_config_name_names_both_lines() {
    let text = format!(
        "{DATASET}\n[[configs]]\nname = \"a\"\ngate = \"lif\"\n\n[[configs]]\nname = \"a\"\ngate = \"ema\"\n"
    );
    check_error(
        &text,
        &[
            "bad.toml:13:8:",
            "`configs[1].name`",
            "duplicate configuration name `a` (first on line 9)",
        ],
    );
}

#[test]
fn duplicate_from_matrix_expansion() {
    let text = format!(
        "{DATASET}\n[[configs]]\nname = \"lif\"\ngate = \"lif\"\n\n[[matrix]]\ngates = [\"lif\"]\n"
    );
    check_error(&text, &["duplicate configuration name `lif`"]);
}

#[test]
fn bad_values_are_named() {
    check_error(
        &format!("{DATASET}ids = \"5-2\"\n"),
        &["bad.toml:7:7:", "`datasets[0].ids`", "range `5-2` is empty"],
    );
    check_error(
        &format!("{DATASET}ids = \"a-9\"\n"),
        &[
            "`datasets[0].ids`",
            "`a` in `a-9` is not a non-negative integer",
        ],
    );
    check_error(
        &format!("{DATASET}\n[[configs]]\nname = \"a\"\ngate = \"lif\"\nalpha = 1.5\n"),
        &["bad.toml:11:9:", "`configs[0].alpha`", "outside [0, 1]"],
    );
    check_error(
        &format!("{DATASET}\n[[configs]]\nname = \"a/b\"\ngate = \"lif\"\n"),
        &["`configs[0].name`", "names the results file"],
    );
    check_error(
        &format!("{DATASET}label2 = 1\n"),
        &["bad.toml:7:1:", "unknown field `label2`"],
    );
    check_error(
        "[[datasets]]\nname = \"x\"\npath = \"harmful.json\"\ntext-field = \"goal\"\nlabel = \"evil\"\n",
        &[
            "bad.toml:5:9:",
            "unknown variant `evil`",
            "harmful",
            "benign",
        ],
    );
    check_error(
        &format!("baseline = \"zzz\"\n{DATASET}"),
        &[
            "bad.toml:1:12:",
            "`baseline`",
            "no configuration is named `zzz`",
        ],
    );
    check_error("[generation\n", &["bad.toml:1:"]);
}
