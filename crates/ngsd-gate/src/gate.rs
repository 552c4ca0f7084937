//! The Gate trait and the values that flow through it each step.

use std::fmt;
use std::ops::{BitOr, BitOrAssign};

use crate::{Error, FeatureSpec, Result, abi};

/// The inputs a gate needs each step, as bit flags, so the decoder computes only those.
///
/// The bits are the ABI's `NGSD_NEEDS_*` constants.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(transparent)]
pub struct Needs(u32);

impl Needs {
    /// No per-step input (e.g. `gate-always`, `gate-never`).
    pub const NONE: Needs = Needs(0);
    /// The base model's last hidden state at the current position.
    pub const HIDDEN: Needs = Needs(abi::NEEDS_HIDDEN);
    /// The base model's next-token distribution.
    pub const BASE_PROBS: Needs = Needs(abi::NEEDS_BASE_PROBS);
    /// The expert's next-token distribution (costs an expert forward pass).
    pub const EXPERT_PROBS: Needs = Needs(abi::NEEDS_EXPERT_PROBS);
    /// The divergence between base and expert distributions (implies both are computed).
    pub const DIVERGENCE: Needs = Needs(abi::NEEDS_DIVERGENCE);

    const NAMES: [(Needs, &'static str); 4] = [
        (Self::HIDDEN, "hidden"),
        (Self::BASE_PROBS, "base-probs"),
        (Self::EXPERT_PROBS, "expert-probs"),
        (Self::DIVERGENCE, "divergence"),
    ];
    const ALL_BITS: u32 =
        abi::NEEDS_HIDDEN | abi::NEEDS_BASE_PROBS | abi::NEEDS_EXPERT_PROBS | abi::NEEDS_DIVERGENCE;

    /// The raw bits, as they cross the ABI.
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// Flags from raw bits; `None` when a bit this version does not know is set.
    pub const fn from_bits(bits: u32) -> Option<Needs> {
        if bits & !Self::ALL_BITS == 0 {
            Some(Needs(bits))
        } else {
            None
        }
    }

    /// Whether every flag in `other` is set in `self`.
    pub const fn contains(self, other: Needs) -> bool {
        self.0 & other.0 == other.0
    }

    /// The union of two sets of flags (usable in `const` items, unlike `|`).
    pub const fn union(self, other: Needs) -> Needs {
        Needs(self.0 | other.0)
    }

    /// Whether no flag is set.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Whether the decoder must run the expert model to satisfy these needs.
    pub const fn needs_expert(self) -> bool {
        self.0 & (abi::NEEDS_EXPERT_PROBS | abi::NEEDS_DIVERGENCE) != 0
    }
}

impl BitOr for Needs {
    type Output = Needs;
    fn bitor(self, rhs: Needs) -> Needs {
        self.union(rhs)
    }
}

impl BitOrAssign for Needs {
    fn bitor_assign(&mut self, rhs: Needs) {
        *self = self.union(rhs);
    }
}

/// `hidden|divergence`, or `none`.
impl fmt::Display for Needs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("none");
        }
        let mut first = true;
        for (flag, name) in Self::NAMES {
            if self.contains(flag) {
                if !first {
                    f.write_str("|")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Needs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Needs({self})")
    }
}

/// What a gate answers each step.
pub use crate::abi::Decision;

impl Decision {
    /// Leave the base model alone this step; `value` explains why (for the trace).
    pub const fn pass(value: f32) -> Decision {
        Decision {
            strength: 0.0,
            value,
        }
    }

    /// Steer with `strength` in `[0, 1]`; `value` explains why (for the trace).
    pub const fn steer(strength: f32, value: f32) -> Decision {
        Decision { strength, value }
    }

    /// Whether this decision steers at all (strength > 0).
    pub fn is_steering(&self) -> bool {
        self.strength > 0.0
    }

    /// Whether the strength is a number in `[0, 1]`, the only values a host accepts.
    pub fn is_valid(&self) -> bool {
        (0.0..=1.0).contains(&self.strength)
    }
}

/// What the decoder knows about the prompt, given once per request before step 0.
#[derive(Clone, Copy, Debug, Default)]
pub struct PromptInput<'a> {
    /// The prompt features the gate declared ([`Gate::features`]), concatenated in order;
    /// with the default declaration, the final hidden state at the prompt's last token.
    /// Empty when the gate's needs do not include [`Needs::HIDDEN`].
    pub hidden: &'a [f32],
    /// The request's risk from self-reflection, when known.
    pub risk: Option<f32>,
    /// The steering weight α derived from the risk, when known.
    pub alpha: Option<f32>,
}

/// What the decoder gives a gate at one generation step.
///
/// Inputs the gate did not ask for (see [`Gate::needs`]) may be absent: `hidden` empty,
/// the options `None`.
#[derive(Clone, Copy, Debug, Default)]
pub struct StepInput<'a> {
    /// 0 for the first generated token of the request.
    pub step: u64,
    /// The base model's last hidden state at the current position.
    pub hidden: &'a [f32],
    /// The base model's next-token distribution.
    pub base_probs: Option<&'a [f32]>,
    /// The expert's next-token distribution.
    pub expert_probs: Option<&'a [f32]>,
    /// The divergence between the two distributions (total variation in the paper).
    pub divergence: Option<f32>,
    /// The request's risk from self-reflection, when known.
    pub risk: Option<f32>,
    /// The steering weight α derived from the risk, when known.
    pub alpha: Option<f32>,
}

impl StepInput<'_> {
    /// The divergence, or [`Error::MissingInput`] when the decoder did not compute it.
    pub fn require_divergence(&self) -> Result<f32> {
        self.divergence
            .ok_or(Error::MissingInput { what: "divergence" })
    }

    /// The hidden state, or [`Error::MissingInput`] when it is empty.
    pub fn require_hidden(&self) -> Result<&[f32]> {
        if self.hidden.is_empty() {
            Err(Error::MissingInput {
                what: "hidden state",
            })
        } else {
            Ok(self.hidden)
        }
    }
}

/// What the decoder gives a gate that monitors the answer ([`FeatureSpec::answer`] not
/// empty), at each check while the answer is generated.
#[derive(Clone, Copy, Debug, Default)]
pub struct AnswerInput<'a> {
    /// Answer tokens generated so far (the check covers all of them).
    pub tokens: u64,
    /// The answer features the gate declared, concatenated in order.
    pub features: &'a [f32],
    /// The request's risk from self-reflection, when known.
    pub risk: Option<f32>,
    /// The steering weight α derived from the risk, when known.
    pub alpha: Option<f32>,
}

/// A steering policy: decides, step by step, how strongly to steer the base model.
///
/// Call order per request: [`reset`](Gate::reset), then
/// [`observe_prompt`](Gate::observe_prompt) once, then [`decide`](Gate::decide) for steps
/// 0, 1, 2, .... `decide` must be cheap: no allocation on the success path. A gate that
/// declares answer features also gets [`check_answer`](Gate::check_answer) every few tokens;
/// when a check steers, the decoder drops the answer tokens not yet cleared by an earlier
/// check and generates them again, calling `decide` for those steps anew.
pub trait Gate {
    /// The gate's short name, e.g. `lif` (used in traces and error messages).
    fn name(&self) -> &str;

    /// Which inputs [`decide`](Gate::decide) reads. Fixed for the life of the gate.
    fn needs(&self) -> Needs;

    /// Forget all per-request state.
    fn reset(&mut self);

    /// See the prompt before step 0. The default ignores it.
    ///
    /// Gates that decide once per request (the sigmoid gate's `prompt` timing) decide here
    /// and hold that decision for every step.
    fn observe_prompt(&mut self, prompt: &PromptInput<'_>) -> Result<()> {
        let _ = prompt;
        Ok(())
    }

    /// Decide the steering strength for one step.
    fn decide(&mut self, input: &StepInput<'_>) -> Result<Decision>;

    /// The hidden-state features the gate reads. The default: the final hidden state at the
    /// prompt's last token, and no answer monitoring.
    fn features(&self) -> FeatureSpec {
        FeatureSpec::default()
    }

    /// Re-check the answer so far (only called when [`features`](Gate::features) lists answer
    /// features). A steering decision means the answer is turning harmful: the gate should
    /// steer from then on (its `decide` answers accordingly) and the decoder rolls the answer
    /// back to the last cleared check. The default never steers.
    fn check_answer(&mut self, input: &AnswerInput<'_>) -> Result<Decision> {
        let _ = input;
        Ok(Decision::pass(f32::NAN))
    }

    /// Another instance with the same configuration and fresh state, for a request answered
    /// at the same time as this gate's (a server's batch). `None` when the gate cannot make
    /// one; the host then answers one request at a time. The default: `None`.
    fn fork(&self) -> Result<Option<Box<dyn Gate>>> {
        Ok(None)
    }
}

impl<G: Gate + ?Sized> Gate for Box<G> {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn needs(&self) -> Needs {
        (**self).needs()
    }
    fn reset(&mut self) {
        (**self).reset();
    }
    fn observe_prompt(&mut self, prompt: &PromptInput<'_>) -> Result<()> {
        (**self).observe_prompt(prompt)
    }
    fn decide(&mut self, input: &StepInput<'_>) -> Result<Decision> {
        (**self).decide(input)
    }
    fn features(&self) -> FeatureSpec {
        (**self).features()
    }
    fn check_answer(&mut self, input: &AnswerInput<'_>) -> Result<Decision> {
        (**self).check_answer(input)
    }
    fn fork(&self) -> Result<Option<Box<dyn Gate>>> {
        (**self).fork()
    }
}

/// A gate that can be built from a parameter string and exported as a plugin with
/// [`export_gate!`](crate::export_gate).
///
/// `Send` because the host may move a gate between threads (never use it from two at once).
pub trait GatePlugin: Gate + Send + Sized + 'static {
    /// The gate's name; a plugin file is `libgate_<NAME>.so` (`-` becomes `_`).
    const NAME: &'static str;
    /// One line saying what the gate does, shown by `ngsd gates list`.
    const DESCRIPTION: &'static str;
    /// The needs of a default-configured instance, shown by `ngsd gates list`.
    const NEEDS: Needs;

    /// Build the gate from its parameter text (`key = value` lines, see [`crate::Params`]).
    fn create(config: &str) -> Result<Self>;
}

#[cfg(test)]
mod tests;
