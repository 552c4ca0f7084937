//! Model-independent core of the `ngsd eval` harness: suites, datasets, judges, metrics,
//! resumable per-configuration results, a runner over a [`Generator`], and reports with plots.
//!
//! The flow a caller wires up:
//! 1. [`Suite::load`] reads and validates a suite file (datasets × configurations);
//! 2. [`run_suite`] asks a [`Generator`] (the decoder) for every configuration × sample not
//!    yet in the [`ResultStore`] of that configuration, and appends each result;
//! 3. [`Report::build`] turns the stores into metrics, and [`Report::write_all`] writes
//!    `results.json`, `results.md` and the SVG plots.
//!
//! # Suite files
//!
//! TOML, kebab-case keys; unknown keys are errors, and every error names the file's line,
//! column and key. Paths are relative to the suite file's folder.
//!
//! - `baseline = "name"`: the no-defence configuration benign answers are compared with
//!   (default: the first configuration whose gate is `never`).
//! - `[generation]`: `max-new-tokens` (64), `greedy` (true).
//! - `[[configs]]`: `name`, `gate`, `gate-config` (""), `expert` ("none"), `reflection`
//!   (`off`, `generative` or `probe`; "off"), `alpha` (1.0, in \[0, 1\]).
//! - `[[matrix]]`: `prefix`, `gates`, `gate-config`, `experts`, `reflections`, `alphas`; one
//!   configuration per combination.
//! - `[[datasets]]`, one per set of prompts:
//!   - `name` (unique), `path`, `format` (`json`, `jsonl` or `csv`; default from the
//!     extension), `label` (`harmful` or `benign`, for every sample of the entry);
//!   - the prompt, exactly one of: `text-field = "prompt"` (a string per row), or
//!     `messages-field = "messages"` (an OpenAI-style array per row: an optional leading
//!     `system` message becomes the system prompt, then `user` and `assistant` messages
//!     alternate, starting and ending with `user`; the last one is the message answered, the
//!     others are the history);
//!   - `system = "..."`: a system prompt for every sample (a row whose messages have their
//!     own system message is then an error); without it the chat template's default applies;
//!   - `raw = true`: the text is fed as is, with no chat template (as `/v1/completions`
//!     does); only with `text-field` and without `system`;
//!   - `wrap = { file = "wrappers.toml", families = ["persona"], mode = "all" }`: every
//!     sample's text (the message answered, or the raw text) is put into jailbreak-wrapper
//!     templates when loaded (see [`load_wrappers`] for the file): `families` chooses among
//!     the file's families (default all); `mode = "all"` gives each sample once per template
//!     (sample by sample), `mode = "cycle"` gives sample i the template i mod n only. A
//!     wrapped sample's id is `<id>@<template name>`, and its label stays the entry's: a
//!     wrapper does not make a request harmful;
//!   - `id-field` (default: the 0-based row index), `ids = "400-519"` (integer ids to keep),
//!     `where = { field = "label", equals = "1" }`, `answer-field` (reference answers, for
//!     accuracy), `every = 3` (keep every third row that passes the filters: an evenly spread
//!     subset of a file ordered by topic), `limit` (most samples kept, counted after
//!     wrapping);
//!   - `group = "name"`: the report also pools all datasets of the group (one label per
//!     group), e.g. every wrapper family's harmful set.
//!
//! A [`Sample`] carries `text`, `history`, `system` and `raw`; stored answers are matched on
//! [`Sample::key`], a digest of all four, so a conversation never reuses the answer to its
//! last message alone.

mod chat;
mod dataset;
mod error;
mod judge;
pub mod metrics;
mod plot;
mod report;
mod runner;
mod separation;
mod steered;
mod store;
mod suite;
mod wrap;

pub use chat::{Role, Turn};
pub use dataset::{Sample, load_dataset};
pub use error::{Error, Result};
pub use judge::{Judge, KeywordJudge, LlmJudge, REFUSAL_KEYWORDS};
pub use report::{ConfigReport, DatasetMetrics, Interval, Report};
pub use runner::{
    GenOutput, GenResult, Generator, Progress, RunSummary, generate_each, load_suite_samples,
    run_suite,
};
pub use separation::PairAuroc;
pub use steered::{Shape, SteeredAnswer, has_complete_sentence};
pub use store::{AnswerIndex, Finish, Record, ResultStore};
pub use suite::{
    ConfigSpec, DatasetFormat, DatasetSpec, Generation, IdRange, Label, Reflection, Suite,
    WhereFilter,
};
pub use wrap::{Template, Wrap, WrapMode, load_wrappers};
