//! A running `ngsd serve` on an ephemeral port, killed when dropped.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A running `ngsd serve`.
#[derive(Debug)]
pub struct ServeProcess {
    /// The process.
    pub child: Child,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// Its stderr, line by line.
    pub stderr: mpsc::Receiver<String>,
}

impl ServeProcess {
    /// Starts `bin serve --addr 127.0.0.1:0 --model MODEL ARGS` with `env` and one ONNX
    /// Runtime thread, and waits until it prints its address.
    pub fn start(bin: &Path, model: &Path, args: &[&str], env: &[(&str, &str)]) -> ServeProcess {
        Self::try_start(bin, model, args, env).unwrap_or_else(|err| {
            panic!("the server did not start:\n{err}");
        })
    }

    /// As [`start`](Self::start), returning what the server wrote to stderr if it exits
    /// (or stays silent for 300 s) instead of printing its address.
    pub fn try_start(
        bin: &Path,
        model: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Result<ServeProcess, String> {
        let mut cmd = Command::new(bin);
        cmd.args(["serve", "--addr", "127.0.0.1:0", "--model"])
            .arg(model)
            .args(args)
            .env("NGSD_THREADS", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("ngsd serve starts");
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let (etx, erx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = etx.send(line);
            }
        });
        let Ok(line) = rx.recv_timeout(Duration::from_secs(300)) else {
            let _ = child.kill();
            let _ = child.wait();
            std::thread::sleep(Duration::from_millis(100));
            return Err(erx.try_iter().collect::<Vec<_>>().join("\n"));
        };
        let addr = line
            .split("http://")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .to_string();
        Ok(ServeProcess {
            child,
            base: format!("http://{addr}"),
            stderr: erx,
        })
    }

    /// `host:port`.
    pub fn addr(&self) -> &str {
        self.base.trim_start_matches("http://")
    }

    /// The URL of `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
