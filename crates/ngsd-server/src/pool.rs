//! The worker pool: N OS threads, each owning one [`Engine`] (its own ONNX Runtime session,
//! gates and expert), pulling jobs from one queue. Admission is bounded by a semaphore of
//! `workers + queue` permits; a request that gets none is answered 429 by the caller.

use std::panic::AssertUnwindSafe;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use ngsd_decode::{Cancel, Output, Reflection, Request};

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
    /// The request cannot be served as sent (e.g. the prompt is longer than the context).
    BadRequest(String),
    /// Cancelled before a worker took it.
    CancelledInQueue,
    /// Something broke in the server.
    Internal(String),
}

/// One unit of work.
pub struct Job {
    /// The validated request.
    pub plan: Plan,
    /// Cancellation: set by the client going away or the deadline.
    pub cancel: Cancel,
    /// Where the worker reports.
    pub events: mpsc::UnboundedSender<Event>,
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
                    let engine = match factory(i) {
                        Ok(e) => e,
                        Err(e) => {
                            let mut reason = e.to_string();
                            let mut src = e.source();
                            while let Some(s) = src {
                                reason.push_str(&format!(": {s}"));
                                src = s.source();
                            }
                            let _ = ready_tx.send(Err(Error::Engine { worker: i, reason }));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok(Ready {
                        gates: engine.gates.keys().cloned().collect(),
                        default_gate: engine.default_gate.clone(),
                        reflection: engine.reflection.mode(),
                    }));
                    drop(ready_tx);
                    work(engine, &rx, &metrics);
                })
                .map_err(Error::Start)?;
            threads.push(handle);
        }
        drop(ready_tx);
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

fn work(mut engine: Engine, rx: &Mutex<Receiver<Job>>, metrics: &Metrics) {
    loop {
        let job = {
            let rx = rx.lock().unwrap_or_else(|e| e.into_inner());
            match rx.recv() {
                Ok(job) => job,
                Err(_) => return,
            }
        };
        metrics.queued(-1);
        if job.cancel.is_cancelled() || job.events.is_closed() {
            let _ = job.events.send(Event::Failed(Failure::CancelledInQueue));
            continue;
        }
        metrics.running(1);
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| run(&mut engine, &job)));
        metrics.running(-1);
        let event = match result {
            Ok(Ok(out)) => {
                metrics.generation(&out);
                Event::Done(Box::new(out))
            }
            Ok(Err(e)) => e,
            Err(panic) => {
                let what = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "unknown panic".into());
                tracing::error!("generation panicked: {what}");
                Event::Failed(Failure::Internal(format!("the generation failed: {what}")))
            }
        };
        let _ = job.events.send(event);
    }
}

fn run(engine: &mut Engine, job: &Job) -> Result<Output, Event> {
    let plan = &job.plan;
    let started = Instant::now();
    let gate_name = plan.gate.as_deref().unwrap_or(&engine.default_gate);
    let gate = engine.gates.get_mut(gate_name).ok_or_else(|| {
        Event::Failed(Failure::Internal(format!(
            "gate `{gate_name}` is not loaded"
        )))
    })?;
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
    let out = ngsd_decode::generate(
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
    .map_err(|e| {
        use ngsd_decode::Error as D;
        Event::Failed(match &e {
            D::Runtime(ngsd_runtime::Error::ContextOverflow { .. }) | D::InvalidConfig { .. } => {
                Failure::BadRequest(e.to_string())
            }
            _ => Failure::Internal(format!("the generation failed: {e}")),
        })
    })?;
    tracing::debug!(
        tokens = out.tokens.len(),
        ms = started.elapsed().as_millis() as u64,
        "generation finished"
    );
    Ok(out)
}
