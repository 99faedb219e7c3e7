//! A pooled keep-alive connection the server closes as a request arrives, end to end over
//! loopback HTTP: the request is resent at once on a fresh connection, the endpoint is never
//! cooled, and the resend is counted as a `stale_retries` (report) and
//! `aoai_blaster_stale_connection_retries_total` (metrics). A failure on a fresh connection,
//! and a second one in a row, keep the ordinary handling.
//!
//! The upstream is a scripted HTTP/1.1 server on 127.0.0.1 (port 0) that this file runs itself:
//! it answers requests with keep-alive, or reads one whole and closes the connection without a
//! byte of reply, which is what the client sees when the server closes an idle connection as
//! the request arrives. It also serves over TLS (a CA the test makes; ALPN `http/1.1`), where
//! the close comes without TLS's `close_notify`, as from a server that just drops the socket.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use actix::prelude::*;
use aoai_blaster::auth::CredentialRegistry;
use aoai_blaster::core::health::HealthState;
use aoai_blaster::metrics::MetricsHandle;
use aoai_blaster::{ChatJob, Dispatcher, GetReport, JobErrorKind, TrustedCas};
use aoai_testkit::TestCertificates;
use common::{Collector, Seen, collect_reports, config, prompt};
use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::rustls;

/// What the server does with one request on a connection.
#[derive(Clone, Copy, Debug)]
enum Step {
    /// Reply 200 with a chat completion, keeping the connection open.
    Answer,
    /// Read the whole request, then close the connection without replying.
    Close,
}

/// The scripted server and what it saw.
struct Upstream {
    endpoint: String,
    connections: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
}

/// Starts a server whose n-th accepted connection follows `script[n]` (then closes); later
/// connections are counted and closed at once. Over TLS with `tls`'s certificate when given.
async fn upstream(script: Vec<Vec<Step>>, tls: Option<&TestCertificates>) -> Upstream {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let address = listener.local_addr().expect("bound address");
    let acceptor = tls.map(acceptor);
    let scheme = if acceptor.is_some() { "https" } else { "http" };
    let endpoint = format!("{scheme}://{address}/");
    let connections = Arc::new(AtomicUsize::new(0));
    let requests = Arc::new(AtomicUsize::new(0));
    let (accepted, read) = (connections.clone(), requests.clone());
    tokio::spawn(async move {
        let mut script = script.into_iter();
        while let Ok((socket, _)) = listener.accept().await {
            accepted.fetch_add(1, Ordering::SeqCst);
            let steps = script.next().unwrap_or_default();
            let read = read.clone();
            match &acceptor {
                None => drop(tokio::spawn(serve(socket, steps, read))),
                Some(acceptor) => {
                    let handshake = acceptor.accept(socket);
                    tokio::spawn(async move {
                        if let Ok(stream) = handshake.await {
                            serve(stream, steps, read).await;
                        }
                    });
                }
            }
        }
    });
    Upstream {
        endpoint,
        connections,
        requests,
    }
}

/// A TLS acceptor for `certificates`' server certificate, speaking HTTP/1.1 only.
fn acceptor(certificates: &TestCertificates) -> tokio_rustls::TlsAcceptor {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain = CertificateDer::pem_file_iter(&certificates.cert)
        .expect("the certificate file")
        .collect::<Result<Vec<_>, _>>()
        .expect("PEM certificates");
    let key = PrivateKeyDer::from_pem_file(&certificates.key).expect("the private key");
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("a server config");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

async fn serve<S>(mut socket: S, steps: Vec<Step>, requests: Arc<AtomicUsize>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut buffer = Vec::new();
    for step in steps {
        if !read_request(&mut socket, &mut buffer).await {
            return;
        }
        requests.fetch_add(1, Ordering::SeqCst);
        match step {
            Step::Answer => {
                if socket.write_all(&reply()).await.is_err() || socket.flush().await.is_err() {
                    return;
                }
            }
            // Everything sent was read, so dropping the socket sends a FIN, not a reset.
            Step::Close => return,
        }
    }
}

/// Reads one request (head and `content-length` body) off `socket`; false at EOF or error.
async fn read_request<S>(socket: &mut S, buffer: &mut Vec<u8>) -> bool
where
    S: AsyncRead + Unpin,
{
    loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buffer[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|line| line.strip_prefix("content-length:"))
                .and_then(|value| value.trim().parse().ok())
                .unwrap_or(0);
            let total = end + 4 + length;
            if buffer.len() >= total {
                buffer.drain(..total);
                return true;
            }
        }
        let mut chunk = [0u8; 4096];
        match socket.read(&mut chunk).await {
            Ok(0) | Err(_) => return false,
            Ok(read) => buffer.extend_from_slice(&chunk[..read]),
        }
    }
}

fn reply() -> Vec<u8> {
    let body = json!({
        "id": "chatcmpl-stale",
        "object": "chat.completion",
        "created": 0,
        "model": "gpt-4o",
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": "ok"},
            "finish_reason": "stop",
        }],
        "usage": {"prompt_tokens": 9, "completion_tokens": 1, "total_tokens": 10},
    })
    .to_string();
    format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// A Dispatcher on `upstream` with one deployment named `name`, no retries (a job fails at its
/// first counted failure) and a 30 s backoff (a cooling would outlast the test), and a
/// collector of its health reports.
async fn dispatcher(
    upstream: &Upstream,
    name: &str,
    trust: TrustedCas,
) -> (Addr<Dispatcher>, Addr<Collector>) {
    let deployment = json!({
        "name": name,
        "endpoint": upstream.endpoint,
        "api_key": "test-key",
        "model": "gpt-4o",
    });
    let top = json!({"max_job_retry": 0, "backoff_base": "30s", "backoff_max": "60s"});
    let dispatcher = Dispatcher::start_with(
        config(top, vec![deployment]),
        CredentialRegistry::default(),
        trust,
    )
    .expect("dispatcher starts");
    let collector = collect_reports(&dispatcher).await;
    (dispatcher, collector)
}

/// What a test expects to have happened, upstream and in the blaster.
struct Expected {
    /// Requests the server read, and connections it accepted.
    requests: usize,
    connections: usize,
    /// The endpoint's report: successes, errors, stale-connection resends, failure streak.
    successes: u64,
    errors: u64,
    stale_retries: u64,
    failure_streak: u32,
    /// Whether the endpoint announced one cooldown (else no health change at all).
    cooled: bool,
}

/// A test's end: one endpoint named `name`, checked against `expected` in the server's counts,
/// the report, the health reports and the metrics.
struct Run {
    name: &'static str,
    metrics: MetricsHandle,
    upstream: Upstream,
    dispatcher: Addr<Dispatcher>,
    collector: Addr<Collector>,
}

impl Run {
    async fn start(name: &'static str, script: Vec<Vec<Step>>) -> Run {
        Self::start_over(name, script, None).await
    }

    /// [`Run::start`], over TLS with `tls`'s certificates (their CA trusted) when given.
    async fn start_over(
        name: &'static str,
        script: Vec<Vec<Step>>,
        tls: Option<&TestCertificates>,
    ) -> Run {
        let metrics = MetricsHandle::install().expect("metrics recorder");
        let upstream = upstream(script, tls).await;
        let trust = match tls {
            Some(certificates) => TrustedCas::with_pem_file(&certificates.ca).expect("the CA"),
            None => TrustedCas::default(),
        };
        let (dispatcher, collector) = dispatcher(&upstream, name, trust).await;
        Run {
            name,
            metrics,
            upstream,
            dispatcher,
            collector,
        }
    }

    async fn job(&self, i: usize) -> Result<aoai_blaster::ChatResult, aoai_blaster::JobError> {
        self.dispatcher
            .send(ChatJob::new(prompt(i)))
            .await
            .expect("dispatcher alive")
    }

    async fn check(&self, expected: Expected) {
        assert_eq!(
            self.upstream.requests.load(Ordering::SeqCst),
            expected.requests
        );
        assert_eq!(
            self.upstream.connections.load(Ordering::SeqCst),
            expected.connections
        );
        let report = self.dispatcher.send(GetReport).await.expect("report");
        let endpoint = &report[0];
        assert_eq!(endpoint.counts.successes, expected.successes);
        assert_eq!(endpoint.counts.errors, expected.errors);
        assert_eq!(endpoint.counts.stale_retries, expected.stale_retries);
        assert_eq!(endpoint.failure_streak, expected.failure_streak);
        let reports = self.collector.send(Seen).await.expect("collector alive");
        let states: Vec<HealthState> = reports.into_iter().map(|r| r.health.state).collect();
        if expected.cooled {
            assert!(
                matches!(states.as_slice(), [HealthState::Cooling { .. }]),
                "cooled once: {states:?}"
            );
        } else {
            assert!(states.is_empty(), "no health change: {states:?}");
        }
        let series = format!(
            "aoai_blaster_stale_connection_retries_total{{endpoint=\"{}\"}} ",
            self.name
        );
        let rendered = self.metrics.render();
        let metric = rendered.lines().find_map(|line| line.strip_prefix(&series));
        assert_eq!(metric, Some(expected.stale_retries.to_string().as_str()));
    }
}

/// Two jobs; the server closes the first one's connection as the second request arrives on it
/// (without TLS's close_notify when `certificates` is given): the second job is resent on a fresh
/// connection within its one attempt, and the endpoint is never cooled.
async fn stale_pooled_connection_is_resent(
    name: &'static str,
    certificates: Option<&TestCertificates>,
) {
    let script = vec![vec![Step::Answer, Step::Close], vec![Step::Answer]];
    let run = Run::start_over(name, script, certificates).await;
    let scheme = if certificates.is_some() {
        "https://"
    } else {
        "http://"
    };
    assert!(run.upstream.endpoint.starts_with(scheme));
    let first = run.job(0).await.expect("first job succeeds");
    assert_eq!(first.attempts.len(), 1);
    let second = run.job(1).await.expect("second job succeeds");
    assert_eq!(second.attempts.len(), 1, "the resend is within the attempt");
    assert_eq!(second.text(), Some("ok"));
    run.check(Expected {
        requests: 3,
        connections: 2,
        successes: 2,
        errors: 0,
        stale_retries: 1,
        failure_streak: 0,
        cooled: false,
    })
    .await;
}

#[actix_rt::test]
async fn a_stale_pooled_connection_is_resent_fresh_without_cooling() {
    stale_pooled_connection_is_resent("stale-ok", None).await;
}

#[actix_rt::test]
async fn a_stale_pooled_tls_connection_is_resent_fresh_without_cooling() {
    let dir = tempfile::tempdir().unwrap();
    let certificates = TestCertificates::make(dir.path()).expect("openssl makes certificates");
    stale_pooled_connection_is_resent("stale-tls", Some(&certificates)).await;
}

#[actix_rt::test]
async fn a_fresh_connection_closed_before_a_reply_is_an_ordinary_failure() {
    let run = Run::start("fresh-closed", vec![vec![Step::Close]]).await;
    let error = run.job(0).await.expect_err("the job fails");
    assert_eq!(error.kind, JobErrorKind::RetriesExhausted);
    assert_eq!(error.attempts.len(), 1);
    assert!(
        error.attempts[0].outcome.starts_with("connection failed"),
        "{}",
        error.attempts[0].outcome
    );
    run.check(Expected {
        requests: 1,
        connections: 1,
        successes: 0,
        errors: 1,
        stale_retries: 0,
        failure_streak: 1,
        cooled: true,
    })
    .await;
}

#[actix_rt::test]
async fn a_resend_that_fails_too_is_an_ordinary_failure() {
    let run = Run::start(
        "stale-twice",
        vec![vec![Step::Answer, Step::Close], vec![Step::Close]],
    )
    .await;
    run.job(0).await.expect("first job succeeds");
    let error = run.job(1).await.expect_err("the second job fails");
    assert_eq!(error.kind, JobErrorKind::RetriesExhausted);
    assert_eq!(error.attempts.len(), 1);
    // The pooled connection, then one fresh resend: nothing more.
    run.check(Expected {
        requests: 3,
        connections: 2,
        successes: 1,
        errors: 1,
        stale_retries: 1,
        failure_streak: 1,
        cooled: true,
    })
    .await;
}
