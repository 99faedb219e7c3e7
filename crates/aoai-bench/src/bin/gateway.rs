//! `gateway`: what the OpenAI-compatible gateway (`aoai-blaster serve`) adds to a request.
//!
//! A zero-latency upstream (the simulator, in a child process) is loaded with `wrk` (Debian's
//! package) directly and through the gateway (in another child process: the same code as
//! `serve`), side by side in one run, at several concurrencies: p50/p99 latency added by the
//! gateway and the most requests/s each way; then the same with pacing on (limits configured
//! far above the load, so they never bind). Also the idle RSS of the gateway process. The
//! same table follows with nginx as the upstream (Debian's, started by the bench on a free
//! loopback port, answering one fixed completion), when it is installed.
//!
//! Each concurrency runs `--repeat` rounds of direct, pacing off and pacing on back to back;
//! the added latency is taken within each round (gateway minus direct, so a change in the
//! machine's load hits both alike) and reported as the median round with the spread. wrk is a
//! closed loop at its top speed: at 64 connections each request waits for the 63 ahead of it,
//! a throughput figure. So the same rounds follow as an open loop (`--open`): `oha` sending at
//! fixed rates with `--latency-correction` (coordinated omission corrected), whose added
//! latency is the gateway's at that rate. `--pin` runs the gateway on core 1 and everything
//! else (the upstream, wrk, oha) on core 0, for the direct runs too.
//! `--callgrind` instead counts the gateway's instructions per request at concurrency 1
//! (valgrind's callgrind, collecting only while wrk runs): a figure that the load of a shared
//! machine does not move. `--gateway-exe` runs another build's gateway (any `gateway` bench
//! binary) against the same simulator, to compare builds.
//!
//! `cargo run --release -p aoai-bench --bin gateway -- --help`

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::Duration;

use aoai_bench::cpu::pid_cpu;
use aoai_bench::say;
use aoai_bench::sim::SimProcess;

#[path = "gateway/nginx.rs"]
mod nginx;
#[path = "gateway/oha.rs"]
mod oha;
use aoai_blaster::BlasterConfig;
use aoai_blaster_gateway::{Gateway, GatewayOptions};
use aoai_sim::{DeploymentSpec, SimConfig};
use clap::Parser;
use serde_json::json;

/// mimalloc, as in the `aoai-blaster` binary.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Environment variable naming the config a gateway child must serve.
const GATEWAY_CHILD_ENV: &str = "AOAI_BENCH_GATEWAY_CONFIG";

/// Targets on a 2-core machine (issue 16).
const TARGET_P99_C1_US: f64 = 90.0;
const TARGET_P99_C64_US: f64 = 1_000.0;
const TARGET_PACING_LOSS: f64 = 0.20;
const TARGET_RPS_PER_CORE: f64 = 11_600.0;
const TARGET_IDLE_RSS_MIB: f64 = 40.0;

#[derive(Debug, Parser)]
#[command(about = "Added latency and max requests/s of aoai-blaster serve, with wrk")]
struct Args {
    /// Concurrencies (wrk connections), comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = vec![1u32, 16, 64, 256])]
    concurrency: Vec<u32>,
    /// Seconds of each wrk run.
    #[arg(long, default_value_t = 3)]
    seconds: u64,
    /// Rounds (direct, pacing off, pacing on) per concurrency.
    #[arg(long, default_value_t = 3)]
    repeat: u32,
    /// HTTP worker threads of the gateway.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Count the gateway's instructions per request at concurrency 1 under callgrind instead
    /// (needs valgrind: `apt-get install valgrind`).
    #[arg(long)]
    callgrind: bool,
    /// With `--callgrind`: measure the pacing-on gateway instead of the pacing-off one.
    #[arg(long)]
    pacing: bool,
    /// With `--callgrind`: keep callgrind's output file here (for `callgrind_annotate`).
    #[arg(long)]
    callgrind_out: Option<PathBuf>,
    /// The binary to run the gateways from (another build of this bench); this one by default.
    #[arg(long)]
    gateway_exe: Option<PathBuf>,
    /// Open-loop loads (oha at a fixed rate, latencies corrected for coordinated omission),
    /// each `CONNECTIONS@RATE`, comma-separated; none: skip the open loop.
    #[arg(long, value_delimiter = ',', default_values_t = default_open())]
    open: Vec<oha::Point>,
    /// Seconds of each open-loop run.
    #[arg(long, default_value_t = 5)]
    open_seconds: u64,
    /// The oha binary (default: `target/tools/bin/oha`, where `just bench-gateway` installs
    /// it, else `oha` on `PATH`).
    #[arg(long)]
    oha: Option<PathBuf>,
    /// Pin the gateway to core 1 and the load generator and upstream to core 0 (`taskset`),
    /// for direct and gateway runs alike.
    #[arg(long)]
    pin: bool,
}

/// The open-loop loads run by default: one connection at 1,000 requests/s (at 2,000 a run on
/// a loaded 2-core machine once fell behind for good), then 16, 64 and 256 connections at
/// 5,000 and 10,000 requests/s (TensorZero's published figure is at 10,000).
fn default_open() -> Vec<oha::Point> {
    [
        (1, 1_000),
        (16, 5_000),
        (64, 5_000),
        (64, 10_000),
        (256, 10_000),
    ]
    .map(|(connections, rate)| oha::Point { connections, rate })
    .to_vec()
}

fn main() -> ExitCode {
    aoai_bench::sim::run_child_if_asked();
    if let Some(path) = std::env::var_os(GATEWAY_CHILD_ENV) {
        return serve_child(std::path::Path::new(&path));
    }
    match run(&Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("gateway bench: {error}");
            ExitCode::from(2)
        }
    }
}

/// The gateway child: serves until its stdin closes.
fn serve_child(path: &std::path::Path) -> ExitCode {
    let system = actix::System::new();
    let started = system.block_on(async {
        let config = BlasterConfig::from_file(path).map_err(|e| e.to_string())?;
        let workers = std::env::var("AOAI_BENCH_GATEWAY_WORKERS")
            .ok()
            .and_then(|w| w.parse().ok())
            .unwrap_or(1);
        let mut options = GatewayOptions::new("127.0.0.1:0");
        options.workers = workers;
        Gateway::start(config, options)
            .await
            .map_err(|e| e.to_string())
    });
    let gateway = match started {
        Ok(gateway) => gateway,
        Err(error) => {
            eprintln!("gateway child: {error}");
            return ExitCode::from(2);
        }
    };
    println!("listening {}", gateway.local_addr());
    let _ = std::io::stdout().flush();
    std::thread::spawn(|| {
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
        std::process::exit(0);
    });
    let _ = system.run();
    ExitCode::SUCCESS
}

/// A gateway child process; killed when dropped.
struct GatewayProcess {
    child: Child,
    addr: String,
    _config: tempfile::NamedTempFile,
}

/// How a gateway child is started.
struct Launch<'a> {
    exe: &'a Path,
    workers: usize,
    /// Under callgrind, instrumentation off until asked, writing to this file.
    callgrind_out: Option<&'a Path>,
    /// The core to pin the gateway to (`taskset`).
    core: Option<u32>,
}

impl GatewayProcess {
    fn start(config: &serde_json::Value, launch: &Launch<'_>) -> Result<Self, String> {
        let mut file = tempfile::Builder::new()
            .suffix(".json")
            .tempfile()
            .map_err(|e| format!("cannot write the gateway config: {e}"))?;
        file.write_all(config.to_string().as_bytes())
            .and_then(|()| file.flush())
            .map_err(|e| format!("cannot write the gateway config: {e}"))?;
        let mut command = match launch.callgrind_out {
            Some(out) => {
                let mut valgrind = Command::new("valgrind");
                valgrind
                    .arg("--tool=callgrind")
                    .arg("--instr-atstart=no")
                    .arg(format!("--callgrind-out-file={}", out.display()))
                    .arg(launch.exe);
                valgrind
            }
            None => Command::new(launch.exe),
        };
        if let Some(core) = launch.core {
            // taskset execs the command: the child's pid stays the gateway's.
            let program = command.get_program().to_owned();
            let args: Vec<_> = command.get_args().map(ToOwned::to_owned).collect();
            command = Command::new("taskset");
            command
                .args(["-c", &core.to_string()])
                .arg(program)
                .args(args);
        }
        let mut child = command
            .env(GATEWAY_CHILD_ENV, file.path())
            .env("AOAI_BENCH_GATEWAY_WORKERS", launch.workers.to_string())
            .env("RUST_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(if launch.callgrind_out.is_some() {
                Stdio::null()
            } else {
                Stdio::inherit()
            })
            .spawn()
            .map_err(|e| {
                format!(
                    "cannot start the gateway child {}: {e}",
                    launch.exe.display()
                )
            })?;
        let stdout = child
            .stdout
            .take()
            .ok_or("the gateway child has no stdout")?;
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .map_err(|e| format!("gateway child: {e}"))?;
        let Some(addr) = line.trim().strip_prefix("listening ") else {
            let _ = child.kill();
            return Err("the gateway child ended before it listened (see above)".into());
        };
        Ok(GatewayProcess {
            addr: addr.to_owned(),
            child,
            _config: file,
        })
    }

    fn url(&self) -> String {
        format!("http://{}/v1/chat/completions", self.addr)
    }

    /// Ends the child (its stdin closes: it exits cleanly, so callgrind writes its counts).
    fn finish(mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }

    /// Resident memory, and how much of it is transparent huge pages (MiB).
    fn rss_mib(&self) -> Option<Rss> {
        let path = format!("/proc/{}/smaps_rollup", self.child.id());
        Rss::read(&std::fs::read_to_string(path).ok()?)
    }
}

/// A process's resident memory, from `/proc/PID/smaps_rollup` (MiB).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Rss {
    total: f64,
    /// Anonymous memory in transparent huge pages: a 2 MiB page is resident whole once any
    /// byte of it is touched.
    huge: f64,
}

impl Rss {
    fn read(rollup: &str) -> Option<Rss> {
        let field = |name: &str| -> Option<f64> {
            let kib: f64 = rollup
                .lines()
                .find_map(|l| l.strip_prefix(name))?
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .ok()?;
            Some(kib / 1024.0)
        };
        Some(Rss {
            total: field("Rss:")?,
            huge: field("AnonHugePages:").unwrap_or(0.0),
        })
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What one wrk run measured.
#[derive(Debug, Clone, Copy)]
struct Load {
    p50_us: f64,
    p99_us: f64,
    rps: f64,
    requests: u64,
    errors: u64,
    /// wrk's `Socket errors:` (connect, read, write, timeout), summed.
    socket_errors: u64,
}

/// Runs wrk against `url` with a POST of `body` (and `headers`), at `connections`.
fn wrk(
    url: &str,
    body: &str,
    headers: &[(&str, &str)],
    connections: u32,
    seconds: u64,
) -> Result<Load, String> {
    let mut script = tempfile::Builder::new()
        .suffix(".lua")
        .tempfile()
        .map_err(|e| e.to_string())?;
    let mut lua = format!("wrk.method = \"POST\"\nwrk.body = {body:?}\n");
    lua.push_str("wrk.headers[\"Content-Type\"] = \"application/json\"\n");
    for (name, value) in headers {
        lua.push_str(&format!("wrk.headers[{name:?}] = {value:?}\n"));
    }
    script
        .write_all(lua.as_bytes())
        .map_err(|e| e.to_string())?;
    let threads = connections.clamp(1, 2);
    let output = Command::new("wrk")
        .args([
            "-t",
            &threads.to_string(),
            "-c",
            &connections.to_string(),
            "-d",
            &format!("{seconds}s"),
            "--latency",
            "-s",
        ])
        .arg(script.path())
        .arg(url)
        .output()
        .map_err(|e| format!("cannot run wrk ({e}): install it (Debian: apt-get install wrk)"))?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        return Err(format!(
            "wrk failed: {text}{}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    parse_wrk(&text).ok_or_else(|| format!("cannot read wrk's output:\n{text}"))
}

/// Reads p50, p99, requests/s and non-2xx counts from wrk's `--latency` output.
fn parse_wrk(text: &str) -> Option<Load> {
    let percentile = |label: &str| {
        text.lines()
            .map(str::trim)
            .find_map(|l| l.strip_prefix(label))
            .and_then(|v| duration_us(v.trim()))
    };
    let rps = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))?
        .trim()
        .parse()
        .ok()?;
    let errors = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Non-2xx or 3xx responses:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let requests = text
        .lines()
        .find_map(|l| l.trim().split_once(" requests in "))?
        .0
        .trim()
        .parse()
        .ok()?;
    let socket_errors = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Socket errors:"))
        .map(|v| {
            v.split(',')
                .filter_map(|part| part.split_whitespace().last()?.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0);
    Some(Load {
        p50_us: percentile("50%").unwrap_or(0.0),
        p99_us: percentile("99%").unwrap_or(0.0),
        rps,
        requests,
        errors,
        socket_errors,
    })
}

/// `123.45us`, `1.23ms`, `2.00s` in microseconds.
fn duration_us(text: &str) -> Option<f64> {
    let (number, scale) = if let Some(n) = text.strip_suffix("us") {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1_000.0)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1_000_000.0)
    } else {
        return None;
    };
    number.parse::<f64>().ok().map(|n| n * scale)
}

fn gateway_config(endpoint: &str, pacing: bool) -> serde_json::Value {
    let mut deployment = json!({
        "name": "east", "endpoint": endpoint, "api_key": aoai_sim::DEFAULT_API_KEY,
        "model": "gpt-4o", "api_version": "2024-10-21", "adaptive": false,
    });
    if pacing {
        deployment["rpm_limit"] = json!(1_000_000_000u64);
        deployment["tpm_limit"] = json!(1_000_000_000_000u64);
    }
    json!({"num_workers": 512, "queue_capacity": 2048, "deployments": [deployment]})
}

/// The added latency of one concurrency and pacing, over the rounds: each round's gateway
/// figure minus the same round's direct one.
#[derive(Debug, Clone)]
struct Added {
    pacing: bool,
    concurrency: u32,
    /// The open loop's fixed rate (requests/s); `None` for the closed loop at its top speed.
    rate: Option<u32>,
    direct: Vec<Load>,
    through: Vec<Load>,
}

impl Added {
    /// Empty rows for pacing off and on.
    fn pair(concurrency: u32, rate: Option<u32>) -> [Added; 2] {
        [false, true].map(|pacing| Added {
            pacing,
            concurrency,
            rate,
            direct: Vec::new(),
            through: Vec::new(),
        })
    }

    fn pacing(&self) -> &'static str {
        if self.pacing { "on" } else { "off" }
    }

    /// Records one round's direct and gateway runs, and says them (`what`: the load).
    fn push(&mut self, what: &str, round: u32, direct: Load, through: Load) {
        say(format!(
            "  {what:<9} round {round} pacing {:3} direct p50 {:>7.0} µs p99 {:>7.0} µs {:>7.0} req/s | gateway p50 {:>7.0} µs p99 {:>7.0} µs {:>7.0} req/s ({} non-2xx, {} socket errors)",
            self.pacing(),
            direct.p50_us,
            direct.p99_us,
            direct.rps,
            through.p50_us,
            through.p99_us,
            through.rps,
            through.errors,
            through.socket_errors
        ));
        self.direct.push(direct);
        self.through.push(through);
    }

    /// The latency cells of a table row: direct and gateway p50 / p99, added p50 and p99.
    fn latency_cells(&self) -> String {
        let (p50, p50_min, p50_max) = self.spread(|l| l.p50_us);
        let (p99, p99_min, p99_max) = self.spread(|l| l.p99_us);
        format!(
            "{:.0} / {:.0} | {:.0} / {:.0} | {p50:.0} ({p50_min:.0}..{p50_max:.0}) | {p99:.0} ({p99_min:.0}..{p99_max:.0})",
            Added::median(&self.direct, |l| l.p50_us),
            Added::median(&self.direct, |l| l.p99_us),
            Added::median(&self.through, |l| l.p50_us),
            Added::median(&self.through, |l| l.p99_us),
        )
    }

    fn added(&self, pick: impl Fn(&Load) -> f64) -> Vec<f64> {
        let mut added: Vec<f64> = self
            .direct
            .iter()
            .zip(&self.through)
            .map(|(d, t)| pick(t) - pick(d))
            .collect();
        added.sort_by(f64::total_cmp);
        added
    }

    /// Median round and spread, `median (min..max)`.
    fn spread(&self, pick: impl Fn(&Load) -> f64) -> (f64, f64, f64) {
        let added = self.added(pick);
        let min = added.first().copied().unwrap_or(f64::NAN);
        let max = added.last().copied().unwrap_or(f64::NAN);
        (median_of_sorted(&added), min, max)
    }

    fn median(loads: &[Load], pick: impl Fn(&Load) -> f64) -> f64 {
        let mut values: Vec<f64> = loads.iter().map(pick).collect();
        values.sort_by(f64::total_cmp);
        median_of_sorted(&values)
    }
}

/// The middle value (the mean of the two middle ones for an even count).
fn median_of_sorted(values: &[f64]) -> f64 {
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

fn request_body() -> String {
    json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "Say hi"}], "max_tokens": 8})
        .to_string()
}

fn start_sim() -> Result<SimProcess, String> {
    SimProcess::start(&SimConfig {
        deployments: vec![DeploymentSpec::new("gpt-4o").tpm(1_000_000_000_000)],
        ..SimConfig::default()
    })
}

/// With `--pin`: the gateway's core; everything else (this process, and so the upstream and the
/// load generator it starts) runs on core 0.
const GATEWAY_CORE: u32 = 1;

/// Pins this process (all its threads) to core 0: the upstream and the load generators it
/// starts inherit it.
fn pin_this_process(cores: usize) -> Result<(), String> {
    if cores < 2 {
        return Err(format!("--pin needs 2 cores, this machine has {cores}"));
    }
    let status = Command::new("taskset")
        .args(["-a", "-p", "-c", "0", &std::process::id().to_string()])
        .stdout(Stdio::null())
        .status()
        .map_err(|e| format!("cannot run taskset ({e}): it is in Debian's util-linux"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("taskset could not pin this process: {status}"))
    }
}

fn run(args: &Args) -> Result<(), String> {
    let exe = match &args.gateway_exe {
        Some(exe) => exe.clone(),
        None => std::env::current_exe().map_err(|e| format!("cannot find this binary: {e}"))?,
    };
    if args.callgrind {
        return callgrind(args, &exe);
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if args.pin {
        pin_this_process(cores)?;
    }
    say(format!(
        "gateway bench: wrk {}s per run, {} rounds per concurrency {:?}, {cores} cores shared by wrk, the upstream and the gateway ({} HTTP worker)",
        args.seconds, args.repeat, args.concurrency, args.workers
    ));
    let sim = start_sim()?;
    say("upstream: the simulator, latency 0");
    measure(args, &exe, &sim.endpoint_for("gpt-4o"), cores)?;
    drop(sim);
    match nginx::Nginx::start(&request_body_reply()) {
        Ok(nginx) => {
            say("");
            say(format!(
                "upstream: nginx ({}) answering one fixed completion",
                nginx.version
            ));
            measure(args, &exe, &nginx.endpoint(), cores)?;
        }
        Err(why) => say(format!("no nginx upstream: {why}")),
    }
    Ok(())
}

/// The fixed completion nginx answers.
fn request_body_reply() -> String {
    json!({
        "id": "chatcmpl-fixed", "object": "chat.completion", "created": 1, "model": "gpt-4o",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": "Hi"}}],
        "usage": {"prompt_tokens": 9, "completion_tokens": 1, "total_tokens": 10}
    })
    .to_string()
}

/// The table for one zero-latency upstream at `endpoint`: direct, then through a pacing-off
/// and a pacing-on gateway, round after round; the gateways' RSS.
fn measure(args: &Args, exe: &Path, endpoint: &str, cores: usize) -> Result<(), String> {
    let body = request_body();
    let direct_url =
        format!("{endpoint}openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21");
    let key = [("api-key", aoai_sim::DEFAULT_API_KEY)];
    let launch = Launch {
        exe,
        workers: args.workers,
        callgrind_out: None,
        core: args.pin.then_some(GATEWAY_CORE),
    };
    let plain = GatewayProcess::start(&gateway_config(endpoint, false), &launch)?;
    let paced = GatewayProcess::start(&gateway_config(endpoint, true), &launch)?;
    let gateways = [&plain, &paced];
    // Fresh: started, no request yet (a tokenizer pacing counts with is loaded at start).
    std::thread::sleep(Duration::from_millis(1_500));
    let fresh_rss = gateways.map(GatewayProcess::rss_mib);
    for gateway in gateways {
        // Warm-up: connections, the tokenizer, the allocator.
        wrk(&gateway.url(), &body, &[], 16, 1)?;
    }
    // Idle: served its first requests, quiet now.
    std::thread::sleep(Duration::from_millis(500));
    let idle_rss = gateways.map(GatewayProcess::rss_mib);
    let mut rows: Vec<Added> = Vec::new();
    // CPU time of the pacing-off gateway and its requests, at concurrency 1.
    let mut cpu_c1 = (Duration::ZERO, 0u64);
    for &c in &args.concurrency {
        let mut pair = Added::pair(c, None);
        for round in 1..=args.repeat.max(1) {
            let direct = wrk(&direct_url, &body, &key, c, args.seconds)?;
            for (added, gateway) in pair.iter_mut().zip(gateways) {
                let cpu_before = pid_cpu(gateway.child.id());
                let through = wrk(&gateway.url(), &body, &[], c, args.seconds)?;
                if c == 1 && !added.pacing {
                    cpu_c1.0 += pid_cpu(gateway.child.id()).saturating_sub(cpu_before);
                    cpu_c1.1 += through.requests;
                }
                added.push(&format!("c={c}"), round, direct, through);
            }
        }
        rows.extend(pair);
    }
    report(args, &rows, cores, cpu_c1);
    match oha::find(args.oha.as_deref()) {
        _ if args.open.is_empty() => {}
        Some(oha) => {
            let open = open_loop(args, &oha, &direct_url, &body, &key, gateways)?;
            report_open(args, &open);
        }
        None => say(
            "no open-loop table: oha is not installed (`just bench-gateway` installs it, or \
             `cargo install oha --locked --root target/tools`)",
        ),
    }
    for (index, what) in ["pacing off", "pacing on (token counts: tokenizer tables)"]
        .iter()
        .enumerate()
    {
        if let (Some(fresh), Some(idle)) = (fresh_rss[index], idle_rss[index]) {
            say(format!(
                "RSS of the gateway process, {what}: {:.1} MiB fresh, {:.1} MiB idle after traffic, of which transparent huge pages {:.1} and {:.1} MiB (target <= {TARGET_IDLE_RSS_MIB:.0} MiB: {})",
                fresh.total,
                idle.total,
                fresh.huge,
                idle.huge,
                verdict(fresh.total.max(idle.total) <= TARGET_IDLE_RSS_MIB)
            ));
        }
    }
    Ok(())
}

/// The open-loop rounds: at each point, direct then through each gateway, `--repeat` times.
fn open_loop(
    args: &Args,
    oha: &Path,
    direct_url: &str,
    body: &str,
    key: &[(&str, &str)],
    gateways: [&GatewayProcess; 2],
) -> Result<Vec<Added>, String> {
    say("");
    say(format!(
        "open loop: {} at a fixed rate, {}s per run, latencies corrected for coordinated omission",
        oha.display(),
        args.open_seconds
    ));
    let mut rows = Vec::new();
    for &point in &args.open {
        let mut pair = Added::pair(point.connections, Some(point.rate));
        for round in 1..=args.repeat.max(1) {
            let direct = oha::run(oha, direct_url, body, key, point, args.open_seconds)?;
            for (added, gateway) in pair.iter_mut().zip(gateways) {
                let through = oha::run(oha, &gateway.url(), body, &[], point, args.open_seconds)?;
                added.push(&point.to_string(), round, direct, through);
            }
        }
        rows.extend(pair);
    }
    Ok(rows)
}

/// The open loop's table and the verdict on the concurrency-64 target.
fn report_open(args: &Args, rows: &[Added]) {
    table_head(
        &format!(
            "Open loop (oha, fixed rate): added latency, median of {} rounds (min..max).",
            args.repeat.max(1)
        ),
        "pacing | connections | rate (req/s) | direct p50 / p99 (µs) | gateway p50 / p99 (µs) | added p50 (µs) | added p99 (µs) | gateway req/s",
    );
    for row in rows {
        say(format!(
            "| {} | {} | {} | {} | {:.0} |",
            row.pacing(),
            row.concurrency,
            row.rate.unwrap_or_default(),
            row.latency_cells(),
            Added::median(&row.through, |l| l.rps),
        ));
    }
    say("");
    for row in rows.iter().filter(|row| row.concurrency == 64) {
        let (p99, _, _) = row.spread(|l| l.p99_us);
        say(format!(
            "added p99 at 64 connections, {} req/s, pacing {}: {p99:.0} µs median round (target <= {TARGET_P99_C64_US:.0} µs: {})",
            row.rate.unwrap_or_default(),
            row.pacing(),
            verdict(p99 <= TARGET_P99_C64_US)
        ));
    }
}

/// A blank line, the table's title, its header row (`columns`, separated by ` | `) and the
/// separator row.
fn table_head(title: &str, columns: &str) {
    say("");
    say(title);
    say(format!("| {columns} |"));
    say(format!("|{}", "---|".repeat(columns.split(" | ").count())));
}

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "NOT met" }
}

/// The table and the verdicts.
fn report(args: &Args, rows: &[Added], cores: usize, cpu_c1: (Duration, u64)) {
    table_head(
        &format!(
            "Added latency: median of {} rounds (min..max); each round's gateway run minus its direct run.",
            args.repeat.max(1)
        ),
        "pacing | concurrency | direct p50 / p99 (µs) | gateway p50 / p99 (µs) | added p50 (µs) | added p99 (µs) | direct req/s | gateway req/s",
    );
    for row in rows {
        say(format!(
            "| {} | {} | {} | {:.0} | {:.0} |",
            row.pacing(),
            row.concurrency,
            row.latency_cells(),
            Added::median(&row.direct, |l| l.rps),
            Added::median(&row.through, |l| l.rps),
        ));
    }
    say("");
    if cpu_c1.1 > 0 {
        say(format!(
            "gateway CPU time per request at concurrency 1, pacing off: {:.1} µs",
            cpu_c1.0.as_secs_f64() * 1e6 / cpu_c1.1 as f64
        ));
    }
    let row = |pacing: bool, c: u32| {
        rows.iter()
            .find(|row| row.pacing == pacing && row.concurrency == c)
    };
    if let Some(row) = row(false, 1) {
        let (p99, _, _) = row.spread(|l| l.p99_us);
        // A negative difference means the direct run met more noise than the gateway's.
        let judged = if p99 < 0.0 {
            "not measurable: the direct run's p99 was the higher (a noisy machine)"
        } else {
            verdict(p99 <= TARGET_P99_C1_US)
        };
        say(format!(
            "added p99 at concurrency 1: {p99:.0} µs median round (target <= {TARGET_P99_C1_US:.0} µs: {judged})"
        ));
    }
    if let Some(row) = row(false, 64) {
        let (p50, _, _) = row.spread(|l| l.p50_us);
        say(format!(
            "added p50 at concurrency 64 in the closed loop: {p50:.0} µs, a throughput figure \
             (each request waits for the 63 ahead of it); the open loop below answers the target"
        ));
    }
    let best = |pacing: bool| {
        rows.iter()
            .filter(|row| row.pacing == pacing)
            .map(|row| Added::median(&row.through, |l| l.rps))
            .fold(0.0f64, f64::max)
    };
    let (off, on) = (best(false), best(true));
    let loss = 1.0 - on / off.max(1.0);
    say(format!(
        "max req/s through the gateway (median round): {off:.0} pacing off, {on:.0} pacing on ({:.1} % loss; target <= {:.0} %: {})",
        loss * 100.0,
        TARGET_PACING_LOSS * 100.0,
        verdict(loss <= TARGET_PACING_LOSS)
    ));
    let per_core = off / cores as f64;
    say(format!(
        "per core: {per_core:.0} req/s (target > {TARGET_RPS_PER_CORE:.0}: {}; wrk and the simulator share the cores)",
        verdict(per_core > TARGET_RPS_PER_CORE)
    ));
}

/// Instructions per request of a gateway (pacing off, or on with `--pacing`) at concurrency 1,
/// under callgrind.
fn callgrind(args: &Args, exe: &Path) -> Result<(), String> {
    let sim = start_sim()?;
    let body = request_body();
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let out = args
        .callgrind_out
        .clone()
        .unwrap_or_else(|| dir.path().join("callgrind.out"));
    let launch = Launch {
        exe,
        workers: args.workers,
        callgrind_out: Some(&out),
        core: None,
    };
    say(format!(
        "gateway bench: instructions per request under callgrind, {} ({} HTTP worker, pacing {}), wrk c=1 for {}s after a 2 s warm-up",
        exe.display(),
        args.workers,
        if args.pacing { "on" } else { "off" },
        args.seconds
    ));
    let gateway = GatewayProcess::start(
        &gateway_config(&sim.endpoint_for("gpt-4o"), args.pacing),
        &launch,
    )?;
    wrk(&gateway.url(), &body, &[], 1, 2)?;
    let control = |switch: &str| {
        Command::new("callgrind_control")
            .args(["-i", switch, &gateway.child.id().to_string()])
            .output()
            .map_err(|e| format!("cannot run callgrind_control: {e}"))
            .and_then(|o| {
                o.status
                    .success()
                    .then_some(())
                    .ok_or_else(|| format!("callgrind_control -i {switch} failed"))
            })
    };
    control("on")?;
    let load = wrk(&gateway.url(), &body, &[], 1, args.seconds)?;
    control("off")?;
    gateway.finish();
    let text = std::fs::read_to_string(&out)
        .map_err(|e| format!("cannot read callgrind's output {}: {e}", out.display()))?;
    let instructions = callgrind_total(&text).ok_or("callgrind's output has no totals")?;
    let answered = load.requests.saturating_sub(load.errors);
    say(format!(
        "{instructions} instructions for {answered} requests: {:.0} instructions per request ({} non-2xx)",
        instructions as f64 / answered.max(1) as f64,
        load.errors
    ));
    let annotated = Command::new("callgrind_annotate")
        .args(["--inclusive=no", "--threshold=100", "--auto=no"])
        .arg(&out)
        .output()
        .map_err(|e| format!("cannot run callgrind_annotate: {e}"))?;
    let groups = by_crate(&String::from_utf8_lossy(&annotated.stdout));
    say(
        "Where they go (self cost, by the crate of each function; generic std code counts as std):",
    );
    say("| crate | instructions per request | share |");
    say("|---|---|---|");
    for (name, count) in groups {
        say(format!(
            "| {name} | {:.0} | {:.1} % |",
            count as f64 / answered.max(1) as f64,
            count as f64 * 100.0 / instructions.max(1) as f64
        ));
    }
    Ok(())
}

/// Sums `callgrind_annotate --inclusive=no` lines (`1,234 (0.5%)  FILE:FUNCTION [OBJECT]`) by
/// crate: a Rust function's crate is the first segment of its path (so code inlined into it
/// counts for it; generic code from `core`/`alloc`/`std` counts as the standard library's), a
/// C function's the crate its FILE is in (mimalloc) or else its OBJECT (libc); largest first.
fn by_crate(annotated: &str) -> Vec<(String, u64)> {
    let mut sums: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
    for line in annotated.lines() {
        let line = line.trim_start();
        let Some((count, rest)) = line.split_once(char::is_whitespace) else {
            continue;
        };
        let Ok(count) = count.replace(',', "").parse::<u64>() else {
            continue;
        };
        let rest = rest.trim_start();
        if rest.contains("PROGRAM TOTALS") {
            continue;
        }
        let rest = match rest.strip_prefix('(') {
            Some(after) => after.split_once(')').map_or(after, |(_, r)| r).trim_start(),
            None => rest,
        };
        let (file, function) = rest.split_once(':').unwrap_or((rest, ""));
        let (function, object) = match function.rsplit_once(" [") {
            Some((function, object)) => (function, object.trim_end_matches(']')),
            None => (function, ""),
        };
        *sums.entry(crate_of(file, function, object)).or_default() += count;
    }
    let mut sums: Vec<(String, u64)> = sums.into_iter().collect();
    sums.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    sums
}

/// The crate of one function, by its path, else by its file, else by its object.
fn crate_of(file: &str, function: &str, object: &str) -> String {
    let path = function.trim_start_matches(['<', '&']);
    let path = path.strip_prefix("mut ").unwrap_or(path);
    if let Some((first, _)) = path.split_once("::") {
        return match first {
            "core" | "alloc" | "std" => "std (core, alloc)".to_owned(),
            ours if ours.starts_with("aoai_") => format!("{ours} (ours)"),
            other => other.to_owned(),
        };
    }
    if let Some((_, after)) = file.split_once("/registry/src/") {
        // index.crates.io-HASH/NAME-VERSION/...
        let package = after.split('/').nth(1).unwrap_or(after);
        let name = match package.rsplit_once('-') {
            Some((name, version)) if version.starts_with(|c: char| c.is_ascii_digit()) => name,
            _ => package,
        };
        return name.to_owned();
    }
    let object = object.rsplit('/').next().unwrap_or(object);
    if object.starts_with("libc.so") || object.starts_with("libc-") {
        return "libc (memset, memcpy, ...)".to_owned();
    }
    if object.is_empty() {
        "other".to_owned()
    } else {
        object.to_owned()
    }
}

/// The `totals:` line of a callgrind output file: instructions executed while collecting
/// (its `summary:` line counts from the last zeroing, which `-i on` is not).
fn callgrind_total(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("totals:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_wrk_latency_output() {
        let text = "Running 1s test\n  Latency Distribution\n     50%  120.50us\n     75%  1.20ms\n     90%  2.00ms\n     99%    3.10ms\n  1000 requests in 1.00s\nRequests/sec:   9876.54\nTransfer/sec: 1MB\n";
        let load = parse_wrk(text).unwrap();
        assert_eq!(
            (
                load.p50_us,
                load.p99_us,
                load.rps,
                load.requests,
                load.errors
            ),
            (120.5, 3_100.0, 9876.54, 1000, 0)
        );
        assert_eq!(duration_us("2.00s"), Some(2_000_000.0));
        assert_eq!(duration_us("fast"), None);
        assert_eq!(median_of_sorted(&[1.0, 3.0]), 2.0);
        assert_eq!(median_of_sorted(&[1.0, 2.0, 9.0]), 2.0);
        assert!(median_of_sorted(&[]).is_nan());
        assert_eq!(
            callgrind_total("events: Ir\nsummary: 0\nfn=main\n1 5\ntotals: 123456\n"),
            Some(123_456)
        );
    }

    #[test]
    fn reads_rss_and_huge_pages_from_smaps_rollup() {
        let rollup = "55d-7ff ---p 00000000 00:00 0  [rollup]\nRss:               18432 kB\nPss:                 195 kB\nAnonymous:          9068 kB\nAnonHugePages:      8192 kB\n";
        assert_eq!(
            Rss::read(rollup),
            Some(Rss {
                total: 18.0,
                huge: 8.0
            })
        );
        assert_eq!(
            Rss::read("Rss: 1024 kB\n"),
            Some(Rss {
                total: 1.0,
                huge: 0.0
            })
        );
        assert_eq!(Rss::read("Pss: 3 kB\n"), None);
    }

    #[test]
    fn callgrind_costs_are_summed_by_crate() {
        let annotated = "\
10,000 (100.0%)  PROGRAM TOTALS
--------------------------------------------------------------------------------
Ir                  file:function
--------------------------------------------------------------------------------
5,000 (50.00%)  ./string/../sysdeps/x86_64/multiarch/memset-vec-unaligned-erms.S:__memset_avx2_unaligned_erms [/usr/lib/x86_64-linux-gnu/libc.so.6]
2,000 (20.00%)  /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/actix-http-3.11.0/src/h1/decoder.rs:actix_http::h1::decoder::parse [/x/gateway]
1,000 (10.00%)  /rustc/abc/library/core/src/ptr/mod.rs:<actix_http::h1::Codec as tokio_util::codec::Decoder>::decode [/x/gateway]
  900 ( 9.00%)  /work/x/crates/aoai-blaster/src/endpoint.rs:aoai_blaster::endpoint::call [/x/gateway]
  400 ( 4.00%)  /rustc/abc/library/core/src/ptr/mod.rs:core::ptr::drop_in_place
  200 ( 2.00%)  /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/libmimalloc-sys-0.1.49/c_src/mimalloc/v3/src/free.c:mi_free [/x/gateway]
  100 ( 1.00%)  ???:0x0000000000012345 [/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2]
";
        assert_eq!(
            by_crate(annotated),
            [
                ("libc (memset, memcpy, ...)".to_owned(), 5_000),
                ("actix_http".to_owned(), 3_000),
                ("aoai_blaster (ours)".to_owned(), 900),
                ("std (core, alloc)".to_owned(), 400),
                ("libmimalloc-sys".to_owned(), 200),
                ("ld-linux-x86-64.so.2".to_owned(), 100),
            ]
        );
    }
}
