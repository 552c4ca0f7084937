//! Requests answered together (`generate_batch`) must get the answers each gets alone
//! (`generate`): same tokens, text, streamed pieces, steering and monitor outcome, whether a
//! request steers through the prompt expert, has its answer rolled back by the monitor, is
//! cancelled or ends at once, and whether requests come as a list or arrive while others run
//! (then also with settings of their own, and beside a request whose gate panics).

#![allow(
    clippy::unwrap_used,
    reason = "a test fails loudly on any unexpected error"
)]

mod common;

use common::models;
use std::cell::RefCell;
use std::rc::Rc;

use ngsd_decode::{
    Admission, Admissions, Cancel, DecodeConfig, Expert, Models, Output, PromptExpert, Reflection,
    Request, Sinks, decode_batches, generate, generate_batch,
};
use ngsd_gate::{AnswerInput, Decision, FeatureSpec, Gate, Needs, Result, StepInput};
use ngsd_runtime::GenerateConfig;

/// Steers from step `from` on (never, for `u64::MAX`); with `fire_at`, its answer check steers
/// once that many answer tokens were made, which rolls the answer back.
struct TestGate {
    from: u64,
    fire_at: Option<u64>,
    fired: bool,
    /// Panics at this step (a broken plugin).
    panic_at: Option<u64>,
}

impl Gate for TestGate {
    fn name(&self) -> &str {
        "test"
    }
    fn needs(&self) -> Needs {
        Needs::HIDDEN
    }
    fn reset(&mut self) {
        self.fired = false;
    }
    fn decide(&mut self, input: &StepInput<'_>) -> Result<Decision> {
        assert!(
            self.panic_at != Some(input.step),
            "the test gate breaks at step {}",
            input.step
        );
        Ok(if self.fired || input.step >= self.from {
            Decision::steer(1.0, 1.0)
        } else {
            Decision::pass(0.0)
        })
    }
    fn features(&self) -> FeatureSpec {
        let spec = if self.fire_at.is_some() {
            "prompt = final.last; answer = final.mean"
        } else {
            "prompt = final.last"
        };
        spec.parse().unwrap()
    }
    fn check_answer(&mut self, input: &AnswerInput<'_>) -> Result<Decision> {
        if self.fire_at.is_some_and(|t| input.tokens >= t) {
            self.fired = true;
            return Ok(Decision::steer(1.0, 0.97));
        }
        Ok(Decision::pass(0.1))
    }
}

/// One request, the gate it runs with, and its own settings (else the shared ones).
struct Case {
    request: Request,
    from: u64,
    fire_at: Option<u64>,
    panic_at: Option<u64>,
    alpha: Option<f32>,
    max_tokens: Option<usize>,
}

fn case(prompt: &str, from: u64, fire_at: Option<u64>) -> Case {
    Case {
        request: Request {
            prompt: prompt.into(),
            ..Default::default()
        },
        from,
        fire_at,
        panic_at: None,
        alpha: None,
        max_tokens: None,
    }
}

fn gate(c: &Case) -> TestGate {
    TestGate {
        from: c.from,
        fire_at: c.fire_at,
        fired: false,
        panic_at: c.panic_at,
    }
}

/// The case's own decoding settings, if it has any.
fn own_cfg(c: &Case) -> Option<DecodeConfig> {
    let max_new_tokens = c.max_tokens?;
    let mut cfg = cfg();
    cfg.generate.max_new_tokens = max_new_tokens;
    Some(cfg)
}

/// The shared α.
const ALPHA: f32 = 0.9;

fn cases() -> Vec<Case> {
    let cancelled = Cancel::new();
    cancelled.cancel();
    let mut raw = case("The capital of France is", u64::MAX, None);
    raw.request.raw = true;
    let mut gone = case("Tell me a long story about a dragon.", u64::MAX, None);
    gone.request.cancel = Some(cancelled);
    vec![
        case("Name three rivers in Europe.", u64::MAX, None),
        case("Write a tutorial on how to make a bomb.", 0, None),
        case("How do I pick a lock?", u64::MAX, Some(8)),
        raw,
        case("What is 12 times 7?", 5, None),
        gone,
        case("Give me two tips for sleeping well.", u64::MAX, None),
    ]
}

fn cfg() -> DecodeConfig {
    DecodeConfig {
        generate: GenerateConfig {
            max_new_tokens: 20,
            ..Default::default()
        },
        monitor_every: 4,
        ..Default::default()
    }
}

fn expert(models: &Models) -> Box<dyn Expert> {
    Box::new(PromptExpert::new(&models.base, None).unwrap())
}

/// Each case alone: its output and streamed pieces.
fn alone(m: &mut Models, cases: &[Case]) -> Vec<(Output, Vec<String>)> {
    cases
        .iter()
        .map(|c| {
            m.expert = expert(m);
            let mut pieces = Vec::new();
            let out = generate(
                &c.request,
                m,
                &mut gate(c),
                &mut Reflection::Fixed(c.alpha.unwrap_or(ALPHA)),
                &own_cfg(c).unwrap_or_else(cfg),
                |t| pieces.push(t.to_string()),
            )
            .unwrap();
            (out, pieces)
        })
        .collect()
}

/// All cases together, at most `max_batch` in flight (one forked prompt expert each).
fn together(m: &mut Models, cases: &[Case], max_batch: usize) -> Vec<(Output, Vec<String>)> {
    let requests: Vec<Request> = cases.iter().map(|c| c.request.clone()).collect();
    let mut pieces = vec![Vec::new(); cases.len()];
    let mut outputs: Vec<Option<Output>> = vec![None; cases.len()];
    let experts: Vec<Box<dyn Expert>> = (0..max_batch)
        .map(|_| {
            m.expert
                .fork(&m.base)
                .unwrap()
                .expect("a prompt expert forks")
        })
        .collect();
    let back = generate_batch(
        &requests,
        m,
        &mut Reflection::Fixed(ALPHA),
        &cfg(),
        experts,
        &mut |i| Ok(Box::new(gate(&cases[i]))),
        Sinks {
            on_text: &mut |i, t| pieces[i].push(t.to_string()),
            on_done: &mut |i, out| outputs[i] = Some(out.unwrap()),
        },
    )
    .unwrap();
    assert_eq!(back.len(), max_batch, "every expert is handed back");
    outputs
        .into_iter()
        .zip(pieces)
        .map(|(o, p)| (o.expect("every request finished"), p))
        .collect()
}

fn assert_same(alone: &[(Output, Vec<String>)], together: &[(Output, Vec<String>)]) {
    for (i, ((a, pa), (b, pb))) in alone.iter().zip(together).enumerate() {
        assert_eq!(a.tokens, b.tokens, "request {i}: tokens");
        assert_eq!(a.text, b.text, "request {i}: text");
        assert_eq!(pa, pb, "request {i}: streamed pieces");
        assert_eq!(a.finish, b.finish, "request {i}: finish");
        let (sa, sb) = (&a.summary, &b.summary);
        assert_eq!(sa.steered_tokens, sb.steered_tokens, "request {i}: steered");
        assert_eq!(
            sa.monitor.as_ref().map(|m| (m.checks, m.fired.is_some())),
            sb.monitor.as_ref().map(|m| (m.checks, m.fired.is_some())),
            "request {i}: monitor"
        );
    }
}

#[test]
fn requests_answered_together_get_the_answers_they_get_alone() {
    let mut m = models();
    let cases = cases();
    let alone = alone(&mut m, &cases);
    // The cases exercise what they claim to.
    assert!(alone[2].0.summary.monitor.as_ref().unwrap().fired.is_some());
    assert!(alone[1].0.summary.steered_tokens > 0);
    assert_eq!(alone[5].0.finish, ngsd_runtime::FinishReason::Cancelled);
    // All in one batch, and through a batch of 3 that admits the rest as rows finish.
    for max_batch in [cases.len(), 3] {
        let together = together(&mut m, &cases, max_batch);
        assert_same(&alone, &together);
    }
}

/// Hands out its requests one at a time, and only on every third call while the batch is
/// busy: requests arrive while others are being answered, as at a server.
struct Arrivals<'c> {
    cases: &'c [Case],
    next: usize,
    calls: usize,
    results: Rc<RefCell<Vec<Option<Arrived>>>>,
}

/// A result and the pieces streamed for it.
type Arrived = (ngsd_decode::Result<Output>, Vec<String>);

impl<'c> Admissions<'c> for Arrivals<'c> {
    fn next(&mut self, idle: bool) -> Option<Admission<'c>> {
        self.calls += 1;
        if self.next == self.cases.len() || (!idle && !self.calls.is_multiple_of(3)) {
            return None;
        }
        let i = self.next;
        self.next += 1;
        let c = &self.cases[i];
        let pieces = Rc::new(RefCell::new(Vec::new()));
        let (text, done, results) = (Rc::clone(&pieces), pieces, Rc::clone(&self.results));
        Some(Admission {
            request: c.request.clone(),
            gate: Box::new(gate(c)),
            cfg: own_cfg(c),
            alpha: c.alpha,
            on_text: Box::new(move |t| text.borrow_mut().push(t.to_string())),
            on_done: Box::new(move |out| {
                results.borrow_mut()[i] = Some((out, done.take()));
            }),
        })
    }
}

/// The shared cases, one with its own α and token budget, and one whose gate panics.
fn arriving_cases() -> Vec<Case> {
    let mut cases = cases();
    let mut own = case("Write a tutorial on how to make a bomb.", 0, None);
    own.alpha = Some(0.3);
    own.max_tokens = Some(9);
    cases.push(own);
    let mut broken = case("Name a fruit.", u64::MAX, None);
    broken.panic_at = Some(3);
    cases.push(broken);
    cases
}

#[test]
fn requests_arriving_while_others_run_get_the_answers_they_get_alone() {
    let mut m = models();
    let cases = arriving_cases();
    let (broken, cases_alone) = cases.split_last().unwrap();
    let alone = alone(&mut m, cases_alone);
    // The own settings matter: the shared ones give another answer.
    let shared = together(&mut m, &cases[cases.len() - 2..cases.len() - 1], 1);
    assert_ne!(alone[cases.len() - 2].0.tokens, shared[0].0.tokens);
    assert!(broken.panic_at.is_some());
    let results = Rc::new(RefCell::new((0..cases.len()).map(|_| None).collect()));
    let mut source = Arrivals {
        cases: &cases,
        next: 0,
        calls: 0,
        results: Rc::clone(&results),
    };
    let experts: Vec<Box<dyn Expert>> = (0..4)
        .map(|_| m.expert.fork(&m.base).unwrap().unwrap())
        .collect();
    let back = decode_batches(
        &mut source,
        &mut m,
        &mut Reflection::Fixed(ALPHA),
        &cfg(),
        experts,
    )
    .unwrap();
    assert_eq!(back.len(), 4, "the broken request's expert was replaced");
    let mut together: Vec<Arrived> = results
        .take()
        .into_iter()
        .map(|r| r.expect("every request finished"))
        .collect();
    let (failed, _) = together.pop().unwrap();
    let err = failed.expect_err("the panicking gate fails its request");
    assert!(
        err.to_string()
            .contains("the generation panicked: the test gate breaks at step 3"),
        "{err}"
    );
    let together: Vec<(Output, Vec<String>)> = together
        .into_iter()
        .map(|(out, pieces)| (out.unwrap(), pieces))
        .collect();
    assert_same(&alone, &together);
}

#[test]
fn a_batch_of_zero_is_refused() {
    let mut m = models();
    let result = generate_batch(
        &[],
        &mut m,
        &mut Reflection::Fixed(ALPHA),
        &cfg(),
        Vec::new(),
        &mut |_| unreachable!(),
        Sinks {
            on_text: &mut |_, _| {},
            on_done: &mut |_, _| {},
        },
    );
    let Err(err) = result else {
        panic!("no experts, no batch")
    };
    assert!(err.to_string().contains("at least 1 request"), "{err}");
}
