//! `bench-quota`: a batch through three simulated deployments with different quotas, for each
//! routing strategy, with configured limits and with learned (adaptive) limits. Prints the
//! makespan, the theoretical minimum by the simulator's window rule, their ratio, 429s as a
//! share of requests, and the TPM each endpoint achieved. See the crate README.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use aoai_blaster::GetReport;
use aoai_blaster::core::config::StrategyKind;
use aoai_blaster::{BlasterConfig, ChatJob, ChatRequest, Dispatcher};
use aoai_sim::{DeploymentSpec, LatencySpec, SimConfig};
use futures_util::future::join_all;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde_json::{Value, json};

/// One simulated deployment of the scenario.
#[derive(Clone, Copy)]
struct Quota {
    name: &'static str,
    tpm: u64,
    weight: u32,
    priority: i32,
}

/// Three deployments with different TPM limits; RPM is the gpt-4o ratio, 6 per 1,000 TPM.
const QUOTAS: [Quota; 3] = [
    Quota {
        name: "large",
        tpm: 300_000,
        weight: 4,
        priority: 1,
    },
    Quota {
        name: "medium",
        tpm: 150_000,
        weight: 2,
        priority: 0,
    },
    Quota {
        name: "small",
        tpm: 75_000,
        weight: 1,
        priority: 2,
    },
];

const RPM_PER_1000_TPM: u64 = 6;
const TTFT_MS: u64 = 40;
const PER_TOKEN_MS: u64 = 1;
const REPLY_TOKENS: u64 = 40;

fn rpm(quota: &Quota) -> u64 {
    quota.tpm * RPM_PER_1000_TPM / 1000
}

/// One job of the batch: its prompt and `max_tokens`.
#[derive(Clone)]
struct Job {
    messages: Vec<Value>,
    max_tokens: u64,
}

impl Job {
    /// What the simulator charges it.
    fn charge(&self) -> u64 {
        aoai_sim::quota::estimate_prompt_tokens(&self.messages) + self.max_tokens
    }

    /// The simulator's latency for it (no jitter configured).
    fn latency(&self) -> Duration {
        let completion = REPLY_TOKENS.min(self.max_tokens);
        Duration::from_millis(TTFT_MS + PER_TOKEN_MS * completion)
    }
}

const WORDS: [&str; 16] = [
    "quota",
    "window",
    "token",
    "request",
    "deployment",
    "latency",
    "batch",
    "minute",
    "azure",
    "model",
    "prompt",
    "answer",
    "limit",
    "pacing",
    "router",
    "endpoint",
];

/// A batch of mixed prompt sizes (70 % short, 25 % medium, 5 % long) and `max_tokens`.
fn batch(jobs: usize, seed: u64) -> Vec<Job> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..jobs)
        .map(|i| {
            let size = rng.random_range(0..100u32);
            let words = match size {
                0..70 => rng.random_range(15..60),
                70..95 => rng.random_range(120..300),
                _ => rng.random_range(600..1200),
            };
            let mut text = format!("Job {i}:");
            for _ in 0..words {
                text.push(' ');
                text.push_str(WORDS[rng.random_range(0..WORDS.len())]);
            }
            let max_tokens = [16, 64, 128, 256, 512][rng.random_range(0..5)];
            Job {
                messages: vec![
                    json!({"role": "system", "content": "Answer briefly."}),
                    json!({"role": "user", "content": text}),
                ],
                max_tokens,
            }
        })
        .collect()
}

/// The makespan of a client that knows the simulator's windows exactly: at the start of each
/// 1 s window it sends, to each deployment, as many jobs as that window's requests and the
/// minute's remaining tokens allow (any job that fits, largest deployments first); the batch
/// ends when the last reply arrives.
fn theoretical_minimum(jobs: &[Job]) -> Duration {
    let mut waiting: Vec<&Job> = jobs.iter().collect();
    let mut used = [0u64; QUOTAS.len()];
    let mut order: Vec<usize> = (0..QUOTAS.len()).collect();
    order.sort_by_key(|&d| std::cmp::Reverse(QUOTAS[d].tpm));
    let mut end = Duration::ZERO;
    let mut second = 0u64;
    while !waiting.is_empty() {
        if second.is_multiple_of(60) {
            used = [0; QUOTAS.len()];
        }
        let now = Duration::from_secs(second);
        for &d in &order {
            let quota = &QUOTAS[d];
            let mut requests =
                aoai_sim::quota::requests_per_window(rpm(quota), Duration::from_secs(1));
            let mut index = 0;
            while requests > 0 && index < waiting.len() {
                let job = waiting[index];
                if used[d] + job.charge() <= quota.tpm {
                    used[d] += job.charge();
                    requests -= 1;
                    end = end.max(now + job.latency());
                    waiting.remove(index);
                } else {
                    index += 1;
                }
            }
        }
        second += 1;
    }
    end
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Configured,
    Adaptive,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Configured => "configured limits",
            Mode::Adaptive => "adaptive (no limits configured)",
        }
    }
}

/// A makespan this far above the minimum prints the endpoints' reports.
const SLOW_RATIO: f64 = 1.2;

/// What one run measured.
struct Outcome {
    strategy: StrategyKind,
    makespan: Duration,
    requests: u64,
    rate_limited: u64,
    failed: usize,
    charged: Vec<u64>,
    /// 429 replies per endpoint (in `QUOTAS` order).
    rate_limited_by_endpoint: Vec<u64>,
    /// The Dispatcher's report at the end: state, counts, mean latency per endpoint.
    reports: Vec<String>,
}

fn config(sim: &aoai_sim::SimHandle, strategy: StrategyKind, mode: Mode) -> BlasterConfig {
    let deployments: Vec<Value> = QUOTAS
        .iter()
        .map(|quota| {
            let mut entry = json!({
                "name": quota.name,
                "endpoint": sim.base_url(),
                "api_key": aoai_sim::DEFAULT_API_KEY,
                "model": quota.name,
                "weight": quota.weight,
                "priority": quota.priority,
            });
            if mode == Mode::Configured {
                entry["tpm_limit"] = json!(quota.tpm);
                entry["rpm_limit"] = json!(rpm(quota));
            }
            entry
        })
        .collect();
    let value = json!({
        "strategy": strategy.as_str(),
        "num_workers": 64,
        "request_timeout": "30s",
        "max_job_retry": 5,
        "deployments": deployments,
    });
    match BlasterConfig::from_value(value) {
        Ok(config) => config,
        Err(error) => panic!("the benchmark's config is valid: {error}"),
    }
}

/// Runs the batch through a fresh simulator and Dispatcher.
fn run(strategy: StrategyKind, mode: Mode, jobs: Vec<Job>) -> Result<Outcome, String> {
    let system = actix_rt::System::new();
    system.block_on(async move {
        let mut sim_config = SimConfig::default();
        for quota in &QUOTAS {
            sim_config = sim_config.deployment(
                DeploymentSpec::new(quota.name)
                    .tpm(quota.tpm)
                    .rpm(rpm(quota))
                    .reply_tokens(REPLY_TOKENS)
                    .latency(LatencySpec {
                        ttft_ms: TTFT_MS,
                        per_token_ms: PER_TOKEN_MS,
                        jitter_ms: 0,
                    }),
            );
        }
        let sim = aoai_sim::start(sim_config)
            .await
            .map_err(|e| format!("simulator: {e}"))?;
        let dispatcher =
            Dispatcher::start(config(&sim, strategy, mode)).map_err(|e| e.to_string())?;
        let started = Instant::now();
        let sends = jobs.into_iter().map(|job| {
            let request = ChatRequest::new(job.messages).option("max_tokens", job.max_tokens);
            dispatcher.send(ChatJob::new(request))
        });
        let results = join_all(sends).await;
        let makespan = started.elapsed();
        let failed = results.iter().filter(|r| !matches!(r, Ok(Ok(_)))).count();
        let reports = dispatcher
            .send(GetReport)
            .await
            .map(|reports| reports.iter().map(ToString::to_string).collect())
            .unwrap_or_default();
        let stats = sim.stats();
        sim.stop().await;
        let total = stats.total();
        Ok(Outcome {
            strategy,
            makespan,
            requests: total.requests,
            rate_limited: total.rate_limited,
            failed,
            charged: QUOTAS
                .iter()
                .map(|q| stats.deployment(q.name).charged_tokens)
                .collect(),
            rate_limited_by_endpoint: QUOTAS
                .iter()
                .map(|q| stats.deployment(q.name).rate_limited)
                .collect(),
            reports,
        })
    })
}

struct Options {
    jobs: usize,
    seed: u64,
    sequential: bool,
    modes: Vec<Mode>,
}

fn parse_args() -> Result<Options, String> {
    let mut options = Options {
        jobs: 2_000,
        seed: 7,
        sequential: false,
        modes: vec![Mode::Configured, Mode::Adaptive],
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--jobs" => {
                options.jobs = value("--jobs")?
                    .parse()
                    .map_err(|e| format!("--jobs: {e}"))?
            }
            "--seed" => {
                options.seed = value("--seed")?
                    .parse()
                    .map_err(|e| format!("--seed: {e}"))?
            }
            "--sequential" => options.sequential = true,
            "--mode" => {
                options.modes = match value("--mode")?.as_str() {
                    "configured" => vec![Mode::Configured],
                    "adaptive" => vec![Mode::Adaptive],
                    "both" => vec![Mode::Configured, Mode::Adaptive],
                    other => {
                        return Err(format!(
                            "--mode: unknown {other:?}; use configured, adaptive or both"
                        ));
                    }
                }
            }
            other => {
                return Err(format!(
                    "unknown argument {other:?}; use --jobs N, --seed S, --sequential, --mode M"
                ));
            }
        }
    }
    Ok(options)
}

fn main() -> ExitCode {
    let options = match parse_args() {
        Ok(options) => options,
        Err(error) => {
            eprintln!("bench-quota: {error}");
            return ExitCode::from(2);
        }
    };
    // Build the tokenizer before any clock starts: the makespan measures pacing, not start-up.
    let built = Instant::now();
    aoai_blaster::core::tokens::warm_up(aoai_blaster::core::config::DEFAULT_TOKENIZER);
    let built = built.elapsed();
    let jobs = batch(options.jobs, options.seed);
    let minimum = theoretical_minimum(&jobs);
    print_setup(&options, &jobs, minimum, built);
    let mut ok = true;
    for &mode in &options.modes {
        println!("\n{}", mode.name());
        println!(
            "  {:<9} {:>9} {:>6} {:>9} {:>7} {:>7}  achieved TPM per endpoint",
            "strategy", "makespan", "ratio", "requests", "429s", "failed"
        );
        for outcome in run_strategies(mode, &jobs, options.sequential) {
            match outcome {
                Ok(outcome) => ok &= print_outcome(&outcome, minimum),
                Err(error) => {
                    println!("  run failed: {error}");
                    ok = false;
                }
            }
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Prints the batch, the machine, the quotas, the minimum and the tokenizer's build time.
fn print_setup(options: &Options, jobs: &[Job], minimum: Duration, built: Duration) {
    let tokens: u64 = jobs.iter().map(Job::charge).sum();
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    println!(
        "bench-quota: {} jobs (seed {}), {} charged tokens; {} cores; runs {}",
        jobs.len(),
        options.seed,
        tokens,
        cores,
        if options.sequential {
            "one after another"
        } else {
            "side by side"
        }
    );
    for quota in &QUOTAS {
        println!(
            "  {:<7} {:>7} TPM {:>5} RPM (weight {}, priority {})",
            quota.name,
            quota.tpm,
            rpm(quota),
            quota.weight,
            quota.priority
        );
    }
    println!(
        "theoretical minimum (simulator's windows, known exactly): {:.2} s",
        minimum.as_secs_f64()
    );
    println!(
        "tokenizer (o200k_base) built before the runs in {:.0} ms",
        built.as_secs_f64() * 1000.0
    );
}

/// Runs the batch once per strategy, one after another or side by side (one thread each).
fn run_strategies(mode: Mode, jobs: &[Job], sequential: bool) -> Vec<Result<Outcome, String>> {
    if sequential {
        StrategyKind::ALL
            .iter()
            .map(|&s| run(s, mode, jobs.to_vec()))
            .collect()
    } else {
        let handles: Vec<_> = StrategyKind::ALL
            .iter()
            .map(|&s| {
                let jobs = jobs.to_vec();
                std::thread::spawn(move || run(s, mode, jobs))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("the run panicked".to_owned()))
            })
            .collect()
    }
}

/// Prints one run's row (and, when it is far from the minimum, where the time went); says
/// whether every job succeeded.
fn print_outcome(outcome: &Outcome, minimum: Duration) -> bool {
    let minutes = outcome.makespan.as_secs_f64() / 60.0;
    let achieved: Vec<String> = QUOTAS
        .iter()
        .zip(&outcome.charged)
        .map(|(q, charged)| format!("{} {:.0}", q.name, *charged as f64 / minutes))
        .collect();
    let share = if outcome.requests == 0 {
        0.0
    } else {
        outcome.rate_limited as f64 / outcome.requests as f64
    };
    println!(
        "  {:<9} {:>8.2}s {:>6.3} {:>9} {:>6.2}% {:>7}  {}",
        outcome.strategy.as_str(),
        outcome.makespan.as_secs_f64(),
        outcome.makespan.as_secs_f64() / minimum.as_secs_f64(),
        outcome.requests,
        share * 100.0,
        outcome.failed,
        achieved.join(", ")
    );
    let ratio = outcome.makespan.as_secs_f64() / minimum.as_secs_f64();
    if ratio > SLOW_RATIO {
        // Far from the minimum: show where the time went.
        let limited: Vec<String> = QUOTAS
            .iter()
            .zip(&outcome.rate_limited_by_endpoint)
            .map(|(q, n)| format!("{} {n}", q.name))
            .collect();
        println!("    429s per endpoint: {}", limited.join(", "));
        for report in &outcome.reports {
            println!("    {report}");
        }
    }
    outcome.failed == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(words: usize, max_tokens: u64) -> Job {
        Job {
            messages: vec![json!({"role": "user", "content": "word ".repeat(words)})],
            max_tokens,
        }
    }

    #[test]
    fn a_batch_within_one_window_takes_one_latency() {
        let jobs = vec![job(10, 16); 5];
        assert_eq!(jobs[0].charge(), 3 + 13 + 3 + 16);
        assert_eq!(
            theoretical_minimum(&jobs),
            Duration::from_millis(TTFT_MS + PER_TOKEN_MS * 16)
        );
    }

    #[test]
    fn requests_beyond_a_second_wait_for_the_next_window() {
        // 30 + 15 + 7 requests a second: 53 jobs need a second window.
        let jobs = vec![job(10, 64); 53];
        let latency = Duration::from_millis(TTFT_MS + PER_TOKEN_MS * REPLY_TOKENS);
        assert_eq!(theoretical_minimum(&jobs[..52]), latency);
        assert_eq!(theoretical_minimum(&jobs), Duration::from_secs(1) + latency);
    }

    #[test]
    fn tokens_beyond_the_combined_minute_wait_for_the_next_minute() {
        // 50,106-token jobs: large takes 5, medium 2, small 1 a minute; 11 need two minutes.
        let big = job(40_000, 100);
        assert_eq!(big.charge(), 50_106);
        assert!(big.charge() <= 75_000 && big.charge() * 2 > 75_000);
        let jobs = vec![big; 11];
        let minimum = theoretical_minimum(&jobs);
        assert!(minimum >= Duration::from_secs(60) && minimum < Duration::from_secs(61));
    }

    #[test]
    fn batches_are_reproducible_and_mixed() {
        let a = batch(200, 3);
        let b = batch(200, 3);
        let charges: Vec<u64> = a.iter().map(Job::charge).collect();
        assert_eq!(charges, b.iter().map(Job::charge).collect::<Vec<_>>());
        let max = charges.iter().max().copied().unwrap_or(0);
        let min = charges.iter().min().copied().unwrap_or(0);
        assert!(max > 10 * min, "{min}..{max}");
    }
}
