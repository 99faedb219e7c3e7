//! The Dispatcher embedded in an actix app, with a health subscriber: one deployment is flaky,
//! so health changes show up as they happen.
//!
//! Run: `cargo run --release --example actix_app`

use actix::prelude::*;
use aoai_blaster::{BlasterConfig, ChatJob, ChatRequest, Dispatcher, HealthReport};
use aoai_blaster::{Close, GetReport, Subscribe};
use aoai_sim::{DeploymentSpec, FaultSpec, SimConfig};
use futures_util::future::join_all;
use serde_json::json;

/// Prints every health change it is told about.
struct HealthLogger;

impl Actor for HealthLogger {
    type Context = Context<Self>;
}

impl Handler<HealthReport> for HealthLogger {
    type Result = ();

    fn handle(&mut self, report: HealthReport, _: &mut Self::Context) {
        let previous = report
            .previous
            .as_ref()
            .map_or_else(|| "restart".to_owned(), ToString::to_string);
        println!(
            "health: {}: {previous} -> {}",
            report.endpoint, report.health.state
        );
    }
}

#[actix::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let flaky = FaultSpec {
        p_503: 0.3,
        ..FaultSpec::default()
    };
    let sim = aoai_sim::start(
        SimConfig::default()
            .deployment(DeploymentSpec::new("steady").tpm(10_000_000))
            .deployment(DeploymentSpec::new("flaky").tpm(10_000_000).faults(flaky)),
    )
    .await?;
    let deployment = |name: &str| {
        json!({
            "name": name,
            "endpoint": sim.base_url(),
            "api_key": aoai_sim::DEFAULT_API_KEY,
            "model": name,
        })
    };
    let config = BlasterConfig::from_value(json!({
        "deployments": [deployment("steady"), deployment("flaky")],
        "backoff_base": "20ms",
        "backoff_max": "200ms",
    }))?;

    let dispatcher = Dispatcher::start(config)?;
    dispatcher
        .send(Subscribe(HealthLogger.start().recipient()))
        .await?;

    let jobs = (0..200).map(|i| {
        let request = ChatRequest::new(vec![
            json!({"role": "user", "content": format!("Label item {i} as cat or dog.")}),
        ]);
        dispatcher.send(ChatJob::new(request).labelled(format!("item-{i}")))
    });
    let mut succeeded = 0;
    for result in join_all(jobs).await {
        match result? {
            Ok(_) => succeeded += 1,
            Err(error) => println!("job failed: {error}"),
        }
    }
    println!("{succeeded} of 200 jobs succeeded");
    for endpoint in dispatcher.send(GetReport).await? {
        println!("{endpoint}");
    }
    dispatcher.send(Close).await?;
    sim.stop().await;
    Ok(())
}
