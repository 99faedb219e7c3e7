//! The gateway driven by the official `openai` Python package, as teams that do not write Rust
//! will use it. The package goes into a virtual environment under `target/` (made once, by
//! `python3 -m venv` and pip, from `tests/python/requirements.txt`); without Python's venv
//! module or PyPI these tests fail and say so, they never skip.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::sync::OnceLock;

use aoai_blaster_gateway::Gateway;
use aoai_sim::{DeploymentSpec, LatencySpec};
use common::*;
use serde_json::{Value, json};

const KEY: &str = "sk-gateway-test-0123456789";

fn scripts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python")
}

/// The venv's python, made on first use.
fn python() -> PathBuf {
    static VENV: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match VENV.get_or_init(make_venv) {
        Ok(python) => python.clone(),
        Err(error) => panic!("{error}"),
    }
}

fn make_venv() -> Result<PathBuf, String> {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("openai-venv");
    let python = dir.join("bin/python");
    let requirements = scripts().join("requirements.txt");
    let wanted = std::fs::read_to_string(&requirements)
        .map_err(|e| format!("cannot read {}: {e}", requirements.display()))?;
    let marker = dir.join("installed-requirements.txt");
    if python.exists() && std::fs::read_to_string(&marker).ok().as_deref() == Some(&wanted) {
        return Ok(python);
    }
    let made = Command::new("python3")
        .args(["-m", "venv", "--clear"])
        .arg(&dir)
        .output()
        .map_err(|e| format!("cannot run python3 ({e}): install Python 3 to run these tests"))?;
    if !made.status.success() {
        return Err(format!(
            "`python3 -m venv {}` failed: {}; install Python's venv module (Debian: \
             apt-get install python3-venv)",
            dir.display(),
            String::from_utf8_lossy(&made.stderr).trim()
        ));
    }
    let installed = Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-r",
        ])
        .arg(&requirements)
        .output()
        .map_err(|e| format!("cannot run {} ({e})", python.display()))?;
    if !installed.status.success() {
        return Err(format!(
            "pip could not install the openai package from PyPI into {}: {}; these tests \
             need PyPI (or a pip mirror) the first time",
            dir.display(),
            String::from_utf8_lossy(&installed.stderr).trim()
        ));
    }
    std::fs::write(&marker, wanted)
        .map_err(|e| format!("cannot write {}: {e}", marker.display()))?;
    Ok(python)
}

/// `script` run against `gateway` (stdin piped for the scripts that wait for a go-ahead).
fn script(name: &str, gateway: &Gateway) -> Child {
    Command::new(python())
        .arg(scripts().join(name))
        .current_dir(scripts())
        .env("GATEWAY_URL", format!("http://{}/v1", gateway.local_addr()))
        .env("GATEWAY_KEY", KEY)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the script starts")
}

/// Waits for the script without blocking the test's runtime (the gateway runs on it).
async fn finish(mut child: Child) -> Output {
    actix_rt::task::spawn_blocking(move || {
        drop(child.stdin.take());
        child.wait_with_output().expect("the script is waited for")
    })
    .await
    .expect("the blocking task finishes")
}

/// The script's last stdout line as JSON, after checking it succeeded.
fn report(output: &Output) -> Value {
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "script failed ({:?})\n--- stdout\n{stdout}\n--- stderr\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stderr)
    );
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("not a report ({e}): {stdout}"))
}

/// Reads the script's next stdout line (off the runtime).
async fn next_line(stdout: ChildStdout) -> (String, BufReader<ChildStdout>) {
    read_line(BufReader::new(stdout)).await
}

async fn read_line(mut reader: BufReader<ChildStdout>) -> (String, BufReader<ChildStdout>) {
    actix_rt::task::spawn_blocking(move || {
        let mut line = String::new();
        reader.read_line(&mut line).expect("a line");
        (line, reader)
    })
    .await
    .expect("the blocking task finishes")
}

fn go(child: &mut Child) {
    let stdin = child.stdin.as_mut().expect("stdin is piped");
    stdin
        .write_all(b"go\n")
        .expect("the script reads its go-ahead");
    stdin.flush().expect("flushed");
}

/// A gateway taking [`KEY`], over the simulator's `gpt-4o` as deployment `east`.
async fn keyed_gateway(sim: &aoai_sim::SimHandle, top: Value) -> Gateway {
    let mut top = top;
    top["gateway"] = json!({"api_keys": [KEY]});
    gateway(config(vec![deployment(sim, "east", "gpt-4o")], top)).await
}

/// A chat request with [`KEY`], straight to the gateway.
async fn keyed_chat(gw: &Gateway, text: &str) -> Reply {
    send(
        client()
            .post(url(gw, "/v1/chat/completions"))
            .bearer_auth(KEY),
        Some(&chat(None, text)),
    )
    .await
}

fn roomy(name: &str) -> DeploymentSpec {
    DeploymentSpec::new(name).tpm(50_000_000)
}

fn slow(name: &str, ms: u64) -> DeploymentSpec {
    roomy(name).latency(LatencySpec {
        ttft_ms: ms,
        ..LatencySpec::default()
    })
}

#[actix_rt::test]
async fn the_official_client_chats_plain_and_streamed_and_lists_models() {
    python();
    let sim = sim(vec![roomy("gpt-4o").reply_tokens(10)]).await;
    let gw = keyed_gateway(&sim, json!({})).await;
    let report = report(&finish(script("chat.py", &gw)).await);
    assert_eq!(report["models"], json!(["east", "gpt-4o"]));
    assert!(report["deltas"].as_u64().unwrap() > 1, "{report}");
    assert_eq!(sim.stats().deployment("gpt-4o").requests, 2);
    gw.stop().await;
}

#[actix_rt::test]
async fn the_official_client_gets_embeddings_as_base64_and_as_floats() {
    python();
    let sim = sim(vec![roomy("embed").embedding_dimensions(6)]).await;
    let mut embed = deployment(&sim, "embed-east", "embed");
    embed["operations"] = json!(["embeddings"]);
    let top = json!({"gateway": {"api_keys": [KEY]}});
    let gw = gateway(config(vec![embed], top)).await;
    let report = report(&finish(script("embeddings.py", &gw)).await);
    let expected: Vec<Vec<f32>> = ["alpha", "beta gamma"]
        .iter()
        .map(|text| aoai_sim::embedding_vector(&json!(text), 6))
        .collect();
    for format in ["base64", "floats"] {
        let got: Vec<Vec<f32>> = serde_json::from_value(report[format].clone()).unwrap();
        assert_eq!(got, expected, "{format}");
    }
    assert_eq!(sim.stats().deployment("embed").requests, 2);
    gw.stop().await;
}

#[actix_rt::test]
async fn the_official_client_gets_responses_plain_and_streamed_event_by_event() {
    python();
    let sim = sim(vec![roomy("gpt-4o").reply_tokens(9)]).await;
    let mut v1 = deployment(&sim, "east", "gpt-4o");
    v1["operations"] = json!(["responses"]);
    v1["api_version"] = json!("v1");
    let top = json!({"gateway": {"api_keys": [KEY]}});
    let gw = gateway(config(vec![v1], top)).await;
    let report = report(&finish(script("responses.py", &gw)).await);
    for (field, input) in [("plain", "Say hi"), ("streamed", "Stream please")] {
        let text = report[field].as_str().unwrap();
        let digest = aoai_sim::messages_digest(&json!(input));
        assert!(
            text.starts_with(&format!("digest={digest} ")),
            "{field}: {text}"
        );
    }
    assert!(report["deltas"].as_u64().unwrap() > 1, "{report}");
    assert!(
        report["events"].as_u64().unwrap() > report["deltas"].as_u64().unwrap() + 1,
        "the events around the deltas came too: {report}"
    );
    assert_eq!(sim.stats().deployment("gpt-4o").requests, 2);
    gw.stop().await;
}

#[actix_rt::test]
async fn the_official_client_raises_not_found_and_authentication_errors() {
    python();
    let sim = sim(vec![roomy("gpt-4o")]).await;
    let gw = keyed_gateway(&sim, json!({})).await;
    let report = report(&finish(script("errors.py", &gw)).await);
    assert!(
        report["unknown"].as_str().unwrap().contains("gpt-5"),
        "{report}"
    );
    assert_eq!(sim.stats().deployment("gpt-4o").requests, 0);
    gw.stop().await;
}

#[actix_rt::test]
async fn the_official_client_waits_the_retry_after_of_a_429_then_succeeds() {
    python();
    let sim = sim(vec![slow("gpt-4o", 300)]).await;
    let gw = keyed_gateway(&sim, json!({"num_workers": 1, "queue_capacity": 1})).await;
    // One request first, so the gateway knows how long a request takes upstream.
    let warm = keyed_chat(&gw, "warm up").await;
    assert_eq!(warm.status, 200);
    let mut child = script("retry_after.py", &gw);
    until("two requests held", || gw.requests_held() == 2).await;
    go(&mut child);
    let report = report(&finish(child).await);
    let statuses = report["statuses"].as_array().unwrap();
    assert_eq!(statuses.first(), Some(&json!(429)), "{report}");
    assert_eq!(statuses.last(), Some(&json!(200)), "{report}");
    // Warm-up, two holders and the one retried request that got through.
    assert_eq!(sim.stats().deployment("gpt-4o").requests, 4);
    gw.stop().await;
}

#[actix_rt::test]
async fn two_hundred_requests_from_twenty_threads_each_get_their_own_answer() {
    python();
    let sim = sim(vec![roomy("gpt-4o")]).await;
    let gw = keyed_gateway(&sim, json!({})).await;
    let report = report(&finish(script("concurrency.py", &gw)).await);
    assert_eq!(report["answered"], 200);
    assert_eq!(sim.stats().deployment("gpt-4o").requests, 200);
    gw.stop().await;
}

#[actix_rt::test]
async fn a_client_that_times_out_while_queued_cancels_its_job() {
    python();
    let sim = sim(vec![slow("gpt-4o", 1500)]).await;
    let gw = keyed_gateway(&sim, json!({"num_workers": 1})).await;
    let mut child = script("disconnect.py", &gw);
    until("the first request upstream", || {
        sim.stats().deployment("gpt-4o").in_flight == 1
    })
    .await;
    go(&mut child);
    let stdout = child.stdout.take().expect("stdout is piped");
    let (line, reader) = next_line(stdout).await;
    assert!(line.contains("gave up"), "{line}");
    // The impatient request lets go while the first is still upstream.
    until("the impatient request let go", || gw.requests_held() == 1).await;
    let (line, _) = read_line(reader).await;
    assert!(line.contains("done"), "{line}");
    let output = finish(child).await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // A later request is placed after where the impatient one was: had it been sent, it
    // would have been by now.
    let later = keyed_chat(&gw, "later").await;
    assert_eq!(later.status, 200);
    assert_eq!(
        sim.stats().deployment("gpt-4o").requests,
        2,
        "the impatient job never went out"
    );
    gw.stop().await;
}
