//! The bearer-token path end to end: the real `azure_identity` ManagedIdentityCredential fetches
//! a token from the simulator's App Service token endpoint, and requests carry it.
//!
//! `azure_identity` reads `IDENTITY_ENDPOINT`/`IDENTITY_HEADER` from the process environment, so
//! this file holds a single test and sets them before any other thread exists.

mod common;

use aoai_blaster::{ChatJob, Dispatcher};
use aoai_sim::{ManagedIdentitySpec, SimConfig};
use common::*;
use serde_json::json;

#[allow(unsafe_code)]
#[actix_rt::test]
async fn managed_identity_tokens_authenticate_requests() {
    let mut sim_config = SimConfig::default().deployment(spec("gpt"));
    sim_config.managed_identity = Some(ManagedIdentitySpec {
        identity_header: "mi-secret".into(),
        access_token: "token-from-managed-identity".into(),
        expires_in_secs: 3600,
    });
    let sim = aoai_sim::start(sim_config).await.expect("simulator starts");
    let endpoint = sim
        .managed_identity_endpoint()
        .expect("the token endpoint is served");
    // SAFETY: this test binary runs this one test; no other thread reads the environment yet.
    unsafe {
        std::env::set_var("IDENTITY_ENDPOINT", &endpoint);
        std::env::set_var("IDENTITY_HEADER", "mi-secret");
    }
    let config = config(
        json!({}),
        vec![
            deployment(
                &sim,
                "gpt",
                json!({"name": "mi", "api_key": "managed_identity"}),
            ),
            deployment(&sim, "gpt", json!({"name": "chain", "api_key": "default"})),
        ],
    );
    let dispatcher = Dispatcher::start(config).expect("dispatcher starts");
    for name in ["mi", "chain"] {
        for i in 0..3 {
            let result = dispatcher
                .send(ChatJob::new(prompt(i)).pinned_to(name))
                .await
                .expect("dispatcher alive")
                .expect("the bearer token is accepted");
            assert_eq!(result.endpoint, name);
        }
    }
    let stats = http_stats(&sim).await;
    assert_eq!(stats.deployment("gpt").ok, 6);
    assert_eq!(stats.deployment("gpt").client_errors, 0);
    sim.stop().await;
}
