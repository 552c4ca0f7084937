//! The worker pool: a few OS threads, each owning one [`Engine`] (its own ONNX Runtime session,
//! gates and expert), pulling jobs from one queue. An engine that can batch (see
//! [`crate::batching`]) answers up to its share of `serve-workers` requests at once in one
//! forward pass per token; one that cannot answers one at a time. Admission is bounded by a
//! semaphore of `slots + queue` permits; a request that gets none is answered 429 by the
//! caller.
//!
//! A generation that panics outside a request's own code leaves its engine in an unknown state
//! (half-written KV caches, gate state), so the worker drops that engine and builds a new one
//! before its next job.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, TryRecvError, channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use ngsd_decode::{Cancel, DecodeConfig, Expert, Output, Reflection, Request};
use ngsd_gate::{Gate, Needs};

use crate::config::{Engine, EngineFactory};
use crate::error::Error;
use crate::metrics::Metrics;
use crate::openai::Plan;

/// What a worker reports back about a job.
#[derive(Debug)]
pub enum Event {
    /// A piece of answer text, sent only once the gate has decided on its tokens.
    Text(String),
    /// The generation ended (also when cancelled: then `finish` is `Cancelled`).
    Done(Box<Output>),
    /// The generation failed before or while running.
    Failed(Failure),
}

/// Why a job failed.
#[derive(Debug)]
pub enum Failure {
    /// The request cannot be served as sent (e.g. the prompt is longer than the context);
    /// the message is for the client.
    BadRequest(String),
    /// Cancelled before a worker took it.
    CancelledInQueue,
    /// Something broke in the server; the detail is for the log only.
    Internal(String),
}

/// A request's place in the queue gauge: counted from submission until a worker takes the
/// job or the client goes away, whichever comes first (counted down exactly once).
#[derive(Debug)]
pub struct QueueTicket {
    left: AtomicBool,
    metrics: Arc<Metrics>,
}

impl QueueTicket {
    /// Counts a request into the queue.
    pub fn enter(metrics: Arc<Metrics>) -> Arc<QueueTicket> {
        metrics.queued(1);
        Arc::new(QueueTicket {
            left: AtomicBool::new(false),
            metrics,
        })
    }

    /// Counts it out (a second call does nothing).
    pub fn leave(&self) {
        if !self.left.swap(true, Ordering::AcqRel) {
            self.metrics.queued(-1);
        }
    }
}

/// One unit of work.
pub struct Job {
    /// The validated request.
    pub plan: Plan,
    /// Cancellation: set by the client going away or the deadline.
    pub cancel: Cancel,
    /// Where the worker reports.
    pub events: mpsc::UnboundedSender<Event>,
    /// The queue gauge's count of this request.
    pub ticket: Arc<QueueTicket>,
}

/// What the handlers see of the pool.
pub struct Pool {
    jobs: Mutex<Option<Sender<Job>>>,
    permits: Arc<Semaphore>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// Gate names of the engines (the same on every worker).
    pub gates: Vec<String>,
    /// The default gate.
    pub default_gate: String,
    /// The engines' reflection mode.
    pub reflection: &'static str,
    /// Generations that run at once, all engines together.
    pub slots: usize,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("gates", &self.gates)
            .finish_non_exhaustive()
    }
}

struct Ready {
    gates: Vec<String>,
    default_gate: String,
    reflection: &'static str,
    /// Generations this engine runs at once.
    slots: usize,
}

/// An engine as a worker holds it: gates under the names clients use, the expert's public
/// label, and the expert forks of a batch (empty: the engine answers one request at a time).
pub(crate) struct Loaded {
    pub(crate) engine: Engine,
    pub(crate) expert_label: String,
    pub(crate) experts: Vec<Box<dyn Expert>>,
}

impl Loaded {
    /// Generations this engine runs at once.
    fn slots(&self) -> usize {
        self.experts.len().max(1)
    }
}

/// The name clients use for a gate: its configured name, or, when it was configured by
/// path, the name the plugin declares (paths stay private to the server).
fn public_gate_name(key: &str, gate: &dyn Gate) -> String {
    let is_path =
        key.contains(['/', '\\']) || [".so", ".dylib", ".dll"].iter().any(|e| key.ends_with(e));
    if is_path {
        gate.name().to_string()
    } else {
        key.to_string()
    }
}

/// The expert as clients see it: its kind (`head`, `prompt`, `model`), never a file path.
fn public_expert_label(describe: &str) -> String {
    describe
        .split_once(':')
        .map_or(describe, |(kind, _)| kind)
        .to_string()
}

/// Builds worker `i`'s engine and checks that it can serve: a gate or probe that reads the
/// hidden state needs a model that exports it (a server misconfiguration, refused here
/// rather than answered to clients). With `slots` above 1 it also makes the expert forks of
/// a batch, if the engine can batch.
fn load(factory: &EngineFactory, i: usize, slots: usize) -> Result<Loaded, Error> {
    let mut engine = factory(i).map_err(|e| {
        let mut reason = e.to_string();
        let mut src = e.source();
        while let Some(s) = src {
            reason.push_str(&format!(": {s}"));
            src = s.source();
        }
        Error::Engine { worker: i, reason }
    })?;
    let hidden = engine.models.base.has_hidden_state();
    let probe = match &engine.reflection {
        Reflection::Probe { gate, .. } => {
            Some(("the reflection probe", gate.as_ref() as &dyn Gate))
        }
        _ => None,
    };
    let gates = engine
        .gates
        .values()
        .map(|g| ("gate", g.as_ref() as &dyn Gate));
    for (what, gate) in gates.chain(probe) {
        if gate.needs().contains(Needs::HIDDEN) && !hidden {
            return Err(Error::Engine {
                worker: i,
                reason: format!(
                    "{what} `{}` reads the hidden state, but the model has no `last_hidden_state` output; add it with `cargo xtask export-hidden <model.onnx>`, or configure a gate and reflection that do not need it",
                    gate.name()
                ),
            });
        }
    }
    let default_key = engine.default_gate.clone();
    let mut default_gate = default_key.clone();
    engine.gates = std::mem::take(&mut engine.gates)
        .into_iter()
        .map(|(key, g)| {
            let name = public_gate_name(&key, g.as_ref());
            if key == default_key {
                default_gate = name.clone();
            }
            (name, g)
        })
        .collect();
    engine.default_gate = default_gate;
    let expert_label = public_expert_label(&engine.models.expert.describe());
    let experts = match crate::batching::forks(&engine, slots) {
        Ok(experts) => {
            if slots > 1 {
                tracing::info!(
                    worker = i,
                    "answers up to {slots} requests at once, batched"
                );
            }
            experts
        }
        Err(why) => {
            tracing::warn!(
                worker = i,
                "answers one request at a time ({why}); serve-batch 1 runs serve-workers engines side by side instead"
            );
            Vec::new()
        }
    };
    Ok(Loaded {
        engine,
        expert_label,
        experts,
    })
}

impl Pool {
    /// Starts `workers` threads, each building its engine with `factory` to run up to `slots`
    /// generations at once, and waits until all are ready (or one fails).
    pub fn start(
        (workers, slots): (usize, usize),
        queue: usize,
        factory: Arc<EngineFactory>,
        metrics: Arc<Metrics>,
    ) -> Result<Pool, Error> {
        let (tx, rx) = channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let (ready_tx, ready_rx) = channel::<Result<Ready, Error>>();
        let mut threads = Vec::new();
        for i in 0..workers {
            let rx = Arc::clone(&rx);
            let factory = Arc::clone(&factory);
            let metrics = Arc::clone(&metrics);
            let ready_tx = ready_tx.clone();
            let handle = std::thread::Builder::new()
                .name(format!("ngsd-worker-{i}"))
                .spawn(move || {
                    let loaded = match load(factory.as_ref(), i, slots) {
                        Ok(l) => l,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok(Ready {
                        gates: loaded.engine.gates.keys().cloned().collect(),
                        default_gate: loaded.engine.default_gate.clone(),
                        reflection: loaded.engine.reflection.mode(),
                        slots: loaded.slots(),
                    }));
                    drop(ready_tx);
                    Worker {
                        index: i,
                        slots,
                        factory,
                        metrics,
                        loaded: Some(loaded),
                    }
                    .work(&rx);
                })
                .map_err(Error::Start)?;
            threads.push(handle);
        }
        drop(ready_tx);
        let (ready, slots) = wait_ready(&ready_rx, workers)?;
        Ok(Pool {
            jobs: Mutex::new(Some(tx)),
            permits: Arc::new(Semaphore::new(slots + queue)),
            threads: Mutex::new(threads),
            gates: ready.gates,
            default_gate: ready.default_gate,
            reflection: ready.reflection,
            slots,
        })
    }

    /// A place in the pool (running or queued), or `None` when it is full.
    pub fn admit(&self) -> Option<OwnedSemaphorePermit> {
        Arc::clone(&self.permits).try_acquire_owned().ok()
    }

    /// Queues a job; `false` only while shutting down.
    pub fn submit(&self, job: Job) -> bool {
        let jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        jobs.as_ref().is_some_and(|tx| tx.send(job).is_ok())
    }

    /// Lets the workers finish what is queued, then joins them.
    pub fn shutdown(&self) {
        self.jobs.lock().unwrap_or_else(|e| e.into_inner()).take();
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        for t in threads {
            let _ = t.join();
        }
    }
}

/// Waits for every worker's first engine; the first failure stops the start. Returns the
/// first engine's description and the slots of all.
fn wait_ready(
    ready_rx: &Receiver<Result<Ready, Error>>,
    workers: usize,
) -> Result<(Ready, usize), Error> {
    let mut first: Option<Ready> = None;
    let mut slots = 0;
    for _ in 0..workers {
        match ready_rx.recv() {
            Ok(Ok(r)) => {
                slots += r.slots;
                first.get_or_insert(r);
            }
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                return Err(Error::Engine {
                    worker: 0,
                    reason: "a worker thread ended while loading".into(),
                });
            }
        }
    }
    let ready = first.ok_or_else(|| Error::InvalidConfig {
        name: "serve-workers",
        reason: "0; at least one worker must generate".into(),
    })?;
    if !ready.gates.contains(&ready.default_gate) {
        return Err(Error::Engine {
            worker: 0,
            reason: format!(
                "the default gate `{}` is not among the loaded gates",
                ready.default_gate
            ),
        });
    }
    Ok((ready, slots))
}

/// One worker thread's state.
struct Worker {
    index: usize,
    /// Generations its engine may run at once.
    slots: usize,
    factory: Arc<EngineFactory>,
    metrics: Arc<Metrics>,
    /// `None` after a panic until a rebuild succeeds.
    loaded: Option<Loaded>,
}

/// Takes a job off the queue for an engine: waiting for one when `wait`, else only if one is
/// there now and no idle engine is waiting for it. Cancelled jobs are answered and skipped.
/// `Err(())` once the queue is closed (shutdown) and empty.
pub(crate) fn take_job(rx: &Mutex<Receiver<Job>>, wait: bool) -> Result<Option<Job>, ()> {
    loop {
        let job = if wait {
            let rx = rx.lock().unwrap_or_else(|e| e.into_inner());
            rx.recv().map_err(|_| ())?
        } else {
            // An idle engine holds the lock while it waits: the job is its.
            let Ok(rx) = rx.try_lock() else {
                return Ok(None);
            };
            match rx.try_recv() {
                Ok(job) => job,
                Err(TryRecvError::Empty) => return Ok(None),
                Err(TryRecvError::Disconnected) => return Err(()),
            }
        };
        job.ticket.leave();
        if job.cancel.is_cancelled() || job.events.is_closed() {
            let _ = job.events.send(Event::Failed(Failure::CancelledInQueue));
            continue;
        }
        return Ok(Some(job));
    }
}

impl Worker {
    fn work(mut self, rx: &Mutex<Receiver<Job>>) {
        loop {
            let batched = self.loaded.as_ref().is_some_and(|l| !l.experts.is_empty());
            if batched {
                if !self.serve_batches(rx) {
                    return;
                }
                continue;
            }
            let Ok(Some(job)) = take_job(rx, true) else {
                return;
            };
            let event = self.serve(&job);
            let _ = job.events.send(event);
        }
    }

    /// Answers jobs in batches until the queue closes (`false`), or until the batch failed as
    /// a whole (`true`, with a new engine): then its requests in flight end without an answer
    /// (their clients get a 500) and the failure is logged.
    fn serve_batches(&mut self, rx: &Mutex<Receiver<Job>>) -> bool {
        let Some(loaded) = self.loaded.as_mut() else {
            return true;
        };
        let failure = match crate::batching::serve(loaded, rx, &self.metrics) {
            Ok(()) => return false,
            Err(failure) => failure,
        };
        tracing::error!(worker = self.index, "the batch failed: {failure}");
        self.loaded = None;
        self.rebuild();
        true
    }

    /// Runs one job on this worker's engine (rebuilding the engine first if a panic dropped
    /// it), catching panics.
    fn serve(&mut self, job: &Job) -> Event {
        if self.loaded.is_none() {
            self.rebuild();
        }
        let Some(loaded) = self.loaded.as_mut() else {
            return Event::Failed(Failure::Internal(format!(
                "worker {} has no engine: rebuilding it after a panic failed",
                self.index
            )));
        };
        self.metrics.running(1);
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| run(loaded, job)));
        self.metrics.running(-1);
        match result {
            Ok(Ok(out)) => {
                self.metrics.generation(&out);
                Event::Done(Box::new(out))
            }
            Ok(Err(failure)) => Event::Failed(failure),
            Err(panic) => {
                let what = ngsd_decode::panic_message(panic.as_ref());
                // The engine may be half-way through a step: never reuse it.
                self.loaded = None;
                self.rebuild();
                Event::Failed(Failure::Internal(format!(
                    "the generation panicked: {what}"
                )))
            }
        }
    }

    fn rebuild(&mut self) {
        tracing::warn!(worker = self.index, "building a new engine");
        match load(self.factory.as_ref(), self.index, self.slots) {
            Ok(l) => self.loaded = Some(l),
            Err(e) => tracing::error!("{e}"),
        }
    }
}

fn run(loaded: &mut Loaded, job: &Job) -> Result<Output, Failure> {
    let engine = &mut loaded.engine;
    let plan = &job.plan;
    let started = Instant::now();
    let gate_name = plan.gate.as_deref().unwrap_or(&engine.default_gate);
    let gate = engine
        .gates
        .get_mut(gate_name)
        .ok_or_else(|| Failure::Internal(format!("gate `{gate_name}` is not loaded")))?;
    let mut fixed;
    let reflection = match plan.alpha {
        Some(a) => {
            fixed = Reflection::Fixed(a);
            &mut fixed
        }
        None => &mut engine.reflection,
    };
    let cfg = settings(&engine.decode, plan);
    let req = request(plan, &job.cancel);
    let events = &job.events;
    let cancel = &job.cancel;
    let mut out = ngsd_decode::generate(
        &req,
        &mut engine.models,
        gate.as_mut(),
        reflection,
        &cfg,
        |piece| {
            if events.send(Event::Text(piece.to_string())).is_err() {
                // Nobody is listening any more: the client went away.
                cancel.cancel();
            }
        },
    )
    .map_err(classify)?;
    out.summary.expert = loaded.expert_label.clone();
    tracing::debug!(
        tokens = out.tokens.len(),
        ms = started.elapsed().as_millis() as u64,
        "generation finished"
    );
    Ok(out)
}

/// The engine's decoding settings with the request's token budget, sampling, stop strings
/// and trace.
pub(crate) fn settings(decode: &DecodeConfig, plan: &Plan) -> DecodeConfig {
    let mut cfg = decode.clone();
    cfg.generate = plan.generate.clone();
    cfg.trace = plan.trace;
    cfg
}

/// The decoder's request for a plan.
pub(crate) fn request(plan: &Plan, cancel: &Cancel) -> Request {
    Request {
        prompt: plan.prompt.clone(),
        system: plan.system.clone(),
        raw: plan.raw,
        history: plan.history.clone(),
        cancel: Some(cancel.clone()),
    }
}

/// Whose fault a decoding error is: only a prompt the model cannot take is the client's;
/// everything else (gates, experts, configuration, the runtime) is the server's.
pub(crate) fn classify(e: ngsd_decode::Error) -> Failure {
    use ngsd_decode::Error as D;
    match &e {
        D::Runtime(ngsd_runtime::Error::ContextOverflow { .. })
        | D::InvalidConfig { name: "prompt", .. } => Failure::BadRequest(e.to_string()),
        _ => Failure::Internal(format!("the generation failed: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expert_labels_drop_paths() {
        for (describe, label) in [
            ("head:/srv/models/expert.safetensors", "head"),
            ("model:C:\\models\\expert", "model"),
            ("prompt", "prompt"),
        ] {
            assert_eq!(public_expert_label(describe), label);
        }
    }

    #[test]
    fn the_queue_ticket_counts_down_once() {
        let metrics = Arc::new(Metrics::new(1));
        let t = QueueTicket::enter(Arc::clone(&metrics));
        t.leave();
        t.leave();
        assert!(metrics.render().contains("ngsd_queued_requests 0"));
    }
}
