//! `gate-ema`: an exponential moving average of the divergence, one of the paper's ablation
//! gates (reconstructed from its logs, spec §5 and §11.4).
//!
//! ```text
//! v ← β·v + (1 − β)·I        steer when v ≥ threshold (no reset)
//! ```
//!
//! Parameters: `beta = 0.5` (in [0, 1)), `threshold = 0.75` (inferred, > 0),
//! `strength = 1.0` (in [0, 1]). `v` restarts at 0 each request; the explanation value is `v`.

use ngsd_gate::{Decision, Error, Gate, GatePlugin, Needs, Params, Result, StepInput};

/// The moving average and its state.
#[derive(Clone, Debug)]
pub struct Ema {
    beta: f64,
    threshold: f64,
    strength: f32,
    v: f64,
}

impl Gate for Ema {
    fn name(&self) -> &str {
        Self::NAME
    }

    fn needs(&self) -> Needs {
        Needs::DIVERGENCE
    }

    fn reset(&mut self) {
        self.v = 0.0;
    }

    fn decide(&mut self, input: &StepInput<'_>) -> Result<Decision> {
        let current = f64::from(input.require_divergence()?);
        if !current.is_finite() {
            return Err(Error::Failed(format!(
                "divergence is {current}, expected a number"
            )));
        }
        self.v = self.beta * self.v + (1.0 - self.beta) * current;
        let v = self.v as f32;
        Ok(if self.v >= self.threshold {
            Decision::steer(self.strength, v)
        } else {
            Decision::pass(v)
        })
    }
}

impl GatePlugin for Ema {
    const NAME: &'static str = "ema";
    const DESCRIPTION: &'static str =
        "exponential moving average of the divergence (paper ablation \"EMA\")";
    const NEEDS: Needs = Needs::DIVERGENCE;

    fn create(config: &str) -> Result<Self> {
        let mut p = Params::parse(config)?;
        let beta = p.f64_in("beta", 0.5, 0.0, 1.0)?;
        if beta >= 1.0 {
            return Err(Error::invalid_param(
                "beta",
                "1 would never update the average; use [0, 1)",
            ));
        }
        let threshold = p.f64_or("threshold", 0.75)?;
        if threshold <= 0.0 {
            return Err(Error::invalid_param(
                "threshold",
                format!("{threshold} is not positive"),
            ));
        }
        let strength = p.f64_in("strength", 1.0, 0.0, 1.0)? as f32;
        p.finish()?;
        Ok(Ema {
            beta,
            threshold,
            strength,
            v: 0.0,
        })
    }
}

ngsd_gate::export_gate!(Ema);

#[cfg(test)]
mod tests;
