//! `gate-adam`: the paper's "SMG" ablation gate, the divergence normalised by Adam-style
//! moment estimates (reconstructed from its logs, spec §5 and §11.4).
//!
//! ```text
//! t += 1
//! m ← β1·m + (1 − β1)·I          s ← β2·s + (1 − β2)·I²
//! m̂ = m / (1 − β1^t)             ŝ = s / (1 − β2^t)
//! v ← mix·v + (1 − mix)·m̂ / (√ŝ + ε)      steer when v ≥ threshold (no reset of v)
//! ```
//!
//! Parameters: `beta1 = 0.9`, `beta2 = 0.999` (both in [0, 1)), `eps = 1e-8` (> 0),
//! `mix = 0.5` (in [0, 1]), `threshold = 0.5`, `strength = 1.0`. All state restarts at 0
//! each request; the explanation value is `v`.

use ngsd_gate::{Decision, Error, Gate, GatePlugin, Needs, Params, Result, StepInput};

/// The gate's parameters and moment estimates.
#[derive(Clone, Debug)]
pub struct Adam {
    beta1: f64,
    beta2: f64,
    eps: f64,
    mix: f64,
    threshold: f64,
    strength: f32,
    t: i32,
    m: f64,
    s: f64,
    v: f64,
}

impl Gate for Adam {
    fn name(&self) -> &str {
        Self::NAME
    }

    fn needs(&self) -> Needs {
        Needs::DIVERGENCE
    }

    fn reset(&mut self) {
        self.t = 0;
        self.m = 0.0;
        self.s = 0.0;
        self.v = 0.0;
    }

    fn decide(&mut self, input: &StepInput<'_>) -> Result<Decision> {
        let current = f64::from(input.require_divergence()?);
        if !current.is_finite() {
            return Err(Error::Failed(format!(
                "divergence is {current}, expected a number"
            )));
        }
        self.t = self.t.saturating_add(1);
        self.m = self.beta1 * self.m + (1.0 - self.beta1) * current;
        self.s = self.beta2 * self.s + (1.0 - self.beta2) * current * current;
        let m_hat = self.m / (1.0 - self.beta1.powi(self.t));
        let s_hat = self.s / (1.0 - self.beta2.powi(self.t));
        self.v = self.mix * self.v + (1.0 - self.mix) * m_hat / (s_hat.sqrt() + self.eps);
        let v = self.v as f32;
        Ok(if self.v >= self.threshold {
            Decision::steer(self.strength, v)
        } else {
            Decision::pass(v)
        })
    }
}

impl GatePlugin for Adam {
    const NAME: &'static str = "adam";
    const DESCRIPTION: &'static str = "Adam-normalised divergence (paper ablation \"SMG\")";
    const NEEDS: Needs = Needs::DIVERGENCE;

    fn create(config: &str) -> Result<Self> {
        let mut p = Params::parse(config)?;
        let beta = |p: &mut Params, key: &'static str, default: f64| -> Result<f64> {
            let b = p.f64_in(key, default, 0.0, 1.0)?;
            if b >= 1.0 {
                return Err(Error::invalid_param(key, "must be below 1"));
            }
            Ok(b)
        };
        let beta1 = beta(&mut p, "beta1", 0.9)?;
        let beta2 = beta(&mut p, "beta2", 0.999)?;
        let eps = p.f64_or("eps", 1e-8)?;
        if eps <= 0.0 {
            return Err(Error::invalid_param(
                "eps",
                format!("{eps} is not positive"),
            ));
        }
        let mix = p.f64_in("mix", 0.5, 0.0, 1.0)?;
        let threshold = p.f64_or("threshold", 0.5)?;
        let strength = p.f64_in("strength", 1.0, 0.0, 1.0)? as f32;
        p.finish()?;
        Ok(Adam {
            beta1,
            beta2,
            eps,
            mix,
            threshold,
            strength,
            t: 0,
            m: 0.0,
            s: 0.0,
            v: 0.0,
        })
    }
}

ngsd_gate::export_gate!(Adam);

#[cfg(test)]
mod tests;
