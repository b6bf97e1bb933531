//! A loopback TCP relay in front of the gateway that keeps every byte the gateway sends to
//! its clients, so the suite can prove that no secret ever reaches one.

use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The relay: clients call `url`; it forwards to the current gateway.
pub struct Recorder {
    /// Where clients connect.
    pub url: String,
    target: Arc<Mutex<String>>,
    seen: Arc<Mutex<Vec<u8>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Recorder {
    /// Starts relaying to `target` (`http://127.0.0.1:port`) on an ephemeral loopback port.
    pub async fn start(target: &str) -> Result<Recorder, String> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| format!("recorder: {e}"))?;
        let port = listener.local_addr().map_err(|e| e.to_string())?.port();
        let target = Arc::new(Mutex::new(target.to_string()));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (to, log) = (target.clone(), seen.clone());
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let addr = to.lock().map(|t| host_port(&t)).unwrap_or_default();
                tokio::spawn(relay(client, addr, log.clone()));
            }
        });
        Ok(Recorder {
            url: format!("http://127.0.0.1:{port}"),
            target,
            seen,
            task,
        })
    }

    /// Points new connections at another gateway.
    pub fn retarget(&self, target: &str) {
        if let Ok(mut t) = self.target.lock() {
            *t = target.to_string();
        }
    }

    /// Everything the gateway has sent to clients so far (headers and bodies), as text.
    pub fn seen(&self) -> String {
        self.seen
            .lock()
            .map(|s| String::from_utf8_lossy(&s).into_owned())
            .unwrap_or_default()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn host_port(url: &str) -> String {
    url.trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string()
}

async fn relay(client: TcpStream, addr: String, seen: Arc<Mutex<Vec<u8>>>) {
    let Ok(server) = TcpStream::connect(&addr).await else {
        return;
    };
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let upward = async move {
        let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
        let _ = server_write.shutdown().await;
    };
    let downward = async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match server_read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if let Ok(mut s) = seen.lock() {
                s.extend_from_slice(&buf[..n]);
            }
            if client_write.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = client_write.shutdown().await;
    };
    tokio::join!(upward, downward);
}
