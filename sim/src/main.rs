//! `upstream-sim` binary: parses a few flags, starts the simulator on loopback, serves until a signal.

use std::io::Write;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::process::ExitCode;

use upstream_sim::{SimConfig, Simulator};

const USAGE: &str =
    "usage: upstream-sim [--port N] [--host 127.0.0.1] [--config file.json] [--time-scale X]";

/// Parsed command line.
struct Args {
    host: IpAddr,
    port: u16,
    config: Option<String>,
    time_scale: Option<f64>,
}

fn parse_host(text: &str) -> Result<IpAddr, String> {
    let ip = match text {
        "localhost" => IpAddr::from([127, 0, 0, 1]),
        "[::1]" => IpAddr::V6(Ipv6Addr::LOCALHOST),
        other => other
            .parse()
            .map_err(|_| format!("--host {other}: not an IP address"))?,
    };
    if ip.is_loopback() {
        Ok(ip)
    } else {
        Err(format!(
            "--host {text}: refused, upstream-sim only listens on loopback (127.0.0.0/8 or ::1)"
        ))
    }
}

fn parse_args(mut it: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut args = Args {
        host: IpAddr::from([127, 0, 0, 1]),
        port: 0,
        config: None,
        time_scale: None,
    };
    while let Some(flag) = it.next() {
        if flag == "--help" || flag == "-h" {
            return Err(USAGE.to_string());
        }
        let value = it
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        match flag.as_str() {
            "--port" => {
                args.port = value
                    .parse()
                    .map_err(|_| format!("--port {value}: not a port"))?
            }
            "--host" => args.host = parse_host(&value)?,
            "--config" => args.config = Some(value),
            "--time-scale" => {
                args.time_scale = Some(
                    value
                        .parse()
                        .map_err(|_| format!("--time-scale {value}: not a number"))?,
                )
            }
            _ => return Err(format!("unknown argument {flag}\n{USAGE}")),
        }
    }
    Ok(args)
}

fn load_config(args: &Args) -> Result<SimConfig, String> {
    let mut config = match &args.config {
        Some(path) => {
            let text =
                std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?;
            SimConfig::from_json(&text)?
        }
        None => SimConfig::demo(),
    };
    if let Some(scale) = args.time_scale {
        config.time_scale = scale;
    }
    config.validate()?;
    Ok(config)
}

/// Resolves on SIGINT or SIGTERM. The handlers are installed when this is called, not when the
/// future is first polled: installed before the URL is announced, a signal sent right after the
/// announcement is never met by the default action (which would kill the process uncleanly).
fn signal_received() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, Signal, SignalKind};
    async fn received(signal: Option<Signal>) {
        match signal {
            Some(mut signal) => {
                signal.recv().await;
            }
            None => std::future::pending().await,
        }
    }
    let term = received(signal(SignalKind::terminate()).ok());
    let interrupt = received(signal(SignalKind::interrupt()).ok());
    async move {
        tokio::select! {
            _ = term => {}
            _ = interrupt => {}
        }
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("upstream-sim: {e}");
            return ExitCode::from(2);
        }
    };
    let config = match load_config(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("upstream-sim: {e}");
            return ExitCode::from(2);
        }
    };
    let sim = match Simulator::start_on(config, SocketAddr::new(args.host, args.port)).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("upstream-sim: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    let stop = signal_received();
    // The parent process reads this one line to learn the port.
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "upstream-sim listening on {}", sim.url());
    let _ = out.flush();
    drop(out);
    stop.await;
    sim.shutdown().await;
    ExitCode::SUCCESS
}
