//! Every error the gateway answers, in OpenAI's shape: `{"error": {"message", "type", "code",
//! "param"}}`, which every OpenAI SDK parses (and retries on 429 and 5xx by itself).

use std::time::Duration;

use serde_json::{Value, json};

use crate::retry::{JobError, JobErrorKind};

/// An error reply: its status, OpenAI's fields, and for a 429 when to come back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayError {
    /// The HTTP status.
    pub status: u16,
    /// What went wrong and what to do, for a person (no secrets: upstream text is redacted
    /// before it reaches a job's error).
    pub message: String,
    /// OpenAI's `type`: `invalid_request_error`, `rate_limit_error`, `server_error`, ...
    pub kind: &'static str,
    /// A stable machine code: `model_not_found`, `invalid_api_key`, `queue_full`, ... or
    /// Azure's own code for a request Azure refused.
    pub code: String,
    /// For a 429 (and a 503 that will pass): when room will exist.
    pub retry_after: Option<Duration>,
}

impl GatewayError {
    /// An error with no retry hint.
    pub fn new(
        status: u16,
        kind: &'static str,
        code: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        GatewayError {
            status,
            message: message.into(),
            kind,
            code: code.into(),
            retry_after: None,
        }
    }

    /// The same error, telling the client when to come back.
    pub fn retry_after(mut self, wait: Duration) -> Self {
        self.retry_after = Some(wait);
        self
    }

    /// 404 for a `model` no deployment, model or alias has (`known`: the names that exist).
    pub fn unknown_model(model: &str, known: &str) -> Self {
        GatewayError::new(
            404,
            "invalid_request_error",
            "model_not_found",
            format!("the model '{model}' does not exist here; use one of: {known}"),
        )
    }

    /// 401 for a request without a valid key.
    pub fn unauthorized(presented: bool) -> Self {
        let message = if presented {
            "invalid API key; send one of the gateway's keys (gateway.api_keys) as \
             `Authorization: Bearer KEY` or `api-key: KEY`"
        } else {
            "missing API key; send one of the gateway's keys (gateway.api_keys) as \
             `Authorization: Bearer KEY` or `api-key: KEY`"
        };
        GatewayError::new(401, "invalid_request_error", "invalid_api_key", message)
    }

    /// 400 for a body that cannot be a request (`what` says why).
    pub fn invalid_body(what: impl Into<String>) -> Self {
        GatewayError::new(400, "invalid_request_error", "invalid_body", what)
    }

    /// 429 when the gateway holds as many requests as the queue takes.
    pub fn queue_full(held: usize, wait: Duration) -> Self {
        GatewayError::new(
            429,
            "rate_limit_error",
            "queue_full",
            format!(
                "the gateway's queue is full ({held} requests held: num_workers + \
                 queue_capacity); retry after the time in retry-after-ms"
            ),
        )
        .retry_after(wait)
    }

    /// What a failed job answers; `wait` is when room will exist, for the kinds that wait.
    pub fn from_job(error: &JobError, wait: Option<Duration>) -> Self {
        let message = error.to_string();
        let code = error.code();
        match &error.kind {
            JobErrorKind::Rejected(api) => GatewayError::new(
                api.status,
                "invalid_request_error",
                api.code.clone().unwrap_or_else(|| code.to_owned()),
                api.message.clone(),
            ),
            JobErrorKind::UnknownDeployment { .. } => {
                GatewayError::new(404, "invalid_request_error", "model_not_found", message)
            }
            JobErrorKind::UnsupportedOperation { .. } => {
                GatewayError::new(400, "invalid_request_error", code, message)
            }
            JobErrorKind::NeverFits { .. } => {
                GatewayError::new(400, "invalid_request_error", code, message)
            }
            JobErrorKind::NoEndpointAvailable { .. } | JobErrorKind::RateLimited { .. } => {
                let error = GatewayError::new(429, "rate_limit_error", code, message);
                match wait {
                    Some(wait) => error.retry_after(wait),
                    None => error,
                }
            }
            JobErrorKind::DeadlineExceeded => GatewayError::new(504, "server_error", code, message),
            JobErrorKind::AllEndpointsDisabled
            | JobErrorKind::EndpointsRejected { .. }
            | JobErrorKind::QueueClosed => GatewayError::new(503, "server_error", code, message),
            JobErrorKind::Cancelled => GatewayError::new(499, "server_error", code, message),
            JobErrorKind::RetriesExhausted
            | JobErrorKind::ReplyTooLarge { .. }
            | JobErrorKind::StreamInterrupted { .. } => {
                GatewayError::new(502, "server_error", code, message)
            }
        }
    }

    /// The JSON body: `{"error": {"message", "type", "code", "param": null}}`.
    pub fn body(&self) -> Value {
        json!({"error": {
            "message": self.message,
            "type": self.kind,
            "code": self.code,
            "param": null,
        }})
    }

    /// `retry-after` (whole seconds, rounded up) and `retry-after-ms`, when set.
    pub fn retry_headers(&self) -> Option<(String, String)> {
        let wait = self.retry_after?;
        let millis = wait.as_millis().max(1);
        Some((millis.div_ceil(1000).to_string(), millis.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::ApiError;

    #[test]
    fn job_errors_map_to_statuses_sdks_understand() {
        let job = |kind| JobError::new(kind, Vec::new());
        let refused = job(JobErrorKind::Rejected(ApiError {
            status: 400,
            code: Some("content_filter".into()),
            message: "filtered".into(),
        }));
        let error = GatewayError::from_job(&refused, None);
        assert_eq!((error.status, error.code.as_str()), (400, "content_filter"));
        let unavailable = job(JobErrorKind::NoEndpointAvailable {
            max_wait: Duration::from_secs(1),
            endpoints: "east cooling for another 7s".into(),
        });
        let error = GatewayError::from_job(&unavailable, Some(Duration::from_millis(6_200)));
        assert_eq!(error.status, 429);
        assert_eq!(
            error.retry_headers(),
            Some(("7".to_owned(), "6200".to_owned()))
        );
        assert_eq!(error.body()["error"]["code"], "no_endpoint_available");
        assert_eq!(error.body()["error"]["type"], "rate_limit_error");
        let statuses: Vec<u16> = [
            JobErrorKind::RetriesExhausted,
            JobErrorKind::AllEndpointsDisabled,
            JobErrorKind::DeadlineExceeded,
            JobErrorKind::UnknownDeployment {
                name: "x".into(),
                known: "a".into(),
            },
        ]
        .into_iter()
        .map(|kind| GatewayError::from_job(&job(kind), None).status)
        .collect();
        assert_eq!(statuses, [502, 503, 504, 404]);
    }

    #[test]
    fn the_body_has_openais_fields() {
        let error = GatewayError::unknown_model("gpt-5", "gpt-4o, east");
        assert_eq!(
            error.body(),
            json!({"error": {
                "message": "the model 'gpt-5' does not exist here; use one of: gpt-4o, east",
                "type": "invalid_request_error",
                "code": "model_not_found",
                "param": null,
            }})
        );
        assert_eq!(error.retry_headers(), None);
    }
}
