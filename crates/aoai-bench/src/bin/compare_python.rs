//! `compare-python`: aoai-blaster side by side with the Python `azure-openai-blaster` 0.1.0.
//!
//! Installs the Python package from PyPI into a virtualenv under `target/` (once), then runs
//! the same workloads through both against a fresh simulator child process each time:
//!
//! 1. throughput: zero latency, no quota: jobs/s and client CPU per job;
//! 2. quotas: two deployments with a TPM quota: makespan (against the ideal client that knows
//!    the simulator's minute windows) and 429s;
//! 3. one dead endpoint (its own listener refuses connections): how many jobs finish.
//!
//! Every job is submitted at once, with 64 workers on both sides; each run is bounded by
//! `--timeout-secs`. `cargo run --release -p aoai-bench --bin compare-python -- --help`

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, SystemTime};

use aoai_bench::sim::SimProcess;
use aoai_bench::{cpu, drive, say};
use aoai_blaster::{BlasterConfig, ChatJob, Dispatcher};
use aoai_sim::{DeploymentSpec, OutageSpec, SimConfig, SimStats};
use clap::Parser;
use serde::Deserialize;
use serde_json::{Value, json};

const PACKAGE: &str = "azure-openai-blaster==0.1.0";
const PACKAGE_ALT: &str = "azure_openai_blaster==0.1.0";
const MAX_COMPLETION_TOKENS: u32 = 16;
/// Both clients start submitting this long after their simulator started, so both meet the
/// quota windows (anchored at the simulator's start) at the same point.
const START_OFFSET: Duration = Duration::from_secs(3);

#[derive(Debug, Parser)]
#[command(about = "aoai-blaster vs the Python azure-openai-blaster 0.1.0 on aoai-sim")]
struct Args {
    /// Jobs in the throughput run.
    #[arg(long, default_value_t = 3_000)]
    jobs: u64,
    /// Jobs in the quota run (two deployments of `--tpm`).
    #[arg(long, default_value_t = 1_800)]
    quota_jobs: u64,
    /// TPM quota of each deployment in the quota run.
    #[arg(long, default_value_t = 20_000)]
    tpm: u64,
    /// RPM quota of each deployment in the quota run.
    #[arg(long, default_value_t = 12_000)]
    rpm: u64,
    /// Jobs in the dead-endpoint run.
    #[arg(long, default_value_t = 1_000)]
    dead_jobs: u64,
    /// Workers (threads in Python, `num_workers` in aoai-blaster).
    #[arg(long, default_value_t = 64)]
    num_workers: usize,
    /// Longest a run may take before its unfinished jobs are counted as such.
    #[arg(long, default_value_t = 150)]
    timeout_secs: u64,
    /// The Python interpreter used to create the virtualenv.
    #[arg(long, default_value = "python3")]
    python: String,
    /// Where the virtualenv lives.
    #[arg(long)]
    venv: Option<PathBuf>,
    /// Which runs: `throughput`, `quota`, `dead` (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = vec!["throughput".to_owned(), "quota".to_owned(), "dead".to_owned()])]
    runs: Vec<String>,
}

/// What one client did with one workload.
#[derive(Debug, Default, Deserialize)]
struct RunReport {
    ok: u64,
    failed: u64,
    unfinished: u64,
    elapsed_s: f64,
    cpu_s: f64,
    #[serde(default)]
    errors: serde_json::Map<String, Value>,
    #[serde(default)]
    worker_crashes: u64,
}

impl RunReport {
    fn jobs_per_sec(&self) -> f64 {
        self.ok as f64 / self.elapsed_s.max(1e-9)
    }

    fn cpu_us_per_job(&self) -> f64 {
        self.cpu_s * 1e6 / self.ok.max(1) as f64
    }

    fn line(&self) -> String {
        let mut line = format!(
            "ok {} failed {} unfinished {} in {:.2} s ({:.0} jobs/s), CPU {:.2} s ({:.0} µs/job)",
            self.ok,
            self.failed,
            self.unfinished,
            self.elapsed_s,
            self.jobs_per_sec(),
            self.cpu_s,
            self.cpu_us_per_job()
        );
        if !self.errors.is_empty() {
            line.push_str(&format!(", errors {}", Value::Object(self.errors.clone())));
        }
        if self.worker_crashes > 0 {
            line.push_str(&format!(", {} worker threads died", self.worker_crashes));
        }
        line
    }
}

fn main() -> ExitCode {
    aoai_bench::sim::run_child_if_asked();
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("compare-python: {error}");
            ExitCode::FAILURE
        }
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("python/run_blaster.py")
}

/// The virtualenv's python with the package installed (installing it when missing).
fn ensure_venv(args: &Args) -> Result<PathBuf, String> {
    let venv = args
        .venv
        .clone()
        .unwrap_or_else(|| workspace_root().join("target/aoai-bench-venv"));
    let python = venv.join("bin/python");
    let installed = |python: &Path| {
        Command::new(python)
            .args(["-c", "import azure_openai_blaster"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if installed(&python) {
        return Ok(python);
    }
    say(format!(
        "installing {PACKAGE} into {} (python -m venv + pip)",
        venv.display()
    ));
    let status = Command::new(&args.python)
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .map_err(|e| format!("cannot run `{} -m venv`: {e}", args.python))?;
    if !status.success() {
        return Err(format!(
            "`{} -m venv {}` failed; install the venv module (Debian: apt-get install python3-venv)",
            args.python,
            venv.display()
        ));
    }
    for package in [PACKAGE, PACKAGE_ALT] {
        let status = Command::new(&python)
            .args(["-m", "pip", "install", "--quiet", package])
            .status()
            .map_err(|e| format!("cannot run pip: {e}"))?;
        if status.success() && installed(&python) {
            return Ok(python);
        }
    }
    Err(format!(
        "pip could not install {PACKAGE} (nor {PACKAGE_ALT}) from PyPI into {}",
        venv.display()
    ))
}

fn python_run(
    python: &Path,
    config: &Value,
    jobs: u64,
    timeout: Duration,
    start_at: SystemTime,
) -> Result<RunReport, String> {
    let start_at_epoch = start_at
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let spec = json!({
        "config": config,
        "jobs": jobs,
        "timeout_s": timeout.as_secs_f64(),
        "start_at_epoch": start_at_epoch,
    });
    let mut child = Command::new(python)
        .arg(script())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", python.display()))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(spec.to_string().as_bytes())
            .map_err(|e| format!("cannot hand the run to Python: {e}"))?;
    }
    // The script bounds itself by `timeout`; this bounds the process if it does not.
    let limit = std::time::Instant::now() + timeout + Duration::from_secs(60);
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if std::time::Instant::now() < limit => {
                std::thread::sleep(Duration::from_millis(100));
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
        }
    }
    let mut stdout = Vec::new();
    if let Some(mut pipe) = child.stdout.take() {
        use std::io::Read;
        let _ = pipe.read_to_end(&mut stdout);
    }
    let text = String::from_utf8_lossy(&stdout);
    let line = text.lines().last().unwrap_or_default();
    serde_json::from_str(line)
        .map_err(|e| format!("the Python run printed no result ({e}): {text:?}"))
}

fn rust_run(
    config: BlasterConfig,
    jobs: u64,
    timeout: Duration,
    start_at: SystemTime,
) -> Result<RunReport, String> {
    // Build the tokenizer now, not inside the measured run (Python's import is not measured).
    for deployment in &config.deployments {
        aoai_blaster::core::tokens::warm_up(&deployment.tokenizer);
    }
    let system = actix::System::new();
    let report = system.block_on(async move {
        let dispatcher = Dispatcher::start(config).map_err(|e| e.to_string())?;
        let wait = start_at
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        actix_rt::time::sleep(wait).await;
        let cpu_before = cpu::process_cpu();
        let job = |i: u64| ChatJob::new(drive::request(i, None));
        let collected =
            drive::closed_loop_until(&dispatcher, jobs, jobs as usize, Some(timeout), job).await;
        let report = RunReport {
            ok: collected.ok,
            failed: collected.failed(),
            unfinished: jobs - collected.ok - collected.failed(),
            elapsed_s: collected.elapsed.as_secs_f64(),
            cpu_s: cpu::process_cpu().saturating_sub(cpu_before).as_secs_f64(),
            errors: collected
                .failures
                .iter()
                .map(|(k, v)| (k.clone(), json!(v)))
                .collect(),
            worker_crashes: 0,
        };
        actix::System::current().stop();
        Ok::<RunReport, String>(report)
    })?;
    Ok(report)
}

/// The Python package's config dict for these deployments (`(name, endpoint)`), with
/// `extra` keys on each; it loads unchanged in aoai-blaster too.
fn config_for(deployments: &[(&str, String)], extra: &Value, num_workers: usize) -> Value {
    let entries: Vec<Value> = deployments
        .iter()
        .map(|(name, endpoint)| {
            let mut entry = json!({
                "name": name,
                "endpoint": endpoint,
                "api_key": aoai_sim::DEFAULT_API_KEY,
                "model": name,
                "max_completion_tokens": MAX_COMPLETION_TOKENS,
            });
            if let (Some(entry), Some(extra)) = (entry.as_object_mut(), extra.as_object()) {
                for (key, value) in extra {
                    entry.insert(key.clone(), value.clone());
                }
            }
            entry
        })
        .collect();
    json!({"strategy": "weighted", "num_workers": num_workers, "deployments": entries})
}

fn rust_config(value: &Value) -> Result<BlasterConfig, String> {
    BlasterConfig::from_value(value.clone()).map_err(|e| e.to_string())
}

struct Side {
    rust: RunReport,
    python: RunReport,
    rust_stats: SimStats,
    python_stats: SimStats,
}

/// Runs the workload through both clients, each against a fresh simulator.
fn both(
    sim_config: &SimConfig,
    deployment_names: &[&str],
    extra: &Value,
    jobs: u64,
    args: &Args,
    python: &Path,
) -> Result<Side, String> {
    let timeout = Duration::from_secs(args.timeout_secs);
    let endpoints = |sim: &SimProcess| -> Vec<(&str, String)> {
        deployment_names
            .iter()
            .map(|name| (*name, sim.endpoint_for(name)))
            .collect()
    };
    let sim = SimProcess::start(sim_config)?;
    let config = config_for(&endpoints(&sim), extra, args.num_workers);
    let rust = rust_run(
        rust_config(&config)?,
        jobs,
        timeout,
        sim.started() + START_OFFSET,
    )?;
    let rust_stats = sim.stats()?;
    drop(sim);
    say(format!("  aoai-blaster: {}", rust.line()));
    say(format!("    simulator saw: {}", sim_line(&rust_stats)));
    let sim = SimProcess::start(sim_config)?;
    let config = config_for(&endpoints(&sim), extra, args.num_workers);
    let python = python_run(python, &config, jobs, timeout, sim.started() + START_OFFSET)?;
    let python_stats = sim.stats()?;
    drop(sim);
    say(format!("  python:       {}", python.line()));
    say(format!("    simulator saw: {}", sim_line(&python_stats)));
    Ok(Side {
        rust,
        python,
        rust_stats,
        python_stats,
    })
}

fn run(args: &Args) -> Result<(), String> {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    say(format!(
        "aoai-blaster {} vs Python azure-openai-blaster 0.1.0, {cores} cores, load average {}",
        env!("CARGO_PKG_VERSION"),
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    ));
    let python = ensure_venv(args)?;
    let versions = Command::new(&python)
        .args([
            "-c",
            "import sys, importlib.metadata as m; print(sys.version.split()[0], m.version('azure-openai-blaster'), m.version('openai'))",
        ])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    say(format!(
        "python, azure-openai-blaster, openai versions: {versions}"
    ));
    let mut table = Vec::new();
    let wanted = |name: &str| args.runs.iter().any(|r| r == name);
    if wanted("throughput") {
        table.extend(throughput(args, &python)?);
    }
    if wanted("quota") {
        table.extend(quota(args, &python)?);
    }
    if wanted("dead") {
        table.extend(dead_endpoint(args, &python)?);
    }
    say("\n| figure | aoai-blaster | Python azure-openai-blaster 0.1.0 | ratio |");
    say("|---|---|---|---|");
    for row in table {
        say(row);
    }
    Ok(())
}

/// Run 1: throughput and client CPU with zero latency and no quota; returns the table's rows.
fn throughput(args: &Args, python: &Path) -> Result<Vec<String>, String> {
    let mut rows = Vec::new();
    say(format!(
        "\n1. throughput: {} jobs, zero latency, no quota, {} workers",
        args.jobs, args.num_workers
    ));
    let free = SimConfig::default().deployment(DeploymentSpec::new("gpt-4o").tpm(10_000_000_000));
    let t = both(&free, &["gpt-4o"], &json!({}), args.jobs, args, python)?;
    rows.push(format!(
        "| throughput, jobs/s ({} jobs, zero latency) | {:.0} | {:.0} | {:.1}× |",
        args.jobs,
        t.rust.jobs_per_sec(),
        t.python.jobs_per_sec(),
        t.rust.jobs_per_sec() / t.python.jobs_per_sec().max(1e-9)
    ));
    rows.push(format!(
        "| client CPU per job | {:.0} µs | {:.0} µs | {:.1}× less |",
        t.rust.cpu_us_per_job(),
        t.python.cpu_us_per_job(),
        t.python.cpu_us_per_job() / t.rust.cpu_us_per_job().max(1e-9)
    ));
    Ok(rows)
}

/// Run 2: makespan and 429s under quotas; returns the table's rows.
fn quota(args: &Args, python: &Path) -> Result<Vec<String>, String> {
    let mut rows = Vec::new();
    say(format!(
        "\n2. quotas: {} jobs over 2 deployments of {} TPM / {} RPM (tpm_limit/rpm_limit in both configs; the Python package ignores them)",
        args.quota_jobs, args.tpm, args.rpm
    ));
    let limited = |name: &str| DeploymentSpec::new(name).tpm(args.tpm).rpm(args.rpm);
    let quota_sim = SimConfig::default()
        .deployment(limited("east"))
        .deployment(limited("west"));
    let extra = json!({"tpm_limit": args.tpm, "rpm_limit": args.rpm});
    let q = both(
        &quota_sim,
        &["east", "west"],
        &extra,
        args.quota_jobs,
        args,
        python,
    )?;
    let ideal = ideal_makespan(&q.rust_stats, args.quota_jobs, args.tpm, args.rpm, 2);
    let rate_limited = |stats: &SimStats| stats.total().rate_limited;
    say(format!(
        "  ideal client (knows the windows): {ideal:.1} s; 429s: aoai-blaster {}, python {}",
        rate_limited(&q.rust_stats),
        rate_limited(&q.python_stats)
    ));
    rows.push(format!(
        "| makespan under quotas ({} jobs, ideal {ideal:.1} s) | {:.1} s{} | {:.1} s{} | {:.2}× |",
        args.quota_jobs,
        q.rust.elapsed_s,
        unfinished_note(&q.rust),
        q.python.elapsed_s,
        unfinished_note(&q.python),
        q.python.elapsed_s / q.rust.elapsed_s.max(1e-9)
    ));
    rows.push(format!(
        "| 429 replies provoked under quotas | {} | {} | |",
        rate_limited(&q.rust_stats),
        rate_limited(&q.python_stats)
    ));
    Ok(rows)
}

/// Run 3: one endpoint refusing connections; returns the table's row.
fn dead_endpoint(args: &Args, python: &Path) -> Result<Vec<String>, String> {
    let mut rows = Vec::new();
    say(format!(
        "\n3. one dead endpoint: {} jobs over 2 deployments, one refusing connections",
        args.dead_jobs
    ));
    let dead_sim = SimConfig::default()
        .deployment(DeploymentSpec::new("live").tpm(10_000_000_000))
        .deployment(
            DeploymentSpec::new("dead")
                .tpm(10_000_000_000)
                .own_listener()
                .outage(OutageSpec::refuse(0, 1_000_000)),
        );
    let d = both(
        &dead_sim,
        &["live", "dead"],
        &json!({}),
        args.dead_jobs,
        args,
        python,
    )?;
    rows.push(format!(
        "| one dead endpoint ({} jobs): finished | {} in {:.1} s | {} ({} never finish, {} worker threads died) | |",
        args.dead_jobs,
        d.rust.ok,
        d.rust.elapsed_s,
        d.python.ok,
        d.python.unfinished,
        d.python.worker_crashes
    ));
    Ok(rows)
}

fn sim_line(stats: &SimStats) -> String {
    let total = stats.total();
    format!(
        "{} requests, {} ok, {} 429, {} 5xx, {} tokens charged",
        total.requests, total.ok, total.rate_limited, total.server_errors, total.charged_tokens
    )
}

fn unfinished_note(report: &RunReport) -> String {
    if report.unfinished > 0 || report.failed > 0 {
        format!(
            " ({} failed, {} unfinished)",
            report.failed, report.unfinished
        )
    } else {
        String::new()
    }
}

/// When an ideal client that starts with the simulator and knows its minute windows would
/// finish: it fills each window's token quota on every deployment (at the RPM's per-second
/// pace) and starts the remainder when the next window opens. The cost per job is what the
/// simulator charged. Measured from [`START_OFFSET`] after the simulator's start, when the
/// clients start.
fn ideal_makespan(stats: &SimStats, jobs: u64, tpm: u64, rpm: u64, deployments: u64) -> f64 {
    let total = stats.total();
    let admitted = total.requests.saturating_sub(total.rate_limited).max(1);
    let cost = (total.charged_tokens as f64 / admitted as f64).max(1.0);
    let per_window = deployments * (tpm as f64 / cost).floor() as u64;
    let per_second = (deployments * (rpm / 60).max(1)) as f64;
    if per_window == 0 {
        return f64::INFINITY;
    }
    let full_windows = (jobs.saturating_sub(1)) / per_window;
    let rest = jobs - full_windows * per_window;
    let last_window = rest as f64 / per_second;
    if full_windows == 0 {
        return last_window;
    }
    full_windows as f64 * 60.0 - START_OFFSET.as_secs_f64() + last_window
}
