//! The runner with a fake generator: interruption and resume, limits, then the report's
//! metrics, markdown and SVG plots on the fixture suite.

use std::path::{Path, PathBuf};

use ngsd_eval::{
    ConfigSpec, Finish, GenOutput, Generator, KeywordJudge, Progress, Report, ResultStore,
    RunSummary, Suite, run_suite,
};

const GATES: &[&str] = &["never", "always", "lif", "ema"];
const HARMFUL_WORDS: &[&str] = &[
    "lock",
    "harass",
    "gas",
    "phishing",
    "cheat",
    "reputation",
    "taxes",
];

fn suite() -> Suite {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/suite.toml");
    Suite::load(path, GATES).expect("fixture suite")
}

/// Answers like a model would under each configuration: no defence complies with
/// everything; gated configurations refuse harmful prompts, and `lif` also over-refuses
/// the prompt about killing a process.
#[derive(Default)]
struct FakeGenerator {
    calls: usize,
    fail_after: Option<usize>,
}

impl Generator for FakeGenerator {
    fn generate(
        &mut self,
        config: &ConfigSpec,
        prompt: &str,
    ) -> Result<GenOutput, Box<dyn std::error::Error + Send + Sync>> {
        if self.fail_after.is_some_and(|n| self.calls >= n) {
            return Err("simulated crash".into());
        }
        self.calls += 1;
        let out = |text: &str, tokens, steered_tokens, expert_passes| GenOutput {
            text: text.to_owned(),
            tokens,
            steered_tokens,
            expert_passes,
            finish: Finish::Eos,
        };
        let gated = config.gate != "never";
        let harmful = HARMFUL_WORDS.iter().any(|w| prompt.contains(w));
        Ok(if harmful && gated {
            out("I'm sorry, I cannot help with that.", 8, 4, 8)
        } else if harmful {
            out("Sure, here is how to do it.", 6, 0, 0)
        } else if gated && config.gate == "lif" && prompt.contains("kill") {
            out("I cannot help with killing.", 5, 2, 5)
        } else if gated && config.gate == "lif" && prompt.contains("apples") {
            out("He has 8 apples.", 4, 1, 4)
        } else if prompt.contains("apples") {
            out("He has 7 apples.", 4, 0, usize::from(gated) * 4)
        } else if prompt.contains("$1,200") {
            out("Together they cost $1,234.", 6, 0, usize::from(gated) * 6)
        } else if prompt.contains("degrees") {
            out("It is 3 degrees.", 4, 0, usize::from(gated) * 4)
        } else {
            out(
                "Here you go: a helpful answer.",
                7,
                0,
                usize::from(gated) * 7,
            )
        })
    }
}

const PER_CONFIG: usize = 4 + 2 + 2 + 2 + 3;

#[test]
fn interrupted_run_resumes_where_it_stopped() {
    let suite = suite();
    let dir = tempfile::tempdir().expect("temp dir");
    let total = PER_CONFIG * suite.configs.len();

    let mut crashing = FakeGenerator {
        fail_after: Some(17),
        ..Default::default()
    };
    let err =
        run_suite(&suite, &mut crashing, dir.path(), None, Progress::Hidden).expect_err("crash");
    let msg = err.to_string();
    assert!(
        msg.contains("config `always-prompt`") && msg.contains("simulated crash"),
        "{msg}"
    );
    let first = ResultStore::read(&ResultStore::path_for(dir.path(), "none")).expect("read");
    assert_eq!(first.len(), PER_CONFIG);
    let second =
        ResultStore::read(&ResultStore::path_for(dir.path(), "always-prompt")).expect("read");
    assert_eq!(second.len(), 17 - PER_CONFIG);

    let mut generator = FakeGenerator::default();
    let summary =
        run_suite(&suite, &mut generator, dir.path(), None, Progress::Hidden).expect("rerun");
    assert_eq!(
        summary,
        RunSummary {
            generated: total - 17,
            skipped: 17
        }
    );
    assert_eq!(generator.calls, total - 17);

    let again = run_suite(
        &suite,
        &mut FakeGenerator::default(),
        dir.path(),
        None,
        Progress::Hidden,
    )
    .expect("third run");
    assert_eq!(
        again,
        RunSummary {
            generated: 0,
            skipped: total
        }
    );
}

#[test]
fn limit_caps_each_dataset() {
    // With the bar on, to check its template (indicatif hides it when stderr is no terminal).
    let suite = suite();
    let dir = tempfile::tempdir().expect("temp dir");
    let summary = run_suite(
        &suite,
        &mut FakeGenerator::default(),
        dir.path(),
        Some(1),
        Progress::Bar,
    )
    .expect("run");
    assert_eq!(
        summary.generated,
        suite.datasets.len() * suite.configs.len()
    );
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

fn full_report(dir: &Path) -> Report {
    let suite = suite();
    run_suite(
        &suite,
        &mut FakeGenerator::default(),
        dir,
        None,
        Progress::Hidden,
    )
    .expect("run");
    Report::build(&suite, dir, &KeywordJudge, None).expect("report")
}

#[test]
fn report_metrics_match_the_fake_answers() {
    let dir = tempfile::tempdir().expect("temp dir");
    let report = full_report(dir.path());
    assert_eq!(report.baseline.as_deref(), Some("none"));
    let by_name = |n: &str| {
        report
            .configs
            .iter()
            .find(|c| c.config.name == n)
            .expect("config")
    };

    let none = by_name("none");
    let h = none.pool("harmful").expect("harmful pool");
    let asr = h.asr.expect("asr");
    assert_eq!((asr.k, asr.n), (6, 6));
    let b = none.pool("benign").expect("benign pool");
    assert_eq!((b.refusal.k, b.refusal.n), (0, 7));
    assert_eq!(
        b.identical_to_baseline, None,
        "the baseline is not compared with itself"
    );
    let math = none
        .datasets
        .iter()
        .find(|d| d.dataset == "math")
        .expect("math");
    let acc = math.accuracy.expect("accuracy");
    assert_eq!((acc.k, acc.n), (2, 3));
    let all = none.pool("all").expect("all");
    assert_eq!(all.answered, PER_CONFIG);
    assert_eq!(all.gate_fired.k, 0);
    assert!(all.tokens_per_s > 0.0);
    assert!(close(
        all.mean_tokens,
        (6.0 * 6.0 + 4.0 * 7.0 + 4.0 + 6.0 + 4.0) / 13.0
    ));

    let always = by_name("always-prompt");
    let asr = always.pool("harmful").and_then(|m| m.asr).expect("asr");
    assert_eq!((asr.k, asr.n, asr.value), (0, 6, 0.0));
    assert!((asr.high - 0.3903).abs() < 1e-4, "{}", asr.high);
    let b = always.pool("benign").expect("benign");
    assert_eq!(b.refusal.k, 0);
    let same = b.identical_to_baseline.expect("identical");
    assert_eq!((same.k, same.n), (7, 7));
    let all = always.pool("all").expect("all");
    assert_eq!((all.gate_fired.k, all.gate_fired.n), (6, 13));
    let tokens = 6.0 * 8.0 + 4.0 * 7.0 + 4.0 + 6.0 + 4.0;
    assert!(close(all.steered_fraction, 24.0 / tokens));
    assert!(close(all.expert_passes_per_token, 1.0));

    assert_eq!(
        math.kept_correct, None,
        "the baseline is not compared with itself"
    );
    let kept = always
        .datasets
        .iter()
        .find(|d| d.dataset == "math")
        .and_then(|d| d.kept_correct)
        .expect("kept");
    assert_eq!((kept.k, kept.n), (2, 2));

    let lif = by_name("gate-lif-prompt");
    let b = lif.pool("benign").expect("benign");
    assert_eq!((b.refusal.k, b.refusal.n), (1, 7));
    let same = b.identical_to_baseline.expect("identical");
    assert_eq!((same.k, same.n), (5, 7));
    // The baseline got apples (7) and $1,234 right; LIF's 8 apples loses one of them.
    let kept = lif
        .datasets
        .iter()
        .find(|d| d.dataset == "math")
        .and_then(|d| d.kept_correct)
        .expect("kept");
    assert_eq!((kept.k, kept.n), (1, 2));
    let xs = lif
        .datasets
        .iter()
        .find(|d| d.dataset == "xs-safe")
        .expect("xs");
    assert_eq!((xs.refusal.k, xs.refusal.n), (1, 2));
}

#[test]
fn report_files_name_axes_and_every_config() {
    let dir = tempfile::tempdir().expect("temp dir");
    let report = full_report(&dir.path().join("results"));
    let out = dir.path().join("report");
    let files = report.write_all(&out).expect("write report");
    assert_eq!(files.len(), 4);

    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).expect("json"))
            .expect("valid json");
    assert_eq!(json["judge"], "keyword");
    assert_eq!(json["configs"][1]["config"]["name"], "always-prompt");
    assert_eq!(json["configs"][0]["pooled"][0]["asr"]["value"], 1.0);

    let md = std::fs::read_to_string(out.join("results.md")).expect("md");
    assert!(md.contains("| config | gate | expert |"), "{md}");
    assert!(
        md.contains("| none | never | none | off | 1 | 100.0% [61.0, 100.0] | 0.0% [0.0, 35.4] |"),
        "{md}"
    );
    assert!(md.contains("### math"), "{md}");

    if let Ok(keep) = std::env::var("NGSD_EVAL_KEEP_PLOTS") {
        for f in ["tradeoff.svg", "speed.svg", "results.md"] {
            std::fs::copy(out.join(f), Path::new(&keep).join(f)).expect("copy plot");
        }
    }
    let tradeoff = std::fs::read_to_string(out.join("tradeoff.svg")).expect("svg");
    let speed = std::fs::read_to_string(out.join("speed.svg")).expect("svg");
    assert!(tradeoff.contains("benign refusal rate (%)"));
    assert!(tradeoff.contains("attack success rate, ASR (%)"));
    assert!(speed.contains("generated tokens per second"));
    for c in &report.configs {
        assert!(
            tradeoff.contains(&format!("\n{}\n</text>", c.config.name)),
            "tradeoff lacks {}",
            c.config.name
        );
        assert!(
            speed.contains(&format!("\n{}\n</text>", c.config.name)),
            "speed lacks {}",
            c.config.name
        );
    }
}
