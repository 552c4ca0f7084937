//! Model-independent core of the `ngsd eval` harness: suites, datasets, judges, metrics,
//! resumable per-configuration results, a runner over a [`Generator`], and reports with plots.
//!
//! The flow a caller wires up:
//! 1. [`Suite::load`] reads and validates a suite file (datasets × configurations);
//! 2. [`run_suite`] asks a [`Generator`] (the decoder) for every configuration × sample not
//!    yet in the [`ResultStore`] of that configuration, and appends each result;
//! 3. [`Report::build`] turns the stores into metrics, and [`Report::write_all`] writes
//!    `results.json`, `results.md` and the SVG plots.

mod dataset;
mod error;
mod judge;
pub mod metrics;
mod plot;
mod report;
mod runner;
mod store;
mod suite;

pub use dataset::{Sample, load_dataset};
pub use error::{Error, Result};
pub use judge::{Judge, KeywordJudge, LlmJudge, REFUSAL_KEYWORDS};
pub use report::{ConfigReport, DatasetMetrics, Interval, Report};
pub use runner::{GenOutput, Generator, Progress, RunSummary, load_suite_samples, run_suite};
pub use store::{Finish, Record, ResultStore};
pub use suite::{
    ConfigSpec, DatasetFormat, DatasetSpec, Generation, IdRange, Label, Reflection, Suite,
    WhereFilter,
};
