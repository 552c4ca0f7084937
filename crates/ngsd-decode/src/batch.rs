//! Many requests answered together: the base model's decode steps of every answer in flight run
//! as one forward pass ([`ngsd_runtime::Batch`]), and everything else stays per request, exactly
//! as in [`crate::generate`]:
//! - the prefill, reflection, the gate's view of the prompt, the expert's start;
//! - per token: the gate's decision, the expert, steering, the trace, the answer monitor, early
//!   stop, stop strings and cancellation;
//! - a monitor rollback rebuilds the request's cache alone, and the request rejoins the batch.
//!
//! Requests come from an [`Admissions`] source as slots free up: a fixed list
//! ([`generate_batch`], what `ngsd eval` uses) or requests arriving while others run (a
//! server). Each request in flight has a gate and an expert of its own, since both keep
//! per-request state; an expert is handed to the next request when one finishes (its `begin`
//! resets it). The expert runs per request: a head expert is a few matrix-vector products, a
//! prompt expert runs its own forward passes alone, and a model expert cannot fork, so its
//! callers decode one request at a time.

use std::cell::RefCell;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use ngsd_gate::Gate;
use ngsd_runtime::{Batch, FinishReason, ForwardOut};

use crate::assess::Reflection;
use crate::decoder::{DecodeConfig, Models, Output, Request};
use crate::error::{Error, Result};
use crate::expert::Expert;
use crate::run::{Next, Run};

/// One request handed to a batch, with its gate and where its text and result go.
pub struct Admission<'s> {
    /// The request.
    pub request: Request,
    /// Its own gate instance.
    pub gate: Box<dyn Gate>,
    /// Its decoding settings; `None` takes the batch's.
    pub cfg: Option<DecodeConfig>,
    /// A fixed α in place of the batch's reflection.
    pub alpha: Option<f32>,
    /// Its text, as [`crate::generate`]'s `on_text` receives it.
    pub on_text: Box<dyn FnMut(&str) + 's>,
    /// Its result, once it finished (an error of one request does not stop the others).
    pub on_done: Box<dyn FnOnce(Result<Output>) + 's>,
}

/// Where a batch gets its requests.
pub trait Admissions<'s> {
    /// The next request to admit, or `None` when none is waiting. `idle` says nothing is in
    /// flight: the source may wait for a request then, and `None` while idle ends the batch.
    fn next(&mut self, idle: bool) -> Option<Admission<'s>>;

    /// Called after each batched forward pass with the number of rows it ran.
    fn stepped(&mut self, _rows: usize) {}

    /// Called with the time the batch just spent on `phase`.
    fn spent(&mut self, _phase: Phase, _time: Duration) {}
}

/// What a batch spends its time on (reported through [`Admissions::spent`]); the rest of its
/// time it waits for requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    /// Admitting a request: its prefill, reflection, the gate's look at the prompt and its
    /// first token, while the requests in flight wait.
    Admit,
    /// The batched forward pass of the base model.
    Step,
    /// Each request's own work after a step: the gate, the expert, steering, sampling, the
    /// answer monitor (with any rollback's rebuilt cache), leaving and joining the batch.
    Rows,
}

impl Phase {
    /// Every phase, in the order a request meets them.
    pub const ALL: [Phase; 3] = [Phase::Admit, Phase::Step, Phase::Rows];

    /// The phase's name in metrics and reports.
    pub fn label(self) -> &'static str {
        match self {
            Phase::Admit => "admit",
            Phase::Step => "step",
            Phase::Rows => "rows",
        }
    }
}

/// A request in flight: its state, its gate and expert, and the token its row is fed next.
struct Active<'s> {
    run: Run,
    gate: Box<dyn Gate>,
    expert: Box<dyn Expert>,
    on_text: Box<dyn FnMut(&str) + 's>,
    on_done: Box<dyn FnOnce(Result<Output>) + 's>,
    started: Instant,
    next: u32,
}

/// A request's next move, decided with its expert lent to the models.
enum Move {
    Feed(Box<Run>, u32),
    Finished(Box<Output>),
}

/// Runs `f` with `expert` in `models` (where [`Run`] looks for it). A panic in `f` (a gate
/// plugin, an expert) becomes [`Error::Panicked`] for this request alone; the expert goes
/// back either way.
fn lend<T>(
    models: &mut Models,
    expert: &mut Box<dyn Expert>,
    f: impl FnOnce(&mut Models) -> Result<T>,
) -> Result<T> {
    std::mem::swap(&mut models.expert, expert);
    let result = std::panic::catch_unwind(AssertUnwindSafe(|| f(models)));
    std::mem::swap(&mut models.expert, expert);
    result.unwrap_or_else(|panic| Err(Error::Panicked(panic_message(panic.as_ref()))))
}

/// What a panic said, when it said it as text.
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "unknown panic".into())
}

/// Gives a failed request's expert back to `experts`. After a panic its state is unknown,
/// so a fresh fork of the models' expert takes its place (none if it cannot fork: the batch
/// has one slot less).
fn give_back(
    expert: Box<dyn Expert>,
    failed: &Error,
    models: &Models,
    experts: &mut Vec<Box<dyn Expert>>,
) {
    if !matches!(failed, Error::Panicked(_)) {
        experts.push(expert);
        return;
    }
    drop(expert);
    match models.expert.fork(&models.base) {
        Ok(Some(fresh)) => experts.push(fresh),
        Ok(None) => tracing::warn!("the expert cannot fork; the batch has one slot less"),
        Err(e) => tracing::warn!("forking the expert failed ({e}); the batch has one slot less"),
    }
}

/// Answers what `source` admits, with as many requests in flight as there are `experts` (one
/// each; [`Expert::fork`] makes them), until the source has nothing more while the batch is
/// empty. Returns the experts, or an error when the batched forward pass itself fails.
pub fn decode_batches<'s>(
    source: &mut dyn Admissions<'s>,
    models: &mut Models,
    reflection: &mut Reflection,
    cfg: &DecodeConfig,
    mut experts: Vec<Box<dyn Expert>>,
) -> Result<Vec<Box<dyn Expert>>> {
    if experts.is_empty() {
        return Err(Error::InvalidConfig {
            name: "batch size",
            reason: "0 experts; at least 1 request must be in flight".into(),
        });
    }
    cfg.validate()?;
    reflection.validate()?;
    let mut batch = models.base.new_batch()?;
    let mut active: Vec<Active<'s>> = Vec::with_capacity(experts.len());
    let mut out = ForwardOut::default();
    loop {
        while let Some(expert) = experts.pop() {
            let Some(admission) = source.next(active.is_empty()) else {
                experts.push(expert);
                break;
            };
            let t = Instant::now();
            let shared = (&mut *models, &mut batch, &mut *reflection);
            if let Some(a) = admit(admission, expert, shared, cfg, &mut experts) {
                active.push(a);
            }
            source.spent(Phase::Admit, t.elapsed());
        }
        if active.is_empty() {
            return Ok(experts);
        }
        let tokens: Vec<u32> = active.iter().map(|a| a.next).collect();
        let t = Instant::now();
        models.base.step_batch(&mut batch, &tokens, &mut out)?;
        let step = t.elapsed();
        source.stepped(tokens.len());
        source.spent(Phase::Step, step);
        let t = Instant::now();
        let ms = step.as_secs_f64() * 1e3;
        continue_rows(&mut active, models, &mut batch, &out, ms, &mut experts)?;
        source.spent(Phase::Rows, t.elapsed());
    }
}

/// Prefills the admitted request alone, reflects, lets the gate see the prompt and picks its
/// first token; it joins the batch unless it already ended (then its result goes out and
/// `expert` back to `experts`).
fn admit<'s>(
    a: Admission<'s>,
    mut expert: Box<dyn Expert>,
    (models, batch, reflection): (&mut Models, &mut Batch, &mut Reflection),
    cfg: &DecodeConfig,
    experts: &mut Vec<Box<dyn Expert>>,
) -> Option<Active<'s>> {
    let Admission {
        request,
        mut gate,
        cfg: own_cfg,
        alpha,
        mut on_text,
        on_done,
    } = a;
    let started = Instant::now();
    let mut fixed = alpha.map(Reflection::Fixed);
    let reflection = fixed.as_mut().unwrap_or(reflection);
    let cfg = own_cfg.as_ref().unwrap_or(cfg);
    let moved = lend(models, &mut expert, |models| -> Result<Move> {
        if own_cfg.is_some() {
            cfg.validate()?;
        }
        reflection.validate()?;
        let mut run = Run::prefill(&request, models, gate.as_ref(), reflection, cfg)?;
        if run.cut_short() {
            let output = run.into_output(models, gate.as_ref(), FinishReason::Cancelled, started);
            return Ok(Move::Finished(Box::new(output)));
        }
        run.reflect(models, reflection)?;
        run.observe_prompt(gate.as_mut())?;
        models.expert.begin(&request.prompt, request.raw)?;
        let next = run.next_token(models, gate.as_mut(), &mut on_text)?;
        let moved = settle(run, next, models, gate.as_ref(), started);
        if let Move::Feed(run, _) = &moved {
            models.base.join(batch, run.cache())?;
        }
        Ok(moved)
    });
    match moved {
        Ok(Move::Feed(run, next)) => Some(Active {
            run: *run,
            gate,
            expert,
            on_text,
            on_done,
            started,
            next,
        }),
        Ok(Move::Finished(output)) => {
            experts.push(expert);
            on_done(Ok(*output));
            None
        }
        Err(e) => {
            give_back(expert, &e, models, experts);
            on_done(Err(e));
            None
        }
    }
}

/// A request's move after [`Run::next_token`]: feed the token, or finish with its output.
fn settle(run: Run, next: Next, models: &Models, gate: &dyn Gate, started: Instant) -> Move {
    match next {
        Next::Feed(token) => Move::Feed(Box::new(run), token),
        Next::Done(finish) => {
            let finish = run.filtered(finish);
            Move::Finished(Box::new(run.into_output(models, gate, finish, started)))
        }
    }
}

/// After a batched step: each request takes its row, runs its checks and picks its next
/// token. Finished requests leave the batch (their expert goes back to `experts`); a request
/// whose answer was rolled back rejoins it with its rebuilt cache.
fn continue_rows<'s>(
    active: &mut Vec<Active<'s>>,
    models: &mut Models,
    batch: &mut Batch,
    out: &ForwardOut,
    ms: f64,
    experts: &mut Vec<Box<dyn Expert>>,
) -> Result<()> {
    let mut rows = std::mem::take(active)
        .into_iter()
        .enumerate()
        .collect::<Vec<_>>();
    // From the last row to the first, so that leaving does not move the rows still to come.
    rows.reverse();
    let mut kept = Vec::with_capacity(rows.len());
    let mut rejoin = Vec::new();
    for (r, mut a) in rows {
        a.run.take_batch_row(models, out, r, ms);
        let rollbacks = a.run.rollbacks();
        let (gate, on_text, started) = (&mut a.gate, &mut a.on_text, a.started);
        let moved = lend(models, &mut a.expert, |models| -> Result<Move> {
            let mut run = a.run;
            run.after_advance(models, gate.as_mut(), &mut *on_text)?;
            let next = run.next_token(models, gate.as_mut(), &mut *on_text)?;
            Ok(settle(run, next, models, gate.as_ref(), started))
        });
        match moved {
            Ok(Move::Feed(run, next)) if run.rollbacks() == rollbacks => {
                kept.push(Active {
                    run: *run,
                    next,
                    ..a
                });
            }
            Ok(Move::Feed(run, next)) => {
                models.base.leave(batch, r)?;
                rejoin.push(Active {
                    run: *run,
                    next,
                    ..a
                });
            }
            Ok(Move::Finished(output)) => {
                models.base.leave(batch, r)?;
                experts.push(a.expert);
                (a.on_done)(Ok(*output));
            }
            Err(e) => {
                models.base.leave(batch, r)?;
                give_back(a.expert, &e, models, experts);
                (a.on_done)(Err(e));
            }
        }
    }
    kept.reverse();
    for a in rejoin {
        models.base.join(batch, a.run.cache())?;
        kept.push(a);
    }
    *active = kept;
    Ok(())
}

/// Where each request of [`generate_batch`] sends its text and result.
pub struct Sinks<'s> {
    /// Text of request `i`, as [`crate::generate`]'s `on_text` receives it.
    pub on_text: &'s mut dyn FnMut(usize, &str),
    /// The result of request `i` (an error of one request does not stop the others).
    pub on_done: &'s mut dyn FnMut(usize, Result<Output>),
}

/// A fixed list of requests as an admission source.
struct ListSource<'r, 'b, 's, 'g> {
    requests: std::iter::Enumerate<std::slice::Iter<'r, Request>>,
    make_gate: &'g mut dyn FnMut(usize) -> Result<Box<dyn Gate>>,
    sinks: &'b RefCell<Sinks<'s>>,
}

impl<'b> Admissions<'b> for ListSource<'_, 'b, '_, '_> {
    fn next(&mut self, _idle: bool) -> Option<Admission<'b>> {
        for (i, request) in self.requests.by_ref() {
            let sinks = self.sinks;
            match (self.make_gate)(i) {
                Ok(gate) => {
                    return Some(Admission {
                        request: request.clone(),
                        gate,
                        cfg: None,
                        alpha: None,
                        on_text: Box::new(move |t| (sinks.borrow_mut().on_text)(i, t)),
                        on_done: Box::new(move |out| (sinks.borrow_mut().on_done)(i, out)),
                    });
                }
                Err(e) => (sinks.borrow_mut().on_done)(i, Err(e)),
            }
        }
        None
    }
}

/// Answers `requests` with as many in flight as there are `experts` (one per request in flight;
/// [`Expert::fork`] makes them); `make_gate(i)` gives request `i` its gate when it is admitted.
/// Results arrive through `sinks` as requests finish, in any order; an error of one request
/// does not stop the others. Returns the experts, or an error when the batched forward pass
/// itself fails.
pub fn generate_batch(
    requests: &[Request],
    models: &mut Models,
    reflection: &mut Reflection,
    cfg: &DecodeConfig,
    experts: Vec<Box<dyn Expert>>,
    make_gate: &mut dyn FnMut(usize) -> Result<Box<dyn Gate>>,
    sinks: Sinks<'_>,
) -> Result<Vec<Box<dyn Expert>>> {
    let sinks = RefCell::new(sinks);
    let mut source = ListSource {
        requests: requests.iter().enumerate(),
        make_gate,
        sinks: &sinks,
    };
    decode_batches(&mut source, models, reflection, cfg, experts)
}
