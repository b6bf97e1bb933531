//! Loopback simulator of OpenAI-compatible LLM upstreams (DashScope compatible mode and OpenAI)
//! with per-account limits, exact error bodies, streams and faults on demand.

mod bodies;
mod body;
mod chat;
mod clock;
mod completion;
pub mod config;
mod control;
mod faults;
mod limits;
mod respond;
mod responses;
mod server;
mod state;
mod stats;
mod text;

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use config::{AccountConfig, AccountState, Burst, Limits, SimConfig};

use state::{lock, SimState};

/// A running simulator; dropping it stops the server too.
pub struct Simulator {
    addr: SocketAddr,
    state: Arc<Mutex<SimState>>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Simulator {
    /// Binds 127.0.0.1:port (0 = ephemeral) and serves in a background tokio task.
    pub async fn start(config: SimConfig, port: u16) -> io::Result<Simulator> {
        Simulator::start_on(
            config,
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port),
        )
        .await
    }

    /// Like [`Simulator::start`] on any loopback address; other addresses are refused.
    pub async fn start_on(config: SimConfig, addr: SocketAddr) -> io::Result<Simulator> {
        if !addr.ip().is_loopback() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("upstream-sim serves loopback only, not {}", addr.ip()),
            ));
        }
        config
            .validate()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(SimState::new(config)));
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(server::serve(listener, Arc::clone(&state), stopped));
        Ok(Simulator {
            addr,
            state,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Base URL, e.g. `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The same JSON as `GET /_sim/stats`.
    pub fn stats(&self) -> serde_json::Value {
        lock(&self.state).stats_json()
    }

    /// Same as `GET /_sim/hooks`: what the alert hooks received, oldest first.
    pub fn hooks(&self) -> Vec<serde_json::Value> {
        lock(&self.state).hooks.clone()
    }

    /// Same as `POST /_sim/hook_status`: the status the hooks answer with from now on.
    pub fn set_hook_status(&self, status: u16) {
        lock(&self.state).hook_status = status;
    }

    /// Same as `POST /_sim/reset`: zero counters and windows, clear faults, restore accounts.
    pub fn reset(&self) {
        lock(&self.state).reset();
    }

    /// Queues a fault object (or an array of them), as `POST /_sim/faults`.
    pub fn push_fault(&self, fault: serde_json::Value) -> Result<(), String> {
        control::push_faults(&self.state, &fault).map(|_| ())
    }

    /// Changes an account, as `POST /_sim/accounts/<id>` (`{"state":..}` and/or `{"limits":..}`).
    pub fn update_account(&self, id: &str, change: serde_json::Value) -> Result<(), String> {
        lock(&self.state).update_account(id, &change)
    }

    /// Changes the time scale, as `POST /_sim/time_scale`.
    pub fn set_time_scale(&self, time_scale: f64) -> Result<(), String> {
        lock(&self.state).set_time_scale(time_scale)
    }

    /// Stops accepting, drops open connections and waits for the server task to end.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
