//! Prometheus metrics (`GET /metrics`, OpenMetrics text) kept with the `prometheus-client`
//! crate. HTTP answers are labelled with the route that matched (axum's `MatchedPath`), so
//! no list of routes is kept here; anything that matched no route is `unmatched`.

use std::fmt::Write as _;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use ngsd_decode::{Output, Phase};

const LATENCY_BOUNDS: [f64; 12] = [
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0,
];
const TTFT_BOUNDS: [f64; 10] = [0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
const RISK_BOUNDS: [f64; 10] = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0];
const BATCH_BOUNDS: [f64; 8] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0];

/// The label of requests that matched no route.
pub const UNMATCHED: &str = "unmatched";

/// How a generation ended, as counted in `ngsd_generations_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The answer was complete.
    Completed,
    /// The client went away.
    Cancelled,
    /// The request's deadline passed.
    TimedOut,
    /// The generation failed in the server.
    Failed,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Outcome::Completed => "completed",
            Outcome::Cancelled => "cancelled",
            Outcome::TimedOut => "timeout",
            Outcome::Failed => "error",
        }
    }
}

impl EncodeLabelValue for Outcome {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.label())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    path: String,
    status: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct GenerationLabels {
    endpoint: &'static str,
    outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct PhaseLabels {
    phase: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct EndpointLabels {
    endpoint: &'static str,
}

type Histograms = Family<EndpointLabels, Histogram, fn() -> Histogram>;

/// All metrics of one server.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    generations: Family<GenerationLabels, Counter>,
    prompt_tokens: Counter,
    generated_tokens: Counter,
    steered_tokens: Counter,
    gate_fired_requests: Counter,
    expert_forward_passes: Counter,
    gate_errors: Counter,
    rejected: Counter,
    queued: Gauge,
    running: Gauge,
    latency: Histograms,
    ttft: Histograms,
    risk: Histogram,
    batch_rows: Histogram,
    engine_seconds: Family<PhaseLabels, Counter<f64, AtomicU64>>,
    workers: Gauge,
}

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BOUNDS)
}

fn ttft_histogram() -> Histogram {
    Histogram::new(TTFT_BOUNDS)
}

impl Metrics {
    /// Metrics of a server with `workers` workers.
    pub fn new(workers: usize) -> Self {
        let m = Metrics {
            registry: Registry::with_prefix("ngsd"),
            requests: Family::default(),
            generations: Family::default(),
            prompt_tokens: Counter::default(),
            generated_tokens: Counter::default(),
            steered_tokens: Counter::default(),
            gate_fired_requests: Counter::default(),
            expert_forward_passes: Counter::default(),
            gate_errors: Counter::default(),
            rejected: Counter::default(),
            queued: Gauge::default(),
            running: Gauge::default(),
            latency: Family::new_with_constructor(latency_histogram),
            ttft: Family::new_with_constructor(ttft_histogram),
            risk: Histogram::new(RISK_BOUNDS),
            batch_rows: Histogram::new(BATCH_BOUNDS),
            engine_seconds: Family::default(),
            workers: Gauge::default(),
        };
        m.register(workers)
    }

    fn register(mut self, workers: usize) -> Self {
        let r = &mut self.registry;
        r.register(
            "http_requests",
            "HTTP answers by matched route and status code",
            self.requests.clone(),
        );
        r.register(
            "generations",
            "Generations by endpoint and how they ended",
            self.generations.clone(),
        );
        let counters = [
            ("prompt_tokens", "Prompt tokens read", &self.prompt_tokens),
            (
                "generated_tokens",
                "Tokens generated",
                &self.generated_tokens,
            ),
            (
                "steered_tokens",
                "Generated tokens the gate steered toward the expert",
                &self.steered_tokens,
            ),
            (
                "gate_fired_requests",
                "Generations in which the gate steered at least one token",
                &self.gate_fired_requests,
            ),
            (
                "expert_forward_passes",
                "Forward passes of the expert model (0 for the head expert)",
                &self.expert_forward_passes,
            ),
            (
                "gate_errors",
                "Gate errors handled by the failure policy",
                &self.gate_errors,
            ),
            (
                "rejected_requests",
                "Requests answered 429 because the queue was full",
                &self.rejected,
            ),
        ];
        for (name, help, counter) in counters {
            r.register(name, help, counter.clone());
        }
        r.register(
            "queued_requests",
            "Requests waiting for a worker (a client that leaves stops counting)",
            self.queued.clone(),
        );
        r.register(
            "running_requests",
            "Generations running now",
            self.running.clone(),
        );
        self.workers.set(i64::try_from(workers).unwrap_or(i64::MAX));
        r.register(
            "workers",
            "Generations that can run at once (serve-workers, fewer where an engine cannot batch)",
            self.workers.clone(),
        );
        r.register(
            "batch_rows",
            "Requests answered by each batched forward pass of the base model",
            self.batch_rows.clone(),
        );
        for phase in Phase::ALL {
            // Every phase is written from the start, at 0.
            let _ = self.engine_seconds.get_or_create(&PhaseLabels {
                phase: phase.label(),
            });
        }
        r.register(
            "engine_seconds",
            "Time the batching engines spent admitting requests (prefill, reflection, first token), in batched forward passes (step), and on each request's own work after a step (rows); the rest they waited for requests",
            self.engine_seconds.clone(),
        );
        r.register(
            "request_duration_seconds",
            "Time from admission to the last token of completed generations",
            self.latency.clone(),
        );
        r.register(
            "time_to_first_token_seconds",
            "Time from admission to the first text sent",
            self.ttft.clone(),
        );
        r.register(
            "reflection_risk",
            "Request risk from self-reflection (0-10)",
            self.risk.clone(),
        );
        self
    }

    /// One HTTP answer; `route` is the matched route pattern (or [`UNMATCHED`]).
    pub fn request(&self, route: &str, status: u16) {
        self.requests
            .get_or_create(&RequestLabels {
                path: route.to_string(),
                status,
            })
            .inc();
    }

    /// A request turned away because the queue was full.
    pub fn rejected(&self) {
        self.rejected.inc();
    }

    /// A job entered (+1) or left (-1) the queue.
    pub fn queued(&self, delta: i64) {
        self.queued.inc_by(delta);
    }

    /// Generations that can run at once, as the engines turned out.
    pub fn set_workers(&self, n: usize) {
        self.workers.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// A batched forward pass ran `rows` requests.
    pub fn batch_rows(&self, rows: usize) {
        self.batch_rows.observe(rows as f64);
    }

    /// A batching engine spent `time` on `phase`.
    pub fn engine_time(&self, phase: Phase, time: Duration) {
        self.engine_seconds
            .get_or_create(&PhaseLabels {
                phase: phase.label(),
            })
            .inc_by(time.as_secs_f64());
    }

    /// A worker started (+1) or finished (-1) a generation.
    pub fn running(&self, delta: i64) {
        self.running.inc_by(delta);
    }

    /// What a finished (or stopped) generation did.
    pub fn generation(&self, out: &Output) {
        let s = &out.summary;
        let n = |v: usize| u64::try_from(v).unwrap_or(u64::MAX);
        self.prompt_tokens.inc_by(n(out.prompt_tokens));
        self.generated_tokens.inc_by(n(out.tokens.len()));
        self.steered_tokens.inc_by(n(s.steered_tokens));
        if s.steered_tokens > 0 {
            self.gate_fired_requests.inc();
        }
        self.expert_forward_passes
            .inc_by(n(s.expert_forward_passes));
        self.gate_errors.inc_by(n(s.gate_errors));
        if let Some(risk) = s.reflection.risk {
            self.risk.observe(f64::from(risk));
        }
    }

    /// How a request's generation ended, with its latency and time to first token (seconds).
    pub fn outcome(
        &self,
        endpoint: &'static str,
        outcome: Outcome,
        latency: f64,
        ttft: Option<f64>,
    ) {
        self.generations
            .get_or_create(&GenerationLabels { endpoint, outcome })
            .inc();
        if outcome == Outcome::Completed {
            let labels = EndpointLabels { endpoint };
            self.latency.get_or_create(&labels).observe(latency);
            if let Some(t) = ttft {
                self.ttft.get_or_create(&labels).observe(t);
            }
        }
    }

    /// The exposition text (OpenMetrics).
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!("cannot encode the metrics: {e}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_names_and_labels_are_written() {
        let m = Metrics::new(2);
        m.request("/v1/models", 200);
        m.request(UNMATCHED, 404);
        m.request(UNMATCHED, 404);
        m.outcome("chat", Outcome::Completed, 0.3, Some(0.07));
        m.queued(1);
        m.batch_rows(3);
        m.engine_time(Phase::Step, Duration::from_millis(250));
        m.set_workers(3);
        let text = m.render();
        for line in [
            "ngsd_http_requests_total{path=\"/v1/models\",status=\"200\"} 1",
            "ngsd_http_requests_total{path=\"unmatched\",status=\"404\"} 2",
            "ngsd_generations_total{endpoint=\"chat\",outcome=\"completed\"} 1",
            "ngsd_request_duration_seconds_bucket{le=\"0.5\",endpoint=\"chat\"} 1",
            "ngsd_time_to_first_token_seconds_count{endpoint=\"chat\"} 1",
            "ngsd_queued_requests 1",
            "ngsd_workers 3",
            "ngsd_batch_rows_bucket{le=\"4.0\"} 1",
            "ngsd_batch_rows_sum 3.0",
            "ngsd_rejected_requests_total 0",
            "ngsd_engine_seconds_total{phase=\"step\"} 0.25",
            "ngsd_engine_seconds_total{phase=\"admit\"} 0.0",
            "ngsd_reflection_risk_count 0",
        ] {
            assert!(text.contains(line), "missing `{line}` in:\n{text}");
        }
    }
}
