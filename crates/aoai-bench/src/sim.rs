//! The simulator in a child process.
//!
//! The bench binary starts a copy of itself with [`CHILD_ENV`] naming a config file; that copy
//! calls [`run_child_if_asked`] first thing, serves the simulator, prints its listeners on
//! stdout and runs until its stdin closes (the parent dropped its [`SimProcess`]) — so the
//! simulator's CPU time is not the client's.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use aoai_sim::{SimConfig, SimStats};

/// Environment variable naming the simulator config a child copy must serve.
pub const CHILD_ENV: &str = "AOAI_BENCH_SIM_CONFIG";

/// If this process is a simulator child, serves the simulator and exits; otherwise returns.
pub fn run_child_if_asked() {
    let Some(path) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let code = match serve_child(std::path::Path::new(&path)) {
        Ok(()) => 0,
        Err(error) => {
            eprintln!("aoai-bench simulator child: {error}");
            2
        }
    };
    std::process::exit(code);
}

fn serve_child(path: &std::path::Path) -> Result<(), String> {
    let config = SimConfig::from_file(path).map_err(|e| e.to_string())?;
    let sim = aoai_sim::SimThread::start(config).map_err(|e| e.to_string())?;
    {
        let mut out = std::io::stdout().lock();
        for listener in sim.listeners() {
            writeln!(
                out,
                "listener {} {}",
                listener.url,
                listener.deployments.join(",")
            )
            .map_err(|e| e.to_string())?;
        }
        writeln!(out, "ready").map_err(|e| e.to_string())?;
        out.flush().map_err(|e| e.to_string())?;
    }
    // Serve until the parent closes our stdin (or dies).
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    sim.stop();
    Ok(())
}

/// A simulator child process; killed when dropped.
pub struct SimProcess {
    child: Child,
    started: std::time::SystemTime,
    listeners: Vec<(String, Vec<String>)>,
    _config: tempfile::NamedTempFile,
}

impl SimProcess {
    /// Starts a copy of this executable serving `config`, and waits until it listens.
    pub fn start(config: &SimConfig) -> Result<SimProcess, String> {
        let mut file = tempfile::Builder::new()
            .suffix(".json")
            .tempfile()
            .map_err(|e| format!("cannot write the simulator config: {e}"))?;
        let text = serde_json::to_string(config).map_err(|e| e.to_string())?;
        file.write_all(text.as_bytes())
            .and_then(|()| file.flush())
            .map_err(|e| format!("cannot write the simulator config: {e}"))?;
        let exe = std::env::current_exe().map_err(|e| format!("cannot find this binary: {e}"))?;
        let mut child = Command::new(exe)
            .env(CHILD_ENV, file.path())
            .env("RUST_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start the simulator child: {e}"))?;
        let stdout = child
            .stdout
            .take()
            .ok_or("the simulator child has no stdout")?;
        let mut listeners = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let line = line.map_err(|e| format!("simulator child: {e}"))?;
            if line == "ready" {
                return Ok(SimProcess {
                    child,
                    started: std::time::SystemTime::now(),
                    listeners,
                    _config: file,
                });
            }
            let mut parts = line.split_whitespace().skip(1);
            let url = parts.next().unwrap_or_default().to_owned();
            let deployments = parts
                .next()
                .map(|d| d.split(',').map(str::to_owned).collect())
                .unwrap_or_default();
            listeners.push((url, deployments));
        }
        let _ = child.kill();
        let _ = child.wait();
        Err("the simulator child ended before it listened (see its message above)".into())
    }

    /// The shared listener's base URL (`http://127.0.0.1:PORT/`).
    pub fn base_url(&self) -> String {
        self.listeners
            .first()
            .map(|(url, _)| url.clone())
            .unwrap_or_default()
    }

    /// The base URL serving `deployment`.
    pub fn endpoint_for(&self, deployment: &str) -> String {
        self.listeners
            .iter()
            .find(|(_, names)| names.iter().any(|n| n == deployment))
            .map(|(url, _)| url.clone())
            .unwrap_or_else(|| self.base_url())
    }

    /// When the simulator announced it listens: its quota windows start about then.
    pub fn started(&self) -> std::time::SystemTime {
        self.started
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The simulator's counters, from `GET /stats`.
    pub fn stats(&self) -> Result<SimStats, String> {
        let body = http_get(&self.base_url(), "/stats")?;
        serde_json::from_str(&body).map_err(|e| format!("/stats is not SimStats: {e}"))
    }
}

impl Drop for SimProcess {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal blocking `GET` over HTTP/1.1 (`Connection: close`); returns the body.
pub fn http_get(base_url: &str, path: &str) -> Result<String, String> {
    let host = base_url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let mut stream =
        TcpStream::connect(&host).map_err(|e| format!("cannot connect to {host}: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut reply = String::new();
    stream
        .read_to_string(&mut reply)
        .map_err(|e| format!("GET {path}: {e}"))?;
    let (head, body) = reply
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("GET {path}: no HTTP header end"))?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!(
            "GET {path}: {}",
            head.lines().next().unwrap_or_default()
        ));
    }
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return Ok(dechunk(body));
    }
    Ok(body.to_owned())
}

fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || tail.len() < size {
            break;
        }
        out.push_str(&tail[..size]);
        rest = tail[size..].trim_start_matches("\r\n");
    }
    out
}
