//! Prometheus metrics in the text exposition format (`GET /metrics`): counters, gauges and
//! histograms kept in memory, written out on each scrape.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use ngsd_decode::Output;

/// A histogram with fixed upper bounds.
#[derive(Debug)]
struct Histogram {
    bounds: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            counts: vec![0; bounds.len()],
            sum: 0.0,
            count: 0,
        }
    }

    fn observe(&mut self, v: f64) {
        for (c, b) in self.counts.iter_mut().zip(self.bounds) {
            if v <= *b {
                *c += 1;
            }
        }
        self.sum += v;
        self.count += 1;
    }

    fn write(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (c, b) in self.counts.iter().zip(self.bounds) {
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {c}");
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
            self.count
        );
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum);
        let _ = writeln!(out, "{name}_count{braces} {}", self.count);
    }
}

const LATENCY_BOUNDS: &[f64] = &[
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0,
];
const TTFT_BOUNDS: &[f64] = &[0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
const RISK_BOUNDS: &[f64] = &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0];

/// How a generation ended, as counted in `ngsd_generations_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    /// The answer was complete.
    Completed,
    /// The client went away.
    Cancelled,
    /// The request's deadline passed.
    TimedOut,
    /// The generation failed.
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

#[derive(Debug)]
struct Histograms {
    latency: BTreeMap<&'static str, Histogram>,
    ttft: BTreeMap<&'static str, Histogram>,
    risk: Histogram,
}

/// All metrics of one server.
#[derive(Debug)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    generations: Mutex<BTreeMap<(&'static str, Outcome), u64>>,
    histograms: Mutex<Histograms>,
    prompt_tokens: AtomicU64,
    generated_tokens: AtomicU64,
    steered_tokens: AtomicU64,
    gate_fired_requests: AtomicU64,
    expert_forward_passes: AtomicU64,
    gate_errors: AtomicU64,
    rejected: AtomicU64,
    queued: AtomicI64,
    running: AtomicI64,
    workers: usize,
}

impl Metrics {
    /// Empty metrics for a server with `workers` workers.
    pub fn new(workers: usize) -> Self {
        Metrics {
            requests: Mutex::default(),
            generations: Mutex::default(),
            histograms: Mutex::new(Histograms {
                latency: BTreeMap::new(),
                ttft: BTreeMap::new(),
                risk: Histogram::new(RISK_BOUNDS),
            }),
            prompt_tokens: AtomicU64::new(0),
            generated_tokens: AtomicU64::new(0),
            steered_tokens: AtomicU64::new(0),
            gate_fired_requests: AtomicU64::new(0),
            expert_forward_passes: AtomicU64::new(0),
            gate_errors: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            queued: AtomicI64::new(0),
            running: AtomicI64::new(0),
            workers,
        }
    }

    /// One HTTP answer.
    pub fn request(&self, path: &str, status: u16) {
        // Unknown paths are folded into one label so scanners cannot grow the map.
        let path = match path {
            "/v1/chat/completions" | "/v1/completions" | "/v1/models" | "/healthz" | "/metrics" => {
                path
            }
            _ => "other",
        };
        let mut m = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        *m.entry((path.to_string(), status)).or_default() += 1;
    }

    /// A request turned away because the queue was full.
    pub fn rejected(&self) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
    }

    /// A job entered (+1) or left (-1) the queue.
    pub fn queued(&self, delta: i64) {
        self.queued.fetch_add(delta, Ordering::Relaxed);
    }

    /// A worker started (+1) or finished (-1) a generation.
    pub fn running(&self, delta: i64) {
        self.running.fetch_add(delta, Ordering::Relaxed);
    }

    /// What a finished (or stopped) generation did.
    pub fn generation(&self, out: &Output) {
        let s = &out.summary;
        self.prompt_tokens
            .fetch_add(out.prompt_tokens as u64, Ordering::Relaxed);
        self.generated_tokens
            .fetch_add(out.tokens.len() as u64, Ordering::Relaxed);
        self.steered_tokens
            .fetch_add(s.steered_tokens as u64, Ordering::Relaxed);
        if s.steered_tokens > 0 {
            self.gate_fired_requests.fetch_add(1, Ordering::Relaxed);
        }
        self.expert_forward_passes
            .fetch_add(s.expert_forward_passes as u64, Ordering::Relaxed);
        self.gate_errors
            .fetch_add(s.gate_errors as u64, Ordering::Relaxed);
        if let Some(risk) = s.reflection.risk {
            let mut h = self.histograms.lock().unwrap_or_else(|e| e.into_inner());
            h.risk.observe(f64::from(risk));
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
        {
            let mut g = self.generations.lock().unwrap_or_else(|e| e.into_inner());
            *g.entry((endpoint, outcome)).or_default() += 1;
        }
        if outcome == Outcome::Completed {
            let mut h = self.histograms.lock().unwrap_or_else(|e| e.into_inner());
            h.latency
                .entry(endpoint)
                .or_insert_with(|| Histogram::new(LATENCY_BOUNDS))
                .observe(latency);
            if let Some(t) = ttft {
                h.ttft
                    .entry(endpoint)
                    .or_insert_with(|| Histogram::new(TTFT_BOUNDS))
                    .observe(t);
            }
        }
    }

    /// The exposition text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let counter = |out: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        };
        let gauge = |out: &mut String, name: &str, help: &str, v: i64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        };
        let _ = writeln!(
            out,
            "# HELP ngsd_http_requests_total HTTP answers by path and status code.\n# TYPE ngsd_http_requests_total counter"
        );
        for ((path, status), n) in self
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "ngsd_http_requests_total{{path=\"{path}\",status=\"{status}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP ngsd_generations_total Generations by endpoint and how they ended.\n# TYPE ngsd_generations_total counter"
        );
        for ((endpoint, outcome), n) in self
            .generations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "ngsd_generations_total{{endpoint=\"{endpoint}\",outcome=\"{}\"}} {n}",
                outcome.label()
            );
        }
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        counter(
            &mut out,
            "ngsd_prompt_tokens_total",
            "Prompt tokens read.",
            load(&self.prompt_tokens),
        );
        counter(
            &mut out,
            "ngsd_generated_tokens_total",
            "Tokens generated.",
            load(&self.generated_tokens),
        );
        counter(
            &mut out,
            "ngsd_steered_tokens_total",
            "Generated tokens the gate steered toward the expert.",
            load(&self.steered_tokens),
        );
        counter(
            &mut out,
            "ngsd_gate_fired_requests_total",
            "Generations in which the gate steered at least one token.",
            load(&self.gate_fired_requests),
        );
        counter(
            &mut out,
            "ngsd_expert_forward_passes_total",
            "Forward passes of the expert model (0 for the head expert).",
            load(&self.expert_forward_passes),
        );
        counter(
            &mut out,
            "ngsd_gate_errors_total",
            "Gate errors handled by the failure policy.",
            load(&self.gate_errors),
        );
        counter(
            &mut out,
            "ngsd_rejected_requests_total",
            "Requests answered 429 because the queue was full.",
            load(&self.rejected),
        );
        gauge(
            &mut out,
            "ngsd_queued_requests",
            "Requests waiting for a worker.",
            self.queued.load(Ordering::Relaxed),
        );
        gauge(
            &mut out,
            "ngsd_running_requests",
            "Generations running now.",
            self.running.load(Ordering::Relaxed),
        );
        gauge(
            &mut out,
            "ngsd_workers",
            "Workers (generations that can run at once).",
            self.workers as i64,
        );
        let h = self.histograms.lock().unwrap_or_else(|e| e.into_inner());
        let _ = writeln!(
            out,
            "# HELP ngsd_request_duration_seconds Time from admission to the last token of completed generations.\n# TYPE ngsd_request_duration_seconds histogram"
        );
        for (endpoint, hist) in &h.latency {
            hist.write(
                &mut out,
                "ngsd_request_duration_seconds",
                &format!("endpoint=\"{endpoint}\""),
            );
        }
        let _ = writeln!(
            out,
            "# HELP ngsd_time_to_first_token_seconds Time from admission to the first text sent.\n# TYPE ngsd_time_to_first_token_seconds histogram"
        );
        for (endpoint, hist) in &h.ttft {
            hist.write(
                &mut out,
                "ngsd_time_to_first_token_seconds",
                &format!("endpoint=\"{endpoint}\""),
            );
        }
        let _ = writeln!(
            out,
            "# HELP ngsd_reflection_risk Request risk from self-reflection (0-10).\n# TYPE ngsd_reflection_risk histogram"
        );
        h.risk.write(&mut out, "ngsd_reflection_risk", "");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let mut h = Histogram::new(&[1.0, 2.0]);
        for v in [0.5, 1.5, 3.0] {
            h.observe(v);
        }
        let mut s = String::new();
        h.write(&mut s, "x", "a=\"b\"");
        assert_eq!(
            s,
            "x_bucket{a=\"b\",le=\"1\"} 1\nx_bucket{a=\"b\",le=\"2\"} 2\nx_bucket{a=\"b\",le=\"+Inf\"} 3\nx_sum{a=\"b\"} 5\nx_count{a=\"b\"} 3\n"
        );
    }

    #[test]
    fn unknown_paths_share_one_label() {
        let m = Metrics::new(1);
        m.request("/v1/models", 200);
        m.request("/wp-admin", 404);
        m.request("/.env", 404);
        let text = m.render();
        assert!(text.contains("ngsd_http_requests_total{path=\"/v1/models\",status=\"200\"} 1"));
        assert!(text.contains("ngsd_http_requests_total{path=\"other\",status=\"404\"} 2"));
    }
}
