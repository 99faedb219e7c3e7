//! HTTPS end to end: the library's clients (TLS through the wrapped connector that counts
//! dials) against the simulator serving HTTPS on 127.0.0.1 (port 0) with a certificate signed
//! by a CA the test makes. Trusted, every job succeeds, over HTTP/1.1 (the simulator offers
//! `h2` too; we ask for `http/1.1` alone); not trusted, each job fails, naming the
//! certificate problem, without a byte reaching the server.

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
async fn jobs_go_over_https_and_http1_when_the_ca_is_trusted() {
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
    let dispatcher = Dispatcher::start_with(
        config,
        CredentialRegistry::default(),
        trusting(&certificates),
    )
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
    // The simulator offers h2 first by ALPN, we offer http/1.1 alone: no request on HTTP/2.
    assert_eq!(total.http2_requests, 0, "{total:?}");
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

    // The count above is not vacuous: a client offering h2 (awc's default) gets HTTP/2.
    let mut offers_h2 = (*trusting(&certificates).client_config()).clone();
    offers_h2.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let client = awc::Client::builder()
        .connector(awc::Connector::new().rustls_0_23(std::sync::Arc::new(offers_h2)))
        .finish();
    let url = format!(
        "{}openai/deployments/east/chat/completions?api-version=2024-10-21",
        sim.base_url()
    );
    let reply = client
        .post(url)
        .insert_header(("api-key", aoai_sim::DEFAULT_API_KEY))
        .send_json(&json!({"messages": common::messages(0)}))
        .await
        .expect("the simulator answers");
    assert_eq!(reply.status().as_u16(), 200);
    assert_eq!(reply.version(), awc::http::Version::HTTP_2);
    assert_eq!(sim.stats().total().http2_requests, 1);
    sim.stop().await;
}

fn trusting(certificates: &TestCertificates) -> TrustedCas {
    TrustedCas::with_pem_file(&certificates.ca).expect("the test CA loads")
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
