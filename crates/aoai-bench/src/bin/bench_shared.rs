//! `bench-shared`: what sharing a quota through Redis costs per job. N "processes" (threads,
//! each with its own runtime, Redis connection and `SharedQuota`) charge jobs to one shared
//! deployment at a combined open-loop rate, against a redis-server the bench starts on a unix
//! socket. Prints Redis calls per job, the time a job spent waiting on Redis (p50/p99/p99.9/max:
//! most jobs are charged to a lease and spend none), and the latency of one renewal call.
//!
//! It measures the Redis side alone (no HTTP, no scheduler); `bench-quota --processes` runs
//! real CLI processes end to end.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use aoai_bench::latency::Latencies;
use aoai_bench::say;
use aoai_blaster::core::config::RedisUrl;
use aoai_blaster::core::quota::Cost;
use aoai_blaster::core::shared::{
    LEASE_TTL, LeaseLimits, LeaseSpans, LeaseWait, SharedKeys, SharedQuota,
};
use aoai_blaster::shared::SharedRedis;
use aoai_testkit::RedisServer;
use clap::Parser;

/// Command-line options.
#[derive(Parser, Debug)]
#[command(about = "Redis calls and time per job of shared quotas, against a local redis-server")]
struct Args {
    /// Processes sharing the deployment (one thread each).
    #[arg(long, value_delimiter = ',', default_values_t = vec![1u32, 2, 4])]
    processes: Vec<u32>,
    /// Combined jobs per second.
    #[arg(long, default_value_t = 10_000)]
    rate: u32,
    /// Seconds per run.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Tokens charged per job.
    #[arg(long, default_value_t = 1_000)]
    tokens: u64,
}

/// What one process measured.
#[derive(Default)]
struct Measured {
    jobs: u64,
    waited_on_quota: u64,
    operations: u64,
    per_job: Vec<Duration>,
    per_call: Vec<Duration>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let redis = match RedisServer::start() {
        Ok(redis) => redis,
        Err(error) => {
            eprintln!("bench-shared: {error}");
            return ExitCode::from(2);
        }
    };
    let url = match RedisUrl::parse(&redis.url()) {
        Ok(url) => url,
        Err(error) => {
            eprintln!("bench-shared: {error}");
            return ExitCode::from(2);
        }
    };
    // Limits twice what the rate needs, so the quota never binds: the figures are Redis' cost.
    let rate = u64::from(args.rate.max(1));
    let tpm = rate * 60 * args.tokens * 2;
    let rpm = u32::try_from(rate * 60 * 2).unwrap_or(u32::MAX);
    let limits = LeaseLimits::new(Some(rpm), Some(tpm), Duration::from_secs(1));
    say(format!(
        "bench-shared: {} jobs/s combined for {} s, {} tokens each; limits {rpm} RPM, {tpm} TPM \
         (twice the rate); redis-server on a unix socket; {} cores",
        args.rate,
        args.seconds,
        args.tokens,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    ));
    say(
        "| processes | jobs | jobs/s | Redis calls | calls per job | Redis time per job p50 / p99 / p99.9 / max | one call p50 / p99 / max |",
    );
    say("|---|---|---|---|---|---|---|");
    for (run, &processes) in args.processes.iter().enumerate() {
        let keys = SharedKeys::new(
            &format!("bench{run}"),
            "https://bench.openai.azure.com/",
            "gpt-4o",
        );
        let started = Instant::now();
        let threads: Vec<_> = (0..processes.max(1))
            .map(|_| {
                let (url, keys) = (url.clone(), keys.clone());
                let per_process = args.rate as f64 / f64::from(processes.max(1));
                let cost = Cost {
                    tokens: args.tokens,
                    requests: 1,
                };
                let seconds = args.seconds;
                std::thread::spawn(move || {
                    process(url, keys, limits, processes, per_process, cost, seconds)
                })
            })
            .collect();
        let mut all = Measured::default();
        for thread in threads {
            match thread.join() {
                Ok(Ok(m)) => {
                    all.jobs += m.jobs;
                    all.waited_on_quota += m.waited_on_quota;
                    all.operations += m.operations;
                    all.per_job.extend(m.per_job);
                    all.per_call.extend(m.per_call);
                }
                Ok(Err(error)) => {
                    eprintln!("bench-shared: {error}");
                    return ExitCode::FAILURE;
                }
                Err(_) => {
                    eprintln!("bench-shared: a process thread panicked");
                    return ExitCode::FAILURE;
                }
            }
        }
        let elapsed = started.elapsed().as_secs_f64();
        let (mut per_job, mut per_call) = (Latencies::new(), Latencies::new());
        all.per_job.iter().for_each(|d| per_job.record(*d));
        all.per_call.iter().for_each(|d| per_call.record(*d));
        let q = |l: &Latencies, p: f64| l.quantile_us(p);
        say(format!(
            "| {processes} | {} | {:.0} | {} | {:.4} | {} / {} / {} / {} µs | {} / {} / {} µs |",
            all.jobs,
            all.jobs as f64 / elapsed,
            all.operations,
            all.operations as f64 / all.jobs.max(1) as f64,
            q(&per_job, 0.5),
            q(&per_job, 0.99),
            q(&per_job, 0.999),
            q(&per_job, 1.0),
            q(&per_call, 0.5),
            q(&per_call, 0.99),
            q(&per_call, 1.0),
        ));
        if all.waited_on_quota > 0 {
            say(format!(
                "  ({} jobs waited for quota: the limits bound, the figures are not Redis' alone)",
                all.waited_on_quota
            ));
        }
    }
    say(
        "Redis time per job counts 1 µs for a job charged to a lease it already held (the histogram's floor).",
    );
    ExitCode::SUCCESS
}

/// One process: charges jobs at `rate` per second for `seconds`, renewing its lease through
/// Redis when it must, and measures the time each job waited on Redis.
fn process(
    url: RedisUrl,
    keys: SharedKeys,
    limits: LeaseLimits,
    processes: u32,
    rate: f64,
    cost: Cost,
    seconds: u64,
) -> Result<Measured, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async move {
        let spans = LeaseSpans::new(LEASE_TTL, Duration::from_secs(1));
        let mut quota = SharedQuota::new(limits, processes, spans);
        let mut redis = SharedRedis::new(&url).map_err(|e| e.to_string())?;
        let mut measured = Measured::default();
        let start = Instant::now();
        let end = start + Duration::from_secs(seconds);
        while Instant::now() < end {
            let due = (start.elapsed().as_secs_f64() * rate) as u64;
            while measured.jobs < due {
                let mut on_redis = Duration::ZERO;
                loop {
                    match quota.try_charge(Instant::now(), cost) {
                        Ok(_) => break,
                        Err(LeaseWait::Renewal) => {}
                        Err(LeaseWait::NotUntil(at)) => {
                            measured.waited_on_quota += 1;
                            tokio::time::sleep_until(at.into()).await;
                            continue;
                        }
                        Err(wait) => return Err(format!("{wait:?}")),
                    }
                    let Some(renewal) = quota.next_renewal(Instant::now()) else {
                        return Err("no renewal while a job waits".into());
                    };
                    let sent = Instant::now();
                    let grant = redis
                        .renew(&keys, limits, spans, &renewal)
                        .await
                        .map_err(|e| e.to_string())?;
                    let took = sent.elapsed();
                    on_redis += took;
                    measured.per_call.push(took);
                    if let Some(grant) = grant {
                        quota.granted(Instant::now(), grant);
                    }
                }
                measured.per_job.push(on_redis);
                measured.jobs += 1;
            }
            // Leases past their ttl go back even when no job needs a new one.
            if let Some(renewal) = quota.next_renewal(Instant::now()) {
                let sent = Instant::now();
                let grant = redis
                    .renew(&keys, limits, spans, &renewal)
                    .await
                    .map_err(|e| e.to_string())?;
                measured.per_call.push(sent.elapsed());
                if let Some(grant) = grant {
                    quota.granted(Instant::now(), grant);
                }
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        measured.operations = redis.operations();
        Ok(measured)
    })
}
