//! [`RedisServer`]: a `redis-server` of the test's own, on a unix socket in a temp dir.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::certificates::TestCertificates;

/// Environment variable naming the `redis-server` binary to run instead of the one on `PATH`.
pub const REDIS_SERVER_ENV: &str = "AOAI_REDIS_SERVER";

/// How long a server may take to answer its first `PING`.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause between two readiness probes (a bounded poll, not a guess at start-up time).
const PROBE_PAUSE: Duration = Duration::from_millis(5);

/// The command that installs the server on Debian and Ubuntu, as error messages name it.
const INSTALL_COMMAND: &str = "apt-get install -y redis-server";

/// Why a test's Redis could not be started or stopped.
#[derive(Debug, thiserror::Error)]
pub enum RedisServerError {
    /// No `redis-server` binary, and this process may not install one.
    #[error(
        "redis-server is not installed and {why}; install it with `sudo {INSTALL_COMMAND}` \
         (Debian/Ubuntu), or set {REDIS_SERVER_ENV}=/path/to/redis-server"
    )]
    Missing {
        /// Why it could not be installed here.
        why: String,
    },
    /// The TLS certificates could not be made.
    #[error(transparent)]
    Certificates(#[from] crate::certificates::CertificateError),
    /// The temp dir, the process or the socket failed.
    #[error("redis-server ({context}): {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        source: std::io::Error,
    },
    /// The server exited or never answered `PING` in time.
    #[error("redis-server did not become ready on {socket}: {why}; its log:\n{log}")]
    NotReady {
        /// The socket it should listen on.
        socket: PathBuf,
        /// What happened.
        why: String,
        /// The end of its log.
        log: String,
    },
}

fn io_error(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> RedisServerError {
    let context = context.into();
    move |source| RedisServerError::Io { context, source }
}

/// A `redis-server` started for one test: a unix socket in a temp dir (no port to collide on),
/// no persistence (`--save ''`, `--appendonly no`), killed and its dir removed on drop. Started
/// with [`RedisServer::start_tls`] it also serves TLS on a loopback port.
#[derive(Debug)]
pub struct RedisServer {
    binary: PathBuf,
    dir: TempDir,
    socket: PathBuf,
    child: Option<Child>,
    tls: Option<Tls>,
}

/// TLS beside the unix socket: the port, and the certificates.
#[derive(Debug)]
struct Tls {
    port: u16,
    certificates: TestCertificates,
}

impl RedisServer {
    /// Starts a server and waits until it answers `PING` (bounded: an error after 10 s, with
    /// the server's log). Installs `redis-server` first when it is missing and this process
    /// may (see [`RedisServerError::Missing`]).
    pub fn start() -> Result<RedisServer, RedisServerError> {
        Self::launch(false)
    }

    /// Starts a server that also serves TLS on a loopback port ([`tls_url`](Self::tls_url)),
    /// with a certificate for `localhost` and `127.0.0.1` signed by a CA of its own
    /// ([`tls_ca`](Self::tls_ca)), both made with `openssl` (installed first when missing and
    /// this process may). Redis takes no port 0 for TLS: the port is one the system just
    /// handed out and took back.
    pub fn start_tls() -> Result<RedisServer, RedisServerError> {
        Self::launch(true)
    }

    fn launch(tls: bool) -> Result<RedisServer, RedisServerError> {
        let binary = find_or_install()?;
        let dir = tempfile::Builder::new()
            .prefix("aoai-redis")
            .tempdir()
            .map_err(io_error("creating its temp dir"))?;
        let tls = if tls {
            let certificates = TestCertificates::make(dir.path())?;
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|listener| listener.local_addr())
                .map_err(io_error("picking a loopback port"))?
                .port();
            Some(Tls { port, certificates })
        } else {
            None
        };
        let socket = dir.path().join("redis.sock");
        let mut server = RedisServer {
            binary,
            dir,
            socket,
            child: None,
            tls,
        };
        server.spawn()?;
        Ok(server)
    }

    /// `rediss://localhost:PORT` with [`start_tls`](Self::start_tls), else `None`.
    pub fn tls_url(&self) -> Option<String> {
        self.tls
            .as_ref()
            .map(|tls| format!("rediss://localhost:{}", tls.port))
    }

    /// The PEM file of the CA that signed the TLS certificate (for `SSL_CERT_FILE`).
    pub fn tls_ca(&self) -> Option<&Path> {
        self.tls.as_ref().map(|tls| tls.certificates.ca.as_path())
    }

    /// The unix socket it listens on.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// A URL for Redis clients: `redis+unix:///…/redis.sock`.
    pub fn url(&self) -> String {
        format!("redis+unix://{}", self.socket.display())
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    /// Kills the server at once (SIGKILL, as a crash would) and waits for it to be gone;
    /// its clients' connections break. Does nothing when it is not running.
    pub fn kill(&mut self) -> Result<(), RedisServerError> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        if matches!(child.try_wait(), Ok(None)) {
            child.kill().map_err(io_error("killing it"))?;
        }
        child.wait().map_err(io_error("waiting for it to exit"))?;
        Ok(())
    }

    /// Starts the server again on the same socket (killing it first if it runs). Its data is
    /// gone, as after a restart without persistence.
    pub fn restart(&mut self) -> Result<(), RedisServerError> {
        self.kill()?;
        self.spawn()
    }

    fn spawn(&mut self) -> Result<(), RedisServerError> {
        match std::fs::remove_file(&self.socket) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error("removing its old socket")(e)),
        }
        let log = self.log_path();
        let mut command = Command::new(&self.binary);
        if let Some(tls) = &self.tls {
            command
                .arg("--tls-port")
                .arg(tls.port.to_string())
                .arg("--tls-cert-file")
                .arg(&tls.certificates.cert)
                .arg("--tls-key-file")
                .arg(&tls.certificates.key)
                .arg("--tls-ca-cert-file")
                .arg(&tls.certificates.ca)
                .args(["--tls-auth-clients", "no"]);
        }
        let child = command
            .args(["--port", "0", "--unixsocket"])
            .arg(&self.socket)
            .args([
                "--unixsocketperm",
                "700",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(io_error(format!("starting {}", self.binary.display())))?;
        self.child = Some(child);
        self.wait_ready()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    /// Polls the socket with `PING` until `+PONG`, the process exits, or [`READY_TIMEOUT`].
    fn wait_ready(&mut self) -> Result<(), RedisServerError> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut last = String::from("no answer yet");
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Err(self.not_ready(format!("it exited with {status}")));
            }
            match ping(&self.socket) {
                Ok(()) => return Ok(()),
                Err(why) => last = why,
            }
            std::thread::sleep(PROBE_PAUSE);
        }
        let _ = self.kill();
        Err(self.not_ready(format!(
            "no PONG within {} s (last: {last})",
            READY_TIMEOUT.as_secs()
        )))
    }

    fn not_ready(&self, why: String) -> RedisServerError {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(20).collect();
        RedisServerError::NotReady {
            socket: self.socket.clone(),
            why,
            log: tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

/// One `PING` over the socket; `Err` says what went wrong.
fn ping(socket: &Path) -> Result<(), String> {
    let mut stream = UnixStream::connect(socket).map_err(|e| format!("connect: {e}"))?;
    let timeout = Some(Duration::from_secs(1));
    stream
        .set_read_timeout(timeout)
        .and_then(|()| stream.set_write_timeout(timeout))
        .and_then(|()| stream.write_all(b"PING\r\n"))
        .map_err(|e| format!("write: {e}"))?;
    let mut reply = [0u8; 7];
    stream
        .read_exact(&mut reply)
        .map_err(|e| format!("read: {e}"))?;
    if &reply == b"+PONG\r\n" {
        Ok(())
    } else {
        Err(format!(
            "unexpected reply {:?}",
            String::from_utf8_lossy(&reply)
        ))
    }
}

/// The binary to run: `AOAI_REDIS_SERVER`, else `redis-server` on `PATH`, installed first
/// when missing and this process may (one installer at a time).
fn find_or_install() -> Result<PathBuf, RedisServerError> {
    static INSTALLING: Mutex<()> = Mutex::new(());
    if let Some(path) = std::env::var_os(REDIS_SERVER_ENV) {
        return Ok(PathBuf::from(path));
    }
    if let Some(path) = on_path("redis-server") {
        return Ok(path);
    }
    let _one_at_a_time = INSTALLING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(path) = on_path("redis-server") {
        return Ok(path);
    }
    install("redis-server").map_err(|why| RedisServerError::Missing { why })?;
    on_path("redis-server").ok_or_else(|| RedisServerError::Missing {
        why: format!("`{INSTALL_COMMAND}` ran but put no redis-server on PATH"),
    })
}

pub(crate) fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// Installs Debian's `package` with apt-get, as root or through password-less sudo; `Err`
/// says why it could not.
pub(crate) fn install(package: &str) -> Result<(), String> {
    if on_path("apt-get").is_none() {
        return Err("there is no apt-get here to install it".to_owned());
    }
    let sudo = if is_root() {
        false
    } else if on_path("sudo").is_some() && succeeds(Command::new("sudo").args(["-n", "true"])) {
        true
    } else {
        return Err("this process is not root and has no password-less sudo".to_owned());
    };
    let apt = |args: &[&str]| {
        let mut command = if sudo {
            let mut c = Command::new("sudo");
            c.args(["-n", "apt-get"]);
            c
        } else {
            Command::new("apt-get")
        };
        command
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null());
        succeeds(&mut command)
    };
    // The package lists may be missing or stale on a fresh machine: update once on failure.
    if apt(&["install", "-y", "-q", package])
        || (apt(&["update", "-q"]) && apt(&["install", "-y", "-q", package]))
    {
        Ok(())
    } else {
        Err(format!("`apt-get install -y {package}` failed here"))
    }
}

fn succeeds(command: &mut Command) -> bool {
    command
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| out.status.success() && out.stdout.trim_ascii() == b"0")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_answers_is_killed_and_restarts_on_the_same_socket() {
        let mut redis = RedisServer::start().unwrap();
        assert!(redis.is_running());
        let socket = redis.socket().to_owned();
        assert_eq!(ping(&socket), Ok(()));
        assert_eq!(redis.url(), format!("redis+unix://{}", socket.display()));

        redis.kill().unwrap();
        assert!(!redis.is_running());
        assert!(ping(&socket).unwrap_err().starts_with("connect:"));
        redis.kill().unwrap(); // a second kill is a no-op

        redis.restart().unwrap();
        assert!(redis.is_running());
        assert_eq!(redis.socket(), socket);
        assert_eq!(ping(&socket), Ok(()));
    }

    #[test]
    fn drop_stops_the_server_and_removes_its_dir() {
        let redis = RedisServer::start().unwrap();
        let dir = redis.dir.path().to_owned();
        let socket = redis.socket().to_owned();
        drop(redis);
        assert!(ping(&socket).is_err());
        assert!(!dir.exists());
    }

    #[test]
    fn a_tls_server_listens_on_its_port_with_a_certificate_of_its_ca() {
        let mut redis = RedisServer::start_tls().unwrap();
        let url = redis.tls_url().unwrap();
        let port: u16 = url
            .strip_prefix("rediss://localhost:")
            .unwrap()
            .parse()
            .unwrap();
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
        let ca = std::fs::read_to_string(redis.tls_ca().unwrap()).unwrap();
        assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"), "{ca}");
        // A restart serves TLS on the same port again.
        redis.restart().unwrap();
        assert_eq!(redis.tls_url().unwrap(), url);
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
        assert_eq!(RedisServer::start().unwrap().tls_url(), None);
    }

    #[test]
    fn a_server_that_cannot_start_is_a_clear_error() {
        // `false` exits at once: the readiness poll must notice instead of waiting out its
        // timeout.
        let dir = tempfile::tempdir().unwrap();
        let mut server = RedisServer {
            binary: on_path("false").unwrap(),
            socket: dir.path().join("redis.sock"),
            dir,
            child: None,
            tls: None,
        };
        let error = server.spawn().unwrap_err().to_string();
        assert!(error.contains("did not become ready"), "{error}");
        assert!(error.contains("it exited with exit status: 1"), "{error}");
    }
}
