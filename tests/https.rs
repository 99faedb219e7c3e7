//! HTTPS end to end: the library's clients (TLS through the wrapped connector that counts
//! dials) against the simulator serving HTTPS on 127.0.0.1 (port 0) with a certificate signed
//! by a CA the test makes. Trusted, every job succeeds, over HTTP/2 (ALPN); not trusted, each
//! job fails, naming the certificate problem, without a byte reaching the server.

mod common;

use std::time::Duration;

use aoai_blaster::auth::CredentialRegistry;
use aoai_blaster::{ChatJob, Dispatcher, GetReport, JobErrorKind, TrustedCas};
use aoai_sim::{SimConfig, SimHandle, TlsFiles};
use aoai_testkit::TestCertificates;
use common::{config, deployment, prompt, spec};
use serde_json::json;

/// A simulator serving `east` and `west` over HTTPS, and its CA.
async fn https_sim(dir: &tempfile::TempDir) -> (SimHandle, TestCertificates) {
    let certificates = TestCertificates::make(dir.path()).expect("openssl makes certificates");
    let sim = aoai_sim::start(SimConfig {
        tls: Some(TlsFiles {
            cert_file: certificates.cert.clone(),
            key_file: certificates.key.clone(),
        }),
        ..SimConfig::default()
            .deployment(spec("east"))
            .deployment(spec("west").own_listener())
    })
    .await
    .expect("the simulator serves HTTPS");
    (sim, certificates)
}

#[actix_rt::test]
async fn jobs_go_over_https_and_http2_when_the_ca_is_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let (sim, certificates) = https_sim(&dir).await;
    assert!(
        sim.base_url().starts_with("https://127.0.0.1:"),
        "{}",
        sim.base_url()
    );
    let config = config(
        json!({}),
        vec![
            deployment(&sim, "east", json!({})),
            deployment(&sim, "west", json!({})),
        ],
    );
    let trust = TrustedCas::with_pem_file(&certificates.ca).expect("the test CA loads");
    let dispatcher = Dispatcher::start_with(config, CredentialRegistry::default(), trust)
        .expect("the dispatcher starts");

    let jobs: Vec<_> = (0..40)
        .map(|i| dispatcher.send(ChatJob::new(prompt(i))))
        .collect();
    for job in jobs {
        let result = job.await.expect("delivered").expect("the job succeeds");
        assert_eq!(result.attempts.len(), 1, "{:?}", result.attempts);
    }

    let stats = sim.stats();
    let total = stats.total();
    assert_eq!((total.requests, total.ok), (40, 40), "{total:?}");
    // Both sides offer h2 first by ALPN: every request went over HTTP/2.
    assert_eq!(total.http2_requests, 40, "{total:?}");
    let report = dispatcher.send(GetReport).await.expect("a report");
    assert_eq!(report.len(), 2);
    for endpoint in &report {
        // What each endpoint counted is what its server saw, with no error or resend.
        let served = stats.deployment(&endpoint.name);
        assert_eq!(
            endpoint.counts.successes, served.ok,
            "{endpoint:?} {served:?}"
        );
        assert_eq!(served.requests, served.ok, "{served:?}");
        assert_eq!(endpoint.counts.errors, 0, "{endpoint:?}");
        assert_eq!(endpoint.counts.stale_retries, 0, "{endpoint:?}");
    }
    sim.stop().await;
}

#[actix_rt::test]
async fn an_untrusted_certificate_fails_the_job_naming_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let (sim, _certificates) = https_sim(&dir).await;
    let config = config(
        json!({"max_job_retry": 2}),
        vec![deployment(&sim, "east", json!({}))],
    );
    // The webpki roots alone: the test CA is not among them.
    let dispatcher =
        Dispatcher::start_with(config, CredentialRegistry::default(), TrustedCas::default())
            .expect("the dispatcher starts");

    let answer = tokio::time::timeout(
        Duration::from_secs(20),
        dispatcher.send(ChatJob::new(prompt(0))),
    )
    .await
    .expect("the job ends, it does not hang")
    .expect("delivered");
    let error = answer.expect_err("the certificate is refused");
    assert!(
        matches!(error.kind, JobErrorKind::RetriesExhausted),
        "{error}"
    );
    // max_job_retry 2: the first attempt and two retries, each refusing the certificate.
    assert_eq!(error.attempts.len(), 3, "{error}");
    let text = error.to_string();
    assert!(
        text.contains("invalid peer certificate: UnknownIssuer"),
        "{text}"
    );
    // The handshake failed before any request was sent.
    assert_eq!(sim.stats().total().requests, 0);
    sim.stop().await;
}
