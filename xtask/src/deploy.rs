//! Checks of the deployment files (`deploy/*.yaml`, `Dockerfile`), run by `cargo xtask test`:
//! the Kubernetes manifests against the API schemas with `kubernetes-validate` (PyPI, schemas
//! bundled, so it works offline once installed; strict: unknown fields are errors), then their
//! agreement with the server: probes on a route the server has, ports that match `--addr`,
//! scrape annotations on `/metrics`, flags that `ngsd serve` accepts, and the image the
//! Dockerfile builds.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;

use crate::{setup, sh};

/// The schema checker, pinned.
const VALIDATOR: &str = "kubernetes-validate==1.37.0";

/// A venv with the validator, in the build folder (per checkout, ignored by git).
fn validator_venv(root: &Path, system_python: &Path) -> Result<PathBuf> {
    let venv = root.join("target/deploy-venv");
    let python = venv.join("bin/python");
    let stamp = venv.join(".ngsd-validator");
    if python.is_file() && std::fs::read_to_string(&stamp).ok().as_deref() == Some(VALIDATOR) {
        return Ok(python);
    }
    sh::step(&format!("installing {VALIDATOR} (target/deploy-venv)"));
    sh::run(Command::new(system_python).args(["-m", "venv"]).arg(&venv))?;
    sh::run(setup::pip(&python, "install").arg(VALIDATOR))?;
    std::fs::write(&stamp, VALIDATOR)?;
    Ok(python)
}

/// Validates the manifests (schema, then agreement with the server); `ngsd` is the built
/// binary, whose `serve --help` lists the flags the manifests may use.
pub fn check(system_python: &Path, ngsd: &Path) -> Result<()> {
    let root = sh::root();
    let files: Vec<PathBuf> = ["deployment.yaml", "service.yaml", "hpa.yaml"]
        .iter()
        .map(|f| root.join("deploy").join(f))
        .collect();
    let python = validator_venv(&root, system_python)?;
    sh::run(
        Command::new(&python)
            .args(["-m", "kubernetes_validate", "--strict"])
            .args(&files),
    )?;
    // The manifests as JSON, read with the YAML parser the validator brings.
    let json = sh::output(
        Command::new(&python)
            .args([
                "-c",
                "import json, sys, yaml\nprint(json.dumps([d for f in sys.argv[1:] for d in yaml.safe_load_all(open(f))]))",
            ])
            .args(&files),
    )?;
    let docs: Vec<Value> = serde_json::from_str(&json).context("reading the manifests")?;
    let help = sh::output(Command::new(ngsd).args(["serve", "--help"]))?;
    let dockerfile = std::fs::read_to_string(root.join("Dockerfile"))?;
    agree(&docs, &help, &dockerfile)
}

fn kind<'a>(docs: &'a [Value], kind: &str) -> Result<&'a Value> {
    docs.iter()
        .find(|d| d["kind"] == kind)
        .with_context(|| format!("deploy/ has no {kind}"))
}

/// The manifests agree with the server and the Dockerfile.
fn agree(docs: &[Value], serve_help: &str, dockerfile: &str) -> Result<()> {
    let deployment = kind(docs, "Deployment")?;
    let pod = &deployment["spec"]["template"];
    let container = &pod["spec"]["containers"][0];
    let port = serve_port(container, serve_help)?;
    container_ports_and_probes(container, port)?;
    scrape_annotations(&pod["metadata"]["annotations"], port)?;
    image_and_dockerfile(container, dockerfile, port)?;
    service_and_autoscaler(docs, deployment)
}

/// The container runs `ngsd serve` with flags it accepts, listening on 0.0.0.0; the port.
fn serve_port(container: &Value, serve_help: &str) -> Result<u64> {
    let args: Vec<&str> = container["args"]
        .as_array()
        .context("the container has no args")?
        .iter()
        .filter_map(Value::as_str)
        .collect();
    ensure!(
        args.first() == Some(&"serve"),
        "the container must run `ngsd serve`, not {args:?}"
    );
    for flag in args.iter().filter(|a| a.starts_with("--")) {
        ensure!(
            serve_help.contains(&format!("{flag} ")),
            "the container passes {flag}, which `ngsd serve` does not accept"
        );
    }
    let addr = args
        .windows(2)
        .find(|w| w[0] == "--addr")
        .map(|w| w[1])
        .context(
            "the container must pass --addr 0.0.0.0:PORT (the default listens on loopback only)",
        )?;
    let (host, port) = addr.rsplit_once(':').context("--addr is HOST:PORT")?;
    ensure!(
        host == "0.0.0.0",
        "--addr {addr} is not reachable from other pods"
    );
    let port: u64 = port.parse().context("--addr's port")?;
    Ok(port)
}

/// The `http` container port is `--addr`'s, and both probes GET /healthz on it.
fn container_ports_and_probes(container: &Value, port: u64) -> Result<()> {
    let ports = container["ports"]
        .as_array()
        .context("the container has no ports")?;
    let http = ports
        .iter()
        .find(|p| p["name"] == "http")
        .context("the container has no port named http")?;
    ensure!(
        http["containerPort"] == port,
        "containerPort {} is not --addr's {port}",
        http["containerPort"]
    );
    for probe in ["readinessProbe", "livenessProbe"] {
        let get = &container[probe]["httpGet"];
        ensure!(
            get["path"] == "/healthz",
            "{probe} must GET /healthz (open without the API key)"
        );
        ensure!(
            get["port"] == "http" || get["port"] == port,
            "{probe} probes another port"
        );
    }
    Ok(())
}

/// The pod is marked for Prometheus to scrape /metrics on the server's port.
fn scrape_annotations(a: &Value, port: u64) -> Result<()> {
    ensure!(
        a["prometheus.io/scrape"] == "true",
        "the pod is not marked for scraping"
    );
    ensure!(
        a["prometheus.io/path"] == "/metrics",
        "scrapes must read /metrics"
    );
    ensure!(
        a["prometheus.io/port"].as_str() == Some(port.to_string().as_str()),
        "scrapes must use port {port}"
    );
    Ok(())
}

/// The image is the one the Dockerfile builds (the workspace version), exposing the port.
fn image_and_dockerfile(container: &Value, dockerfile: &str, port: u64) -> Result<()> {
    let image = container["image"]
        .as_str()
        .context("the container has no image")?;
    let tag = format!("ngsd:{}", env!("CARGO_PKG_VERSION"));
    ensure!(
        image == tag,
        "the image is {image}, the Dockerfile's is {tag} (the workspace version)"
    );
    ensure!(
        dockerfile.contains(&format!("-t {tag} ")),
        "the Dockerfile's build line does not tag {tag}"
    );
    ensure!(
        dockerfile.contains(&format!("EXPOSE {port}")),
        "the Dockerfile does not expose {port}"
    );
    Ok(())
}

/// The Service selects the Deployment's pods on the http port; the autoscaler scales the
/// Deployment on CPU.
fn service_and_autoscaler(docs: &[Value], deployment: &Value) -> Result<()> {
    let service = kind(docs, "Service")?;
    ensure!(
        service["spec"]["ports"][0]["targetPort"] == "http",
        "the Service must target the http port"
    );
    ensure!(
        service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"],
        "the Service does not select the Deployment's pods"
    );
    let hpa = kind(docs, "HorizontalPodAutoscaler")?;
    let target = &hpa["spec"]["scaleTargetRef"];
    ensure!(
        target["kind"] == "Deployment" && target["name"] == deployment["metadata"]["name"],
        "the HorizontalPodAutoscaler does not scale the Deployment"
    );
    if hpa["spec"]["metrics"][0]["resource"]["name"] != "cpu" {
        bail!("the HorizontalPodAutoscaler must scale on CPU");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn docs(port: u64, flag: &str) -> Vec<Value> {
        vec![
            json!({"kind": "Deployment", "metadata": {"name": "ngsd"}, "spec": {
                "selector": {"matchLabels": {"app": "ngsd"}},
                "template": {"metadata": {"annotations": {
                    "prometheus.io/scrape": "true", "prometheus.io/path": "/metrics",
                    "prometheus.io/port": "8080"}},
                "spec": {"containers": [{
                    "image": format!("ngsd:{}", env!("CARGO_PKG_VERSION")),
                    "args": ["serve", flag, format!("0.0.0.0:{port}")],
                    "ports": [{"name": "http", "containerPort": 8080}],
                    "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}},
                    "livenessProbe": {"httpGet": {"path": "/healthz", "port": "http"}}}]}}}}),
            json!({"kind": "Service", "spec": {"selector": {"app": "ngsd"},
                "ports": [{"targetPort": "http"}]}}),
            json!({"kind": "HorizontalPodAutoscaler", "spec": {
                "scaleTargetRef": {"kind": "Deployment", "name": "ngsd"},
                "metrics": [{"resource": {"name": "cpu"}}]}}),
        ]
    }

    const HELP: &str = "      --addr <HOST:PORT>\n";

    fn dockerfile() -> String {
        format!(
            "#   docker build -t ngsd:{} .\nEXPOSE 8080\n",
            env!("CARGO_PKG_VERSION")
        )
    }

    #[test]
    fn consistent_manifests_pass_and_drift_is_caught() {
        agree(&docs(8080, "--addr"), HELP, &dockerfile()).expect("consistent");
        let err = agree(&docs(9000, "--addr"), HELP, &dockerfile()).unwrap_err();
        assert!(
            err.to_string()
                .contains("containerPort 8080 is not --addr's 9000"),
            "{err}"
        );
        let err = agree(&docs(8080, "--listen"), HELP, &dockerfile()).unwrap_err();
        assert!(
            err.to_string()
                .contains("--listen, which `ngsd serve` does not accept"),
            "{err}"
        );
    }

    #[test]
    fn the_committed_manifests_agree_with_the_dockerfile() {
        // The schema check needs the validator (cargo xtask test runs it); this one reads
        // the committed files with the same rules, minus the flags (no binary here).
        let root = sh::root();
        let dockerfile = std::fs::read_to_string(root.join("Dockerfile")).expect("Dockerfile");
        assert!(dockerfile.contains(&format!(
            "docker build -t ngsd:{} .",
            env!("CARGO_PKG_VERSION")
        )));
        let deployment =
            std::fs::read_to_string(root.join("deploy/deployment.yaml")).expect("manifest");
        for needle in [
            "path: /healthz",
            "prometheus.io/path: /metrics",
            "containerPort: 8080",
            "\"0.0.0.0:8080\"",
        ] {
            assert!(
                deployment.contains(needle),
                "deploy/deployment.yaml lacks `{needle}`"
            );
        }
    }
}
