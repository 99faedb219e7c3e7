//! Soak: a long batch run through the CLI against a simulator with its faults on, checked for
//! exactly one answer per id, with the process's RSS and open file descriptors sampled through
//! the run (they must stay flat).
//!
//! Three deployments: `steady` (1 % 500s, 1 % 503s, 0.1 % requests held past the
//! `request_timeout`), `spiky` (0.5 % 429s asking for 1 s, 1 % of its streams cut mid-way),
//! and `down` (answers 503 from the 10th to the 40th second: dead for a while, then back).
//! Every tenth line asks for a streamed reply.
//!
//! Run: `cargo bench -p aoai-blaster-cli --bench soak` (Linux only: it reads `/proc`);
//! `AOAI_BENCH_SOAK_LINES` sets the number of lines (default 1,000,000).

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use aoai_sim::{DeploymentSpec, FaultSpec, OutageSpec, SimConfig, SimThread};
use aoai_testkit::{Proc, blaster_run};

const BIN: &str = env!("CARGO_BIN_EXE_aoai-blaster");

/// Samples taken in the first seconds are left out of the flatness figures (start-up).
const WARM_UP: Duration = Duration::from_secs(10);

fn write_input(path: &Path, lines: u64) -> std::io::Result<()> {
    let mut out = BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    for i in 0..lines {
        let stream = if i % 10 == 0 { r#","stream":true"# } else { "" };
        writeln!(
            out,
            r#"{{"custom_id":"soak-{i:08}","method":"POST","url":"/chat/completions","body":{{"messages":[{{"role":"user","content":"Soak item {i}: one line, please."}}],"max_tokens":16{stream}}}}}"#
        )?;
    }
    out.flush()
}

fn lines_wanted() -> u64 {
    std::env::var("AOAI_BENCH_SOAK_LINES")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(1_000_000)
}

fn simulator() -> SimThread {
    let steady = FaultSpec {
        p_500: 0.01,
        p_503: 0.01,
        p_hang: 0.001,
        hang_secs: 5,
        ..FaultSpec::default()
    };
    let spiky = FaultSpec {
        p_429: 0.005,
        retry_after_secs: 1,
        p_stream_cut: 0.01,
        ..FaultSpec::default()
    };
    SimThread::start(SimConfig {
        workers: 1,
        deployments: vec![
            DeploymentSpec::new("steady")
                .tpm(1_000_000_000)
                .faults(steady),
            DeploymentSpec::new("spiky")
                .tpm(1_000_000_000)
                .faults(spiky),
            DeploymentSpec::new("down")
                .tpm(1_000_000_000)
                .outage(OutageSpec::status_503(10, 40)),
        ],
        ..SimConfig::default()
    })
    .expect("the simulator starts")
}

fn write_config(path: &Path, sim: &SimThread) {
    let mut yaml = String::from(
        "num_workers: 64\nrequest_timeout: 2s\nstream_idle_timeout: 1s\nbackoff_base: 50ms\n\
         backoff_max: 2s\nreenable_after: 2s\nmax_job_retry: 8\ndeployments:\n",
    );
    for name in ["steady", "spiky", "down"] {
        let endpoint = sim.endpoint_for(name).expect("the deployment is served");
        yaml.push_str(&format!(
            "  - {{name: {name}, endpoint: '{endpoint}', api_key: sim-key, model: {name}}}\n"
        ));
    }
    std::fs::write(path, yaml).expect("config written");
}

/// Every id's lines in the output: (ids answered once, ids answered more than once, lines by
/// kind).
fn check_output(path: &Path) -> (usize, usize, HashMap<String, u64>) {
    let file = std::fs::File::open(path).expect("output exists");
    let mut seen: HashSet<String> = HashSet::new();
    let mut twice = 0;
    let mut kinds: HashMap<String, u64> = HashMap::new();
    for line in BufReader::with_capacity(1 << 20, file).lines() {
        let line = line.expect("output is text");
        let value: serde_json::Value = serde_json::from_str(&line).expect("output line is JSON");
        let id = value["custom_id"].as_str().unwrap_or("").to_owned();
        let kind = match (&value["response"], &value["error"]) {
            (serde_json::Value::Object(r), _) => format!("http {}", r["status_code"]),
            (_, serde_json::Value::Object(e)) => format!("error {}", e["code"]),
            _ => "other".to_owned(),
        };
        *kinds.entry(kind).or_default() += 1;
        if !seen.insert(id) {
            twice += 1;
        }
    }
    (seen.len(), twice, kinds)
}

fn main() {
    let lines = lines_wanted();
    let sim = simulator();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let config = dir.path().join("soak.yaml");
    write_config(&config, &sim);
    let input = dir.path().join("soak.jsonl");
    write_input(&input, lines).expect("input written");
    let output = dir.path().join("soak-out.jsonl");

    let started = Instant::now();
    let mut child = blaster_run(BIN, &config, &input, &output)
        .env("RUST_LOG", "error")
        .spawn()
        .expect("the aoai-blaster binary starts");
    let proc = Proc::pid(child.id());
    let mut samples: Vec<(Duration, u64, usize)> = Vec::new();
    while child.try_wait().ok().flatten().is_none() {
        if let (Some(rss), Some(fds)) = (proc.status_kib("VmRSS:"), proc.open_fds()) {
            samples.push((started.elapsed(), rss, fds));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let elapsed = started.elapsed();
    let result = child
        .wait_with_output()
        .expect("the child's output is read");
    let stats = sim.stats();
    sim.stop();

    let (answered, twice, kinds) = check_output(&output);
    println!(
        "soak: {lines} lines through `aoai-blaster run`, 3 faulty deployments, num_workers 64"
    );
    println!(
        "  {:.1} s, {:.0} jobs/s, exit {:?}",
        elapsed.as_secs_f64(),
        lines as f64 / elapsed.as_secs_f64(),
        result.status.code()
    );
    let exact = answered as u64 == lines && twice == 0;
    println!(
        "  ids answered: {answered} of {lines}, answered twice: {twice} {}",
        if exact {
            "[ok: exactly once]"
        } else {
            "[MISSED: not exactly once]"
        }
    );
    let mut kinds: Vec<_> = kinds.into_iter().collect();
    kinds.sort();
    let kinds: Vec<String> = kinds.iter().map(|(k, n)| format!("{k}: {n}")).collect();
    println!("  answers by kind: {}", kinds.join(", "));
    let steady: Vec<_> = samples.iter().filter(|s| s.0 >= WARM_UP).collect();
    if let (Some(min_rss), Some(max_rss)) = (
        steady.iter().map(|s| s.1).min(),
        steady.iter().map(|s| s.1).max(),
    ) {
        let min_fd = steady.iter().map(|s| s.2).min().unwrap_or(0);
        let max_fd = steady.iter().map(|s| s.2).max().unwrap_or(0);
        println!(
            "  after {}s: RSS {:.1}–{:.1} MiB, open fds {min_fd}–{max_fd} ({} samples)",
            WARM_UP.as_secs(),
            min_rss as f64 / 1024.0,
            max_rss as f64 / 1024.0,
            steady.len()
        );
    }
    let tenth = (samples.len() / 10).max(1);
    let curve: Vec<String> = samples
        .iter()
        .step_by(tenth)
        .map(|(at, rss, fds)| {
            format!(
                "{:.0}s:{:.0}MiB/{fds}fd",
                at.as_secs_f64(),
                *rss as f64 / 1024.0
            )
        })
        .collect();
    println!("  over time: {}", curve.join(" "));
    for name in ["steady", "spiky", "down"] {
        let d = stats.deployment(name);
        println!("  simulator {name}: {} requests, {} ok", d.requests, d.ok);
    }
    println!("  the run's own summary:");
    for line in String::from_utf8_lossy(&result.stdout).lines() {
        println!("    {line}");
    }
}
