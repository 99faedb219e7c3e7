//! `aoai-blaster check`: validate the config, resolve each deployment's credentials, send one
//! tiny request for each operation each deployment takes (its `operations`: a chat completion,
//! an embedding of `ping`, a response), and print what came back.
//!
//! The table has one row per deployment and operation: whether it answered at all, whether the
//! credentials were accepted, the status, the latency and the `x-ratelimit-remaining-*`
//! headers. The exit status is 0 when every row answered 2xx (or 429: reachable and
//! authorised, just busy), 1 otherwise, 2 for a config that does not load (or an unusable
//! `SSL_CERT_FILE`). HTTPS trusts what `run` trusts.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use aoai_blaster::auth::{Auth, AuthError, AuthHeader, CredentialRegistry};
use aoai_blaster::core::classify::{ApiError, parse_rate_limit_headers};
use aoai_blaster::core::config::DeploymentConfig;
use aoai_blaster::{
    ChatRequest, EmbeddingsRequest, JobRequest, Operation, ResponsesRequest, TrustedCas,
};

use crate::cli::CheckArgs;
use crate::summary::{EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE};

/// Largest reply body read, in bytes.
const MAX_BODY: usize = 1 << 20;

/// What the check found for one deployment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct CheckRow {
    /// The deployment's `name`.
    pub(crate) name: String,
    /// The operation tried.
    pub(crate) operation: Option<Operation>,
    /// How it authenticates (`api key`, `azure cli`, ...; never the key).
    pub(crate) auth: &'static str,
    /// The credential could not produce a header (the reason).
    pub(crate) credential_error: Option<String>,
    /// HTTP status of the reply, when one came.
    pub(crate) status: Option<u16>,
    /// Time from sending to the reply's end.
    pub(crate) latency: Option<Duration>,
    /// `x-ratelimit-remaining-requests`.
    pub(crate) remaining_requests: Option<u64>,
    /// `x-ratelimit-remaining-tokens`.
    pub(crate) remaining_tokens: Option<u64>,
    /// What went wrong, or a note.
    pub(crate) note: Option<String>,
}

impl CheckRow {
    /// An answer came back.
    pub(crate) fn reachable(&self) -> bool {
        self.status.is_some()
    }

    /// Whether the credentials were accepted: `None` when it cannot be told.
    pub(crate) fn auth_ok(&self) -> Option<bool> {
        if self.credential_error.is_some() {
            return Some(false);
        }
        match self.status? {
            401 | 403 => Some(false),
            _ => Some(true),
        }
    }

    /// The deployment is usable: a 2xx, or a 429 (authorised, just busy).
    pub(crate) fn ok(&self) -> bool {
        matches!(self.status, Some(status) if (200..300).contains(&status) || status == 429)
    }
}

fn yes_no(value: Option<bool>) -> &'static str {
    match value {
        Some(true) => "yes",
        Some(false) => "NO",
        None => "?",
    }
}

/// The table `check` prints.
pub(crate) fn render(rows: &[CheckRow]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<20} {:<10} {:<18} {:<9} {:<7} {:>6} {:>10} {:>12} {:>14}  note",
        "deployment",
        "operation",
        "auth",
        "reachable",
        "auth ok",
        "status",
        "latency",
        "remain req",
        "remain tokens"
    );
    let or_dash = |value: Option<String>| value.unwrap_or_else(|| "-".to_owned());
    for row in rows {
        let _ = writeln!(
            out,
            "{:<20} {:<10} {:<18} {:<9} {:<7} {:>6} {:>10} {:>12} {:>14}  {}",
            row.name,
            row.operation.map_or("-", Operation::name),
            row.auth,
            if row.credential_error.is_some() {
                "?"
            } else {
                yes_no(Some(row.reachable()))
            },
            yes_no(row.auth_ok()),
            or_dash(row.status.map(|s| s.to_string())),
            or_dash(
                row.latency
                    .map(|l| format!("{:.0} ms", l.as_secs_f64() * 1000.0))
            ),
            or_dash(row.remaining_requests.map(|r| r.to_string())),
            or_dash(row.remaining_tokens.map(|r| r.to_string())),
            row.credential_error
                .as_deref()
                .or(row.note.as_deref())
                .unwrap_or("ok"),
        );
    }
    out
}

/// What a status means for a person running `check`.
pub(crate) fn advice(deployment: &DeploymentConfig, error: &ApiError) -> String {
    let hint = match error.status {
        401 | 403 => format!(
            "check `api_key` of deployment '{}' (or the identity's role on the resource)",
            deployment.name
        ),
        404 => format!(
            "check `endpoint` and that `model` ('{}') is the deployment name on the resource",
            deployment.model
        ),
        429 => "reachable and authorised; the quota is busy right now".to_owned(),
        400 => "the deployment refused the test request; check `api_version` and that the \
                deployment's model takes this operation (`operations`)"
            .to_owned(),
        _ => "the service answered with an error".to_owned(),
    };
    format!("{error}; {hint}")
}

/// The smallest request of `operation`.
fn test_request(operation: Operation) -> JobRequest {
    match operation {
        Operation::Chat => ChatRequest::empty()
            .user("ping")
            .max_completion_tokens(5)
            .into(),
        Operation::Embeddings => EmbeddingsRequest::new("ping").into(),
        // 16 is the least `max_output_tokens` the Responses API takes.
        Operation::Responses => ResponsesRequest::new("ping")
            .option("max_output_tokens", 16)
            .into(),
    }
}

/// Sends the test request of each operation the deployment takes: one row each.
pub(crate) async fn check_deployment(
    deployment: &DeploymentConfig,
    auth: Result<Auth, AuthError>,
    trust: &TrustedCas,
) -> Vec<CheckRow> {
    let row = |operation| CheckRow {
        name: deployment.name.clone(),
        operation,
        auth: deployment.auth.describe(),
        ..CheckRow::default()
    };
    let header = match auth {
        Ok(auth) => auth.header().await,
        Err(error) => Err(error),
    };
    let header = match header {
        Ok(header) => header,
        Err(error) => {
            let mut row = row(None);
            row.credential_error = Some(error.to_string());
            return vec![row];
        }
    };
    // The CAs `run` trusts (webpki roots plus SSL_CERT_FILE's), so the check sees what it would.
    let connector = awc::Connector::new()
        .rustls_0_23(trust.client_config())
        .timeout(deployment.timeouts.connect)
        .handshake_timeout(deployment.timeouts.connect);
    let client = awc::Client::builder()
        .connector(connector)
        .timeout(deployment.timeouts.request)
        .disable_redirects()
        .finish();
    let mut rows = Vec::new();
    for operation in deployment.operations.iter() {
        let mut row = row(Some(operation));
        try_operation(deployment, &client, &header, operation, &mut row).await;
        rows.push(row);
    }
    rows
}

/// Sends the test request of `operation` and notes what came back in `row`.
async fn try_operation(
    deployment: &DeploymentConfig,
    client: &awc::Client,
    header: &AuthHeader,
    operation: Operation,
    row: &mut CheckRow,
) {
    let body = test_request(operation).body_bytes(
        &deployment.request_defaults(),
        false,
        deployment.body_model(),
    );
    let started = Instant::now();
    let sent = client
        .post(deployment.url(operation))
        .insert_header((header.name, header.value.expose()))
        .content_type("application/json")
        .send_body(body)
        .await;
    let mut response = match sent {
        Ok(response) => response,
        Err(error) => {
            row.note = Some(format!(
                "no reply: {error}; check `endpoint` ({}) and the network",
                deployment.endpoint
            ));
            return;
        }
    };
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let lookup = |name: &str| {
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
    };
    let limits = parse_rate_limit_headers(&lookup);
    let body = response.body().limit(MAX_BODY).await.unwrap_or_default();
    row.latency = Some(started.elapsed());
    row.status = Some(status);
    row.remaining_requests = limits.remaining_requests;
    row.remaining_tokens = limits.remaining_tokens;
    if !(200..300).contains(&status) {
        row.note = Some(advice(deployment, &ApiError::from_body(status, &body)));
    }
}

/// `aoai-blaster check`.
pub(crate) async fn check_command(args: CheckArgs) -> u8 {
    let config = match crate::setup::load_config(&args.config) {
        Ok(config) => config,
        Err(status) => return status,
    };
    let trust = match TrustedCas::from_env() {
        Ok(trust) => trust,
        Err(error) => {
            eprintln!("aoai-blaster: {error}");
            return EXIT_USAGE;
        }
    };
    let mut registry = CredentialRegistry::default();
    let checks = config.deployments.iter().map(|deployment| {
        let auth = registry.auth_for(&deployment.auth);
        check_deployment(deployment, auth, &trust)
    });
    let checks: Vec<_> = checks.collect();
    let rows: Vec<CheckRow> = futures_util::future::join_all(checks)
        .await
        .into_iter()
        .flatten()
        .collect();
    crate::console::print(&render(&rows));
    if rows.iter().all(CheckRow::ok) {
        crate::console::print_line(&format!(
            "config {}: every deployment answered",
            args.config.display()
        ));
        EXIT_OK
    } else {
        let failed = rows.iter().filter(|row| !row.ok()).count();
        crate::console::print_line(&format!(
            "config {}: {failed} of {} checks (deployment and operation) failed",
            args.config.display(),
            rows.len()
        ));
        EXIT_SOME_FAILED
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(status: Option<u16>) -> CheckRow {
        CheckRow {
            name: "east".into(),
            operation: Some(Operation::Chat),
            auth: "api key",
            status,
            latency: status.map(|_| Duration::from_millis(12)),
            ..CheckRow::default()
        }
    }

    #[test]
    fn ok_means_2xx_or_429() {
        assert!(row(Some(200)).ok());
        assert!(row(Some(429)).ok());
        assert!(!row(Some(401)).ok());
        assert!(!row(Some(500)).ok());
        assert!(!row(None).ok());
    }

    #[test]
    fn auth_is_judged_by_credential_and_status() {
        assert_eq!(row(Some(200)).auth_ok(), Some(true));
        assert_eq!(row(Some(404)).auth_ok(), Some(true));
        assert_eq!(row(Some(401)).auth_ok(), Some(false));
        assert_eq!(row(None).auth_ok(), None);
        let mut no_token = row(None);
        no_token.credential_error = Some("az not logged in".into());
        assert_eq!(no_token.auth_ok(), Some(false));
    }

    #[test]
    fn render_has_a_row_per_deployment() {
        let mut bad = row(Some(401));
        bad.name = "west".into();
        bad.note = Some("HTTP 401: denied; check `api_key`".into());
        let good = CheckRow {
            remaining_requests: Some(99),
            remaining_tokens: Some(5000),
            ..row(Some(200))
        };
        let text = render(&[good, bad]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[1].starts_with("east"), "{text}");
        assert!(lines[1].contains("12 ms"), "{text}");
        assert!(lines[1].contains("5000"), "{text}");
        assert!(lines[1].ends_with("ok"), "{text}");
        assert!(lines[2].contains("NO"), "{text}");
        assert!(lines[2].ends_with("check `api_key`"), "{text}");
    }
}
