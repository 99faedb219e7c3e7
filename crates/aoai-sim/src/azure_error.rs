//! Error replies in Azure OpenAI's shape: `{"error": {"code": ..., "message": ...}}`.

use bytes::Bytes;
use serde_json::json;

use crate::quota::LimitKind;
use crate::request::InvalidRequest;

/// An error reply: status and JSON body.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct AzureError {
    pub(crate) status: u16,
    pub(crate) body: Bytes,
}

fn error(status: u16, code: &str, message: &str) -> AzureError {
    with_body(status, json!({"error": {"code": code, "message": message}}))
}

fn with_body(status: u16, body: serde_json::Value) -> AzureError {
    AzureError {
        status,
        body: Bytes::from(body.to_string()),
    }
}

/// 401 for a missing or wrong `api-key`.
pub(crate) fn invalid_key() -> AzureError {
    error(
        401,
        "401",
        "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key for an active subscription and use a correct regional API endpoint for your resource.",
    )
}

/// 401 for a wrong bearer token.
pub(crate) fn invalid_token() -> AzureError {
    error(
        401,
        "401",
        "Unauthorized. Access token is missing, invalid, audience is incorrect (https://cognitiveservices.azure.com), or have expired.",
    )
}

/// 400 when `api-version` is missing.
pub(crate) fn missing_api_version() -> AzureError {
    error(
        400,
        "MissingApiVersionParameter",
        "The api-version query parameter (?api-version=) is required for all requests.",
    )
}

/// 404 for a deployment the resource does not have.
pub(crate) fn deployment_not_found() -> AzureError {
    error(
        404,
        "DeploymentNotFound",
        "The API deployment for this resource does not exist. If you created the deployment within the last 5 minutes, please wait a moment and try again.",
    )
}

/// 404 for a path the service does not serve.
pub(crate) fn resource_not_found() -> AzureError {
    error(404, "404", "Resource not found")
}

/// 400 for a body the service cannot use.
pub(crate) fn bad_request(invalid: &InvalidRequest) -> AzureError {
    with_body(
        400,
        json!({"error": {
            "code": "BadRequest",
            "message": invalid.message,
            "type": "invalid_request_error",
            "param": invalid.param,
        }}),
    )
}

/// 400 on the v1 route without `model`.
pub(crate) fn missing_model() -> AzureError {
    with_body(
        400,
        json!({"error": {
            "code": "BadRequest",
            "message": "you must provide a model parameter",
            "type": "invalid_request_error",
            "param": "model",
        }}),
    )
}

/// 429 with the message Azure uses ("Please retry after N seconds.", or "Please retry later."
/// when no wait is named); the caller adds the retry headers.
pub(crate) fn rate_limited(
    api_version: &str,
    kind: LimitKind,
    retry_after_secs: Option<&str>,
) -> AzureError {
    let limit = match kind {
        LimitKind::Tokens => "token rate limit",
        LimitKind::Requests => "call rate limit",
    };
    let retry = match retry_after_secs {
        Some(secs) => format!("Please retry after {secs} seconds."),
        None => "Please retry later.".to_owned(),
    };
    let message = format!(
        "Requests to the ChatCompletions_Create Operation under Azure OpenAI API version {api_version} have exceeded {limit} of your current OpenAI S0 pricing tier. {retry} Please go here: https://aka.ms/oai/quotaincrease if you would like to further increase the default rate limit."
    );
    error(429, "429", &message)
}

/// 403 for a principal without the role on the resource.
pub(crate) fn permission_denied() -> AzureError {
    error(
        403,
        "PermissionDenied",
        "Principal does not have access to API/Operation.",
    )
}

/// 500, as a server fault.
pub(crate) fn internal_error() -> AzureError {
    error(
        500,
        "InternalServerError",
        "The server had an error processing your request. Sorry about that! You can retry your request, or contact us through an Azure support request at: https://go.microsoft.com/fwlink/?linkid=2213926 if you keep seeing this error.",
    )
}

/// 503, as a transient overload fault.
pub(crate) fn engine_overloaded() -> AzureError {
    error(
        503,
        "ServiceUnavailable",
        "The engine is currently overloaded, please try again later.",
    )
}

/// 503 during a scheduled outage.
pub(crate) fn outage() -> AzureError {
    error(
        503,
        "ServiceUnavailable",
        "The service is temporarily unable to process your request. Please try again later.",
    )
}

/// 408 after a hang.
pub(crate) fn timeout() -> AzureError {
    error(408, "Timeout", "The operation was timeout.")
}

/// 400 `content_filter`, with Azure's `innererror`.
pub(crate) fn content_filtered() -> AzureError {
    let safe = json!({"filtered": false, "severity": "safe"});
    with_body(
        400,
        json!({"error": {
            "message": "The response was filtered due to the prompt triggering Azure OpenAI's content management policy. Please modify your prompt and retry. To learn more about our content filtering policies please read our documentation: https://go.microsoft.com/fwlink/?linkid=2198766",
            "type": null,
            "param": "prompt",
            "code": "content_filter",
            "status": 400,
            "innererror": {
                "code": "ResponsibleAIPolicyViolation",
                "content_filter_result": {
                    "hate": safe,
                    "jailbreak": {"filtered": false, "detected": false},
                    "self_harm": safe,
                    "sexual": safe,
                    "violence": {"filtered": true, "severity": "medium"},
                },
            },
        }}),
    )
}

/// The JSON of an error event inside a stream.
pub(crate) fn stream_error_json() -> Bytes {
    Bytes::from(
        json!({"error": {
            "message": "The server had an error while processing your request. Sorry about that!",
            "type": "server_error",
            "param": null,
            "code": "server_error",
        }})
        .to_string(),
    )
}

/// A 200 body that is not JSON (a proxy's HTML page).
pub(crate) const NOT_JSON_BODY: &str = "<html><head><title>502 Bad Gateway</title></head><body>upstream connect error or disconnect/reset before headers</body></html>";

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn body(err: &AzureError) -> Value {
        serde_json::from_slice(&err.body).unwrap_or(Value::Null)
    }

    #[test]
    fn shapes_carry_code_and_message() {
        for (err, status, code) in [
            (invalid_key(), 401, "401"),
            (invalid_token(), 401, "401"),
            (missing_api_version(), 400, "MissingApiVersionParameter"),
            (deployment_not_found(), 404, "DeploymentNotFound"),
            (internal_error(), 500, "InternalServerError"),
            (engine_overloaded(), 503, "ServiceUnavailable"),
            (content_filtered(), 400, "content_filter"),
            (timeout(), 408, "Timeout"),
            (permission_denied(), 403, "PermissionDenied"),
        ] {
            assert_eq!(err.status, status);
            let body = body(&err);
            assert_eq!(body["error"]["code"], code);
            assert!(
                body["error"]["message"]
                    .as_str()
                    .is_some_and(|m| !m.is_empty())
            );
        }
        assert_eq!(
            body(&content_filtered())["error"]["innererror"]["code"],
            "ResponsibleAIPolicyViolation"
        );
    }

    #[test]
    fn rate_limit_message_names_limit_and_wait() {
        let tokens = body(&rate_limited("2024-10-21", LimitKind::Tokens, Some("17")));
        let message = tokens["error"]["message"].as_str().unwrap_or("");
        assert!(message.contains("API version 2024-10-21"));
        assert!(message.contains("exceeded token rate limit"));
        assert!(message.contains("Please retry after 17 seconds."));
        let later = body(&rate_limited("v1", LimitKind::Tokens, None));
        let later = later["error"]["message"].as_str().unwrap_or("");
        assert!(later.contains("Please retry later.") && !later.contains("retry after"));
        let calls = body(&rate_limited("v1", LimitKind::Requests, Some("1")));
        assert!(
            calls["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("exceeded call rate limit"))
        );
    }
}
