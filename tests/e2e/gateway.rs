//! Runs the built Worker in workerd through `wrangler dev` on an ephemeral port, and stops it.
//!
//! The entry module is `faults.mjs`: the gateway's entry (`src/index.js` over the built bundle)
//! unchanged, plus a test-only route that makes a bucket's Durable Object slow, failing or
//! unable to write. Compatibility settings,
//! bindings and migrations come from the repository's `wrangler.toml`.

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
        let build = root.join("build");
        if !build.join("index.js").exists() {
            return Err(format!(
                "{}/index.js is missing: run `make build` first",
                build.display()
            ));
        }
        let shim = include_str!("faults.mjs").replace("__ROOT__", &root.display().to_string());
        let main = dir.join("faults.mjs");
        std::fs::write(&main, shim).map_err(|e| format!("write shim: {e}"))?;
        let config_path = dir.join("wrangler.toml");
        let toml = worker_config(root, &main, &spec.config)?;
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
            // A private dev registry: another local wrangler dev coming or going must not make
            // this one reload (which fails its requests in flight).
            .env("WRANGLER_REGISTRY_PATH", dir.join("registry"))
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
            // Up: ready, or up and saying its config is invalid (a scenario's own).
            if let Ok(answer) = answer {
                let status = answer.status();
                let text = answer.text().await.unwrap_or_default();
                if status == 200 || status == 503 && text.contains(r#""misconfigured""#) {
                    return Ok(());
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(format!("{url} never answered"))
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

/// The test worker's wrangler.toml: the repository's compatibility settings, bindings and
/// migrations (so tests run what deploys), this entry module, and `GATEWAY` as a JSON var.
fn worker_config(root: &Path, main: &Path, gateway: &serde_json::Value) -> Result<String, String> {
    let text = std::fs::read_to_string(root.join("wrangler.toml"))
        .map_err(|e| format!("read wrangler.toml: {e}"))?;
    let deploy: toml::Table = toml::from_str(&text).map_err(|e| format!("wrangler.toml: {e}"))?;
    let mut out = toml::Table::new();
    out.insert("name".into(), "edge-gateway-e2e".into());
    out.insert("main".into(), main.display().to_string().into());
    for key in [
        "compatibility_date",
        "compatibility_flags",
        "durable_objects",
        "migrations",
    ] {
        if let Some(value) = deploy.get(key) {
            out.insert(key.into(), value.clone());
        }
    }
    // No service bindings: faults.mjs's leaving client calls this worker through its own
    // loopback (ctx.exports); a binding to itself would tie it to wrangler's dev registry,
    // which reloads it (failing requests in flight) whenever another local wrangler dev
    // comes or goes.
    let mut vars = toml::Table::new();
    vars.insert("GATEWAY".into(), gateway.to_string().into());
    out.insert("vars".into(), vars.into());
    toml::to_string(&out).map_err(|e| format!("test wrangler.toml: {e}"))
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.stop();
    }
}
