//! nginx as a second zero-latency upstream: Debian's `nginx` (or `nginx-light`) in the
//! foreground, one process, on a loopback port, answering every request with one fixed
//! completion. Started and stopped by the bench; `just bench-gateway` installs it when missing.

use std::io::Write;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where Debian puts it (not always on a user's `PATH`).
const CANDIDATES: [&str; 2] = ["/usr/sbin/nginx", "nginx"];

/// A running nginx; stopped and its files removed when dropped.
pub(crate) struct Nginx {
    child: Child,
    port: u16,
    pub(crate) version: String,
    _dir: tempfile::TempDir,
}

impl Nginx {
    /// Starts nginx answering `reply` (JSON, no single quotes) to every request.
    pub(crate) fn start(reply: &str) -> Result<Nginx, String> {
        if reply.contains('\'') {
            return Err("the fixed reply may not hold a single quote".into());
        }
        let binary = CANDIDATES
            .iter()
            .map(PathBuf::from)
            .find(|path| {
                Command::new(path)
                    .arg("-v")
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|status| status.success())
            })
            .ok_or(
                "nginx is not installed (Debian: apt-get install nginx-light, or `just \
                 bench-gateway`)",
            )?;
        let version = Command::new(&binary)
            .arg("-v")
            .output()
            .map(|out| String::from_utf8_lossy(&out.stderr).trim().to_owned())
            .unwrap_or_default();
        let dir = tempfile::tempdir().map_err(|e| format!("cannot make nginx's directory: {e}"))?;
        // nginx cannot report a port it was given 0 for: take a free one and hand it over.
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|listener| listener.local_addr())
            .map_err(|e| format!("cannot find a free port: {e}"))?
            .port();
        let root = dir.path().display();
        let config = format!(
            "daemon off;\nmaster_process off;\nworker_processes 1;\npid {root}/nginx.pid;\n\
             error_log {root}/error.log warn;\nevents {{ worker_connections 4096; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {root}/body;\n\
             proxy_temp_path {root}/proxy;\n  fastcgi_temp_path {root}/fastcgi;\n\
             uwsgi_temp_path {root}/uwsgi;\n  scgi_temp_path {root}/scgi;\n\
             keepalive_requests 1000000;\n  server {{\n    listen 127.0.0.1:{port};\n\
             location / {{ default_type application/json; return 200 '{reply}'; }}\n  }}\n}}\n"
        );
        let path = dir.path().join("nginx.conf");
        std::fs::File::create(&path)
            .and_then(|mut file| file.write_all(config.as_bytes()))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        let child = Command::new(&binary)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
        let mut nginx = Nginx {
            child,
            port,
            version,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err() {
            if Instant::now() > deadline || nginx.child.try_wait().ok().flatten().is_some() {
                let log = std::fs::read_to_string(nginx._dir.path().join("error.log"))
                    .unwrap_or_default();
                return Err(format!(
                    "nginx did not listen on port {port}: {}",
                    log.trim()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(nginx)
    }

    /// Its base URL, as a deployment's `endpoint`.
    pub(crate) fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
