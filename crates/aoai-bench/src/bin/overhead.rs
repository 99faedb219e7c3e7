//! `overhead`: what aoai-blaster costs per job.
//!
//! The simulator runs in a child process (zero latency, a quota too large to matter, one
//! worker); this process runs the Dispatcher and its EndpointActor and pushes jobs through
//! them: first closed loop (jobs/s, client CPU per job), then at fixed open-loop rates (the
//! latency the blaster adds: client-side duration minus the simulator's own processing time,
//! which it states in `x-sim-processing-us`).
//!
//! `cargo run --release -p aoai-bench --bin overhead -- --help`

use std::process::ExitCode;
use std::time::Duration;

use actix::Addr;
use aoai_bench::cpu;
use aoai_bench::drive::{self, Collected};
use aoai_bench::say;
use aoai_bench::sim::SimProcess;
use aoai_blaster::auth::CredentialRegistry;
use aoai_blaster::metrics::MetricsHandle;
use aoai_blaster::{BlasterConfig, ChatJob, Dispatcher, TrustedCas};
use aoai_sim::{DeploymentSpec, SimConfig};
use clap::Parser;
use serde_json::json;

/// mimalloc, as in the `aoai-blaster` CLI: each job makes many small allocations, and glibc's
/// allocator cost about 15 % more CPU per job in the overhead benchmark.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Targets on a 2-core machine (issue 6).
const TARGET_JOBS_PER_SEC: f64 = 20_000.0;
const TARGET_CPU_US_PER_JOB: f64 = 50.0;
const TARGET_ADDED_P99_US: u64 = 1_000;

#[derive(Debug, Parser)]
#[command(about = "Jobs/s, client CPU per job and added latency of aoai-blaster against aoai-sim")]
struct Args {
    /// Jobs in each closed-loop round.
    #[arg(long, default_value_t = 200_000)]
    jobs: u64,
    /// Closed-loop rounds (the median round is reported, with the range).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// `num_workers`: attempts in flight.
    #[arg(long, default_value_t = 64)]
    num_workers: usize,
    /// Jobs handed to the Dispatcher at once in the closed loop (default: queue capacity +
    /// num_workers, so the queue never runs dry).
    #[arg(long)]
    outstanding: Option<usize>,
    /// Open-loop rates (jobs per second), comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = vec![5_000u32, 10_000])]
    rates: Vec<u32>,
    /// Seconds each open-loop rate runs.
    #[arg(long, default_value_t = 5)]
    rate_seconds: u64,
    /// Jobs run first and not measured.
    #[arg(long, default_value_t = 5_000)]
    warmup: u64,
    /// Run without the Prometheus recorder (what metrics cost shows as the difference).
    #[arg(long)]
    no_metrics: bool,
    /// Serve and send over HTTPS, with a CA the benchmark makes (HTTP/2 by ALPN): what TLS
    /// costs shows as the difference.
    #[arg(long)]
    tls: bool,
}

fn main() -> ExitCode {
    aoai_bench::sim::run_child_if_asked();
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("overhead: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<(), String> {
    say_machine();
    let mut sim_config = SimConfig::default().deployment(
        DeploymentSpec::new("bench")
            .tpm(10_000_000_000)
            .reply_tokens(16),
    );
    let certificates_dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let trust = if args.tls {
        let made = aoai_testkit::TestCertificates::make(certificates_dir.path())
            .map_err(|e| e.to_string())?;
        sim_config.tls = Some(aoai_sim::TlsFiles {
            cert_file: made.cert,
            key_file: made.key,
        });
        TrustedCas::with_pem_file(&made.ca).map_err(|e| e.to_string())?
    } else {
        TrustedCas::default()
    };
    let sim = SimProcess::start(&sim_config)?;
    say(format!(
        "simulator: child process {} at {} (1 worker, zero latency, 10 G TPM{})",
        sim.pid(),
        sim.base_url(),
        if args.tls {
            ", HTTPS: HTTP/2 by ALPN"
        } else {
            ""
        }
    ));
    // The Prometheus recorder stays installed for the whole run, as with `--metrics-addr`.
    let _metrics = if args.no_metrics {
        None
    } else {
        Some(MetricsHandle::install().map_err(|e| e.to_string())?)
    };
    let config = BlasterConfig::from_value(json!({
        "num_workers": args.num_workers,
        "deployments": [{
            "name": "bench",
            "endpoint": sim.base_url(),
            "api_key": aoai_sim::DEFAULT_API_KEY,
            "model": "bench",
        }],
    }))
    .map_err(|e| e.to_string())?;
    // Build the tokenizer before measuring (the Dispatcher would on a thread of its own).
    for deployment in &config.deployments {
        aoai_blaster::core::tokens::warm_up(&deployment.tokenizer);
    }
    let outstanding = args
        .outstanding
        .unwrap_or(config.queue_capacity + config.num_workers);
    let system = actix::System::new();
    let result = system.block_on(async {
        let dispatcher = Dispatcher::start_with(config, CredentialRegistry::default(), trust)
            .map_err(|e| e.to_string())?;
        say(format!("warm-up: {} jobs", args.warmup));
        let warm = drive::closed_loop(&dispatcher, args.warmup, outstanding, job).await;
        check_all_ok(&warm, "warm-up")?;
        let mut rounds = Vec::new();
        for round in 1..=args.rounds.max(1) {
            rounds.push(closed_round(&dispatcher, args, outstanding, sim.pid(), round).await?);
        }
        let mut rows = Vec::new();
        for &rate in &args.rates {
            rows.push((rate, open_rate(&dispatcher, args, rate).await?));
        }
        say_table(args, rounds, &rows);
        actix::System::current().stop();
        Ok::<(), String>(())
    });
    drop(sim);
    result
}

/// The job the benchmark sends, numbered `i`.
fn job(i: u64) -> ChatJob {
    ChatJob::new(drive::request(i, Some(16)))
}

/// Prints the version, the cores and the load average.
fn say_machine() {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    say(format!(
        "aoai-blaster overhead benchmark (aoai-blaster {}), {cores} cores, load average {}",
        env!("CARGO_PKG_VERSION"),
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    ));
}

/// One closed-loop round, printed; returns its jobs/s and client CPU µs per job.
async fn closed_round(
    dispatcher: &Addr<Dispatcher>,
    args: &Args,
    outstanding: usize,
    sim_pid: u32,
    round: usize,
) -> Result<(f64, f64), String> {
    say(format!(
        "closed loop, round {round} of {}: {} jobs, {outstanding} handed over at once, num_workers {}",
        args.rounds.max(1),
        args.jobs,
        args.num_workers
    ));
    let threads_before = cpu::threads_cpu();
    let cpu_before = cpu::process_cpu();
    let sim_cpu_before = cpu::pid_cpu(sim_pid);
    let closed = drive::closed_loop(dispatcher, args.jobs, outstanding, job).await;
    let cpu_used = cpu::process_cpu().saturating_sub(cpu_before);
    let sim_cpu = cpu::pid_cpu(sim_pid).saturating_sub(sim_cpu_before);
    let threads = cpu::threads_delta(&threads_before, &cpu::threads_cpu());
    check_all_ok(&closed, "closed loop")?;
    let jobs_per_sec = closed.ok as f64 / closed.elapsed.as_secs_f64();
    let cpu_per_job = cpu_used.as_secs_f64() * 1e6 / closed.ok as f64;
    say(format!(
        "  jobs/s: {jobs_per_sec:.0} ({} jobs in {:.2} s) {}",
        closed.ok,
        closed.elapsed.as_secs_f64(),
        verdict(jobs_per_sec >= TARGET_JOBS_PER_SEC, "target ≥ 20,000")
    ));
    say(format!(
        "  client CPU per job: {cpu_per_job:.1} µs ({:.2} s CPU) {}",
        cpu_used.as_secs_f64(),
        verdict(cpu_per_job <= TARGET_CPU_US_PER_JOB, "target ≤ 50 µs")
    ));
    say(format!(
        "  simulator CPU per job: {:.1} µs (its own process)",
        sim_cpu.as_secs_f64() * 1e6 / closed.ok as f64
    ));
    let by_thread: Vec<String> = threads
        .iter()
        .take(6)
        .map(|(name, cpu)| format!("{name} {:.2} s", cpu.as_secs_f64()))
        .collect();
    say(format!("  client CPU by thread: {}", by_thread.join(", ")));
    say(format!(
        "  job duration with the queue full: {}",
        closed.client.summary()
    ));
    Ok((jobs_per_sec, cpu_per_job))
}

/// One open-loop rate, printed; returns the added latency's p50, p99 and p99.9 in µs.
async fn open_rate(
    dispatcher: &Addr<Dispatcher>,
    args: &Args,
    rate: u32,
) -> Result<[u64; 3], String> {
    let cpu_before = cpu::process_cpu();
    let open = drive::open_loop(
        dispatcher,
        f64::from(rate),
        Duration::from_secs(args.rate_seconds),
        job,
    )
    .await?;
    let cpu_used = cpu::process_cpu().saturating_sub(cpu_before);
    check_all_ok(&open, "open loop")?;
    let added = [0.5, 0.99, 0.999].map(|q| open.added.quantile_us(q));
    say(format!(
        "open loop {rate}/s for {} s: {} jobs, {:.0} jobs/s achieved, client CPU {:.1} µs/job",
        args.rate_seconds,
        open.ok,
        open.ok as f64 / open.elapsed.as_secs_f64(),
        cpu_used.as_secs_f64() * 1e6 / open.ok.max(1) as f64
    ));
    say(format!("  client-side duration: {}", open.client.summary()));
    if open.added.count() < open.ok {
        return Err(format!(
            "open loop: {} of {} replies stated no processing time (x-sim-processing-us)",
            open.ok - open.added.count(),
            open.ok
        ));
    }
    say(format!(
        "  added (each minus the simulator's stated processing time): {} {}",
        percentiles_text(added),
        if rate == 5_000 {
            verdict(added[1] <= TARGET_ADDED_P99_US, "target p99 ≤ 1 ms")
        } else {
            String::new()
        }
    ));
    say(format!(
        "  of which: HTTP call {} | dispatch and mailboxes {}",
        open.upstream.summary(),
        open.dispatch.summary()
    ));
    say(format!(
        "  generator lateness against schedule: {}",
        open.lateness.summary()
    ));
    Ok(added)
}

/// The figures as a Markdown table: the median closed-loop round by throughput, with the range
/// of all rounds (on a small shared machine rounds differ by tens of percent), then each rate.
fn say_table(args: &Args, mut rounds: Vec<(f64, f64)>, rows: &[(u32, [u64; 3])]) {
    rounds.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (jobs_per_sec, cpu_per_job) = rounds[rounds.len() / 2];
    let jobs_range = (rounds[0].0, rounds[rounds.len() - 1].0);
    let mut cpu_sorted: Vec<f64> = rounds.iter().map(|r| r.1).collect();
    cpu_sorted.sort_by(f64::total_cmp);
    let cpu_range = (cpu_sorted[0], cpu_sorted[cpu_sorted.len() - 1]);
    say("");
    say("| figure | measured | target |");
    say("|---|---|---|");
    say(format!(
        "| jobs/s (closed loop, {} jobs; median of {} rounds, range {:.0}–{:.0}) | {jobs_per_sec:.0} | ≥ 20,000 |",
        args.jobs,
        rounds.len(),
        jobs_range.0,
        jobs_range.1
    ));
    say(format!(
        "| client CPU per job (same round; range {:.1}–{:.1}) | {cpu_per_job:.1} µs | ≤ 50 µs |",
        cpu_range.0, cpu_range.1
    ));
    for (rate, added) in rows {
        say(format!(
            "| added latency at {rate}/s, p50 / p99 / p99.9 | {} / {} / {} µs | {} |",
            added[0],
            added[1],
            added[2],
            if *rate == 5_000 { "p99 ≤ 1 ms" } else { "" }
        ));
    }
}

fn verdict(met: bool, target: &str) -> String {
    if met {
        format!("[ok: {target}]")
    } else {
        format!("[MISSED: {target}]")
    }
}

fn check_all_ok(collected: &Collected, phase: &str) -> Result<(), String> {
    if collected.failed() > 0 {
        return Err(format!(
            "{phase}: {} jobs failed: {:?}",
            collected.failed(),
            collected.failures
        ));
    }
    Ok(())
}

fn percentiles_text([p50, p99, p999]: [u64; 3]) -> String {
    format!("p50 {p50} µs  p99 {p99} µs  p99.9 {p999} µs")
}
