//! A rejected bearer token is refreshed once before the endpoint is given up on (README,
//! Behaviour: on a 401/403 "a bearer token is refreshed once first", then the endpoint is
//! disabled).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use aoai_blaster::GetReport;
use aoai_blaster::auth::CredentialRegistry;
use aoai_blaster::{ChatJob, Dispatcher};
use azure_core::credentials::{AccessToken, TokenCredential, TokenRequestOptions};
use azure_core::time::{Duration, OffsetDateTime};
use common::*;
use serde_json::json;

/// Hands out the tokens of `tokens` in turn (the last one from then on), counting the calls.
#[derive(Debug)]
struct ScriptedCredential {
    tokens: Vec<&'static str>,
    calls: AtomicUsize,
}

#[async_trait::async_trait]
impl TokenCredential for ScriptedCredential {
    async fn get_token(
        &self,
        _scopes: &[&str],
        _options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst);
        let token = self.tokens[call.min(self.tokens.len() - 1)];
        Ok(AccessToken::new(
            token,
            OffsetDateTime::now_utc() + Duration::hours(1),
        ))
    }
}

async fn run_with(
    tokens: Vec<&'static str>,
) -> (
    Arc<ScriptedCredential>,
    aoai_sim::SimHandle,
    Vec<aoai_blaster::EndpointReport>,
    bool,
) {
    let sim = start_sim(vec![spec("gpt")]).await;
    let credential = Arc::new(ScriptedCredential {
        tokens,
        calls: AtomicUsize::new(0),
    });
    let mut registry = CredentialRegistry::with_env(|_| None);
    registry.use_credential("az", credential.clone());
    // `never`: a rejected token disables for good and the job fails at once (with the default
    // 30 s the job would wait for the probe).
    let config = config(
        json!({"reenable_after": "never"}),
        vec![deployment(&sim, "gpt", json!({"api_key": "az"}))],
    );
    let dispatcher = Dispatcher::start_with_registry(config, registry).expect("dispatcher starts");
    let answered = dispatcher
        .send(ChatJob::new(prompt(1)))
        .await
        .expect("dispatcher alive")
        .is_ok();
    let report = dispatcher.send(GetReport).await.expect("report");
    (credential, sim, report, answered)
}

#[actix_rt::test]
async fn a_stale_token_is_replaced_and_the_request_goes_through() {
    let (credential, sim, report, answered) =
        run_with(vec!["stale-token", aoai_sim::DEFAULT_BEARER_TOKEN]).await;
    assert!(answered, "the refreshed token is accepted");
    assert_eq!(credential.calls.load(Ordering::SeqCst), 2, "one refresh");
    let stats = http_stats(&sim).await.deployment("gpt");
    assert_eq!(
        (stats.client_errors, stats.ok),
        (1, 1),
        "one 401, then the answer"
    );
    assert_eq!(report[0].state.as_str(), "healthy");
    sim.stop().await;
}

#[actix_rt::test]
async fn a_token_rejected_twice_disables_the_endpoint() {
    let (credential, sim, report, answered) = run_with(vec!["wrong-token"]).await;
    assert!(!answered, "no token is accepted");
    assert_eq!(
        credential.calls.load(Ordering::SeqCst),
        2,
        "refreshed once, then given up"
    );
    assert_eq!(http_stats(&sim).await.deployment("gpt").client_errors, 2);
    assert_eq!(report[0].state.as_str(), "disabled");
    assert!(
        report[0]
            .disabled_reason
            .as_deref()
            .unwrap_or("")
            .contains("401"),
        "{:?}",
        report[0].disabled_reason
    );
    sim.stop().await;
}
