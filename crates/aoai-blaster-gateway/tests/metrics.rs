//! The gateway's metrics counted exactly (a process of its own: one recorder per process).

mod common;

use aoai_sim::DeploymentSpec;
use common::*;
use serde_json::json;

#[actix_rt::test]
async fn each_reply_is_counted_once_with_its_overhead() {
    let sim = sim(vec![DeploymentSpec::new("gpt-4o")]).await;
    let gw = gateway(config(vec![deployment(&sim, "east", "gpt-4o")], json!({}))).await;
    for i in 0..5 {
        let reply = post(&gw, "/v1/chat/completions", &chat(None, &format!("m{i}"))).await;
        assert_eq!(reply.status, 200);
    }
    let mut stream = chat(None, "streamed");
    stream["stream"] = json!(true);
    assert_eq!(post(&gw, "/v1/chat/completions", &stream).await.status, 200);
    let unknown = post(&gw, "/v1/chat/completions", &chat(Some("gpt-5"), "x")).await;
    assert_eq!(unknown.status, 404);
    assert_eq!(get(&gw, "/v1/models").await.status, 200);

    let text = String::from_utf8_lossy(&get(&gw, "/metrics").await.body).into_owned();
    let value = |line: &str| -> String {
        text.lines()
            .find_map(|l| l.strip_prefix(line).map(|rest| rest.trim().to_owned()))
            .unwrap_or_else(|| panic!("no {line} in\n{text}"))
    };
    assert_eq!(
        value(r#"aoai_blaster_gateway_requests_total{route="chat",status="200"}"#),
        "6"
    );
    assert_eq!(
        value(r#"aoai_blaster_gateway_requests_total{route="chat",status="404"}"#),
        "1"
    );
    assert_eq!(
        value(r#"aoai_blaster_gateway_requests_total{route="models",status="200"}"#),
        "1"
    );
    assert_eq!(
        value(r#"aoai_blaster_gateway_overhead_seconds_count{route="chat"}"#),
        "7"
    );
    let sum: f64 = value(r#"aoai_blaster_gateway_overhead_seconds_sum{route="chat"}"#)
        .parse()
        .unwrap();
    assert!(sum > 0.0 && sum < 7.0, "{sum}");
    assert_eq!(value(r#"aoai_blaster_jobs_total{outcome="success"}"#), "6");
    gw.stop().await;
}
