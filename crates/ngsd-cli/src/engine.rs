//! The one assembly of a decoding engine from validated settings: base model, gates (the
//! trained neuron for `sigmoid`), reflection, expert and decode settings. `ngsd generate`
//! builds one; every `ngsd serve` worker builds its own.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Result;

use ngsd_server::Engine;

use crate::load_model;
use crate::safety::{self, SafetySettings, Trained};
use crate::settings::ModelSettings;

/// Loads the model, then the gates named in `gate_names` (the configured one, `safety.gate`,
/// with the configured parameters; the others with their defaults), the reflection and the
/// expert.
pub fn build(
    model_settings: &ModelSettings,
    safety: &SafetySettings,
    gate_names: &[String],
    dirs: &[PathBuf],
    trained: &Trained,
) -> Result<Engine> {
    let (model, tokenizer, template) = load_model(model_settings)?;
    let mut gates = BTreeMap::new();
    for name in gate_names {
        let params = if *name == safety.gate {
            safety.gate_params.clone()
        } else {
            trained.gate_params(name, "")
        };
        let gate = safety::load_gate(name, &params, dirs, &model)?;
        gates.insert(name.clone(), gate as Box<dyn ngsd_gate::Gate>);
    }
    let reflection = safety::build_reflection(&safety.reflection, dirs, &model)?;
    let expert = safety::build_expert(
        &safety.expert,
        safety.expert_system.clone(),
        &model,
        &tokenizer,
        &model_settings.options,
    )?;
    Ok(Engine {
        models: ngsd_decode::Models {
            base: model,
            tokenizer,
            template,
            expert,
        },
        gates,
        default_gate: safety.gate.clone(),
        reflection,
        decode: safety.decode.clone(),
    })
}
