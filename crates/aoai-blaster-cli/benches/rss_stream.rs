//! Memory while streaming a large Batch input: does RSS stay flat?
//!
//! Generates an input of `AOAI_BENCH_LINES` lines (default 1,000,000; a comma-separated list
//! measures each length, e.g. `1000000,3000000` to see that the peak does not follow the length)
//! in a temporary directory, starts the simulator in this process (one deployment, zero latency,
//! quota far above what the run can use), runs the release `aoai-blaster run` binary on it,
//! samples the child's `/proc/<pid>/status` every 50 ms and prints its peak RSS (`VmHWM`) next to
//! the peak of a 1,000-line run of the same binary (the "idle" footprint: runtime, threads,
//! buffers, the tokenizer's tables), then runs the same command again (everything already
//! answered: the resume scan and its index of answered ids).
//!
//! Run: `cargo bench -p aoai-blaster-cli --bench rss_stream` (Linux only: it reads `/proc`).

use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use aoai_sim::{DeploymentSpec, SimConfig, SimThread};
use aoai_testkit::{Proc, blaster_run};

const BIN: &str = env!("CARGO_BIN_EXE_aoai-blaster");

/// `VmRSS` and `VmHWM` of a process, in KiB.
fn memory_of(proc: &Proc) -> Option<(u64, u64)> {
    Some((proc.status_kib("VmRSS:")?, proc.status_kib("VmHWM:")?))
}

fn write_input(path: &Path, lines: u64) -> std::io::Result<u64> {
    let mut out = BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    for i in 0..lines {
        writeln!(
            out,
            r#"{{"custom_id":"request-{i:08}","method":"POST","url":"/chat/completions","body":{{"messages":[{{"role":"user","content":"Summarise item {i} of the catalogue in one line."}}],"max_tokens":16}}}}"#
        )?;
    }
    out.flush()?;
    Ok(std::fs::metadata(path)?.len())
}

struct Measured {
    peak_kib: u64,
    samples: Vec<(Duration, u64, u64)>,
    elapsed: Duration,
    stdout: String,
    code: Option<i32>,
}

fn measure(config: &Path, input: &Path, output: &Path) -> Measured {
    let started = Instant::now();
    let mut child = blaster_run(BIN, config, input, output)
        .spawn()
        .expect("the aoai-blaster binary starts");
    let proc = Proc::pid(child.id());
    let mut peak = 0;
    let mut samples = Vec::new();
    loop {
        if let Some((rss, hwm)) = memory_of(&proc) {
            peak = peak.max(hwm);
            let lines = std::fs::metadata(output).map(|m| m.len()).unwrap_or(0);
            samples.push((started.elapsed(), rss, lines));
        }
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let result = child
        .wait_with_output()
        .expect("the child's output is read");
    Measured {
        peak_kib: peak,
        samples,
        elapsed: started.elapsed(),
        stdout: String::from_utf8_lossy(&result.stdout).into_owned(),
        code: result.status.code(),
    }
}

/// The input lengths to measure: `AOAI_BENCH_LINES`, comma-separated (default 1,000,000).
fn lengths() -> Vec<u64> {
    let lengths: Vec<u64> = std::env::var("AOAI_BENCH_LINES")
        .unwrap_or_default()
        .split(',')
        .filter_map(|v| v.trim().parse().ok())
        .filter(|&n| n > 0)
        .collect();
    if lengths.is_empty() {
        vec![1_000_000]
    } else {
        lengths
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn main() {
    let sim = SimThread::start(SimConfig {
        workers: 1,
        deployments: vec![DeploymentSpec::new("bench").tpm(1_000_000_000)],
        ..SimConfig::default()
    })
    .expect("the simulator starts");
    let dir = tempfile::tempdir().expect("a temporary directory");
    let config = dir.path().join("blaster.yaml");
    std::fs::write(
        &config,
        format!(
            "num_workers: 64\nrequest_timeout: 30s\ndeployments:\n  - name: bench\n    endpoint: {}\n    api_key: sim-key\n    model: bench\n",
            sim.endpoint_for("bench").expect("the deployment is served")
        ),
    )
    .expect("config written");

    let small_input = dir.path().join("small.jsonl");
    write_input(&small_input, 1_000).expect("small input written");
    let small = measure(&config, &small_input, &dir.path().join("small-out.jsonl"));
    println!("rss_stream: aoai-blaster run, one zero-latency simulator deployment, num_workers 64");
    println!(
        "  1,000-line run (the idle footprint): peak RSS {:.1} MiB, {:.1}s, exit {:?}",
        mib(small.peak_kib),
        small.elapsed.as_secs_f64(),
        small.code
    );

    let mut peaks = Vec::new();
    for lines in lengths() {
        let input = dir.path().join("large.jsonl");
        let bytes = write_input(&input, lines).expect("input written");
        let output = dir.path().join("large-out.jsonl");
        let large = measure(&config, &input, &output);
        // The same command again: every id is answered, so this measures the resume scan and
        // its index of answered ids.
        let resumed = measure(&config, &input, &output);
        std::fs::remove_file(&input).ok();
        std::fs::remove_file(&output).ok();
        println!(
            "  {lines}-line run ({:.0} MiB input): peak RSS {:.1} MiB, {:.1}s ({:.0} lines/s), exit {:?}",
            bytes as f64 / 1048576.0,
            mib(large.peak_kib),
            large.elapsed.as_secs_f64(),
            lines as f64 / large.elapsed.as_secs_f64(),
            large.code
        );
        // RSS at each tenth of the run (by time), to show the shape.
        let tenth = large.samples.len().max(10) / 10;
        let curve: Vec<String> = large
            .samples
            .iter()
            .step_by(tenth.max(1))
            .map(|(at, rss, _)| format!("{:.0}s:{:.1}", at.as_secs_f64(), mib(*rss)))
            .collect();
        println!("    RSS over time (MiB): {}", curve.join(" "));
        let growth = large.peak_kib.saturating_sub(small.peak_kib);
        println!(
            "    growth over the idle footprint: {:.1} MiB ({:.1} bytes per line) {}",
            mib(growth),
            growth as f64 * 1024.0 / lines as f64,
            if growth <= 64 * 1024 {
                "[ok: target ≤ 64 MiB]"
            } else {
                "[MISSED: target ≤ 64 MiB]"
            }
        );
        println!(
            "    the same command again (all ids already answered): peak RSS {:.1} MiB, {:.1}s, exit {:?}",
            mib(resumed.peak_kib),
            resumed.elapsed.as_secs_f64(),
            resumed.code
        );
        if let Some(first) = large.stdout.lines().next() {
            println!("    blaster: {first}");
        }
        peaks.push(format!("{lines} lines {:.1} MiB", mib(large.peak_kib)));
    }
    let stats = sim.stats().total();
    sim.stop();
    if peaks.len() > 1 {
        println!("  peak RSS by input length: {}", peaks.join(", "));
    }
    println!("  simulator: {} requests, {} ok", stats.requests, stats.ok);
}
