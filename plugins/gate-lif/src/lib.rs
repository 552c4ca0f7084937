//! `gate-lif`: the paper's leaky integrate-and-fire neuron over the base/expert divergence.
//!
//! Each step, with input current I (the divergence, total variation in the paper):
//!
//! ```text
//! v ← (1 − 1/τ)·v + I
//! spike ← v ≥ threshold            (steer this token with strength 1)
//! if spike: v ← v_reset + soft_reset·(v − v_reset)
//! ```
//!
//! `v` starts at `v_reset` and returns there on every reset (each request). The explanation
//! value is the potential after integration and before the reset, as in the paper's logs.
//!
//! Parameters (defaults from the paper): `tau = 8` (≥ 1), `threshold = 1.0` (> 0),
//! `soft-reset = 0.6` (in [0, 1]), `v-reset = 0.0`, `strength = 1.0` (in [0, 1], the
//! strength of a spike).

use ngsd_gate::{Decision, Error, Gate, GatePlugin, Needs, Params, Result, StepInput};

/// The LIF neuron and its per-request potential.
#[derive(Clone, Debug)]
pub struct Lif {
    decay: f64,
    threshold: f64,
    soft_reset: f64,
    v_reset: f64,
    strength: f32,
    v: f64,
}

impl Gate for Lif {
    fn name(&self) -> &str {
        Self::NAME
    }

    fn needs(&self) -> Needs {
        Needs::DIVERGENCE
    }

    fn reset(&mut self) {
        self.v = self.v_reset;
    }

    fn decide(&mut self, input: &StepInput<'_>) -> Result<Decision> {
        let current = f64::from(input.require_divergence()?);
        if !current.is_finite() {
            return Err(Error::Failed(format!(
                "divergence is {current}, expected a number"
            )));
        }
        self.v = self.decay * self.v + current;
        let potential = self.v;
        if potential >= self.threshold {
            self.v = self.v_reset + self.soft_reset * (potential - self.v_reset);
            Ok(Decision::steer(self.strength, potential as f32))
        } else {
            Ok(Decision::pass(potential as f32))
        }
    }
}

impl GatePlugin for Lif {
    const NAME: &'static str = "lif";
    const DESCRIPTION: &'static str =
        "leaky integrate-and-fire neuron over the base/expert divergence (the paper's gate)";
    const NEEDS: Needs = Needs::DIVERGENCE;

    fn create(config: &str) -> Result<Self> {
        let mut p = Params::parse(config)?;
        let tau = p.f64_or("tau", 8.0)?;
        if tau < 1.0 {
            return Err(Error::invalid_param(
                "tau",
                format!("{tau} is below 1 (decay = 1 − 1/tau)"),
            ));
        }
        let threshold = p.f64_or("threshold", 1.0)?;
        if threshold <= 0.0 {
            return Err(Error::invalid_param(
                "threshold",
                format!("{threshold} is not positive"),
            ));
        }
        let soft_reset = p.f64_in("soft-reset", 0.6, 0.0, 1.0)?;
        let v_reset = p.f64_or("v-reset", 0.0)?;
        let strength = p.f64_in("strength", 1.0, 0.0, 1.0)? as f32;
        p.finish()?;
        Ok(Lif {
            decay: 1.0 - 1.0 / tau,
            threshold,
            soft_reset,
            v_reset,
            strength,
            v: v_reset,
        })
    }
}

ngsd_gate::export_gate!(Lif);

#[cfg(test)]
mod tests;
