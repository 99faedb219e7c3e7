//! [`run`]: `bench-quota`'s batch split between N real `aoai-blaster run` processes (the
//! release CLI), all sending to one simulator, with or without a `shared:` section naming one
//! redis-server.
//!
//! How a run goes: a fresh simulator (its quota windows start with it); one config, input and
//! output per process; the processes start with their input on a pipe and are left until they
//! are ready (their CPU time has stopped growing: the tokenizer is built, Redis pinged); then,
//! just after a whole second of the simulator's clock (where its 1 s windows turn), every
//! process gets its share of the jobs at the same instant. The makespan runs from that instant
//! to the last process's exit, and the theoretical minimum is the ideal client's from the same
//! instant ([`aoai_sim::minimum_makespan_from`]: the windows are counted from the simulator's
//! start). 429s are the simulator's count; every `custom_id` must be answered
//! exactly once across the outputs; the Redis figures are each process's `--summary-json`.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::cpu;
use crate::scenario::{self, Job, QUOTAS};

/// A run's processes are ready when none has used CPU for this long.
const QUIET: Duration = Duration::from_millis(300);
/// ... and each has used at least this much (start-up and the tokenizer take more).
const MIN_START_CPU: Duration = Duration::from_millis(100);
/// Readiness is not waited for longer than this.
const READY_LIMIT: Duration = Duration::from_secs(20);
/// The input goes this long after a whole second of the simulator's clock.
const GO_MARGIN: Duration = Duration::from_millis(2);
/// Warnings shown per process.
const WARNINGS_SHOWN: usize = 3;
/// How often exits are looked for (the makespan's resolution).
const POLL: Duration = Duration::from_millis(2);

/// One run's setting.
#[derive(Debug, Clone)]
pub struct Setting<'a> {
    /// The `aoai-blaster` binary.
    pub cli: &'a Path,
    /// Processes.
    pub processes: u32,
    /// `shared.redis_url` with a `key_prefix` of this run's own; `None`: no `shared:`, each
    /// process paces alone to the whole quota.
    pub redis: Option<(&'a str, String)>,
    /// The whole batch (job `i` goes to process `i % processes`).
    pub jobs: &'a [Job],
    /// Processes still running after this long are killed (their jobs count as unanswered).
    pub timeout: Duration,
}

/// What one run measured.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// From the input's going out to the last process's exit.
    pub makespan: Duration,
    /// The ideal client's makespan from the same instant.
    pub minimum: Duration,
    /// From the simulator's start to the input's going out.
    pub offset: Duration,
    /// How long the processes took to be ready.
    pub ready_after: Duration,
    /// Requests the simulator received.
    pub requests: u64,
    /// Of those, answered 429.
    pub rate_limited: u64,
    /// Distinct `custom_id`s answered with a 2xx.
    pub succeeded: usize,
    /// Ids answered otherwise (an error line or a final non-2xx).
    pub failed: usize,
    /// Ids with no answer line.
    pub missing: usize,
    /// Answer lines beyond the first for an id.
    pub duplicates: usize,
    /// Some process was still running at the timeout.
    pub timed_out: bool,
    /// Processes that exited with a status other than 0.
    pub bad_exits: Vec<String>,
    /// Warnings the processes logged (the first few of each), e.g. Redis lost.
    pub warnings: Vec<String>,
    /// Each process's `redis` figures from `--summary-json` (empty without `shared:`).
    pub redis: Vec<Value>,
}

impl Outcome {
    /// Makespan over the minimum.
    pub fn ratio(&self) -> f64 {
        self.makespan.as_secs_f64() / self.minimum.as_secs_f64().max(f64::MIN_POSITIVE)
    }

    /// 429s as a share of requests.
    pub fn rate_limited_share(&self) -> f64 {
        self.rate_limited as f64 / self.requests.max(1) as f64
    }

    /// Every job answered exactly once, with success.
    pub fn no_job_lost(&self) -> bool {
        self.missing == 0 && self.duplicates == 0 && self.failed == 0 && !self.timed_out
    }

    /// The sum of a Redis figure over the processes.
    pub fn redis_sum(&self, key: &str) -> u64 {
        self.redis.iter().filter_map(|r| r[key].as_u64()).sum()
    }

    /// The largest of a Redis figure over the processes: for a quantile, an upper bound of the
    /// quantile over all processes' jobs together.
    pub fn redis_max(&self, key: &str) -> u64 {
        self.redis
            .iter()
            .filter_map(|r| r[key].as_u64())
            .max()
            .unwrap_or(0)
    }
}

/// The `aoai-blaster` binary beside this one (`target/release/` for a release bench).
pub fn cli_beside_this_binary() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this binary: {e}"))?;
    let cli = exe.with_file_name("aoai-blaster");
    if cli.is_file() {
        Ok(cli)
    } else {
        Err(format!(
            "{} not found: build the CLI first (cargo build --release -p aoai-blaster-cli), \
             or name it with --cli PATH",
            cli.display()
        ))
    }
}

/// A process's config: the scenario's deployments with their limits, and `shared:` if any.
pub fn config(sim_url: &str, redis: Option<(&str, &str)>, processes: u32) -> Value {
    let deployments: Vec<Value> = QUOTAS.iter().map(|q| q.deployment(sim_url, true)).collect();
    let mut config = json!({
        "num_workers": 64,
        "request_timeout": "30s",
        "max_job_retry": 5,
        "deployments": deployments,
    });
    if let Some((url, prefix)) = redis {
        config["shared"] = json!({
            "redis_url": url,
            "key_prefix": prefix,
            "expected_processes": processes,
        });
    }
    config
}

/// The Batch JSONL lines of process `index` of `processes`: every `processes`-th job.
pub fn input(jobs: &[Job], index: u32, processes: u32) -> String {
    let mut text = String::new();
    for (i, job) in jobs.iter().enumerate() {
        if i % processes.max(1) as usize == index as usize {
            let line = json!({
                "custom_id": custom_id(i),
                "method": "POST",
                "url": "/chat/completions",
                "body": job.body(),
            });
            text.push_str(&line.to_string());
            text.push('\n');
        }
    }
    text
}

fn custom_id(i: usize) -> String {
    format!("job-{i}")
}

/// Issue 17's targets for 4 processes sharing one Redis.
const TARGET_RATIO: f64 = 1.05;
const TARGET_SHARE: f64 = 0.005;
/// Points (of the ratio, and of the 429 share in percent) 4 processes may be from one.
const TARGET_POINTS: f64 = 2.0;
const TARGET_REDIS_P99_US: u64 = 300;

/// Runs `counts` processes each with `shared:` (one redis-server for all runs, a key prefix per
/// run) and without, one run after another; prints a row per run and the targets. Says whether
/// no job was lost.
pub fn bench(
    cli: &Path,
    counts: &[u32],
    jobs: &[Job],
    timeout: Duration,
    shared_only: bool,
) -> bool {
    let redis = match aoai_testkit::RedisServer::start() {
        Ok(redis) => redis,
        Err(error) => {
            crate::say(format!("  cannot start redis-server: {error}"));
            return false;
        }
    };
    let url = redis.url();
    crate::say(format!(
        "\n{} CLI processes ({}), the batch split round robin, one simulator, redis-server on a \
         unix socket; one run after another",
        counts
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        cli.display()
    ));
    crate::say(
        "| processes | shared | makespan | minimum | ratio | requests | 429s | answered | \
         Redis calls/job | Redis time/job p99 | ask round trip p50 / p99 / max | Redis call alone p99 |",
    );
    crate::say("|---|---|---|---|---|---|---|---|---|---|---|---|");
    let mut ok = true;
    let mut shared_rows: Vec<(u32, Outcome)> = Vec::new();
    for &processes in counts {
        for shared in [true, false] {
            if shared_only && !shared {
                continue;
            }
            let setting = Setting {
                cli,
                processes,
                redis: shared.then(|| {
                    (
                        url.as_str(),
                        format!("bench-{}-{processes}", std::process::id()),
                    )
                }),
                jobs,
                timeout,
            };
            match run(&setting) {
                Ok(outcome) => {
                    print_row(processes, shared, &outcome);
                    ok &= outcome.no_job_lost();
                    if shared {
                        shared_rows.push((processes, outcome));
                    }
                }
                Err(error) => {
                    crate::say(format!("| {processes} | {shared} | run failed: {error} |"));
                    ok = false;
                }
            }
        }
    }
    print_targets(&shared_rows);
    ok
}

fn print_row(processes: u32, shared: bool, o: &Outcome) {
    let answered = if o.no_job_lost() {
        format!("{} of {}, each once", o.succeeded, o.succeeded)
    } else {
        format!(
            "{} ok, {} failed, {} missing, {} duplicate{}",
            o.succeeded,
            o.failed,
            o.missing,
            o.duplicates,
            if o.timed_out { ", timed out" } else { "" }
        )
    };
    let calls = o.redis_sum("calls");
    let jobs = o.succeeded + o.failed + o.missing;
    let redis = if shared {
        format!(
            "{:.3} | {} µs | {} / {} / {} µs | {} µs",
            calls as f64 / jobs.max(1) as f64,
            o.redis_max("job_p99_us"),
            o.redis_max("ask_p50_us"),
            o.redis_max("ask_p99_us"),
            o.redis_max("ask_max_us"),
            o.redis_max("ask_call_p99_us")
        )
    } else {
        "– | – | – | –".to_owned()
    };
    crate::say(format!(
        "| {processes} | {} | {:.2} s | {:.2} s | {:.3} | {} | {:.2} % | {answered} | {redis} |",
        if shared { "yes" } else { "no" },
        o.makespan.as_secs_f64(),
        o.minimum.as_secs_f64(),
        o.ratio(),
        o.requests,
        o.rate_limited_share() * 100.0,
    ));
    for exit in &o.bad_exits {
        crate::say(format!("  a process ended with {exit}"));
    }
    for warning in &o.warnings {
        crate::say(format!("  logged: {warning}"));
    }
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "MISSED" }
}

/// Issue 17's targets, from the shared runs.
fn print_targets(rows: &[(u32, Outcome)]) {
    let find = |n: u32| rows.iter().find(|(p, _)| *p == n).map(|(_, o)| o);
    crate::say("targets (issue 17):");
    match find(4) {
        Some(four) => {
            crate::say(format!(
                "  4 processes: makespan {:.3}x the minimum (<= {TARGET_RATIO}): {}; 429s {:.2} % \
                 (<= {:.1} %): {}; no job lost: {}",
                four.ratio(),
                verdict(four.ratio() <= TARGET_RATIO),
                four.rate_limited_share() * 100.0,
                TARGET_SHARE * 100.0,
                verdict(four.rate_limited_share() <= TARGET_SHARE),
                verdict(four.no_job_lost()),
            ));
            if let Some(one) = find(1) {
                let ratio_points = (four.ratio() - one.ratio()).abs() * 100.0;
                let share_points =
                    (four.rate_limited_share() - one.rate_limited_share()).abs() * 100.0;
                crate::say(format!(
                    "  4 vs 1 process: ratio {ratio_points:.1} points apart, 429s {share_points:.2} \
                     points apart (<= {TARGET_POINTS}): {}",
                    verdict(ratio_points <= TARGET_POINTS && share_points <= TARGET_POINTS)
                ));
            }
        }
        None => crate::say("  4 processes were not run (--processes 1,2,4 runs them)"),
    }
    let p99 = rows
        .iter()
        .map(|(_, o)| o.redis_max("job_p99_us"))
        .max()
        .unwrap_or(0);
    crate::say(format!(
        "  Redis time per job p99 {p99} µs, the largest of every shared process \
         (<= {TARGET_REDIS_P99_US} µs): {}",
        verdict(p99 <= TARGET_REDIS_P99_US)
    ));
}

/// A started CLI process and its files.
struct Cli {
    child: Child,
    output: PathBuf,
    summary: PathBuf,
    stderr: PathBuf,
    input: String,
    exited: Option<Instant>,
}

impl Cli {
    fn start(setting: &Setting<'_>, dir: &Path, sim_url: &str, index: u32) -> Result<Cli, String> {
        let path = |name: &str| dir.join(format!("{name}-{index}"));
        let (config_path, output, summary, stderr) = (
            path("config").with_extension("json"),
            path("output").with_extension("jsonl"),
            path("summary").with_extension("json"),
            path("stderr").with_extension("log"),
        );
        let redis = setting.redis.as_ref().map(|(u, p)| (*u, p.as_str()));
        let config = config(sim_url, redis, setting.processes);
        std::fs::write(&config_path, config.to_string())
            .map_err(|e| format!("cannot write {}: {e}", config_path.display()))?;
        let log = std::fs::File::create(&stderr)
            .map_err(|e| format!("cannot create {}: {e}", stderr.display()))?;
        let child = Command::new(setting.cli)
            .arg("run")
            .arg("--config")
            .arg(&config_path)
            .args(["--input", "-", "--output"])
            .arg(&output)
            .arg("--summary-json")
            .arg(&summary)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", setting.cli.display()))?;
        Ok(Cli {
            child,
            output,
            summary,
            stderr,
            input: input(setting.jobs, index, setting.processes),
            exited: None,
        })
    }

    fn stderr_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.stderr).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(5)..].join("\n    ")
    }
}

/// Ends every process still running when dropped (an error or a timeout).
struct Clis(Vec<Cli>);

impl Drop for Clis {
    fn drop(&mut self) {
        for cli in &mut self.0 {
            if cli.exited.is_none() {
                let _ = cli.child.kill();
                let _ = cli.child.wait();
            }
        }
    }
}

/// Runs the batch through `setting.processes` CLI processes against a fresh simulator.
pub fn run(setting: &Setting<'_>) -> Result<Outcome, String> {
    let dir = tempfile::Builder::new()
        .prefix("aoai-bench-processes")
        .tempdir()
        .map_err(|e| format!("cannot make a temp dir: {e}"))?;
    let sim_config = scenario::sim_config();
    // The simulator's clock starts between these two instants.
    let sim_started = Instant::now();
    let sim = aoai_sim::SimThread::start(sim_config.clone()).map_err(|e| e.to_string())?;
    let sim_start_took = sim_started.elapsed();
    let sim_url = sim.base_url();
    let mut clis = Clis(Vec::new());
    for index in 0..setting.processes.max(1) {
        clis.0
            .push(Cli::start(setting, dir.path(), &sim_url, index)?);
    }
    let ready_after = wait_ready(&mut clis)?;
    // Every writer waits at the barrier, so every process gets its first line at once.
    let barrier = Arc::new(Barrier::new(clis.0.len() + 1));
    let mut writers = Vec::new();
    for cli in &mut clis.0 {
        let stdin = cli.child.stdin.take().ok_or("a process has no stdin")?;
        let text = std::mem::take(&mut cli.input);
        let barrier = Arc::clone(&barrier);
        writers.push(std::thread::spawn(move || {
            let mut stdin = stdin;
            barrier.wait();
            // A process that exits early (an error) closes the pipe: its stderr says why.
            let _ = stdin.write_all(text.as_bytes());
        }));
    }
    // Go just after a whole second of the simulator's clock, so the ideal client gets no
    // partial first window it could fill at once (up to a second's worth of requests).
    let whole_second = Duration::from_secs(sim_started.elapsed().as_secs() + 1);
    let go_at = sim_started + whole_second + sim_start_took + GO_MARGIN;
    std::thread::sleep(go_at.saturating_duration_since(Instant::now()));
    barrier.wait();
    let go = Instant::now();
    let timed_out = wait_exits(&mut clis, go + setting.timeout);
    for writer in writers {
        let _ = writer.join();
    }
    let end = clis.0.iter().filter_map(|c| c.exited).max().unwrap_or(go);
    let stats = sim.stats();
    sim.stop();
    let total = stats.total();
    let offset = go - sim_started;
    let all: Vec<_> = setting.jobs.iter().map(Job::to_minimum).collect();
    let minimum = aoai_sim::minimum_makespan_from(&sim_config, &all, offset)
        .ok_or("a job fits no deployment")?;
    let mut outcome = Outcome {
        makespan: end - go,
        minimum,
        offset,
        ready_after,
        requests: total.requests,
        rate_limited: total.rate_limited,
        timed_out,
        ..Outcome::default()
    };
    count_answers(&clis.0, setting.jobs.len(), &mut outcome)?;
    for cli in &mut clis.0 {
        match cli.child.try_wait() {
            Ok(Some(status)) if status.success() => {}
            status => outcome.bad_exits.push(format!(
                "{status:?}; its last log lines:\n    {}",
                cli.stderr_tail()
            )),
        }
        let log = std::fs::read_to_string(&cli.stderr).unwrap_or_default();
        let warnings = log
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"));
        outcome
            .warnings
            .extend(warnings.take(WARNINGS_SHOWN).map(str::to_owned));
        if setting.redis.is_some()
            && let Ok(text) = std::fs::read_to_string(&cli.summary)
            && let Ok(summary) = serde_json::from_str::<Value>(&text)
            && summary["redis"].is_object()
        {
            outcome.redis.push(summary["redis"].clone());
        }
    }
    Ok(outcome)
}

/// Waits until no process has used CPU for [`QUIET`] and each has used [`MIN_START_CPU`];
/// returns how long that took. A process that exits meanwhile is an error naming its log.
fn wait_ready(clis: &mut Clis) -> Result<Duration, String> {
    let started = Instant::now();
    let cpu_now = |clis: &Clis| -> Vec<Duration> {
        clis.0.iter().map(|c| cpu::pid_cpu(c.child.id())).collect()
    };
    let mut last = cpu_now(clis);
    let mut quiet_since = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(50));
        for cli in &mut clis.0 {
            if let Ok(Some(status)) = cli.child.try_wait() {
                cli.exited = Some(Instant::now());
                return Err(format!(
                    "a CLI process exited before its input came ({status}):\n    {}",
                    cli.stderr_tail()
                ));
            }
        }
        let now = cpu_now(clis);
        if now != last {
            last = now;
            quiet_since = Instant::now();
        } else if quiet_since.elapsed() >= QUIET && last.iter().all(|&c| c >= MIN_START_CPU) {
            return Ok(started.elapsed());
        }
        if started.elapsed() >= READY_LIMIT {
            crate::say(format!(
                "  (the processes were not quiet after {} s; starting anyway)",
                READY_LIMIT.as_secs()
            ));
            return Ok(started.elapsed());
        }
    }
}

/// Notes each process's exit until all have exited or `deadline` passes (then kills the rest);
/// says whether it did.
fn wait_exits(clis: &mut Clis, deadline: Instant) -> bool {
    loop {
        let now = Instant::now();
        for cli in clis.0.iter_mut().filter(|c| c.exited.is_none()) {
            if let Ok(Some(_)) = cli.child.try_wait() {
                cli.exited = Some(now);
            }
        }
        if clis.0.iter().all(|c| c.exited.is_some()) {
            return false;
        }
        if now >= deadline {
            for cli in clis.0.iter_mut().filter(|c| c.exited.is_none()) {
                let _ = cli.child.kill();
                let _ = cli.child.wait();
            }
            return true;
        }
        std::thread::sleep(POLL);
    }
}

/// Counts each `custom_id`'s answer lines across the outputs.
fn count_answers(clis: &[Cli], jobs: usize, outcome: &mut Outcome) -> Result<(), String> {
    let mut answers: HashMap<String, (usize, bool)> = HashMap::new();
    for cli in clis {
        let Ok(file) = std::fs::File::open(&cli.output) else {
            continue;
        };
        for line in BufReader::new(file).lines() {
            let line = line.map_err(|e| format!("{}: {e}", cli.output.display()))?;
            let answer: Value = serde_json::from_str(&line)
                .map_err(|e| format!("{}: not JSON: {e}", cli.output.display()))?;
            let Some(id) = answer["custom_id"].as_str() else {
                continue;
            };
            let status = answer["response"]["status_code"].as_u64().unwrap_or(0);
            let entry = answers.entry(id.to_owned()).or_default();
            entry.0 += 1;
            entry.1 |= (200..300).contains(&status);
        }
    }
    for i in 0..jobs {
        match answers.get(&custom_id(i)) {
            None => outcome.missing += 1,
            Some(&(lines, ok)) => {
                outcome.duplicates += lines - 1;
                if ok {
                    outcome.succeeded += 1;
                } else {
                    outcome.failed += 1;
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_input_is_split_round_robin_and_every_line_is_valid_batch_jsonl() {
        let jobs = scenario::batch(7, 1);
        let parts: Vec<String> = (0..3).map(|i| input(&jobs, i, 3)).collect();
        let ids: Vec<Vec<String>> = parts
            .iter()
            .map(|p| {
                p.lines()
                    .map(|l| {
                        let v: Value = serde_json::from_str(l).unwrap_or_default();
                        assert_eq!(v["url"], "/chat/completions");
                        let id = v["custom_id"].as_str().unwrap_or_default().to_owned();
                        let n: usize = id.trim_start_matches("job-").parse().unwrap_or(99);
                        assert_eq!(v["body"], jobs[n].body());
                        id
                    })
                    .collect()
            })
            .collect();
        assert_eq!(ids[0], ["job-0", "job-3", "job-6"]);
        assert_eq!(ids[1], ["job-1", "job-4"]);
        assert_eq!(ids[2], ["job-2", "job-5"]);
    }

    #[test]
    fn the_config_is_valid_and_shares_only_when_asked() {
        let alone = config("http://127.0.0.1:1/", None, 4);
        let config_alone = aoai_blaster::BlasterConfig::from_value(alone);
        let config_alone = config_alone.map_err(|e| e.to_string());
        assert!(
            config_alone.as_ref().is_ok_and(|c| c.shared.is_none()),
            "{config_alone:?}"
        );
        let shared = config(
            "http://127.0.0.1:1/",
            Some(("redis+unix:///tmp/r.sock", "run1")),
            4,
        );
        let shared = aoai_blaster::BlasterConfig::from_value(shared).map_err(|e| e.to_string());
        let processes = shared
            .as_ref()
            .ok()
            .and_then(|c| c.shared.as_ref())
            .map(|s| (s.expected_processes, s.key_prefix.clone()));
        assert_eq!(processes, Some((4, "run1".to_owned())), "{shared:?}");
        let limits = shared.map(|c| {
            c.deployments
                .iter()
                .map(|d| d.tpm_limit)
                .collect::<Vec<_>>()
        });
        assert_eq!(limits, Ok(vec![Some(300_000), Some(150_000), Some(75_000)]));
    }
}
