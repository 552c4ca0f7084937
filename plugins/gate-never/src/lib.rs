//! `gate-never`: never steer (no defence); the baseline for ablations. No parameters.

use ngsd_gate::{Decision, Gate, GatePlugin, Needs, Params, Result, StepInput};

/// Always answers strength 0.
#[derive(Clone, Copy, Debug)]
pub struct Never;

impl Gate for Never {
    fn name(&self) -> &str {
        Self::NAME
    }

    fn needs(&self) -> Needs {
        Needs::NONE
    }

    fn reset(&mut self) {}

    fn decide(&mut self, _input: &StepInput<'_>) -> Result<Decision> {
        Ok(Decision::pass(0.0))
    }
}

impl GatePlugin for Never {
    const NAME: &'static str = "never";
    const DESCRIPTION: &'static str = "never steer (no defence)";
    const NEEDS: Needs = Needs::NONE;

    fn create(config: &str) -> Result<Self> {
        Params::parse(config)?.finish()?;
        Ok(Never)
    }
}

ngsd_gate::export_gate!(Never);

#[cfg(test)]
mod tests;
