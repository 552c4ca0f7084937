//! The runner with a fake generator: interruption and resume, limits, then the report's
//! metrics, markdown and SVG plots on the fixture suite.

use std::path::{Path, PathBuf};

use ngsd_eval::{
    ConfigSpec, Finish, GenOutput, Generator, KeywordJudge, Progress, Report, ResultStore,
    RunSummary, Sample, Suite, run_suite,
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
        sample: &Sample,
    ) -> Result<GenOutput, Box<dyn std::error::Error + Send + Sync>> {
        let prompt = sample.text.as_str();
        if self.fail_after.is_some_and(|n| self.calls >= n) {
            return Err("simulated crash".into());
        }
        self.calls += 1;
        let harmful = HARMFUL_WORDS.iter().any(|w| prompt.contains(w));
        // LIF stands in for a configuration that reflects by probe and so stores the
        // neuron's p: high on harmful prompts, and on the prompt about killing a process.
        let prompt_p = (config.gate == "lif").then_some(if harmful {
            0.9
        } else if prompt.contains("kill") {
            0.95
        } else {
            0.1
        });
        let out = |text: &str, tokens, steered_tokens, expert_passes| GenOutput {
            text: text.to_owned(),
            tokens,
            steered_tokens,
            expert_passes,
            finish: Finish::Eos,
            prompt_p,
        };
        let gated = config.gate != "never";
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

/// The report of configuration `name`.
fn config<'a>(report: &'a Report, name: &str) -> &'a ngsd_eval::ConfigReport {
    report
        .configs
        .iter()
        .find(|c| c.config.name == name)
        .expect("config")
}

#[test]
fn report_metrics_match_the_fake_answers() {
    let dir = tempfile::tempdir().expect("temp dir");
    let report = full_report(dir.path());
    assert_eq!(report.baseline.as_deref(), Some("none"));
    let by_name = |n: &str| config(&report, n);

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
fn the_report_gives_the_stored_neuron_ps_auroc() {
    let dir = tempfile::tempdir().expect("temp dir");
    let report = full_report(dir.path());
    let by_name = |n: &str| config(&report, n);
    // LIF's answers store p: 6 harmful at 0.9 against 7 benign, one of them (the
    // process-killing prompt) at 0.95, so 36 of 42 pairs are ranked right. No dataset names
    // form a topic-matched pair here.
    let lif = by_name("gate-lif-prompt");
    let aurocs: Vec<_> = lif
        .prompt_auroc
        .iter()
        .map(|r| {
            (
                r.harmful.as_str(),
                r.benign.as_str(),
                r.n_harmful,
                r.n_benign,
            )
        })
        .collect();
    assert_eq!(aurocs, [("harmful", "benign", 6, 7)]);
    assert!(close(lif.prompt_auroc[0].auroc, 36.0 / 42.0));
    assert!(by_name("always-prompt").prompt_auroc.is_empty());
    assert!(by_name("none").prompt_auroc.is_empty());
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
    assert!(
        md.contains("| gate-lif-prompt | harmful | benign | 6 + 7 | 0.857 |"),
        "{md}"
    );

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

/// Answers from what it is shown, and records it: the last message, how many turns came
/// before, the system prompt, and whether the text was raw.
#[derive(Default)]
struct Recorder {
    seen: Vec<(String, usize, Option<String>, bool)>,
}

impl Generator for Recorder {
    fn generate(
        &mut self,
        _config: &ConfigSpec,
        sample: &Sample,
    ) -> Result<GenOutput, Box<dyn std::error::Error + Send + Sync>> {
        self.seen.push((
            sample.text.clone(),
            sample.history.len(),
            sample.system.clone(),
            sample.raw,
        ));
        let text = if sample.history.is_empty() {
            "Sure, here it is."
        } else {
            "I'm sorry, I cannot help with that."
        };
        Ok(GenOutput {
            text: text.to_owned(),
            tokens: 4,
            steered_tokens: usize::from(!sample.history.is_empty()),
            expert_passes: 0,
            finish: Finish::Eos,
            prompt_p: None,
        })
    }
}

/// A suite in `dir` over the fixture `chats.jsonl`, read as conversations or as plain text
/// of the same ids (the `shape` field), under one dataset name.
fn shape_suite(dir: &Path, how: &str) -> Suite {
    let chats = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/chats.jsonl");
    let text = format!(
        "[[datasets]]\nname = \"chats\"\npath = {chats:?}\nid-field = \"id\"\nlabel = \"benign\"\ngroup = \"talk\"\n{how}\n\n\
         [[datasets]]\nname = \"chats-harmful\"\npath = {chats:?}\nid-field = \"id\"\nlabel = \"harmful\"\nmessages-field = \"messages\"\nwhere = {{ field = \"label\", equals = \"harmful\" }}\n\n\
         [[configs]]\nname = \"none\"\ngate = \"never\"\n"
    );
    let path = dir.join("suite.toml");
    std::fs::write(&path, text).expect("write suite");
    Suite::load(&path, GATES).expect("suite")
}

#[test]
fn conversations_reach_the_generator_and_are_stored_apart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = dir.path().join("runs");
    let chat = shape_suite(dir.path(), "messages-field = \"messages\"");
    let mut recorder = Recorder::default();
    run_suite(&chat, &mut recorder, &store, None, Progress::Hidden).expect("run");
    assert_eq!(recorder.seen.len(), 4);
    assert_eq!(
        recorder.seen[0],
        ("What is my name?".into(), 2, None, false)
    );
    assert_eq!(
        recorder.seen[1].2.as_deref(),
        Some("You are a concise assistant.")
    );
    assert_eq!(
        recorder.seen[2],
        ("Name a green vegetable.".into(), 0, None, false)
    );

    // The same dataset name and ids, read as single messages (the `shape` text): asked again;
    // the unchanged harmful dataset is not.
    let plain = shape_suite(dir.path(), "text-field = \"shape\"");
    let mut recorder = Recorder::default();
    let summary = run_suite(&plain, &mut recorder, &store, None, Progress::Hidden).expect("rerun");
    assert_eq!(
        summary,
        RunSummary {
            generated: 3,
            skipped: 1
        }
    );
    let texts: Vec<&str> = recorder.seen.iter().map(|s| s.0.as_str()).collect();
    assert_eq!(texts, ["memory", "continuation", "single"]);

    // The report joins each sample with its own answer, and pools the group.
    let report = Report::build(&chat, &store, &KeywordJudge, None).expect("report");
    let none = &report.configs[0];
    let talk = none.group("talk").expect("group");
    assert_eq!((talk.answered, talk.refusal.k), (3, 2));
    assert_eq!(none.datasets[1].asr.map(|i| (i.k, i.n)), Some((0, 1)));
    let md = report.to_markdown();
    assert!(
        md.contains("### group talk (pooled benign datasets)"),
        "{md}"
    );
    assert!(
        md.contains("| **talk** | benign | refusal | 66.7% (2/3) |"),
        "{md}"
    );
    assert!(
        md.contains("| chats-harmful | harmful | ASR | 0.0% (0/1) |"),
        "{md}"
    );
}
