//! The worker pool: N OS threads, each owning one [`Engine`] (its own ONNX Runtime session,
//! gates and expert), pulling jobs from one queue. Admission is bounded by a semaphore of
//! `workers + queue` permits; a request that gets none is answered 429 by the caller.
//!
//! A generation that panics leaves its engine in an unknown state (half-written KV caches,
//! gate state), so the worker drops that engine and builds a new one before its next job.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use ngsd_decode::{Cancel, Output, Reflection, Request};
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
}

/// An engine as a worker holds it: gates under the names clients use, and the expert's
/// public label.
struct Loaded {
    engine: Engine,
    expert_label: String,
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
/// rather than answered to clients).
fn load(factory: &EngineFactory, i: usize) -> Result<Loaded, Error> {
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
    Ok(Loaded {
        engine,
        expert_label,
    })
}

impl Pool {
    /// Starts `workers` threads, each building its engine with `factory`, and waits until all
    /// are ready (or one fails).
    pub fn start(
        workers: usize,
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
                    let loaded = match load(factory.as_ref(), i) {
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
                    }));
                    drop(ready_tx);
                    Worker {
                        index: i,
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
        let ready = wait_ready(&ready_rx, workers)?;
        Ok(Pool {
            jobs: Mutex::new(Some(tx)),
            permits: Arc::new(Semaphore::new(workers + queue)),
            threads: Mutex::new(threads),
            gates: ready.gates,
            default_gate: ready.default_gate,
            reflection: ready.reflection,
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

/// Waits for every worker's first engine; the first failure stops the start.
fn wait_ready(ready_rx: &Receiver<Result<Ready, Error>>, workers: usize) -> Result<Ready, Error> {
    let mut first: Option<Ready> = None;
    for _ in 0..workers {
        match ready_rx.recv() {
            Ok(Ok(r)) => {
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
    Ok(ready)
}

/// One worker thread's state.
struct Worker {
    index: usize,
    factory: Arc<EngineFactory>,
    metrics: Arc<Metrics>,
    /// `None` after a panic until a rebuild succeeds.
    loaded: Option<Loaded>,
}

impl Worker {
    fn work(mut self, rx: &Mutex<Receiver<Job>>) {
        loop {
            let job = {
                let rx = rx.lock().unwrap_or_else(|e| e.into_inner());
                match rx.recv() {
                    Ok(job) => job,
                    Err(_) => return,
                }
            };
            job.ticket.leave();
            if job.cancel.is_cancelled() || job.events.is_closed() {
                let _ = job.events.send(Event::Failed(Failure::CancelledInQueue));
                continue;
            }
            let event = self.serve(&job);
            let _ = job.events.send(event);
        }
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
                let what = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "unknown panic".into());
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
        match load(self.factory.as_ref(), self.index) {
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
    let mut cfg = engine.decode.clone();
    cfg.generate = plan.generate.clone();
    cfg.trace = plan.trace;
    let req = Request {
        prompt: plan.prompt.clone(),
        system: plan.system.clone(),
        raw: plan.raw,
        history: plan.history.clone(),
        cancel: Some(job.cancel.clone()),
    };
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

/// Whose fault a decoding error is: only a prompt the model cannot take is the client's;
/// everything else (gates, experts, configuration, the runtime) is the server's.
fn classify(e: ngsd_decode::Error) -> Failure {
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
