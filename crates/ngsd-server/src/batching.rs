//! A worker's engine answering many requests at once: jobs from the queue become
//! [`Admission`]s of [`ngsd_decode::decode_batches`], which runs one forward pass of the base
//! model per token for all of them. Each request gets a fork of the gate it asked for and a
//! fork of the expert (gates and experts keep per-request state); its settings, α override,
//! streaming, cancellation and deadline are its own, as in the one-at-a-time path.
//!
//! An engine batches when its base model can ([`ngsd_runtime::Model::new_batch`]: fp32 and
//! q4 packages do), its expert forks (not a model expert) and every gate forks (plugin gates
//! do). Otherwise it answers one request at a time.

use std::panic::AssertUnwindSafe;
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};

use ngsd_decode::{Admission, Admissions, Expert, Phase, panic_message};

use crate::config::Engine;
use crate::metrics::Metrics;
use crate::pool::{Event, Failure, Job, Loaded, classify, request, settings, take_job};

/// The expert forks for a batch of `slots` requests, or why the engine cannot batch (none
/// for one slot).
pub(crate) fn forks(engine: &Engine, slots: usize) -> Result<Vec<Box<dyn Expert>>, String> {
    if slots <= 1 {
        return Ok(Vec::new());
    }
    let models = &engine.models;
    models.base.new_batch().map_err(|e| e.to_string())?;
    for (name, gate) in &engine.gates {
        match gate.fork() {
            Ok(Some(_)) => {}
            Ok(None) => return Err(format!("the gate `{name}` cannot make a second instance")),
            Err(e) => return Err(format!("the gate `{name}` failed to fork: {e}")),
        }
    }
    let mut experts = Vec::with_capacity(slots);
    for _ in 0..slots {
        match models.expert.fork(&models.base) {
            Ok(Some(e)) => experts.push(e),
            Ok(None) => return Err("the expert cannot fork (a model expert)".into()),
            Err(e) => return Err(format!("forking the expert failed: {e}")),
        }
    }
    Ok(experts)
}

/// Answers jobs from `rx` in batches until the queue closes. `Err` when the batch failed as a
/// whole (the forward pass, or a panic outside a request's own code); the engine must then
/// not be reused.
pub(crate) fn serve(
    loaded: &mut Loaded,
    rx: &Mutex<Receiver<Job>>,
    metrics: &Arc<Metrics>,
) -> Result<(), String> {
    let experts = std::mem::take(&mut loaded.experts);
    let engine = &mut loaded.engine;
    let mut source = Jobs {
        rx,
        engine: EngineView {
            gates: &engine.gates,
            default_gate: &engine.default_gate,
            decode: &engine.decode,
            expert_label: &loaded.expert_label,
        },
        metrics,
    };
    let (models, reflection, decode) = (&mut engine.models, &mut engine.reflection, &engine.decode);
    let ran = std::panic::catch_unwind(AssertUnwindSafe(|| {
        ngsd_decode::decode_batches(&mut source, models, reflection, decode, experts)
    }));
    match ran {
        Ok(Ok(experts)) => {
            loaded.experts = experts;
            Ok(())
        }
        Ok(Err(e)) => Err(e.to_string()),
        Err(panic) => Err(format!("panicked: {}", panic_message(panic.as_ref()))),
    }
}

/// What admitting a job reads of the engine.
struct EngineView<'e> {
    gates: &'e std::collections::BTreeMap<String, Box<dyn ngsd_gate::Gate>>,
    default_gate: &'e str,
    decode: &'e ngsd_decode::DecodeConfig,
    expert_label: &'e str,
}

/// The queue as an admission source.
struct Jobs<'e> {
    rx: &'e Mutex<Receiver<Job>>,
    engine: EngineView<'e>,
    metrics: &'e Arc<Metrics>,
}

impl Admissions<'static> for Jobs<'_> {
    fn next(&mut self, idle: bool) -> Option<Admission<'static>> {
        loop {
            let job = take_job(self.rx, idle).ok()??;
            if let Some(admission) = self.admit(job) {
                return Some(admission);
            }
        }
    }

    fn stepped(&mut self, rows: usize) {
        self.metrics.batch_rows(rows);
    }

    fn spent(&mut self, phase: Phase, time: std::time::Duration) {
        self.metrics.engine_time(phase, time);
    }
}

/// Counts a generation as running until dropped (with its request, however it ends).
struct Running(Arc<Metrics>);

impl Running {
    fn start(metrics: &Arc<Metrics>) -> Running {
        metrics.running(1);
        Running(Arc::clone(metrics))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0.running(-1);
    }
}

impl Jobs<'_> {
    /// The job as an admission with its own gate, or `None` when its gate cannot be made
    /// (the client is told).
    fn admit(&self, job: Job) -> Option<Admission<'static>> {
        let Job {
            plan,
            cancel,
            events,
            ticket: _,
        } = job;
        let view = &self.engine;
        let name = plan.gate.as_deref().unwrap_or(view.default_gate);
        let forked = match view.gates.get(name).map(|g| g.fork()) {
            Some(Ok(Some(gate))) => Ok(gate),
            Some(Ok(None)) => Err(format!("the gate `{name}` cannot make a second instance")),
            Some(Err(e)) => Err(format!("the gate `{name}` failed to fork: {e}")),
            None => Err(format!("gate `{name}` is not loaded")),
        };
        let gate = match forked {
            Ok(gate) => gate,
            Err(why) => {
                let _ = events.send(Event::Failed(Failure::Internal(why)));
                return None;
            }
        };
        let running = Running::start(self.metrics);
        let (text_events, text_cancel) = (events.clone(), cancel.clone());
        let (metrics, label) = (Arc::clone(self.metrics), view.expert_label.to_string());
        Some(Admission {
            request: request(&plan, &cancel),
            gate,
            cfg: Some(settings(view.decode, &plan)),
            alpha: plan.alpha,
            on_text: Box::new(move |piece| {
                if text_events.send(Event::Text(piece.to_string())).is_err() {
                    // Nobody is listening any more: the client went away.
                    text_cancel.cancel();
                }
            }),
            on_done: Box::new(move |result| {
                let event = match result {
                    Ok(mut out) => {
                        out.summary.expert = label;
                        metrics.generation(&out);
                        Event::Done(Box::new(out))
                    }
                    Err(e) => Event::Failed(classify(e)),
                };
                drop(running);
                let _ = events.send(event);
            }),
        })
    }
}
