//! The synthetic qwen2 model of `cargo xtask test`: a tiny random-weight GGUF written by
//! `xtask/py/synthetic_gguf.py`, converted to fp32 and q4 packages, so the qwen2 code paths
//! (q/k/v biases, an untied LM head, the qwen2 pre-tokenizer, a ChatML template) are tested
//! without the 490 MB Qwen download. A random model's text is gibberish: the checks compare
//! the packages with the GGUF and with each other, and the Rust tests
//! (`crates/ngsd-cli/tests/synthetic.rs`, through `NGSD_TEST_SYNTHETIC`) check behaviour.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use crate::sh;

/// The user message of the end-to-end runs: multi-byte UTF-8 of two and three bytes.
pub const PROMPT: &str = "héllo 日本";

/// The fixture folder: `model.gguf`, the `fp32` and `q4` packages, `prompt.txt` and
/// `prompt-ids.json` (PROMPT rendered with the package's chat template by jinja2 and tokenized
/// by Python's tokenizers: the ids ngsd must also feed).
pub struct Synthetic {
    pub dir: PathBuf,
    pub gguf: PathBuf,
    pub fp32: PathBuf,
    pub q4: PathBuf,
    pub prompt_ids: PathBuf,
}

/// Writes the GGUF into `target/synthetic-qwen2/` and converts it (a few seconds; rebuilt on
/// every run, the output is byte-deterministic).
pub fn build(python: &Path) -> Result<Synthetic> {
    let dir = sh::root().join("target/synthetic-qwen2");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let s = Synthetic {
        gguf: dir.join("model.gguf"),
        fp32: dir.join("fp32"),
        q4: dir.join("q4"),
        prompt_ids: dir.join("prompt-ids.json"),
        dir,
    };
    sh::run(py(python, "synthetic_gguf.py").arg("--out").arg(&s.gguf))?;
    for (variant, out) in [("fp32", &s.fp32), ("q4", &s.q4)] {
        sh::run(
            py(python, "gguf2onnx.py")
                .arg("--gguf")
                .arg(&s.gguf)
                .arg("--out")
                .arg(out)
                .args(["--name", "synthetic-qwen2", "--variant", variant])
                // both layers: the q4 graph takes the last one from its final norm's residual
                .args(["--layers", "0,1"]),
        )?;
    }
    let prompt_file = s.dir.join("prompt.txt");
    std::fs::write(&prompt_file, PROMPT)
        .with_context(|| format!("writing {}", prompt_file.display()))?;
    sh::run(
        py(python, "chat_prompt_ids.py")
            .arg("--model")
            .arg(&s.fp32)
            .args(["--prompt", PROMPT, "--out"])
            .arg(&s.prompt_ids),
    )?;
    Ok(s)
}

/// The Python checks on the synthetic packages: the converter's refusals, fp32 against a numpy
/// forward pass over the GGUF, q4 against the GGUF's blocks and the fp32 package, and greedy
/// decoding of `ngsd` (the binary at `ngsd`) against a plain onnxruntime loop on the fp32 one.
pub fn check(python: &Path, s: &Synthetic, ngsd: &Path) -> Result<()> {
    sh::run(&mut py(python, "test_synthetic.py"))?;
    sh::run(
        py(python, "test_export.py")
            .arg("--model")
            .arg(&s.fp32)
            .arg("--gguf")
            .arg(&s.gguf)
            .arg("--prompt-ids")
            .arg(&s.prompt_ids),
    )?;
    sh::run(
        py(python, "test_fused.py")
            .arg("--model")
            .arg(&s.q4)
            .arg("--gguf")
            .arg(&s.gguf)
            .arg("--reference")
            .arg(&s.fp32)
            .arg("--prompt-ids")
            .arg(&s.prompt_ids),
    )?;
    // fp32 only: greedy_check.py's loop feeds the Optimum inputs, which the q4 graph has not
    sh::run(
        py(python, "greedy_check.py")
            .arg("--model")
            .arg(&s.fp32)
            .arg("--ngsd")
            .arg(ngsd)
            .args(["--prompt", PROMPT, "--new-tokens", "24"]),
    )
}

/// `python xtask/py/SCRIPT`.
fn py(python: &Path, script: &str) -> Command {
    let mut cmd = Command::new(python);
    cmd.arg(sh::root().join("xtask/py").join(script));
    cmd
}
