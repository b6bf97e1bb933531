//! Runs the built Worker in workerd through `wrangler dev` on an ephemeral port, and stops it.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A running gateway: one `wrangler dev` process group with its own state directory.
pub struct Gateway {
    child: Option<Child>,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// The run's directory: config, log and Durable Object state.
    pub dir: PathBuf,
}

/// Everything the test gateway's wrangler config needs besides the fixed bindings.
pub struct GatewaySpec {
    /// The `GATEWAY` config as JSON.
    pub config: serde_json::Value,
    /// Plain-text bindings standing in for secrets (upstream keys, gateway keys, admin token).
    pub secrets: Vec<(String, String)>,
}

impl Gateway {
    /// Writes the config into `dir` and starts wrangler dev, persisting DO state under `dir/state`.
    pub async fn start(root: &Path, dir: &Path, spec: &GatewaySpec) -> Result<Gateway, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        let main = root.join("build/index.js");
        if !main.exists() {
            return Err(format!(
                "{} is missing: run `make build` first",
                main.display()
            ));
        }
        let toml = format!(
            "name = \"edge-gateway-e2e\"\nmain = {main:?}\ncompatibility_date = \"2026-04-01\"\n\
             [durable_objects]\nbindings = [{{ name = \"BUCKET\", class_name = \"BucketDo\" }}]\n\
             [[migrations]]\ntag = \"v1\"\nnew_sqlite_classes = [\"BucketDo\"]\n[vars]\nGATEWAY = {:?}\n",
            spec.config.to_string(),
        );
        let config_path = dir.join("wrangler.toml");
        std::fs::write(&config_path, toml).map_err(|e| format!("write config: {e}"))?;
        // Secrets go where wrangler dev reads them, so it treats them as secrets (hidden in logs).
        let dev_vars: String = spec
            .secrets
            .iter()
            .map(|(name, value)| format!("{name}={value}\n"))
            .collect();
        std::fs::write(dir.join(".dev.vars"), dev_vars)
            .map_err(|e| format!("write .dev.vars: {e}"))?;

        let log_path = dir.join("wrangler.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| format!("open log: {e}"))?;
        let mut child = Command::new(root.join("node_modules/.bin/wrangler"))
            .args(["dev", "-c"])
            .arg(&config_path)
            .args(["--ip", "127.0.0.1", "--port", "0", "--inspector-port", "0"])
            .args(["--show-interactive-dev-session=false", "--persist-to"])
            .arg(dir.join("state"))
            .current_dir(dir)
            .env("CI", "1")
            .env("WRANGLER_SEND_METRICS", "false")
            .env("CLOUDFLARE_CF_FETCH_ENABLED", "false")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .map_err(|e| format!("spawn wrangler: {e}"))?;

        let (tx, rx) = mpsc::channel::<String>();
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let tx = tx.clone();
            let mut log = log.try_clone().map_err(|e| format!("log: {e}"))?;
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let _ = writeln!(log, "{line}");
                    if let Some(at) = line.find("Ready on http://") {
                        let _ = tx.send(line[at + "Ready on ".len()..].trim().to_string());
                    }
                }
            });
        }
        let _ = writeln!(&log, "---- started ----");
        let mut gateway = Gateway {
            child: Some(child),
            url: String::new(),
            dir: dir.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if let Some(child) = gateway.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(format!(
                        "wrangler exited early ({status}); see {}",
                        log_path.display()
                    ));
                }
            }
            if let Ok(url) = rx.try_recv() {
                gateway.url = url;
                break;
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "wrangler not ready in 90 s; see {}",
                    log_path.display()
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        gateway.wait_healthy(deadline).await?;
        Ok(gateway)
    }

    async fn wait_healthy(&self, deadline: Instant) -> Result<(), String> {
        let url = format!("{}/healthz", self.url);
        let client = reqwest::Client::new();
        while Instant::now() < deadline {
            let answer = client
                .get(&url)
                .timeout(Duration::from_secs(2))
                .send()
                .await;
            if answer.is_ok_and(|r| r.status() == 200) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(format!("{url} never answered 200"))
    }

    /// Stops the whole process group (wrangler and its workerd children).
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let group = format!("-{}", child.id());
        let _ = Command::new("kill").args(["-TERM", "--", &group]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = child.wait();
    }

    /// The wrangler/workerd log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("wrangler.log")).unwrap_or_default()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.stop();
    }
}
