//! The key never leaves: a whole batch at TRACE level with JSON logs, against an upstream that
//! echoes the request's headers into its 401 and 500 bodies, and the key is in none of stderr,
//! stdout, the output file, the summary, or a metrics scrape taken during the run.

use std::io::{BufRead, Read};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_aoai-blaster");
const KEY: &str = "sk-test-9f8e7d6c5b4a3928170665544";

/// Every header of the request, as a leaky proxy would print them.
fn echo_headers(request: &HttpRequest) -> String {
    request
        .headers()
        .iter()
        .map(|(name, value)| format!("{name}: {}", value.to_str().unwrap_or("?")))
        .collect::<Vec<_>>()
        .join(", ")
}

async fn chat(
    request: HttpRequest,
    path: web::Path<String>,
    calls: web::Data<Arc<AtomicU64>>,
) -> HttpResponse {
    // Slow enough that a metrics scrape can happen during the run.
    actix_rt::time::sleep(Duration::from_millis(30)).await;
    let headers = echo_headers(&request);
    if path.as_str() == "denied" {
        return HttpResponse::Unauthorized().json(json!({"error": {
            "code": "401",
            "message": format!("Access denied, you sent {headers}"),
        }}));
    }
    if calls.fetch_add(1, Ordering::Relaxed).is_multiple_of(2) {
        return HttpResponse::InternalServerError().json(json!({"error": {
            "code": "InternalServerError",
            "message": format!("upstream failed; request headers were {headers}"),
        }}));
    }
    HttpResponse::Ok().json(json!({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "m",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": "hello"}}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}
    }))
}

fn scrape(address: &str) -> String {
    let mut stream = std::net::TcpStream::connect(address).expect("metrics listener");
    use std::io::Write;
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .expect("request sent");
    let mut body = String::new();
    stream.read_to_string(&mut body).expect("reply read");
    body
}

#[actix_rt::test]
async fn a_key_echoed_by_upstream_appears_nowhere() {
    let calls = web::Data::new(Arc::new(AtomicU64::new(0)));
    let server = HttpServer::new(move || {
        App::new().app_data(calls.clone()).route(
            "/openai/deployments/{name}/chat/completions",
            web::post().to(chat),
        )
    })
    .workers(1)
    .shutdown_timeout(1)
    .bind("127.0.0.1:0")
    .expect("port 0 binds");
    let address = server.addrs()[0];
    let server = server.run();
    let handle = server.handle();
    actix_rt::spawn(server);

    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("blaster.yaml");
    let mut yaml = String::from(
        "num_workers: 4\nbackoff_base: 10ms\nbackoff_max: 20ms\nauto_disable_threshold: 100\n\
         deployments:\n",
    );
    for name in ["leaky", "denied"] {
        yaml.push_str(&format!(
            "  - {{name: {name}, endpoint: 'http://{address}/', api_key: {KEY}, model: {name}}}\n"
        ));
    }
    std::fs::write(&config, yaml).expect("config written");
    let input = dir.path().join("in.jsonl");
    let lines: Vec<String> = (0..60)
        .map(|i| {
            json!({"custom_id": format!("r{i}"), "method": "POST", "url": "/chat/completions",
                   "body": {"messages": [{"role": "user", "content": "hi"}]}})
            .to_string()
        })
        .collect();
    std::fs::write(&input, lines.join("\n") + "\n").expect("input written");
    let output = dir.path().join("out.jsonl");
    let summary = dir.path().join("summary.json");
    let args: Vec<String> = vec![
        "run".into(),
        "--config".into(),
        config.display().to_string(),
        "--input".into(),
        input.display().to_string(),
        "--output".into(),
        output.display().to_string(),
        "--summary-json".into(),
        summary.display().to_string(),
        "--log-format".into(),
        "json".into(),
        "--metrics-addr".into(),
        "127.0.0.1:0".into(),
        "--progress-interval".into(),
        "50ms".into(),
    ];
    let (status, stdout, stderr, scraped) = actix_rt::task::spawn_blocking(move || {
        let mut child = Command::new(BIN)
            .args(&args)
            .env("RUST_LOG", "trace")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the binary starts");
        let stderr = child.stderr.take().expect("piped");
        let mut seen = Vec::new();
        let mut metrics_at = None;
        let mut scraped = String::new();
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if metrics_at.is_none() {
                metrics_at = line
                    .split("metrics at http://")
                    .nth(1)
                    .and_then(|rest| rest.split('/').next())
                    .map(str::to_owned);
            }
            if scraped.is_empty()
                && line.contains("leaky")
                && let Some(at) = &metrics_at
            {
                scraped = scrape(at);
            }
            seen.push(line);
        }
        let mut stdout = String::new();
        child
            .stdout
            .take()
            .expect("piped")
            .read_to_string(&mut stdout)
            .expect("stdout read");
        let status = child.wait().expect("waited");
        (status, stdout, seen.join("\n"), scraped)
    })
    .await
    .expect("the blocking task finishes");
    handle.stop(true).await;

    // Some jobs may meet the 500 on every attempt (exit 1); the run itself goes to its end.
    assert!(matches!(status.code(), Some(0 | 1)), "{stderr}\n{stdout}");
    let written = std::fs::read_to_string(&output).expect("output");
    assert_eq!(written.lines().count(), 60);
    // The upstream did echo it: the failures are in the output's attempt lists.
    assert!(written.contains("[REDACTED]"), "{written}");
    assert!(
        stderr.contains("\"level\""),
        "JSON logs at TRACE were written"
    );
    assert!(
        !scraped.is_empty(),
        "metrics were scraped during the run: {stderr}"
    );
    let summary = std::fs::read_to_string(&summary).expect("summary");
    for (place, text) in [
        ("stderr", &stderr),
        ("stdout", &stdout),
        ("output", &written),
        ("summary", &summary),
        ("metrics", &scraped),
    ] {
        assert!(!text.contains(KEY), "the key leaked into {place}");
        assert!(
            !text.contains("9f8e7d6c5b4a"),
            "part of the key leaked into {place}"
        );
    }
}
