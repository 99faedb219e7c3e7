//! The Python package's quick start, in Rust: a blocking call, the future API, concurrent calls,
//! the health report and close, against the embedded Azure OpenAI simulator.
//!
//! Run: `cargo run --release --example quickstart`

use aoai_blaster::{Blaster, BlasterConfig, ChatRequest};
use aoai_sim::{DeploymentSpec, SimConfig, SimThread};
use serde_json::json;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Two simulated deployments stand in for two Azure OpenAI resources.
    let sim = SimThread::start(
        SimConfig::default()
            .deployment(DeploymentSpec::new("gpt-4o"))
            .deployment(DeploymentSpec::new("gpt-4o-mini")),
    )?;

    // The Python package's config, unchanged but for the endpoints and keys.
    let config = BlasterConfig::from_value(json!({
        "strategy": "weighted",
        "deployments": [
            {
                "name": "gpt-4o",
                "endpoint": sim.base_url(),
                "api_key": aoai_sim::DEFAULT_API_KEY,
                "model": "gpt-4o",
                "weight": 2,
                "temperature": 0.2,
                "max_completion_tokens": 512
            },
            {
                "name": "gpt-4o-backup",
                "endpoint": sim.base_url(),
                "api_key": aoai_sim::DEFAULT_API_KEY,
                "model": "gpt-4o-mini",
                "weight": 1
            }
        ],
        "num_workers": 12
    }))?;
    let blaster = Blaster::from_config(config)?;

    let messages = vec![
        json!({"role": "system", "content": "You are concise."}),
        json!({"role": "user", "content": "Summarize why backoff matters."}),
    ];

    // Blocking call (single request), with a per-call option.
    let result =
        blaster.blocking_chat_completion(ChatRequest::new(messages.clone()).temperature(0.1))?;
    println!("blocking: {}", result.text().unwrap_or_default());

    // The future API: submit now, wait later.
    let handle = blaster.submit_chat_completion(ChatRequest::new(messages));
    let result = handle.wait()?;
    println!("submitted: answered by {}", result.endpoint);

    // Blocking calls from several threads at once.
    let prompts = [
        "Summarize why backoff matters.",
        "Explain weighted round robin scheduling.",
        "List reasons endpoints get temporarily disabled.",
    ];
    std::thread::scope(|scope| {
        let handles: Vec<_> = prompts
            .iter()
            .map(|prompt| {
                let blaster = &blaster;
                scope.spawn(move || {
                    blaster.blocking_chat_completion(
                        ChatRequest::new(vec![
                            json!({"role": "system", "content": "You are concise."}),
                            json!({"role": "user", "content": prompt}),
                        ])
                        .temperature(0.1),
                    )
                })
            })
            .collect();
        for handle in handles {
            match handle.join() {
                Ok(Ok(result)) => println!("concurrent: {}", result.text().unwrap_or_default()),
                Ok(Err(error)) => println!("concurrent call failed: {error}"),
                Err(_) => println!("a thread panicked"),
            }
        }
    });

    for endpoint in blaster.blocking_report() {
        println!("{endpoint}");
    }
    blaster.close();
    sim.stop();
    Ok(())
}
