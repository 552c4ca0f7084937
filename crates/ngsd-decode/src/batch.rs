//! Many requests answered together: the base model's decode steps of every answer in flight run
//! as one forward pass ([`ngsd_runtime::Batch`]), and everything else stays per request, exactly
//! as in [`crate::generate`]:
//! - the prefill, reflection, the gate's view of the prompt, the expert's start;
//! - per token: the gate's decision, the expert, steering, the trace, the answer monitor, early
//!   stop, stop strings and cancellation;
//! - a monitor rollback rebuilds the request's cache alone, and the request rejoins the batch.
//!
//! Each request in flight has a gate and an expert of its own, since both keep per-request
//! state; an expert is handed to the next request when one finishes (its `begin` resets it).
//! The expert runs per request: a head expert is a few matrix-vector products, a prompt
//! expert runs its own forward passes alone, and a model expert cannot fork, so its callers
//! decode one request at a time.

use std::time::Instant;

use ngsd_gate::Gate;
use ngsd_runtime::{Batch, FinishReason, ForwardOut};

use crate::assess::Reflection;
use crate::decoder::{DecodeConfig, Models, Output, Request};
use crate::error::{Error, Result};
use crate::expert::Expert;
use crate::run::{Next, Run};

/// What one request decodes with, of its own.
struct Lane {
    gate: Box<dyn Gate>,
    expert: Box<dyn Expert>,
}

/// A request in flight: its state and the token its batch row is fed next.
struct Active<'a> {
    index: usize,
    run: Run<'a>,
    lane: Lane,
    started: Instant,
    next: u32,
}

/// Where each request's text and result go.
pub struct Sinks<'s> {
    /// Text of request `i`, as [`crate::generate`]'s `on_text` receives it.
    pub on_text: &'s mut dyn FnMut(usize, &str),
    /// The result of request `i` (an error of one request does not stop the others).
    pub on_done: &'s mut dyn FnMut(usize, Result<Output>),
}

/// Runs `f` with the lane's expert in `models` (where [`Run`] looks for it) and its gate.
fn lend<T>(
    models: &mut Models,
    lane: &mut Lane,
    f: impl FnOnce(&mut Models, &mut dyn Gate) -> T,
) -> T {
    std::mem::swap(&mut models.expert, &mut lane.expert);
    let result = f(models, lane.gate.as_mut());
    std::mem::swap(&mut models.expert, &mut lane.expert);
    result
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
    mut experts: Vec<Box<dyn Expert>>,
    make_gate: &mut dyn FnMut(usize) -> Result<Box<dyn Gate>>,
    sinks: Sinks<'_>,
) -> Result<Vec<Box<dyn Expert>>> {
    let max_batch = experts.len();
    if max_batch == 0 {
        return Err(Error::InvalidConfig {
            name: "batch size",
            reason: "0 experts; at least 1 request must be in flight".into(),
        });
    }
    cfg.validate()?;
    reflection.validate()?;
    let mut batch = models.base.new_batch()?;
    let mut active: Vec<Active<'_>> = Vec::with_capacity(max_batch);
    let mut queue = requests.iter().enumerate();
    let mut out = ForwardOut::default();
    loop {
        while active.len() < max_batch {
            let Some((index, req)) = queue.next() else {
                break;
            };
            let gate = match make_gate(index) {
                Ok(gate) => gate,
                Err(e) => {
                    (sinks.on_done)(index, Err(e));
                    continue;
                }
            };
            let expert = experts
                .pop()
                .expect("fewer requests in flight than experts");
            let shared = Shared {
                models: &mut *models,
                batch: &mut batch,
                on_text: &mut *sinks.on_text,
            };
            match admit(index, req, Lane { gate, expert }, shared, reflection, cfg) {
                (Ok(Admitted::Decoding(a)), _) => active.push(*a),
                (Ok(Admitted::Finished(output)), lane) => {
                    experts.extend(lane);
                    (sinks.on_done)(index, Ok(*output));
                }
                (Err(e), lane) => {
                    experts.extend(lane);
                    (sinks.on_done)(index, Err(e));
                }
            }
        }
        if active.is_empty() {
            return Ok(experts);
        }
        let tokens: Vec<u32> = active.iter().map(|a| a.next).collect();
        let t = Instant::now();
        models.base.step_batch(&mut batch, &tokens, &mut out)?;
        let ms = t.elapsed().as_secs_f64() * 1e3;
        let shared = Shared {
            models: &mut *models,
            batch: &mut batch,
            on_text: &mut *sinks.on_text,
        };
        continue_rows(
            &mut active,
            shared,
            &out,
            ms,
            &mut *sinks.on_done,
            &mut experts,
        )?;
    }
}

/// What every request in flight shares: the models, the batch, the text sink.
struct Shared<'m> {
    models: &'m mut Models,
    batch: &'m mut Batch,
    on_text: &'m mut dyn FnMut(usize, &str),
}

/// How an admission ended.
enum Admitted<'a> {
    /// The request joined the batch.
    Decoding(Box<Active<'a>>),
    /// It ended before its first token was fed (cancelled, or a one-token answer).
    Finished(Box<Output>),
}

/// A request's next move, decided with its lane lent to the models.
enum Move<'a> {
    Feed(Box<Run<'a>>, u32),
    Finished(Box<Output>),
}

/// Prefills request `index` alone, reflects, lets the gate see the prompt, picks its first
/// token and, unless it already ended, adds it to the batch. The lane's expert comes back
/// unless the request joined the batch.
fn admit<'a>(
    index: usize,
    req: &'a Request,
    mut lane: Lane,
    shared: Shared<'_>,
    reflection: &mut Reflection,
    cfg: &'a DecodeConfig,
) -> (Result<Admitted<'a>>, Option<Box<dyn Expert>>) {
    let started = Instant::now();
    let Shared {
        models,
        batch,
        on_text,
    } = shared;
    let moved = lend(models, &mut lane, |models, gate| -> Result<Move<'a>> {
        let mut run = Run::prefill(req, models, gate, reflection, cfg)?;
        if run.cut_short() {
            let output = run.into_output(models, gate, FinishReason::Cancelled, started);
            return Ok(Move::Finished(Box::new(output)));
        }
        run.reflect(models, reflection)?;
        run.observe_prompt(gate)?;
        models.expert.begin(&req.prompt, req.raw)?;
        let next = run.next_token(models, gate, &mut |t| on_text(index, t))?;
        Ok(settle(run, next, models, gate, started))
    });
    let joined = moved.and_then(|m| match m {
        Move::Feed(run, next) => models
            .base
            .join(batch, run.cache())
            .map(|_| Move::Feed(run, next))
            .map_err(Error::from),
        finished => Ok(finished),
    });
    match joined {
        Ok(Move::Feed(run, next)) => {
            let active = Active {
                index,
                run: *run,
                lane,
                started,
                next,
            };
            (Ok(Admitted::Decoding(Box::new(active))), None)
        }
        Ok(Move::Finished(output)) => (Ok(Admitted::Finished(output)), Some(lane.expert)),
        Err(e) => (Err(e), Some(lane.expert)),
    }
}

/// A request's move after [`Run::next_token`]: feed the token, or finish with its output.
fn settle<'a>(
    run: Run<'a>,
    next: Next,
    models: &Models,
    gate: &dyn Gate,
    started: Instant,
) -> Move<'a> {
    match next {
        Next::Feed(token) => Move::Feed(Box::new(run), token),
        Next::Done(finish) => {
            let finish = run.filtered(finish);
            Move::Finished(Box::new(run.into_output(models, gate, finish, started)))
        }
    }
}

/// After a batched step: each request takes its row, runs its checks and picks its next
/// token. Finished requests leave the batch; a request whose answer was rolled back rejoins
/// it with its rebuilt cache.
fn continue_rows<'a>(
    active: &mut Vec<Active<'a>>,
    shared: Shared<'_>,
    out: &ForwardOut,
    ms: f64,
    on_done: &mut dyn FnMut(usize, Result<Output>),
    experts: &mut Vec<Box<dyn Expert>>,
) -> Result<()> {
    let Shared {
        models,
        batch,
        on_text,
    } = shared;
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
        let (index, started) = (a.index, a.started);
        let moved = lend(models, &mut a.lane, |models, gate| -> Result<Move<'a>> {
            let mut run = a.run;
            run.after_advance(models, gate, &mut |t| on_text(index, t))?;
            let next = run.next_token(models, gate, &mut |t| on_text(index, t))?;
            Ok(settle(run, next, models, gate, started))
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
                experts.push(a.lane.expert);
                on_done(index, Ok(*output));
            }
            Err(e) => {
                models.base.leave(batch, r)?;
                experts.push(a.lane.expert);
                on_done(index, Err(e));
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
