//! The open-loop load: `oha` (crates.io) sending at a fixed rate over a fixed number of
//! connections, with `--latency-correction`, so a request that had to wait for a busy connection
//! counts from when it was due, not from when it left (coordinated omission). A closed loop
//! (wrk) at its top speed measures throughput: each request waits for the ones ahead of it. At
//! a rate the gateway serves, the latency is the gateway's own.
//!
//! `just bench-gateway` installs oha into `target/tools` (`cargo install oha --locked --root
//! target/tools`) when it is missing; the bench looks there, then on `PATH`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;

use serde::Deserialize;

use crate::Load;

/// Where `just bench-gateway` installs oha, relative to the workspace.
const INSTALLED: &str = "target/tools/bin/oha";

/// One open-loop load: `connections` at `rate` requests/s in all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Point {
    pub(crate) connections: u32,
    pub(crate) rate: u32,
}

impl std::fmt::Display for Point {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.connections, self.rate)
    }
}

impl FromStr for Point {
    type Err = String;

    /// `CONNECTIONS@RATE`, e.g. `64@10000`.
    fn from_str(text: &str) -> Result<Point, String> {
        let bad = || format!("{text:?} is not CONNECTIONS@RATE (e.g. 64@10000)");
        let (connections, rate) = text.split_once('@').ok_or_else(bad)?;
        let connections: u32 = connections.trim().parse().map_err(|_| bad())?;
        let rate: u32 = rate.trim().parse().map_err(|_| bad())?;
        if connections == 0 || rate == 0 {
            return Err(format!("{text:?}: connections and rate must be at least 1"));
        }
        Ok(Point { connections, rate })
    }
}

/// The oha to run: `explicit`, else the one `just bench-gateway` installed, else `oha` on
/// `PATH`; `None` when there is none.
pub(crate) fn find(explicit: Option<&Path>) -> Option<PathBuf> {
    if let Some(path) = explicit {
        return Some(path.to_owned());
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let installed = workspace.join(INSTALLED);
    if installed.is_file() {
        return Some(installed);
    }
    let on_path = Command::new("oha").arg("--version").output();
    on_path
        .is_ok_and(|out| out.status.success())
        .then(|| PathBuf::from("oha"))
}

/// One oha run: POSTs of `body` (with `headers`) to `url` at `point` for `seconds`.
pub(crate) fn run(
    oha: &Path,
    url: &str,
    body: &str,
    headers: &[(&str, &str)],
    point: Point,
    seconds: u64,
) -> Result<Load, String> {
    let mut command = Command::new(oha);
    command
        .args([
            "--no-tui",
            "--output-format",
            "json",
            "--latency-correction",
        ])
        .args(["-z", &format!("{seconds}s")])
        .args(["-c", &point.connections.to_string()])
        .args(["-q", &point.rate.to_string()])
        .args(["-m", "POST", "-T", "application/json", "-d", body]);
    for (name, value) in headers {
        command.args(["-H", &format!("{name}: {value}")]);
    }
    let output = command
        .arg(url)
        .output()
        .map_err(|e| format!("cannot run {} ({e})", oha.display()))?;
    if !output.status.success() {
        return Err(format!(
            "oha failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    parse(&output.stdout)
}

/// The parts of oha's `--output-format json` this bench reads.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Report {
    summary: Summary,
    latency_percentiles: Percentiles,
    #[serde(default)]
    status_code_distribution: std::collections::BTreeMap<String, u64>,
    #[serde(default)]
    error_distribution: std::collections::BTreeMap<String, u64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Summary {
    requests_per_sec: f64,
}

/// Seconds (null when no request finished).
#[derive(Deserialize)]
struct Percentiles {
    p50: Option<f64>,
    p99: Option<f64>,
}

/// Reads oha's JSON report: latencies corrected for coordinated omission; `requests` the
/// replies, `errors` those without a 2xx status, `socket_errors` the requests that got no reply
/// (except those cut by the run's end).
pub(crate) fn parse(json: &[u8]) -> Result<Load, String> {
    let report: Report = serde_json::from_slice(json).map_err(|e| {
        format!(
            "cannot read oha's JSON report ({e}): {}",
            String::from_utf8_lossy(&json[..json.len().min(300)])
        )
    })?;
    let (mut replies, mut other_statuses) = (0, 0);
    for (status, count) in &report.status_code_distribution {
        replies += count;
        if !status.starts_with('2') {
            other_statuses += count;
        }
    }
    // Requests still running when the time was up are cut by oha, not failed by the server.
    let errors: u64 = report
        .error_distribution
        .iter()
        .filter(|(what, _)| !what.contains("deadline"))
        .map(|(_, count)| count)
        .sum();
    let us = |seconds: Option<f64>| seconds.map_or(f64::NAN, |s| s * 1e6);
    Ok(Load {
        p50_us: us(report.latency_percentiles.p50),
        p99_us: us(report.latency_percentiles.p99),
        rps: report.summary.requests_per_sec,
        requests: replies,
        errors: other_statuses,
        socket_errors: errors,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_read_connections_at_rate() {
        assert_eq!(
            "64@10000".parse::<Point>(),
            Ok(Point {
                connections: 64,
                rate: 10_000
            })
        );
        assert!(
            "64".parse::<Point>()
                .unwrap_err()
                .contains("CONNECTIONS@RATE")
        );
        assert!("0@5".parse::<Point>().unwrap_err().contains("at least 1"));
        assert!("a@5".parse::<Point>().is_err());
    }

    #[test]
    fn reads_the_json_report() {
        let json = br#"{"summary": {"successRate": 1.0, "total": 3.0, "requestsPerSec": 4999.5},
            "latencyPercentiles": {"p10": 0.0001, "p50": 0.000125, "p99": 0.0021},
            "statusCodeDistribution": {"200": 14990, "429": 3},
            "errorDistribution": {"aborted due to deadline": 7, "connection closed": 2}}"#;
        let measured = parse(json).unwrap();
        assert_eq!(
            (
                measured.rps,
                measured.requests,
                measured.errors,
                measured.socket_errors
            ),
            (4999.5, 14_993, 3, 2)
        );
        assert!(
            (measured.p50_us - 125.0).abs() < 1e-6,
            "{}",
            measured.p50_us
        );
        assert!(
            (measured.p99_us - 2_100.0).abs() < 1e-6,
            "{}",
            measured.p99_us
        );
        assert!(parse(b"not json").unwrap_err().contains("oha's JSON"));
    }
}
