//! Mapping a decoder graph's declared inputs and outputs onto what a forward pass feeds and reads.
//!
//! Two families load: Optimum-style graphs (`attention_mask`, `position_ids`, past/present
//! concatenated by the graph) and ngsd's fused graphs (`seqlens_k`, `total_sequence_length`,
//! `logits_to_keep`, past and present in one shared buffer). Anything else is refused with the
//! input's name.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ort::session::Session;
use ort::value::{TensorElementType, ValueType};

use crate::error::{Error, Result};
use crate::package::{IoNames, ManifestSource, ModelPackage};

/// What a forward pass feeds into one graph input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum InputSlot {
    InputIds,
    AttentionMask,
    PositionIds,
    /// Past key (`2i`) or value (`2i + 1`) of layer `i`.
    Past(usize),
    /// Fused graphs: total length − 1 per sequence (int32).
    SeqLensK,
    /// Fused graphs: total length of the longest sequence (int32 scalar).
    TotalSequenceLength,
    /// Fused graphs: how many trailing positions get logits (int64 [1]).
    LogitsToKeep,
}

impl InputSlot {
    fn element_type(self) -> TensorElementType {
        match self {
            InputSlot::Past(_) => TensorElementType::Float32,
            InputSlot::SeqLensK | InputSlot::TotalSequenceLength => TensorElementType::Int32,
            _ => TensorElementType::Int64,
        }
    }
}

/// The graph's inputs and outputs as a forward pass uses them.
#[derive(Debug)]
pub(crate) struct GraphIo {
    pub slots: Vec<InputSlot>,
    pub input_names: Vec<String>,
    /// Past key/value input names, key then value per layer.
    pub past_names: Vec<String>,
    /// Present key/value output names, key then value per layer.
    pub present_names: Vec<String>,
    pub logits: String,
    pub hidden: Option<String>,
    pub exported_layers: Vec<usize>,
    pub layer_names: Vec<String>,
    pub num_layers: usize,
    /// Whether past and present share one preallocated buffer (fused graphs).
    pub shared_kv: bool,
}

struct Names<'a> {
    path: PathBuf,
    inputs: &'a [String],
    outputs: &'a [String],
}

impl Names<'_> {
    fn missing(&self, kind: &'static str, name: &str, hint: &str) -> Error {
        let list = if kind == "input" {
            self.inputs
        } else {
            self.outputs
        };
        Error::MissingIo {
            path: self.path.clone(),
            kind,
            name: name.to_string(),
            available: abbreviate(list),
            hint: hint.to_string(),
        }
    }

    fn unsupported(&self, reason: String) -> Error {
        Error::Unsupported {
            path: self.path.clone(),
            reason,
        }
    }
}

pub(crate) fn layer_pattern(pattern: &str, i: usize) -> String {
    pattern.replace("{i}", &i.to_string())
}

/// Reads the session's inputs and outputs against the package's manifest.
pub(crate) fn map(session: &Session, package: &ModelPackage) -> Result<GraphIo> {
    let io = &package.manifest.io;
    let inputs: Vec<String> = session
        .inputs()
        .iter()
        .map(|i| i.name().to_string())
        .collect();
    let outputs: Vec<String> = session
        .outputs()
        .iter()
        .map(|o| o.name().to_string())
        .collect();
    let names = Names {
        path: package.onnx_path(),
        inputs: &inputs,
        outputs: &outputs,
    };
    let num_layers = count_layers(&names, io, package.manifest.num_layers)?;
    let slots = input_slots(&names, io, num_layers)?;
    check_types(session, &slots, &names)?;
    let shared_kv = slots.contains(&InputSlot::SeqLensK);
    if shared_kv {
        for (slot, name) in [
            (InputSlot::TotalSequenceLength, &io.total_sequence_length),
            (InputSlot::LogitsToKeep, &io.logits_to_keep),
        ] {
            if !slots.contains(&slot) {
                return Err(names.missing(
                    "input",
                    name,
                    "; a graph with `seqlens_k` needs it too",
                ));
            }
        }
    }
    if !outputs.contains(&io.logits) {
        return Err(names.missing("output", &io.logits, ""));
    }
    let (past_names, present_names) = cache_names(&names, io, num_layers)?;
    let hidden = match &io.hidden {
        Some(h) if outputs.contains(h) => Some(h.clone()),
        Some(h) if package.source == ManifestSource::Ngsd => {
            return Err(names.missing(
                "output",
                h,
                "; the manifest names it: add it with `cargo xtask export-hidden <model.onnx>`, \
                 or fix `io.hidden` in the manifest",
            ));
        }
        _ => None,
    };
    let (exported_layers, layer_names) =
        layer_outputs(&io.hidden_layers, &outputs, num_layers, &names.path)?;
    Ok(GraphIo {
        slots,
        input_names: inputs.clone(),
        past_names,
        present_names,
        logits: io.logits.clone(),
        hidden,
        exported_layers,
        layer_names,
        num_layers,
        shared_kv,
    })
}

fn count_layers(names: &Names<'_>, io: &IoNames, manifest_layers: usize) -> Result<usize> {
    let num_layers = (0..)
        .take_while(|i| names.inputs.contains(&layer_pattern(&io.past_key, *i)))
        .count();
    if num_layers == 0 {
        return Err(names.missing(
            "input",
            &layer_pattern(&io.past_key, 0),
            "; ngsd needs a decoder exported with a KV cache (Optimum task `text-generation-with-past`)",
        ));
    }
    if num_layers != manifest_layers {
        return Err(names.unsupported(format!(
            "the manifest says {manifest_layers} layers but the graph has {num_layers} key/value cache inputs"
        )));
    }
    Ok(num_layers)
}

fn input_slots(names: &Names<'_>, io: &IoNames, num_layers: usize) -> Result<Vec<InputSlot>> {
    let fixed = [
        (&io.input_ids, InputSlot::InputIds),
        (&io.attention_mask, InputSlot::AttentionMask),
        (&io.position_ids, InputSlot::PositionIds),
        (&io.seqlens_k, InputSlot::SeqLensK),
        (&io.total_sequence_length, InputSlot::TotalSequenceLength),
        (&io.logits_to_keep, InputSlot::LogitsToKeep),
    ];
    let mut slots = Vec::with_capacity(names.inputs.len());
    for name in names.inputs {
        let past = (0..num_layers).find_map(|i| {
            if *name == layer_pattern(&io.past_key, i) {
                Some(InputSlot::Past(2 * i))
            } else if *name == layer_pattern(&io.past_value, i) {
                Some(InputSlot::Past(2 * i + 1))
            } else {
                None
            }
        });
        let slot = fixed
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, s)| *s)
            .or(past)
            .ok_or_else(|| {
                names.unsupported(format!(
                    "it has an input `{name}` that ngsd does not know how to feed \
                     (merged decoders with `use_cache_branch` are not supported: export the plain \
                     with-past decoder)"
                ))
            })?;
        slots.push(slot);
    }
    if !slots.contains(&InputSlot::InputIds) {
        return Err(names.missing("input", &io.input_ids, ""));
    }
    for i in 0..num_layers {
        if !slots.contains(&InputSlot::Past(2 * i + 1)) {
            return Err(names.missing("input", &layer_pattern(&io.past_value, i), ""));
        }
    }
    Ok(slots)
}

fn check_types(session: &Session, slots: &[InputSlot], names: &Names<'_>) -> Result<()> {
    for (outlet, slot) in session.inputs().iter().zip(slots) {
        let want = slot.element_type();
        if let ValueType::Tensor { ty, .. } = outlet.dtype()
            && *ty != want
        {
            return Err(names.unsupported(format!(
                "input `{}` is {ty:?}; ngsd feeds {want:?} (export the model with float32 inputs and cache)",
                outlet.name()
            )));
        }
    }
    Ok(())
}

fn cache_names(
    names: &Names<'_>,
    io: &IoNames,
    num_layers: usize,
) -> Result<(Vec<String>, Vec<String>)> {
    let mut past = Vec::with_capacity(2 * num_layers);
    let mut present = Vec::with_capacity(2 * num_layers);
    for i in 0..num_layers {
        past.push(layer_pattern(&io.past_key, i));
        past.push(layer_pattern(&io.past_value, i));
        for pattern in [&io.present_key, &io.present_value] {
            let name = layer_pattern(pattern, i);
            if !names.outputs.contains(&name) {
                return Err(names.missing("output", &name, ""));
            }
            present.push(name);
        }
    }
    Ok((past, present))
}

/// The exported layers and their output names: the manifest's `io.hidden_layers` when it lists
/// any (each must be a graph output), else the graph's outputs named `hidden_states.{L}`.
fn layer_outputs(
    listed: &BTreeMap<usize, String>,
    output_names: &[String],
    num_layers: usize,
    path: &Path,
) -> Result<(Vec<usize>, Vec<String>)> {
    let mut found: Vec<(usize, String)> = if listed.is_empty() {
        output_names
            .iter()
            .filter_map(|name| {
                let layer = name.strip_prefix("hidden_states.")?.parse::<usize>().ok()?;
                (layer < num_layers).then(|| (layer, name.clone()))
            })
            .collect()
    } else {
        listed.iter().map(|(l, name)| (*l, name.clone())).collect()
    };
    found.sort();
    for (layer, name) in &found {
        if *layer >= num_layers || !output_names.contains(name) {
            return Err(Error::MissingIo {
                path: path.to_path_buf(),
                kind: "output",
                name: name.clone(),
                available: abbreviate(output_names),
                hint: format!(
                    "; the manifest lists it for layer {layer} of {num_layers}: reconvert with \
                     `cargo xtask setup --force`, add it with `cargo xtask export-hidden --layers`, \
                     or fix `io.hidden_layers` in the manifest"
                ),
            });
        }
    }
    Ok(found.into_iter().unzip())
}

pub(crate) fn abbreviate(names: &[String]) -> String {
    const SHOW: usize = 8;
    let mut s = names
        .iter()
        .take(SHOW)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > SHOW {
        s.push_str(&format!(", … {} more", names.len() - SHOW));
    }
    s
}
