//! The `aoai-sim` binary: prints where it listens, serves, and reports bad configs.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

#[test]
fn binary_prints_its_listeners_and_serves() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("sim.yaml");
    std::fs::write(
        &config,
        "bind: \"127.0.0.1:0\"\ndeployments:\n  - name: a\n  - name: b\n    listener: own\n",
    )
    .expect("write config");
    let mut child = Command::new(env!("CARGO_BIN_EXE_aoai-sim"))
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("aoai-sim starts");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout"));
    let mut first = String::new();
    let mut second = String::new();
    let read = lines
        .read_line(&mut first)
        .and_then(|_| lines.read_line(&mut second));
    let outcome = read.map(|_| {
        let url = first
            .trim()
            .strip_prefix("aoai-sim listening on ")
            .map(str::to_owned);
        (url, second.trim().to_owned())
    });
    let health = outcome
        .as_ref()
        .ok()
        .and_then(|(url, _)| url.clone())
        .map(|url| get_health(&url));
    // Our own child: stop it before asserting, so a failure does not leave it running.
    let _ = child.kill();
    let _ = child.wait();

    let (url, own_line) = outcome.expect("two lines on stdout");
    let url = url.unwrap_or_else(|| panic!("first line: {first:?}"));
    assert!(
        url.starts_with("http://127.0.0.1:") && url.ends_with('/'),
        "{url}"
    );
    assert!(
        own_line.starts_with("aoai-sim listening on http://127.0.0.1:"),
        "{own_line}"
    );
    assert!(own_line.ends_with(" for b"), "{own_line}");
    let health = health.expect("health checked");
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(health.contains(r#"{"status":"ok"}"#), "{health}");
}

fn get_health(url: &str) -> String {
    let addr = url.trim_start_matches("http://").trim_end_matches('/');
    let Ok(mut socket) = std::net::TcpStream::connect(addr) else {
        return String::from("<connect failed>");
    };
    let _ = socket.set_read_timeout(Some(Duration::from_secs(5)));
    let request = format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nconnection: close\r\n\r\n");
    let mut reply = String::new();
    if socket.write_all(request.as_bytes()).is_ok() {
        let _ = socket.read_to_string(&mut reply);
    }
    reply
}

#[test]
fn binary_reports_a_bad_config_and_exits_2() {
    let output = Command::new(env!("CARGO_BIN_EXE_aoai-sim"))
        .args(["--config", "/nonexistent/sim.yaml"])
        .output()
        .expect("aoai-sim runs");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("/nonexistent/sim.yaml"), "{stderr}");
}
