//! How many non-streaming, zero-latency replies per second the simulator serves on one worker
//! thread, driven by an awc client on another thread with 64 requests in flight.
//!
//! `cargo bench -p aoai-sim --bench sim_throughput` (`SIM_BENCH_SECS` sets the measured time,
//! default 3 s). The target is at least 20,000 replies/s, so the simulator never limits a
//! benchmark of the client.
//!
//! On a shared machine the wall-clock figure depends on what else runs, so on Linux the bench
//! also reads the CPU time of the simulator's worker thread (`/proc/self/task`) and reports
//! replies per second of that thread's CPU: the capacity of one dedicated core.

use std::cell::Cell;
use std::process::ExitCode;
use std::rc::Rc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use aoai_sim::{DeploymentSpec, SimConfig, SimStats};
use bytes::Bytes;

const CONCURRENCY: usize = 64;
const WARM_UP: Duration = Duration::from_millis(500);
const TARGET_PER_SEC: f64 = 20_000.0;

#[derive(Default)]
struct Tally {
    ok: Cell<u64>,
    failed: Cell<u64>,
    processing_us: Cell<u64>,
    /// CPU ticks of the simulator's worker thread at the start and end of the measurement.
    worker_ticks: Cell<Option<(u64, u64)>>,
}

/// CPU time (user + system, in clock ticks) of the actix-server worker threads of this process
/// (they run on actix arbiters, named `actix-rt|system:N|arbiter:M`; the client runs on the main
/// thread, the simulator's own system on a thread named `sim-server`).
fn worker_cpu_ticks() -> Option<u64> {
    let mut total = None;
    for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if !comm.starts_with("actix-rt|system") && !comm.starts_with("actix-server wo") {
            continue;
        }
        let stat = std::fs::read_to_string(task.path().join("stat")).ok()?;
        // Fields after the command name: state is field 3, utime 14, stime 15.
        let after_name = stat.rsplit_once(')')?.1;
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        let utime: u64 = fields.get(11)?.parse().ok()?;
        let stime: u64 = fields.get(12)?.parse().ok()?;
        total = Some(total.unwrap_or(0) + utime + stime);
    }
    total
}

fn clock_ticks_per_sec() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8_lossy(&out.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

fn main() -> ExitCode {
    let measured = std::env::var("SIM_BENCH_SECS")
        .ok()
        .and_then(|secs| secs.parse::<f64>().ok())
        .filter(|secs| *secs > 0.0)
        .map_or(Duration::from_secs(3), Duration::from_secs_f64);

    let (url_tx, url_rx) = mpsc::channel::<Result<String, String>>();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = std::thread::Builder::new()
        .name("sim-server".to_owned())
        .spawn(move || {
            actix_rt::System::new().block_on(async move {
                let config = SimConfig {
                    workers: 1,
                    deployments: vec![DeploymentSpec::new("bench").tpm(1_000_000_000_000)],
                    ..Default::default()
                };
                let sim = match aoai_sim::start(config).await {
                    Ok(sim) => sim,
                    Err(err) => {
                        let _ = url_tx.send(Err(err.to_string()));
                        return None;
                    }
                };
                let _ = url_tx.send(Ok(sim.base_url()));
                let _ = stop_rx.await;
                let stats = sim.stats();
                sim.stop().await;
                Some(stats)
            })
        });
    let server = match server {
        Ok(server) => server,
        Err(err) => {
            eprintln!("sim_throughput: cannot spawn the simulator thread: {err}");
            return ExitCode::FAILURE;
        }
    };

    let base_url = match url_rx.recv() {
        Ok(Ok(url)) => url,
        Ok(Err(err)) => {
            eprintln!("sim_throughput: simulator did not start: {err}");
            return ExitCode::FAILURE;
        }
        Err(_) => {
            eprintln!("sim_throughput: simulator thread ended early");
            return ExitCode::FAILURE;
        }
    };
    let url = format!("{base_url}openai/deployments/bench/chat/completions?api-version=2024-10-21");
    let tally = actix_rt::System::new().block_on(drive(url, measured));
    let _ = stop_tx.send(());
    let stats: Option<SimStats> = server.join().ok().flatten();

    let ok = tally.ok.get();
    let per_sec = ok as f64 / measured.as_secs_f64();
    let mean_processing_us = tally.processing_us.get() as f64 / ok.max(1) as f64;
    println!(
        "sim_throughput: {ok} replies in {:.2} s = {per_sec:.0} replies/s \
         ({CONCURRENCY} in flight, 1 worker, zero latency; mean simulator processing {mean_processing_us:.1} us; \
         target >= {TARGET_PER_SEC:.0}/s)",
        measured.as_secs_f64()
    );
    if let Some((start, end)) = tally.worker_ticks.get() {
        let cpu_secs = end.saturating_sub(start) as f64 / clock_ticks_per_sec();
        if cpu_secs > 0.0 {
            println!(
                "sim_throughput: simulator worker used {cpu_secs:.2} s of CPU = {:.0} replies per CPU-second \
                 (one dedicated core)",
                ok as f64 / cpu_secs
            );
        }
    }
    if let Some(stats) = stats {
        let bench = stats.deployment("bench");
        println!(
            "sim_throughput: simulator counted {} requests, {} ok, peak in flight {}",
            bench.requests, bench.ok, bench.peak_in_flight
        );
    }
    if tally.failed.get() > 0 {
        eprintln!("sim_throughput: {} requests failed", tally.failed.get());
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

async fn drive(url: String, measured: Duration) -> Tally {
    // awc builds a rustls config for every client: choose the crypto provider first.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let client = awc::Client::builder()
        .connector(awc::Connector::new().limit(CONCURRENCY * 2))
        .timeout(Duration::from_secs(10))
        .finish();
    let body = Bytes::from(
        serde_json::json!({
            "messages": [{"role": "user", "content": "How fast can you answer?"}],
            "max_tokens": 16,
        })
        .to_string(),
    );
    let tally = Rc::new(Tally::default());
    let warm_until = Instant::now() + WARM_UP;
    let end = warm_until + measured;
    let loops = (0..CONCURRENCY).map(|_| {
        let client = client.clone();
        let url = url.clone();
        let body = body.clone();
        let tally = Rc::clone(&tally);
        async move {
            loop {
                let sent = Instant::now();
                if sent >= end {
                    break;
                }
                let counted = sent >= warm_until;
                let reply = client
                    .post(&url)
                    .insert_header(("api-key", aoai_sim::DEFAULT_API_KEY))
                    .insert_header(("content-type", "application/json"))
                    .send_body(body.clone())
                    .await;
                let outcome = match reply {
                    Ok(mut response) if response.status().is_success() => {
                        let processing_us = response
                            .headers()
                            .get("x-sim-processing-us")
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| v.parse::<u64>().ok())
                            .unwrap_or(0);
                        response.body().await.ok().map(|_| processing_us)
                    }
                    _ => None,
                };
                if !counted {
                    continue;
                }
                match outcome {
                    Some(processing_us) => {
                        tally.ok.set(tally.ok.get() + 1);
                        tally
                            .processing_us
                            .set(tally.processing_us.get() + processing_us);
                    }
                    None => tally.failed.set(tally.failed.get() + 1),
                }
            }
        }
    });
    let sampler = {
        let tally = Rc::clone(&tally);
        async move {
            actix_rt::time::sleep_until(warm_until.into()).await;
            let start = worker_cpu_ticks();
            actix_rt::time::sleep_until(end.into()).await;
            let finish = worker_cpu_ticks();
            tally.worker_ticks.set(start.zip(finish));
        }
    };
    futures_util::future::join(futures_util::future::join_all(loops), sampler).await;
    Rc::try_unwrap(tally).unwrap_or_default()
}
