//! End-to-end tests: the `aoai-blaster` binary against the simulator running in this process on
//! 127.0.0.1 (port 0).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use aoai_sim::{DeploymentSpec, LatencySpec, SimHandle};
use serde_json::{Value, json};

mod common;

use common::*;

/// A deployment with room for everything a test sends.
fn roomy(name: &str) -> DeploymentSpec {
    DeploymentSpec::new(name).tpm(50_000_000)
}

fn slow(name: &str, ttft_ms: u64) -> DeploymentSpec {
    roomy(name).latency(LatencySpec {
        ttft_ms,
        per_token_ms: 0,
        jitter_ms: 0,
    })
}

struct Workspace {
    dir: tempfile::TempDir,
}

impl Workspace {
    fn new() -> Workspace {
        Workspace {
            dir: tempfile::tempdir().expect("a temporary directory"),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes a blaster config with one entry per `(name, endpoint, api_key)`.
    fn config(&self, deployments: &[(&str, String, &str)], extra: &str) -> PathBuf {
        let mut text = format!(
            "num_workers: 8\nrequest_timeout: 5s\nconnect_timeout: 1s\n\
             backoff_base: 50ms\nbackoff_max: 200ms\nrate_limit_fallback: 200ms\n{extra}\ndeployments:\n"
        );
        for (name, endpoint, key) in deployments {
            text.push_str(&format!(
                "  - name: {name}\n    endpoint: {endpoint}\n    api_key: {key}\n    model: {name}\n"
            ));
        }
        let path = self.path("blaster.yaml");
        std::fs::write(&path, text).expect("config written");
        path
    }

    fn input(&self, lines: &[String]) -> PathBuf {
        let path = self.path("requests.jsonl");
        let mut text = lines.join("\n");
        text.push('\n');
        std::fs::write(&path, text).expect("input written");
        path
    }
}

fn request_line(id: &str) -> String {
    json!({
        "custom_id": id,
        "method": "POST",
        "url": "/chat/completions",
        "body": {"messages": [{"role": "user", "content": format!("Say hello to {id}")}], "max_tokens": 20}
    })
    .to_string()
}

fn request_lines(count: usize) -> Vec<String> {
    (0..count)
        .map(|i| request_line(&format!("req-{i}")))
        .collect()
}

fn endpoint(sim: &SimHandle, name: &str) -> String {
    sim.endpoint_for(name).expect("the deployment is served")
}

fn run_args(config: &Path, input: &Path, output: &Path) -> Vec<String> {
    [
        "run",
        "--config",
        &config.display().to_string(),
        "--input",
        &input.display().to_string(),
        "--output",
        &output.display().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

async fn wait_child(mut child: Child) -> Output {
    actix_rt::task::spawn_blocking(move || {
        let status = child.wait().expect("the child is waited for");
        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        if let Some(mut out) = child.stdout.take() {
            let _ = std::io::Read::read_to_end(&mut out, &mut stdout);
        }
        if let Some(mut err) = child.stderr.take() {
            let _ = std::io::Read::read_to_end(&mut err, &mut stderr);
        }
        Output {
            status,
            stdout,
            stderr,
        }
    })
    .await
    .expect("the blocking task finishes")
}

fn output_lines(path: &Path) -> Vec<Value> {
    let content = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        content.is_empty() || content.ends_with('\n'),
        "the output ends with a whole line"
    );
    content
        .lines()
        .map(|line| serde_json::from_str(line).expect("every output line is JSON"))
        .collect()
}

fn complete_lines(path: &Path) -> usize {
    std::fs::read(path)
        .map(|bytes| bytecount(&bytes))
        .unwrap_or(0)
}

fn bytecount(bytes: &[u8]) -> usize {
    bytes.iter().filter(|&&b| b == b'\n').count()
}

/// Answers per custom_id (error lines for rejected input are not answers).
fn answers_per_id(lines: &[Value]) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for line in lines {
        if line["error"]["line"].is_u64() {
            continue;
        }
        let id = line["custom_id"]
            .as_str()
            .expect("answers carry their custom_id");
        *counts.entry(id.to_owned()).or_insert(0) += 1;
    }
    counts
}

/// Polls until the output has at least `lines` whole lines (or panics after `limit`).
async fn wait_for_lines(path: &Path, lines: usize, limit: Duration) {
    let started = Instant::now();
    while complete_lines(path) < lines {
        assert!(
            started.elapsed() < limit,
            "the output did not reach {lines} lines within {limit:?}"
        );
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    }
}

fn send_signal(child: &Child, signal: &str) {
    let status = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill {signal} succeeded");
}

#[actix_rt::test]
async fn happy_path_answers_every_line_once() {
    let sim = start_sim(vec![roomy("east"), roomy("west")]).await;
    let ws = Workspace::new();
    let config = ws.config(
        &[
            ("east", endpoint(&sim, "east"), "sim-key"),
            ("west", endpoint(&sim, "west"), "sim-key"),
        ],
        "",
    );
    let mut lines = request_lines(40);
    // Pinned by model name, and streamed.
    lines.push(
        json!({"custom_id": "pinned", "method": "POST", "url": "/v1/chat/completions",
               "body": {"model": "west", "stream": true, "messages": [{"role": "user", "content": "Hi"}]}})
        .to_string(),
    );
    let input = ws.input(&lines);
    let output = ws.path("results.jsonl");
    let summary_json = ws.path("summary.json");
    let mut args = run_args(&config, &input, &output);
    args.extend(["--summary-json".into(), summary_json.display().to_string()]);
    let result = run_to_end(args).await;
    assert_eq!(result.status.code(), Some(0), "{}", describe(&result));

    let lines = output_lines(&output);
    assert_eq!(lines.len(), 41);
    let counts = answers_per_id(&lines);
    assert_eq!(counts.len(), 41);
    assert!(counts.values().all(|&n| n == 1));
    for line in &lines {
        assert!(line["id"].as_str().unwrap().starts_with("batch_req_"));
        assert_eq!(line["error"], Value::Null);
        assert_eq!(line["response"]["status_code"], 200);
        assert_eq!(line["response"]["body"]["object"], "chat.completion");
        assert!(line["response"]["body"]["choices"][0]["message"]["content"].is_string());
        assert!(!line["attempts"].as_array().unwrap().is_empty());
    }
    let pinned = lines.iter().find(|l| l["custom_id"] == "pinned").unwrap();
    let attempts = pinned["attempts"].as_array().unwrap();
    assert!(attempts.iter().all(|a| a["endpoint"] == "west"), "{pinned}");

    let summary: Value = serde_json::from_slice(&std::fs::read(&summary_json).unwrap()).unwrap();
    assert_eq!(summary["succeeded"], 41);
    assert_eq!(summary["failed"], 0);
    assert_eq!(summary["endpoints"].as_array().unwrap().len(), 2);
    assert!(
        text(&result.stdout).contains("41 succeeded"),
        "{}",
        describe(&result)
    );
    assert_eq!(sim.stats().total().ok, 41);

    // Running the same command again sends nothing and writes nothing.
    let again = run_to_end(run_args(&config, &input, &output)).await;
    assert_eq!(again.status.code(), Some(0), "{}", describe(&again));
    assert!(
        text(&again.stdout).contains("41 skipped"),
        "{}",
        describe(&again)
    );
    assert_eq!(output_lines(&output).len(), 41);
    assert_eq!(sim.stats().total().requests, 41);
    sim.stop().await;
}

#[actix_rt::test]
async fn malformed_lines_get_error_lines_and_the_run_goes_on() {
    let sim = start_sim(vec![roomy("east")]).await;
    let ws = Workspace::new();
    let config = ws.config(&[("east", endpoint(&sim, "east"), "sim-key")], "");
    let lines = vec![
        request_line("a"),
        "{not json".to_owned(),
        json!({"method": "POST", "url": "/chat/completions", "body": {"messages": []}}).to_string(),
        request_line("a"),
        json!({"custom_id": "m", "method": "GET", "url": "/chat/completions", "body": {"messages": []}}).to_string(),
        json!({"custom_id": "u", "method": "POST", "url": "/completions", "body": {"messages": []}}).to_string(),
        json!({"custom_id": "b", "method": "POST", "url": "/chat/completions", "body": [1]}).to_string(),
        request_line("c"),
    ];
    let input = ws.input(&lines);
    let output = ws.path("results.jsonl");
    let result = run_to_end(run_args(&config, &input, &output)).await;
    assert_eq!(result.status.code(), Some(1), "{}", describe(&result));
    let lines = output_lines(&output);
    assert_eq!(lines.len(), 8);
    let mut errors: Vec<(u64, String)> = lines
        .iter()
        .filter(|l| l["error"]["line"].is_u64())
        .map(|l| {
            let message = l["error"]["message"].as_str().unwrap();
            let line = l["error"]["line"].as_u64().unwrap();
            assert!(message.starts_with(&format!("line {line}:")), "{message}");
            assert_eq!(l["response"], Value::Null);
            (line, l["error"]["code"].as_str().unwrap().to_owned())
        })
        .collect();
    errors.sort();
    let expected: Vec<(u64, String)> = [
        (2, "invalid_json"),
        (3, "missing_custom_id"),
        (4, "duplicate_custom_id"),
        (5, "invalid_method"),
        (6, "invalid_url"),
        (7, "invalid_body"),
    ]
    .iter()
    .map(|(line, code)| (*line, code.to_string()))
    .collect();
    assert_eq!(errors, expected);
    let counts = answers_per_id(&lines);
    assert_eq!(counts, HashMap::from([("a".into(), 1), ("c".into(), 1)]));
    let stdout = text(&result.stdout);
    assert!(stdout.contains("6 invalid lines"), "{stdout}");
    // The first five are named, and where all of them are.
    assert!(
        stdout.contains("Invalid lines (first 5 of 6): line 2 invalid_json,"),
        "{stdout}"
    );
    assert!(stdout.contains("line 6 invalid_url"), "{stdout}");
    assert!(!stdout.contains("line 7 invalid_body"), "{stdout}");
    assert!(
        stdout.contains(&format!("jq -c 'select(.error.line)' {}", output.display())),
        "{stdout}"
    );

    // A rerun neither sends nor reports anything again, and still says the input has errors.
    let again = run_to_end(run_args(&config, &input, &output)).await;
    assert_eq!(again.status.code(), Some(1), "{}", describe(&again));
    assert_eq!(output_lines(&output).len(), 8);
    assert_eq!(sim.stats().total().requests, 2);
    sim.stop().await;
}

#[actix_rt::test]
async fn a_broken_config_is_a_usage_error_before_anything_is_sent() {
    let sim = start_sim(vec![roomy("east")]).await;
    let ws = Workspace::new();
    let config = ws.path("broken.yaml");
    std::fs::write(
        &config,
        format!(
            "num_workers: 0\ndeployments:\n  - name: east\n    endpoint: {}\n    api_key: sim-key\n    model: east\n    weight: 0\n",
            endpoint(&sim, "east")
        ),
    )
    .unwrap();
    let input = ws.input(&request_lines(3));
    let output = ws.path("results.jsonl");
    let result = run_to_end(run_args(&config, &input, &output)).await;
    assert_eq!(result.status.code(), Some(2), "{}", describe(&result));
    let stderr = text(&result.stderr);
    assert!(stderr.contains("num_workers"), "{stderr}");
    assert!(stderr.contains("weight"), "{stderr}");
    assert_eq!(sim.stats().total().requests, 0);
    assert!(!output.exists());
    sim.stop().await;
}

#[actix_rt::test]
async fn resume_after_sigkill_gives_exactly_one_line_per_id() {
    let sim = start_sim(vec![slow("east", 150), slow("west", 150)]).await;
    let ws = Workspace::new();
    let config = ws.config(
        &[
            ("east", endpoint(&sim, "east"), "sim-key"),
            ("west", endpoint(&sim, "west"), "sim-key"),
        ],
        "",
    );
    let input = ws.input(&request_lines(120));
    let output = ws.path("results.jsonl");
    let child = command(&run_args(&config, &input, &output))
        .spawn()
        .expect("the binary starts");
    wait_for_lines(&output, 10, Duration::from_secs(15)).await;
    let mut child = child;
    child.kill().expect("SIGKILL is sent");
    let killed = wait_child(child).await;
    assert_eq!(killed.status.code(), None, "killed by a signal");
    let written = output_lines(&output).len();
    assert!(written < 120, "the kill landed mid-run ({written} lines)");
    // As if the kill had torn the line being written.
    let mut torn = std::fs::OpenOptions::new()
        .append(true)
        .open(&output)
        .unwrap();
    std::io::Write::write_all(&mut torn, br#"{"id":"batch_req_x","custom_id":"req-1"#).unwrap();
    drop(torn);

    let resumed = run_to_end(run_args(&config, &input, &output)).await;
    assert_eq!(resumed.status.code(), Some(0), "{}", describe(&resumed));
    assert!(
        text(&resumed.stderr).contains("torn line"),
        "{}",
        describe(&resumed)
    );
    let lines = output_lines(&output);
    assert_eq!(lines.len(), 120);
    let counts = answers_per_id(&lines);
    assert_eq!(counts.len(), 120);
    assert!(counts.values().all(|&n| n == 1), "{counts:?}");
    assert!(lines.iter().all(|l| l["response"]["status_code"] == 200));
    sim.stop().await;
}

#[actix_rt::test]
async fn sigint_drains_in_flight_jobs_and_exits_130() {
    // Jobs go out of submission order: the first four lines are pinned to `west`, whose
    // quota (1 request a minute) sends the first and holds the other three for a minute,
    // while the lines after them go out to `east` (400 ms each). Ctrl-C must drop exactly the
    // jobs never sent (the three held ones and those queued behind the wire), and keep and
    // write every one sent, whatever its place in the input.
    let sim = start_sim(vec![slow("east", 400), roomy("west")]).await;
    let ws = Workspace::new();
    let config_with = |file: &str, west: &str| {
        let path = ws.path(file);
        let text = format!(
            "num_workers: 8\nrequest_timeout: 5s\nconnect_timeout: 1s\n\
             backoff_base: 50ms\nbackoff_max: 200ms\nrate_limit_fallback: 200ms\n\
             deployments:\n\
             \x20 - {{name: east, endpoint: '{}', api_key: sim-key, model: east}}\n\
             \x20 - {{name: west, endpoint: '{}', api_key: sim-key, model: west{west}}}\n",
            endpoint(&sim, "east"),
            endpoint(&sim, "west"),
        );
        std::fs::write(&path, text).expect("config written");
        path
    };
    let config = config_with("blaster.yaml", ", rpm_limit: 1");
    let mut lines: Vec<String> = (0..4)
        .map(|i| {
            let mut line: Value = serde_json::from_str(&request_line(&format!("req-{i}"))).unwrap();
            line["body"]["model"] = json!("west");
            line.to_string()
        })
        .collect();
    lines.extend((4..154).map(|i| request_line(&format!("req-{i}"))));
    let input = ws.input(&lines);
    let output = ws.path("results.jsonl");
    let summary_json = ws.path("summary.json");
    let mut args = run_args(&config, &input, &output);
    args.extend(["--summary-json".into(), summary_json.display().to_string()]);
    let child = command(&args).spawn().expect("the binary starts");
    wait_for_lines(&output, 9, Duration::from_secs(15)).await;
    let signalled_at = Instant::now();
    send_signal(&child, "-INT");
    let result = wait_child(child).await;
    assert_eq!(result.status.code(), Some(130), "{}", describe(&result));
    // Only the jobs on the wire finish (400 ms), not the held or queued ones.
    assert!(
        signalled_at.elapsed() < Duration::from_secs(3),
        "drained within the grace period: {:?}",
        signalled_at.elapsed()
    );
    let stderr = text(&result.stderr);
    assert!(stderr.contains("interrupted"), "{stderr}");
    assert!(
        text(&result.stdout).starts_with("Interrupted"),
        "{}",
        describe(&result)
    );
    // Exact: every request sent was answered and written, and every job handed over and not
    // written was dropped before a request of it went out.
    let stats = sim.stats();
    let west = &stats.deployments["west"];
    assert_eq!(west.requests, 1, "west's quota held the other pinned lines");
    let requests = stats.total().requests;
    let written = output_lines(&output);
    assert_eq!(written.len() as u64, requests, "every sent job was written");
    assert!(written.iter().all(|l| l["response"]["status_code"] == 200));
    let ids = answers_per_id(&written);
    assert!(ids.values().all(|&n| n == 1));
    for held in ["req-1", "req-2", "req-3"] {
        assert!(
            !ids.contains_key(held),
            "{held} was held by quota, never sent"
        );
    }
    let summary: Value = serde_json::from_slice(&std::fs::read(&summary_json).unwrap()).unwrap();
    let unfinished = summary["unfinished"].as_u64().unwrap();
    assert!(
        unfinished >= 3,
        "the held and queued jobs were dropped: {summary}"
    );
    assert_eq!(
        summary["submitted"].as_u64().unwrap(),
        requests + unfinished,
        "every job handed over was either sent and written or dropped unsent"
    );
    assert!(written.len() < 154);

    // The rerun (west's quota lifted, so the held lines need not wait a minute each) completes
    // the rest, exactly once each: no job was both sent and dropped.
    let lifted = config_with("lifted.yaml", "");
    let resumed = run_to_end(run_args(&lifted, &input, &output)).await;
    assert_eq!(resumed.status.code(), Some(0), "{}", describe(&resumed));
    let counts = answers_per_id(&output_lines(&output));
    assert_eq!(counts.len(), 154);
    assert!(counts.values().all(|&n| n == 1));
    assert_eq!(sim.stats().total().requests, 154, "no id was sent twice");
    sim.stop().await;
}

#[actix_rt::test]
async fn a_second_sigint_stops_at_once_without_a_torn_line() {
    let sim = start_sim(vec![slow("east", 2500)]).await;
    let ws = Workspace::new();
    let config = ws.config(&[("east", endpoint(&sim, "east"), "sim-key")], "");
    let input = ws.input(&request_lines(60));
    let output = ws.path("results.jsonl");
    let mut args = run_args(&config, &input, &output);
    args.extend(["--grace-period".into(), "60s".into()]);
    let mut child = command(&args).spawn().expect("the binary starts");
    let stderr = child.stderr.take().expect("stderr is piped");
    let (lines_tx, lines_rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stderr)).map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    wait_for_lines(&output, 8, Duration::from_secs(15)).await;
    send_signal(&child, "-INT");
    // Wait until the first signal is handled (signals sent back to back may merge into one).
    let started = Instant::now();
    loop {
        match lines_rx.try_recv() {
            Ok(line) if line.contains("interrupted") => break,
            Ok(_) | Err(std::sync::mpsc::TryRecvError::Empty) => {}
            Err(error) => panic!("stderr ended before the interrupt was logged: {error}"),
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the interrupt is logged"
        );
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    }
    let second = Instant::now();
    send_signal(&child, "-INT");
    let result = wait_child(child).await;
    assert_eq!(result.status.code(), Some(130), "{}", describe(&result));
    // Jobs in flight take 2.5 s and the grace period is 60 s: only the second signal explains
    // an exit this soon.
    assert!(
        second.elapsed() < Duration::from_millis(2000),
        "{:?}",
        second.elapsed()
    );
    let lines = output_lines(&output);
    assert!(
        lines.len() >= 8 && lines.len() < 60,
        "{} lines",
        lines.len()
    );
    assert!(answers_per_id(&lines).values().all(|&n| n == 1));
    sim.stop().await;
}

#[actix_rt::test]
async fn a_dead_endpoint_among_live_ones_loses_no_job() {
    let sim = start_sim(vec![
        roomy("east"),
        roomy("west"),
        roomy("dead").own_listener(),
    ])
    .await;
    let dead_url = endpoint(&sim, "dead");
    sim.set_refusing("dead", true)
        .await
        .expect("the listener closes");
    let ws = Workspace::new();
    let config = ws.config(
        &[
            ("east", endpoint(&sim, "east"), "sim-key"),
            ("west", endpoint(&sim, "west"), "sim-key"),
            ("dead", dead_url, "sim-key"),
        ],
        "",
    );
    let input = ws.input(&request_lines(60));
    let output = ws.path("results.jsonl");
    let summary_json = ws.path("summary.json");
    let mut args = run_args(&config, &input, &output);
    args.extend([
        "--summary-json".into(),
        summary_json.display().to_string(),
        "--log-format".into(),
        "json".into(),
        "--progress-interval".into(),
        "0s".into(),
    ]);
    let result = run_to_end(args).await;
    assert_eq!(result.status.code(), Some(0), "{}", describe(&result));
    // Without a terminal, progress comes as log lines, here JSON ones.
    let stderr = text(&result.stderr);
    let progress: Vec<Value> = stderr
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).expect("every log line is JSON"))
        .filter(|line| line["target"] == "aoai_blaster_cli::progress")
        .collect();
    assert!(!progress.is_empty(), "{stderr}");
    let last = progress.last().unwrap()["fields"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(last.contains("60/60 lines"), "{last}");
    // Queued and on the wire apart; rates over a labelled window (the run: under a minute).
    assert!(last.contains("queued 0 on the wire 0"), "{last}");
    assert!(last.contains("tokens/min (run, "), "{last}");
    assert!(last.contains("dead "), "{last}");
    let lines = output_lines(&output);
    let counts = answers_per_id(&lines);
    assert_eq!(counts.len(), 60);
    assert!(counts.values().all(|&n| n == 1));
    assert!(lines.iter().all(|l| l["response"]["status_code"] == 200));
    let summary: Value = serde_json::from_slice(&std::fs::read(&summary_json).unwrap()).unwrap();
    let dead = summary["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "dead")
        .unwrap()
        .clone();
    assert_eq!(dead["successes"], 0);
    assert!(dead["errors"].as_u64().unwrap() >= 1, "{dead}");
    sim.stop().await;
}

#[actix_rt::test]
async fn retry_failed_reruns_only_the_failed_ids() {
    let sim = start_sim(vec![roomy("east"), roomy("down").own_listener()]).await;
    let down_url = endpoint(&sim, "down");
    sim.set_refusing("down", true)
        .await
        .expect("the listener closes");
    let ws = Workspace::new();
    // Everything pinned to a deployment that refuses connections fails without a reply.
    let config = ws.config(
        &[
            ("east", endpoint(&sim, "east"), "sim-key"),
            ("down", down_url, "sim-key"),
        ],
        "max_job_retry: 1",
    );
    let mut lines = request_lines(5);
    for i in 0..3 {
        lines.push(
            json!({"custom_id": format!("pin-{i}"), "method": "POST", "url": "/chat/completions",
                   "body": {"model": "down", "messages": [{"role": "user", "content": "Hi"}]}})
            .to_string(),
        );
    }
    let input = ws.input(&lines);
    let output = ws.path("results.jsonl");
    let first = run_to_end(run_args(&config, &input, &output)).await;
    assert_eq!(first.status.code(), Some(1), "{}", describe(&first));
    let lines = output_lines(&output);
    let failed: Vec<&Value> = lines.iter().filter(|l| l["error"].is_object()).collect();
    assert_eq!(failed.len(), 3);
    for line in &failed {
        assert_eq!(line["response"], Value::Null);
        assert!(line["error"]["code"].is_string());
        assert!(!line["attempts"].as_array().unwrap().is_empty(), "{line}");
    }

    // Without --retry-failed a rerun keeps the failures and still exits 1.
    let rerun = run_to_end(run_args(&config, &input, &output)).await;
    assert_eq!(rerun.status.code(), Some(1), "{}", describe(&rerun));
    assert!(
        text(&rerun.stdout).contains("use --retry-failed"),
        "{}",
        describe(&rerun)
    );

    sim.set_refusing("down", false)
        .await
        .expect("the listener reopens");
    let mut args = run_args(&config, &input, &output);
    args.push("--retry-failed".into());
    let retried = run_to_end(args).await;
    assert_eq!(retried.status.code(), Some(0), "{}", describe(&retried));
    let lines = output_lines(&output);
    assert_eq!(lines.len(), 8);
    assert!(lines.iter().all(|l| l["response"]["status_code"] == 200));
    assert_eq!(answers_per_id(&lines).len(), 8);
    sim.stop().await;
}

#[actix_rt::test]
async fn check_reports_good_and_bad_credentials() {
    let sim = start_sim(vec![roomy("east"), roomy("west")]).await;
    let ws = Workspace::new();
    let config = ws.config(
        &[
            ("east", endpoint(&sim, "east"), "sim-key"),
            ("west", endpoint(&sim, "west"), "wrong-key"),
        ],
        "",
    );
    let result = run_to_end(vec![
        "check".into(),
        "--config".into(),
        config.display().to_string(),
    ])
    .await;
    assert_eq!(result.status.code(), Some(1), "{}", describe(&result));
    let stdout = text(&result.stdout);
    assert!(!stdout.contains("wrong-key"), "no secret in the output");
    let east = stdout
        .lines()
        .find(|l| l.starts_with("east"))
        .expect("east row");
    let west = stdout
        .lines()
        .find(|l| l.starts_with("west"))
        .expect("west row");
    assert!(east.contains(" 200 "), "{east}");
    assert!(east.trim_end().ends_with("ok"), "{east}");
    assert!(west.contains(" 401 "), "{west}");
    assert!(west.contains("NO"), "{west}");
    assert!(west.contains("api_key"), "{west}");

    let good = ws.config(&[("east", endpoint(&sim, "east"), "sim-key")], "");
    let result = run_to_end(vec![
        "check".into(),
        "--config".into(),
        good.display().to_string(),
    ])
    .await;
    assert_eq!(result.status.code(), Some(0), "{}", describe(&result));
    assert!(text(&result.stdout).contains("every deployment answered"));
    sim.stop().await;
}

/// `GET /metrics` over a plain TCP connection: the whole HTTP response as text.
fn scrape(address: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).expect("the metrics listener accepts");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("a read timeout");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: metrics\r\nConnection: close\r\n\r\n")
        .expect("the request is sent");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .expect("the response is read");
    response
}

#[actix_rt::test]
async fn metrics_addr_serves_prometheus_text_while_the_run_lasts() {
    // Replies take 300 ms and 8 go at a time: 40 jobs keep the run going for 1.5 s at least,
    // and progress lines come every 100 ms meanwhile.
    let sim = start_sim(vec![slow("east", 300)]).await;
    let ws = Workspace::new();
    let config = ws.config(&[("east", endpoint(&sim, "east"), "sim-key")], "");
    let input = ws.input(&request_lines(40));
    let output = ws.path("results.jsonl");
    let mut args = run_args(&config, &input, &output);
    args.extend(
        [
            "--metrics-addr",
            "127.0.0.1:0",
            "--progress-interval",
            "100ms",
        ]
        .map(str::to_owned),
    );
    let (status, scraped, stderr) = actix_rt::task::spawn_blocking(move || {
        use std::io::BufRead;
        let mut child = command(&args).spawn().expect("the binary starts");
        let stderr = child.stderr.take().expect("stderr is piped");
        let mut lines = std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok);
        let mut seen = Vec::new();
        let mut address = None;
        let mut scraped = None;
        for line in lines.by_ref() {
            if address.is_none() {
                address = line
                    .split("metrics at http://")
                    .nth(1)
                    .and_then(|rest| rest.split('/').next())
                    .map(str::to_owned);
            }
            // A progress line where east has answered a request: its actor is up and has
            // registered its metrics (attempts counted as sent may still wait in the mailbox
            // of an actor that has not started yet, under load).
            let progress = line.contains("in flight")
                && line.contains("east")
                && line.contains("| ok ")
                && !line.contains("| ok 0 |");
            seen.push(line);
            if let (Some(address), true) = (&address, progress) {
                scraped = Some(scrape(address));
                break;
            }
        }
        // Drain the rest so the child never blocks on a full pipe.
        seen.extend(lines);
        let status = child.wait().expect("the child is waited for");
        (status, scraped, seen.join("\n"))
    })
    .await
    .expect("the blocking task finishes");
    assert_eq!(status.code(), Some(0), "{stderr}");
    let scraped = scraped.unwrap_or_else(|| panic!("no metrics address was logged: {stderr}"));
    assert!(scraped.starts_with("HTTP/1.1 200"), "{scraped}");
    for family in [
        "# TYPE aoai_blaster_queue_depth gauge",
        "# TYPE aoai_blaster_in_flight gauge",
        "aoai_blaster_endpoint_in_flight{endpoint=\"east\"}",
    ] {
        assert!(
            scraped.contains(family),
            "{family} missing from:\n{scraped}"
        );
    }
    assert!(
        !scraped.contains("sim-key"),
        "the api key leaked into metrics"
    );
    assert_eq!(output_lines(&output).len(), 40);
    sim.stop().await;
}

#[test]
fn usage_errors_exit_2_and_help_exits_0() {
    let missing = Command::new(BIN)
        .args(["run", "--config", "x.yaml"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(2));
    assert!(text(&missing.stderr).contains("--input"));
    let help = Command::new(BIN).args(["run", "--help"]).output().unwrap();
    assert_eq!(help.status.code(), Some(0));
    assert!(text(&help.stdout).contains("--retry-failed"));
    let no_config = Command::new(BIN)
        .args(["check", "--config", "/nonexistent/blaster.yaml"])
        .output()
        .unwrap();
    assert_eq!(no_config.status.code(), Some(2));
    assert!(text(&no_config.stderr).contains("/nonexistent/blaster.yaml"));
}

#[actix_rt::test]
async fn demo_runs_end_to_end_and_prints_the_health_table() {
    let ws = Workspace::new();
    let output = ws.path("demo.jsonl");
    let result = run_to_end(vec![
        "demo".into(),
        "--requests".into(),
        "120".into(),
        "--output".into(),
        output.display().to_string(),
    ])
    .await;
    assert_eq!(result.status.code(), Some(0), "{}", describe(&result));
    let stdout = text(&result.stdout);
    assert!(stdout.starts_with("Done in"), "{stdout}");
    assert!(stdout.contains("120 succeeded"), "{stdout}");
    for endpoint in ["tight", "flaky", "slow"] {
        assert!(
            stdout.lines().any(|line| line.starts_with(endpoint)),
            "{endpoint} row in {stdout}"
        );
    }
    assert!(stdout.contains("The simulator saw"), "{stdout}");
    for line in stdout.lines() {
        assert!(line.chars().count() <= 80, "wider than 80 columns: {line}");
    }
    let lines = output_lines(&output);
    assert_eq!(answers_per_id(&lines).len(), 120);
}

#[test]
fn sim_serves_until_ctrl_c() {
    let ws = Workspace::new();
    let config = ws.path("sim.yaml");
    std::fs::write(
        &config,
        "bind: 127.0.0.1:0\ndeployments:\n  - name: gpt-4o\n    tpm: 60000\n",
    )
    .unwrap();
    let mut child = command(&[
        "sim".into(),
        "--config".into(),
        config.display().to_string(),
    ])
    .spawn()
    .expect("the binary starts");
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut first = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut first).unwrap();
    assert!(
        first.starts_with("aoai-sim listening on http://127.0.0.1:"),
        "{first}"
    );
    send_signal(&child, "-INT");
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));

    // HTTPS with a certificate and its key given as flags.
    let certificates =
        aoai_testkit::TestCertificates::make(ws.dir.path()).expect("openssl makes certificates");
    let tls_args = |with_key: bool| {
        let mut args = vec![
            "sim".to_owned(),
            "--config".to_owned(),
            config.display().to_string(),
            "--tls-cert".to_owned(),
            certificates.cert.display().to_string(),
        ];
        if with_key {
            args.extend([
                "--tls-key".to_owned(),
                certificates.key.display().to_string(),
            ]);
        }
        args
    };
    let mut child = command(&tls_args(true)).spawn().expect("the binary starts");
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut first = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut first).unwrap();
    assert!(
        first.starts_with("aoai-sim listening on https://127.0.0.1:"),
        "{first}"
    );
    send_signal(&child, "-INT");
    assert_eq!(child.wait().unwrap().code(), Some(0));
    let half = command(&tls_args(false)).output().unwrap();
    assert_eq!(half.status.code(), Some(2), "{}", describe(&half));
    assert!(
        text(&half.stderr).contains("--tls-key"),
        "{}",
        describe(&half)
    );

    let broken = ws.path("broken.yaml");
    std::fs::write(&broken, "deployments: 3\n").unwrap();
    let result = command(&[
        "sim".into(),
        "--config".into(),
        broken.display().to_string(),
    ])
    .output()
    .unwrap();
    assert_eq!(result.status.code(), Some(2), "{}", describe(&result));
    assert!(
        text(&result.stderr).contains("broken.yaml"),
        "{}",
        describe(&result)
    );
}

#[actix_rt::test]
async fn a_second_run_on_the_same_output_exits_2_at_once() {
    // 80 jobs of 300 ms, 8 at a time: the first run lasts 3 s at least.
    let sim = start_sim(vec![slow("east", 300)]).await;
    let ws = Workspace::new();
    let config = ws.config(&[("east", endpoint(&sim, "east"), "sim-key")], "");
    let input = ws.input(&request_lines(80));
    let output = ws.path("results.jsonl");
    let mut first = command(&run_args(&config, &input, &output))
        .spawn()
        .expect("the binary starts");
    // A line written means the first run holds the lock (taken before the output is read).
    wait_for_lines(&output, 1, Duration::from_secs(15)).await;
    let expected = format!(
        "another aoai-blaster run (pid {}) is writing {}",
        first.id(),
        output.display()
    );
    for retry_failed in [false, true] {
        let mut args = run_args(&config, &input, &output);
        if retry_failed {
            args.push("--retry-failed".into());
        }
        let started = Instant::now();
        let second = run_to_end(args).await;
        assert_eq!(second.status.code(), Some(2), "{}", describe(&second));
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "refused at once, not after waiting: {:?}",
            started.elapsed()
        );
        assert!(
            text(&second.stderr).contains(&expected),
            "{}",
            describe(&second)
        );
        assert!(
            first.try_wait().expect("the first run is polled").is_none(),
            "the first run was still writing when the second was refused"
        );
    }
    let first = wait_child(first).await;
    assert_eq!(first.status.code(), Some(0), "{}", describe(&first));
    let lines = output_lines(&output);
    assert_eq!(lines.len(), 80);
    let counts = answers_per_id(&lines);
    assert_eq!(counts.len(), 80);
    assert!(counts.values().all(|&n| n == 1));
    assert_eq!(sim.stats().total().requests, 80);

    // The lock went with the first process: the next run may write (and has nothing to do).
    let third = run_to_end(run_args(&config, &input, &output)).await;
    assert_eq!(third.status.code(), Some(0), "{}", describe(&third));
    assert!(
        text(&third.stdout).contains("80 skipped"),
        "{}",
        describe(&third)
    );
    assert_eq!(sim.stats().total().requests, 80);
    sim.stop().await;
}

#[actix_rt::test]
async fn a_line_over_max_line_bytes_is_line_too_long_and_the_rest_run() {
    let sim = start_sim(vec![roomy("east")]).await;
    let ws = Workspace::new();
    let config = ws.config(&[("east", endpoint(&sim, "east"), "sim-key")], "");
    let long = json!({
        "custom_id": "long", "method": "POST", "url": "/chat/completions",
        "body": {"messages": [{"role": "user", "content": "x".repeat(20 << 20)}]}
    })
    .to_string();
    let input = ws.input(&[
        request_line("a"),
        request_line("b"),
        long.clone(),
        request_line("c"),
    ]);
    let output = ws.path("results.jsonl");
    let result = run_to_end(run_args(&config, &input, &output)).await;
    assert_eq!(result.status.code(), Some(1), "{}", describe(&result));
    let lines = output_lines(&output);
    assert_eq!(lines.len(), 4);
    let errors: Vec<&Value> = lines
        .iter()
        .filter(|l| l["error"]["line"].is_u64())
        .collect();
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0]["error"]["code"], "line_too_long");
    assert_eq!(errors[0]["error"]["line"], 3);
    let message = errors[0]["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with(&format!("line 3: {} bytes", long.len())),
        "{message}"
    );
    assert!(message.contains("--max-line-bytes"), "{message}");
    assert_eq!(
        answers_per_id(&lines),
        HashMap::from([("a".into(), 1), ("b".into(), 1), ("c".into(), 1)])
    );
    assert_eq!(sim.stats().total().requests, 3);

    // A rerun reports nothing again.
    let again = run_to_end(run_args(&config, &input, &output)).await;
    assert_eq!(again.status.code(), Some(1), "{}", describe(&again));
    assert_eq!(output_lines(&output).len(), 4);
    assert_eq!(sim.stats().total().requests, 3);

    // The limit is the flag's: a 3 KB line is too long for 2KiB, and runs with 4KiB.
    let medium = json!({
        "custom_id": "medium", "method": "POST", "url": "/chat/completions",
        "body": {"messages": [{"role": "user", "content": "y".repeat(3000)}], "max_tokens": 5}
    })
    .to_string();
    let input = ws.path("medium.jsonl");
    std::fs::write(&input, format!("{medium}\n")).unwrap();
    for (limit, code) in [("2KiB", Some(1)), ("4KiB", Some(0))] {
        let out = ws.path(&format!("medium-{limit}.jsonl"));
        let mut args = run_args(&config, &input, &out);
        args.extend(["--max-line-bytes".into(), limit.into()]);
        let result = run_to_end(args).await;
        assert_eq!(result.status.code(), code, "{}", describe(&result));
        let lines = output_lines(&out);
        assert_eq!(lines.len(), 1);
        if code == Some(1) {
            assert_eq!(lines[0]["error"]["code"], "line_too_long");
        } else {
            assert_eq!(lines[0]["response"]["status_code"], 200);
        }
    }
    sim.stop().await;
}

/// Peak resident memory of a live process, in bytes (`VmHWM` of `/proc/<pid>/status`).
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc is there");
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM is reported");
    kib * 1024
}

#[actix_rt::test]
async fn an_endless_line_on_stdin_keeps_memory_bounded() {
    let sim = start_sim(vec![roomy("east")]).await;
    let ws = Workspace::new();
    let config = ws.config(&[("east", endpoint(&sim, "east"), "sim-key")], "");
    let output = ws.path("results.jsonl");
    let mut args = run_args(&config, Path::new("-"), &output);
    // 512 MiB of address space at most; the line alone is 400 MB.
    let mut shell = vec![
        "-c".to_owned(),
        "ulimit -v 524288 && exec \"$0\" \"$@\"".to_owned(),
        BIN.to_owned(),
    ];
    shell.append(&mut args);
    const WRITTEN: u64 = 400_000_000;
    let (status, peak, output_text) = actix_rt::task::spawn_blocking(move || {
        use std::io::Write;
        let mut child = Command::new("sh")
            .args(&shell)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("sh starts");
        let mut stdin = child.stdin.take().expect("stdin is piped");
        let chunk = vec![b'x'; 1 << 20];
        let mut written = 0u64;
        while written < WRITTEN {
            stdin.write_all(&chunk).expect("the run keeps reading");
            written += chunk.len() as u64;
        }
        // All but the pipe's buffer has been read: the peak so far is the line's cost.
        let peak = peak_rss(child.id());
        stdin.write_all(b"\n").unwrap();
        stdin.write_all(request_line("after").as_bytes()).unwrap();
        stdin.write_all(b"\n").unwrap();
        drop(stdin);
        let result = child.wait_with_output().expect("the run ends");
        (result.status, peak, text(&result.stderr))
    })
    .await
    .expect("the blocking task finishes");
    assert_eq!(status.code(), Some(1), "{output_text}");
    assert!(
        peak < 250 << 20,
        "peak RSS {} MiB after {} MB of one line",
        peak >> 20,
        WRITTEN / 1_000_000
    );
    let lines = output_lines(&output);
    assert_eq!(lines.len(), 2, "{lines:?}");
    let error = lines
        .iter()
        .find(|l| l["error"]["line"] == 1)
        .expect("line 1 rejected");
    assert_eq!(error["error"]["code"], "line_too_long");
    assert_eq!(answers_per_id(&lines), HashMap::from([("after".into(), 1)]));
    sim.stop().await;
}

#[actix_rt::test]
async fn input_dash_reads_stdin_once() {
    let sim = start_sim(vec![roomy("east")]).await;
    let ws = Workspace::new();
    let config = ws.config(&[("east", endpoint(&sim, "east"), "sim-key")], "");
    let output = ws.path("results.jsonl");
    let args = run_args(&config, Path::new("-"), &output);
    let mut lines = request_lines(5);
    lines.push(request_line("req-2"));
    let mut feed = lines.join("\n");
    feed.push('\n');
    let result = actix_rt::task::spawn_blocking(move || {
        use std::io::Write;
        let mut child = command(&args)
            .stdin(Stdio::piped())
            .spawn()
            .expect("the binary starts");
        let mut stdin = child.stdin.take().expect("stdin is piped");
        stdin.write_all(feed.as_bytes()).unwrap();
        drop(stdin);
        child.wait_with_output().expect("the run ends")
    })
    .await
    .expect("the blocking task finishes");
    assert_eq!(result.status.code(), Some(1), "{}", describe(&result));
    let lines = output_lines(&output);
    assert_eq!(lines.len(), 6);
    assert_eq!(answers_per_id(&lines).len(), 5);
    let duplicate = lines.iter().find(|l| l["error"]["line"] == 6).unwrap();
    assert_eq!(duplicate["error"]["code"], "duplicate_custom_id");
    assert_eq!(sim.stats().total().requests, 5);
    sim.stop().await;
}

#[actix_rt::test]
async fn a_missing_output_directory_is_named() {
    let ws = Workspace::new();
    let config = ws.config(&[("east", "http://127.0.0.1:9/".into(), "sim-key")], "");
    let input = ws.input(&request_lines(1));
    let output = ws.path("nodir/out.jsonl");
    let result = run_to_end(run_args(&config, &input, &output)).await;
    assert_eq!(result.status.code(), Some(2), "{}", describe(&result));
    let expected = format!(
        "the directory {} of --output {} does not exist; create it",
        ws.path("nodir").display(),
        output.display()
    );
    assert!(
        text(&result.stderr).contains(&expected),
        "{}",
        describe(&result)
    );
}

#[actix_rt::test]
async fn a_wrong_key_everywhere_stops_the_run_with_the_fix_and_a_rerun_finishes_it() {
    let sim = start_sim(vec![roomy("east"), roomy("west")]).await;
    let ws = Workspace::new();
    let wrong = ws.config(
        &[
            ("east", endpoint(&sim, "east"), "not-the-key"),
            ("west", endpoint(&sim, "west"), "not-the-key"),
        ],
        "",
    );
    let input = ws.input(&request_lines(2000));
    let output = ws.path("results.jsonl");
    let result = run_to_end(run_args(&wrong, &input, &output)).await;
    assert_eq!(result.status.code(), Some(2), "{}", describe(&result));
    let stderr = text(&result.stderr);
    assert!(
        stderr.contains("every endpoint rejects the requests; fix the config and run again")
            && stderr.contains("check api_key"),
        "{}",
        describe(&result)
    );
    // Far fewer requests than lines: the run stopped instead of failing every line.
    let tried = sim.stats().total().requests;
    assert!(tried < 100, "{tried} requests for 2000 lines");
    let written = output_lines(&output);
    assert!(written.len() < 100, "{} lines written", written.len());

    // Fixed key, same command: every line ends with exactly one answer.
    let right = ws.config(
        &[
            ("east", endpoint(&sim, "east"), "sim-key"),
            ("west", endpoint(&sim, "west"), "sim-key"),
        ],
        "",
    );
    let mut args = run_args(&right, &input, &output);
    args.push("--retry-failed".into());
    let again = run_to_end(args).await;
    assert_eq!(again.status.code(), Some(0), "{}", describe(&again));
    let lines = output_lines(&output);
    let counts = answers_per_id(&lines);
    assert_eq!(counts.len(), 2000);
    assert!(counts.values().all(|&n| n == 1));
    assert!(lines.iter().all(|l| l["response"]["status_code"] == 200));
    sim.stop().await;
}

#[actix_rt::test]
async fn progress_says_an_endpoint_waits_for_quota_and_what_holds_the_last_jobs() {
    // Three lines for a deployment allowed one request a minute: the first goes out, the
    // other two wait for its quota, and the progress lines say so instead of "healthy".
    let sim = start_sim(vec![roomy("east")]).await;
    let ws = Workspace::new();
    let config = ws.path("blaster.yaml");
    std::fs::write(
        &config,
        format!(
            "num_workers: 8\ndeployments:\n  - {{name: east, endpoint: '{}', api_key: sim-key, \
             model: east, rpm_limit: 1}}\n",
            endpoint(&sim, "east")
        ),
    )
    .expect("config written");
    let input = ws.input(&request_lines(3));
    let output = ws.path("results.jsonl");
    let mut args = run_args(&config, &input, &output);
    args.extend(["--progress-interval".into(), "200ms".into()]);
    let child = command(&args).spawn().expect("the binary starts");
    wait_for_lines(&output, 1, Duration::from_secs(15)).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    send_signal(&child, "-INT");
    let result = wait_child(child).await;
    assert_eq!(result.status.code(), Some(130), "{}", describe(&result));
    let stderr = text(&result.stderr);
    assert!(
        stderr.contains("east             quota, next room in "),
        "{stderr}"
    );
    assert!(
        stderr.contains("last 2: 2 queued (east: quota, next room in "),
        "{stderr}"
    );
    // The summary says what held the endpoint when the run ended.
    assert!(
        text(&result.stdout).contains("  quota, next room in "),
        "{}",
        describe(&result)
    );
    assert_eq!(sim.stats().total().requests, 1);
    sim.stop().await;
}

/// One HTTP/1.1 exchange with `Connection: close`: the whole response as text.
fn http_exchange(address: &str, request: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).expect("the gateway accepts");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("a read timeout");
    stream.write_all(request.as_bytes()).expect("sent");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    response
}

#[actix_rt::test]
async fn serve_prints_its_address_answers_and_stops_on_ctrl_c() {
    let sim = start_sim(vec![roomy("gpt-4o")]).await;
    let ws = Workspace::new();
    let config = ws.config(&[("gpt-4o", endpoint(&sim, "gpt-4o"), "sim-key")], "");
    let args: Vec<String> = ["serve", "--config", &config.display().to_string()]
        .iter()
        .map(|s| s.to_string())
        .chain([
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--workers".into(),
            "1".into(),
        ])
        .collect();
    let mut child = command(&args).spawn().expect("the binary starts");
    let stdout = child.stdout.take().expect("stdout is piped");
    let first = actix_rt::task::spawn_blocking(move || {
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).unwrap();
        line
    })
    .await
    .unwrap();
    let address = first
        .trim()
        .strip_prefix("listening on http://127.0.0.1:")
        .map(|port| format!("127.0.0.1:{port}"))
        .unwrap_or_else(|| panic!("{first}"));
    let body =
        json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}).to_string();
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let response = actix_rt::task::spawn_blocking(move || http_exchange(&address, &request))
        .await
        .unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(
        response.contains("x-aoai-blaster-overhead-ms"),
        "{response}"
    );
    assert!(response.contains("digest="), "{response}");
    send_signal(&child, "-INT");
    let output = wait_child(child).await;
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));

    let exposed = run_to_end(vec![
        "serve".into(),
        "--config".into(),
        config.display().to_string(),
        "--listen".into(),
        "0.0.0.0:0".into(),
    ])
    .await;
    assert_eq!(exposed.status.code(), Some(2), "{}", describe(&exposed));
    assert!(
        text(&exposed.stderr).contains("--allow-unauthenticated"),
        "{}",
        describe(&exposed)
    );
}

#[actix_rt::test]
async fn a_run_shares_its_quota_through_redis_over_tls_and_its_summary_says_so() {
    let redis = aoai_testkit::RedisServer::start_tls().expect("redis-server starts with TLS");
    let url = redis.tls_url().expect("a TLS url");
    let ca = redis.tls_ca().expect("its CA").display().to_string();
    let sim = start_sim(vec![roomy("east")]).await;
    let ws = Workspace::new();
    let config = ws.path("blaster.yaml");
    let text_config = format!(
        "shared: {{redis_url: '{url}', expected_processes: 1}}\ndeployments:\n  - {{name: east, \
         endpoint: '{}', api_key: sim-key, model: east, rpm_limit: 600, tpm_limit: 1000000}}\n",
        endpoint(&sim, "east")
    );
    std::fs::write(&config, text_config).expect("config written");
    // 600 RPM over 1 s windows: 40 lines take four windows, time for calls to Redis.
    let input = ws.input(&request_lines(40));
    let output = ws.path("results.jsonl");
    let summary_json = ws.path("summary.json");

    // Our CA is not among the system's: the certificate is refused, and nothing is sent.
    let mut refused = command(&run_args(&config, &input, &output));
    refused
        .env_remove("SSL_CERT_FILE")
        .env_remove("SSL_CERT_DIR");
    let refused = actix_rt::task::spawn_blocking(move || refused.output().expect("runs"))
        .await
        .expect("joined");
    assert_eq!(refused.status.code(), Some(2), "{}", describe(&refused));
    let stderr = text(&refused.stderr);
    assert!(
        stderr.contains(&format!("cannot reach Redis at {url}")),
        "{}",
        describe(&refused)
    );
    assert_eq!(sim.stats().total().requests, 0);

    // Trusting it (`SSL_CERT_FILE`, the OpenSSL convention rustls follows), the run shares.
    let mut args = run_args(&config, &input, &output);
    args.extend(["--summary-json".into(), summary_json.display().to_string()]);
    let mut trusted = command(&args);
    trusted.env("SSL_CERT_FILE", &ca);
    let trusted = actix_rt::task::spawn_blocking(move || trusted.output().expect("runs"))
        .await
        .expect("joined");
    assert_eq!(trusted.status.code(), Some(0), "{}", describe(&trusted));
    assert_eq!(output_lines(&output).len(), 40);
    assert!(
        text(&trusted.stdout).contains("quotas shared through Redis: east;"),
        "{}",
        describe(&trusted)
    );
    // Shared at the end: the leases went over TLS. (On a loaded machine a first ask may take
    // longer than its 1 s timeout; the process then paces alone until a probe answers.)
    let summary: Value = serde_json::from_slice(&std::fs::read(&summary_json).unwrap()).unwrap();
    let east = &summary["endpoints"][0];
    assert_eq!(east["shared_quota"], "shared", "{}", describe(&trusted));
    let local = east["quota_local_secs"].as_f64().expect("a number");
    assert!(
        local < summary["makespan_secs"].as_f64().unwrap(),
        "{summary}"
    );
    assert_eq!(sim.stats().total().ok, 40);
    assert_eq!(sim.stats().total().rate_limited, 0);
    sim.stop().await;
}

#[actix_rt::test]
async fn a_run_reaches_https_deployments_whose_ca_ssl_cert_file_names() {
    let ws = Workspace::new();
    let certificates =
        aoai_testkit::TestCertificates::make(ws.dir.path()).expect("openssl makes certificates");
    let sim = aoai_sim::start(aoai_sim::SimConfig {
        deployments: vec![roomy("east")],
        workers: 2,
        tls: Some(aoai_sim::TlsFiles {
            cert_file: certificates.cert.clone(),
            key_file: certificates.key.clone(),
        }),
        ..aoai_sim::SimConfig::default()
    })
    .await
    .expect("the simulator serves HTTPS");
    let url = endpoint(&sim, "east");
    assert!(url.starts_with("https://"), "{url}");
    let config = ws.config(&[("east", url, "sim-key")], "");
    let input = ws.input(&request_lines(30));
    let output = ws.path("results.jsonl");

    // A CA file that is not there stops the start, naming the variable and the fix.
    let missing = ws.path("no-such-ca.pem");
    let mut bad = command(&run_args(&config, &input, &output));
    bad.env("SSL_CERT_FILE", &missing);
    let bad = actix_rt::task::spawn_blocking(move || bad.output().expect("runs"))
        .await
        .expect("joined");
    assert_eq!(bad.status.code(), Some(2), "{}", describe(&bad));
    let stderr = text(&bad.stderr);
    assert!(
        stderr.contains(&format!(
            "SSL_CERT_FILE names {:?}, which cannot be read",
            missing.display().to_string()
        )),
        "{}",
        describe(&bad)
    );
    assert!(
        stderr.contains("point it at a PEM file"),
        "{}",
        describe(&bad)
    );
    assert_eq!(sim.stats().total().requests, 0);

    // Trusting the test's CA, every line is answered, over HTTP/1.1 (the one we offer).
    let mut trusted = command(&run_args(&config, &input, &output));
    trusted.env("SSL_CERT_FILE", &certificates.ca);
    let trusted = actix_rt::task::spawn_blocking(move || trusted.output().expect("runs"))
        .await
        .expect("joined");
    assert_eq!(trusted.status.code(), Some(0), "{}", describe(&trusted));
    let lines = output_lines(&output);
    assert_eq!(lines.len(), 30);
    assert!(
        lines
            .iter()
            .all(|line| line["response"]["status_code"] == 200),
        "{lines:?}"
    );
    let served = sim.stats().total();
    assert_eq!((served.requests, served.ok), (30, 30), "{served:?}");
    assert_eq!(served.http2_requests, 0, "{served:?}");

    // `check` trusts what `run` does: with the CA, its one request answers; with a missing
    // file it stops at once; with the webpki roots alone, the certificate is refused before
    // any request.
    let check_args = vec![
        "check".to_owned(),
        "--config".to_owned(),
        config.display().to_string(),
    ];
    for (ca, status, requests) in [(certificates.ca.clone(), 0, 31), (missing.clone(), 2, 31)] {
        let mut check = command(&check_args);
        check.env("SSL_CERT_FILE", &ca);
        let check = actix_rt::task::spawn_blocking(move || check.output().expect("runs"))
            .await
            .expect("joined");
        assert_eq!(check.status.code(), Some(status), "{}", describe(&check));
        assert_eq!(sim.stats().total().requests, requests);
    }
    let mut untrusted = command(&check_args);
    untrusted.env_remove("SSL_CERT_FILE");
    let untrusted = actix_rt::task::spawn_blocking(move || untrusted.output().expect("runs"))
        .await
        .expect("joined");
    assert_eq!(untrusted.status.code(), Some(1), "{}", describe(&untrusted));
    assert!(
        text(&untrusted.stdout).contains("UnknownIssuer"),
        "{}",
        describe(&untrusted)
    );
    assert_eq!(sim.stats().total().requests, 31);
    sim.stop().await;
}
