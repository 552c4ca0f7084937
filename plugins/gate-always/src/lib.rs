//! `gate-always`: steer every token, like SafeDecoding; optionally only the first `m`.
//!
//! Parameters: `strength = 1.0` (in [0, 1]); `first-m` (a whole number, default: no
//! window) steers steps `0 .. first-m` only, like SafeDecoding's `first_m = 2`. The gate
//! reads no inputs, so the decoder runs the expert only where it steers. The explanation
//! value is the strength applied.

use ngsd_gate::{Decision, Gate, GatePlugin, Needs, Params, Result, StepInput};

/// Steers with a fixed strength, within an optional window.
#[derive(Clone, Debug)]
pub struct Always {
    strength: f32,
    first_m: Option<u64>,
}

impl Gate for Always {
    fn name(&self) -> &str {
        Self::NAME
    }

    fn needs(&self) -> Needs {
        Needs::NONE
    }

    fn reset(&mut self) {}

    fn decide(&mut self, input: &StepInput<'_>) -> Result<Decision> {
        let inside = self.first_m.is_none_or(|m| input.step < m);
        Ok(if inside {
            Decision::steer(self.strength, self.strength)
        } else {
            Decision::pass(0.0)
        })
    }
}

impl GatePlugin for Always {
    const NAME: &'static str = "always";
    const DESCRIPTION: &'static str =
        "steer every token (optionally only the first m), like SafeDecoding";
    const NEEDS: Needs = Needs::NONE;

    fn create(config: &str) -> Result<Self> {
        let mut p = Params::parse(config)?;
        let strength = p.f64_in("strength", 1.0, 0.0, 1.0)? as f32;
        let first_m = p.parsed::<u64>("first-m")?;
        p.finish()?;
        Ok(Always { strength, first_m })
    }
}

ngsd_gate::export_gate!(Always);

#[cfg(test)]
mod tests;
