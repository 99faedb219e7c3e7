//! Embeddings through the CLI, beside chat: how fast `aoai-blaster run` carries embedding
//! replies (large: `dimensions` floats per input) compared with short chat completions.
//!
//! Two runs of the release binary against a zero-latency simulator in this process, quota far
//! above what a run can use: first `AOAI_BENCH_EMBED_INPUTS` chat lines (default 1,000,000),
//! then the same number of short inputs to embed, `AOAI_BENCH_EMBED_PER_LINE` inputs per
//! `/embeddings` line (default 1, so both runs have as many jobs) with vectors of
//! `AOAI_BENCH_EMBED_DIMENSIONS` floats (default 256). For each: time, jobs/s (and inputs/s),
//! the client's CPU per job (user + system of the `aoai-blaster` process, read from
//! `/proc/<pid>/stat` when it has exited and before it is reaped), its peak RSS (`VmHWM`), and
//! the output's size. Each output is deleted once measured (a 1,000,000-vector output of 256
//! floats is about 5 GB).
//!
//! Run: `cargo bench -p aoai-blaster-cli --bench embed_throughput` (Linux only: it reads
//! `/proc`).

use std::io::{BufWriter, Write};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use aoai_sim::{DeploymentSpec, SimConfig, SimThread};
use aoai_testkit::{Proc, blaster_run};

const BIN: &str = env!("CARGO_BIN_EXE_aoai-blaster");

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().replace('_', "").parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(default)
}

fn write_chat(path: &Path, lines: u64) -> std::io::Result<()> {
    let mut out = BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    for i in 0..lines {
        writeln!(
            out,
            r#"{{"custom_id":"chat-{i:08}","method":"POST","url":"/chat/completions","body":{{"messages":[{{"role":"user","content":"Summarise item {i} of the catalogue in one line."}}],"max_tokens":16}}}}"#
        )?;
    }
    out.flush()
}

fn write_embeddings(path: &Path, inputs: u64, per_line: u64) -> std::io::Result<u64> {
    let mut out = BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    let mut lines = 0;
    let mut next = 0;
    while next < inputs {
        let batch: Vec<String> = (next..inputs.min(next + per_line))
            .map(|i| format!("\"catalogue item {i}: a short product title\""))
            .collect();
        writeln!(
            out,
            r#"{{"custom_id":"emb-{lines:08}","method":"POST","url":"/embeddings","body":{{"input":[{}]}}}}"#,
            batch.join(",")
        )?;
        next += per_line;
        lines += 1;
    }
    out.flush()?;
    Ok(lines)
}

struct Measured {
    elapsed: Duration,
    cpu: Duration,
    peak_kib: u64,
    output_bytes: u64,
    code: Option<i32>,
}

fn measure(config: &Path, input: &Path, output: &Path) -> Measured {
    let started = Instant::now();
    let mut child = blaster_run(BIN, config, input, output)
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .spawn()
        .expect("the aoai-blaster binary starts");
    let proc = Proc::pid(child.id());
    let mut peak_kib = 0;
    // Poll without reaping: an exited child stays a zombie, whose stat still holds its CPU.
    let cpu = loop {
        match proc.stat() {
            Some(stat) if stat.state == 'Z' => break stat.cpu,
            Some(_) => peak_kib = peak_kib.max(proc.status_kib("VmHWM:").unwrap_or(0)),
            None => break Duration::ZERO,
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let status = child.wait().expect("the child is reaped");
    let elapsed = started.elapsed();
    let output_bytes = std::fs::metadata(output).map(|m| m.len()).unwrap_or(0);
    let _ = std::fs::remove_file(output);
    Measured {
        elapsed,
        cpu,
        peak_kib,
        output_bytes,
        code: status.code(),
    }
}

fn report(label: &str, jobs: u64, inputs: u64, m: &Measured) {
    let secs = m.elapsed.as_secs_f64();
    println!(
        "  {label:<11} {jobs:>9} jobs {:>8.1} s {:>8.0} jobs/s {:>9.0} inputs/s {:>6.1} µs CPU/job \
         peak RSS {:>6.1} MiB  output {:>7.1} MiB  exit {:?}",
        secs,
        jobs as f64 / secs,
        inputs as f64 / secs,
        m.cpu.as_secs_f64() * 1e6 / jobs as f64,
        m.peak_kib as f64 / 1024.0,
        m.output_bytes as f64 / (1024.0 * 1024.0),
        m.code
    );
}

fn main() {
    let inputs = env_number("AOAI_BENCH_EMBED_INPUTS", 1_000_000);
    let dimensions = env_number("AOAI_BENCH_EMBED_DIMENSIONS", 256);
    let per_line = env_number("AOAI_BENCH_EMBED_PER_LINE", 1);
    let sim = SimThread::start(SimConfig {
        workers: 1,
        deployments: vec![
            DeploymentSpec::new("gpt").tpm(100_000_000_000),
            DeploymentSpec::new("embed")
                .tpm(100_000_000_000)
                .embedding_dimensions(dimensions),
        ],
        ..SimConfig::default()
    })
    .expect("the simulator starts");
    let dir = tempfile::tempdir().expect("a temporary directory");
    let config = dir.path().join("bench.yaml");
    let endpoint = sim.base_url();
    std::fs::write(
        &config,
        format!(
            "num_workers: 64\ndeployments:\n\
             \x20 - {{name: gpt, endpoint: '{endpoint}', api_key: sim-key, model: gpt}}\n\
             \x20 - {{name: embed, endpoint: '{endpoint}', api_key: sim-key, model: embed, operations: [embeddings]}}\n"
        ),
    )
    .expect("config written");
    println!(
        "embed_throughput: {inputs} inputs, {per_line} per embeddings line, {dimensions} floats \
         per vector; {inputs} chat lines beside them; zero-latency simulator, num_workers 64"
    );

    let chat_input = dir.path().join("chat.jsonl");
    write_chat(&chat_input, inputs).expect("chat input written");
    let chat = measure(&config, &chat_input, &dir.path().join("chat-out.jsonl"));
    let _ = std::fs::remove_file(&chat_input);
    report("chat", inputs, inputs, &chat);

    let embed_input = dir.path().join("embed.jsonl");
    let lines = write_embeddings(&embed_input, inputs, per_line).expect("input written");
    let embed = measure(&config, &embed_input, &dir.path().join("embed-out.jsonl"));
    report("embeddings", lines, inputs, &embed);
    let stats = sim.stats();
    sim.stop();
    let (g, e) = (stats.deployment("gpt"), stats.deployment("embed"));
    println!(
        "  simulator: gpt {} requests ({} ok), embed {} requests ({} ok)",
        g.requests, g.ok, e.requests, e.ok
    );
    println!(
        "  embeddings cost {:.2}x chat's CPU per job; {:.0} bytes of output per embeddings line",
        (embed.cpu.as_secs_f64() / lines as f64) / (chat.cpu.as_secs_f64() / inputs as f64),
        embed.output_bytes as f64 / lines as f64
    );
}
