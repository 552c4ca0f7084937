//! Many requests answered together: the base model's decode steps of every answer in flight run
//! as one forward pass ([`ngsd_runtime::Batch`]), and everything else stays per request, exactly
//! as in [`crate::generate`]:
//! - the prefill, reflection, the gate's view of the prompt, the expert's start;
//! - per token: the gate's decision, the expert, steering, the trace, the answer monitor, early
//!   stop, stop strings and cancellation;
//! - a monitor rollback rebuilds the request's cache alone, and the request rejoins the batch.
//!
//! Each request has its own [`Lane`]: a gate and an expert of its own, since both keep
//! per-request state. The expert runs per request (a head expert is a few matrix-vector
//! products; a prompt or model expert runs its own forward passes alone).

use std::time::Instant;

use ngsd_gate::Gate;
use ngsd_runtime::{Batch, FinishReason, ForwardOut};

use crate::assess::Reflection;
use crate::decoder::{DecodeConfig, Models, Output, Request};
use crate::error::{Error, Result};
use crate::expert::Expert;
use crate::run::{Next, Run};

/// What one request decodes with, of its own.
pub struct Lane {
    /// The request's gate instance.
    pub gate: Box<dyn Gate>,
    /// The request's expert instance.
    pub expert: Box<dyn Expert>,
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

/// Answers `requests` with at most `max_batch` in flight; `make_lane(i)` gives request `i` its
/// gate and expert when it is admitted. Results arrive through `sinks` as requests finish, in
/// any order. Returns an error only when the batched forward pass itself fails.
pub fn generate_batch(
    requests: &[Request],
    models: &mut Models,
    reflection: &mut Reflection,
    cfg: &DecodeConfig,
    max_batch: usize,
    make_lane: &mut dyn FnMut(usize) -> Result<Lane>,
    sinks: Sinks<'_>,
) -> Result<()> {
    if max_batch == 0 {
        return Err(Error::InvalidConfig {
            name: "batch size",
            reason: "0; at least 1 request must be in flight".into(),
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
            let admitted = make_lane(index).and_then(|lane| {
                let shared = Shared {
                    models: &mut *models,
                    batch: &mut batch,
                    on_text: &mut *sinks.on_text,
                };
                admit(index, req, lane, shared, reflection, cfg)
            });
            match admitted {
                Ok(Admitted::Decoding(a)) => active.push(*a),
                Ok(Admitted::Finished(output)) => (sinks.on_done)(index, Ok(*output)),
                Err(e) => (sinks.on_done)(index, Err(e)),
            }
        }
        if active.is_empty() {
            return Ok(());
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
        continue_rows(&mut active, shared, &out, ms, &mut *sinks.on_done)?;
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
/// token and, unless it already ended, adds it to the batch.
fn admit<'a>(
    index: usize,
    req: &'a Request,
    mut lane: Lane,
    shared: Shared<'_>,
    reflection: &mut Reflection,
    cfg: &'a DecodeConfig,
) -> Result<Admitted<'a>> {
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
    })?;
    match moved {
        Move::Finished(output) => Ok(Admitted::Finished(output)),
        Move::Feed(run, next) => {
            models.base.join(batch, run.cache())?;
            Ok(Admitted::Decoding(Box::new(Active {
                index,
                run: *run,
                lane,
                started,
                next,
            })))
        }
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
                on_done(index, Ok(*output));
            }
            Err(e) => {
                models.base.leave(batch, r)?;
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
