//! A finished job as an output line: its reply (a completion, embeddings, a response), Azure's
//! final error reply, or an error with no reply, each with what every attempt met.

use aoai_blaster::core::retry::{AttemptKind, AttemptRecord};
use aoai_blaster::{JobError, JobErrorKind, JobResult};
use serde_json::{Value, json};

use super::output::{OutputLine, raw_json};
use crate::summary::JobTally;

/// What a job's result turns into.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Answer {
    /// A line to write, and what it adds to the summary.
    Line(Box<OutputLine>, JobTally),
    /// The job did not finish (the blaster was stopping): no line, so it runs again next time.
    Unfinished,
}

/// The name of an attempt's kind in output lines.
pub(crate) fn kind_name(kind: AttemptKind) -> &'static str {
    match kind {
        AttemptKind::Success => "success",
        AttemptKind::RateLimited => "rate_limited",
        AttemptKind::Transient => "transient",
        AttemptKind::JobFatal => "job_fatal",
        AttemptKind::EndpointFatal => "endpoint_fatal",
        AttemptKind::Lost => "lost",
    }
}

/// Each attempt as `{"endpoint", "kind", "outcome", "elapsed_ms", "status"?}`.
pub(crate) fn attempts_json(attempts: &[AttemptRecord]) -> Vec<Value> {
    attempts
        .iter()
        .map(|attempt| {
            let mut value = json!({
                "endpoint": attempt.endpoint,
                "kind": kind_name(attempt.kind),
                "outcome": attempt.outcome,
                "elapsed_ms": (attempt.elapsed.as_secs_f64() * 1000.0).round() as u64,
            });
            if let Some(reply) = &attempt.reply {
                value["status"] = json!(reply.status);
            }
            value
        })
        .collect()
}

fn tally_attempts(attempts: &[AttemptRecord]) -> (u32, u32) {
    let count = |pred: &dyn Fn(&AttemptRecord) -> bool| {
        u32::try_from(attempts.iter().filter(|a| pred(a)).count()).unwrap_or(u32::MAX)
    };
    (
        count(&|_| true),
        count(&|a| a.kind == AttemptKind::RateLimited),
    )
}

/// The output line for `custom_id`'s result.
pub(crate) fn answer_for(
    line_id: String,
    custom_id: String,
    result: &Result<JobResult, JobError>,
) -> Answer {
    match result {
        Ok(result) => {
            let (attempts, rate_limited) = tally_attempts(&result.attempts);
            let usage = result.usage();
            let tally = JobTally {
                succeeded: true,
                http_error: false,
                attempts: attempts.max(1),
                rate_limited,
                prompt_tokens: usage.map_or(0, |u| u.prompt_tokens),
                completion_tokens: usage.map_or(0, |u| u.completion_tokens),
            };
            // The reply's own JSON text: embedding vectors pass through untouched.
            let body = result.reply.to_json().unwrap_or_else(|error| {
                raw_json(
                    &json!({"error": {"code": "unserializable", "message": error.to_string()}}),
                )
            });
            let line = OutputLine::answer(
                line_id,
                custom_id,
                200,
                result.request_id.clone(),
                body,
                attempts_json(&result.attempts),
            );
            Answer::Line(Box::new(line), tally)
        }
        Err(error) => {
            if matches!(
                error.kind,
                JobErrorKind::QueueClosed | JobErrorKind::Cancelled
            ) && error.attempts.is_empty()
            {
                return Answer::Unfinished;
            }
            let (attempts, rate_limited) = tally_attempts(&error.attempts);
            let mut tally = JobTally {
                succeeded: false,
                http_error: false,
                attempts,
                rate_limited,
                prompt_tokens: 0,
                completion_tokens: 0,
            };
            let attempts = attempts_json(&error.attempts);
            let line = match error.reply() {
                Some(reply) => {
                    tally.http_error = true;
                    let mut inner = json!({"message": reply.message});
                    if let Some(code) = &reply.code {
                        inner["code"] = json!(code);
                    }
                    let request_id = error.attempts.last().and_then(|a| a.request_id.clone());
                    OutputLine::answer(
                        line_id,
                        custom_id,
                        reply.status,
                        request_id,
                        raw_json(&json!({"error": inner})),
                        attempts,
                    )
                }
                None => OutputLine::failure(
                    line_id,
                    custom_id,
                    error.code(),
                    error.to_string(),
                    attempts,
                ),
            };
            Answer::Line(Box::new(line), tally)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use aoai_blaster::core::classify::{ApiError, AttemptOutcome, TransientKind, WaitSource};
    use aoai_blaster::core::retry::AttemptRecord;

    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn api_error(status: u16, code: &str, message: &str) -> ApiError {
        ApiError {
            status,
            code: Some(code.into()),
            message: message.into(),
        }
    }

    fn rate_limited(endpoint: &str) -> AttemptRecord {
        AttemptRecord::from_outcome(
            endpoint,
            &AttemptOutcome::RateLimited {
                wait: Duration::from_secs(2),
                source: WaitSource::RetryAfterMs,
                error: api_error(429, "429", "slow down"),
            },
            3 * MS,
        )
    }

    fn timeout(endpoint: &str) -> AttemptRecord {
        AttemptRecord::from_outcome(
            endpoint,
            &AttemptOutcome::Transient(TransientKind::Timeout("after 2s".into())),
            2000 * MS,
        )
    }

    fn completion() -> aoai_blaster::ChatCompletion {
        serde_json::from_value(json!({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello"},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15},
            "prompt_filter_results": []
        }))
        .unwrap()
    }

    fn line_and_tally(answer: Answer) -> (Value, JobTally) {
        match answer {
            Answer::Line(line, tally) => (serde_json::to_value(*line).unwrap(), tally),
            Answer::Unfinished => panic!("expected a line"),
        }
    }

    #[test]
    fn a_completion_becomes_a_200_answer_with_its_attempts() {
        let result = aoai_blaster::JobResult {
            reply: completion().into(),
            endpoint: "west".into(),
            attempts: vec![
                rate_limited("east"),
                AttemptRecord::from_outcome("west", &AttemptOutcome::Success, 40 * MS),
            ],
            request_id: Some("req-9".into()),
            queued_for: Duration::ZERO,
            upstream_time: 40 * MS,
            server_time: None,
            total_time: 50 * MS,
        };
        let (line, tally) = line_and_tally(answer_for("L1".into(), "a".into(), &Ok(result)));
        assert_eq!(line["id"], "L1");
        assert_eq!(line["custom_id"], "a");
        assert_eq!(line["error"], Value::Null);
        assert_eq!(line["response"]["status_code"], 200);
        assert_eq!(line["response"]["request_id"], "req-9");
        assert_eq!(
            line["response"]["body"]["choices"][0]["message"]["content"],
            "Hello"
        );
        assert_eq!(line["response"]["body"]["prompt_filter_results"], json!([]));
        assert_eq!(
            line["attempts"],
            json!([
                {"endpoint": "east", "kind": "rate_limited", "outcome": line["attempts"][0]["outcome"],
                 "elapsed_ms": 3, "status": 429},
                {"endpoint": "west", "kind": "success", "outcome": line["attempts"][1]["outcome"],
                 "elapsed_ms": 40}
            ])
        );
        assert_eq!(
            tally,
            JobTally {
                succeeded: true,
                http_error: false,
                attempts: 2,
                rate_limited: 1,
                prompt_tokens: 12,
                completion_tokens: 3,
            }
        );
    }

    #[test]
    fn a_final_http_error_goes_in_response_with_azures_error_body() {
        let error = JobError::new(
            JobErrorKind::Rejected(api_error(400, "content_filter", "filtered")),
            vec![
                AttemptRecord::from_outcome(
                    "east",
                    &AttemptOutcome::JobFatal(api_error(400, "content_filter", "filtered")),
                    5 * MS,
                )
                .with_request_id(Some("req-400".into())),
            ],
        );
        let (line, tally) = line_and_tally(answer_for("L2".into(), "b".into(), &Err(error)));
        assert_eq!(line["error"], Value::Null);
        assert_eq!(line["response"]["status_code"], 400);
        assert_eq!(line["response"]["request_id"], "req-400");
        assert_eq!(
            line["response"]["body"],
            json!({"error": {"code": "content_filter", "message": "filtered"}})
        );
        assert!(!tally.succeeded);
        assert!(tally.http_error);
        assert_eq!(tally.attempts, 1);
    }

    #[test]
    fn retries_exhausted_on_5xx_reports_the_last_reply() {
        let server = |endpoint: &str| {
            AttemptRecord::from_outcome(
                endpoint,
                &AttemptOutcome::Transient(TransientKind::Server(api_error(503, "503", "busy"))),
                MS,
            )
        };
        let error = JobError::new(
            JobErrorKind::RetriesExhausted,
            vec![server("east"), server("west")],
        );
        let (line, _) = line_and_tally(answer_for("L3".into(), "c".into(), &Err(error)));
        assert_eq!(line["response"]["status_code"], 503);
        assert_eq!(line["attempts"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn no_reply_gives_an_error_object_naming_every_attempt() {
        let error = JobError::new(
            JobErrorKind::RetriesExhausted,
            vec![timeout("east"), timeout("west")],
        );
        let (line, tally) = line_and_tally(answer_for("L4".into(), "d".into(), &Err(error)));
        assert_eq!(line["response"], Value::Null);
        assert_eq!(line["error"]["code"], "retries_exhausted");
        let message = line["error"]["message"].as_str().unwrap();
        assert!(message.contains("attempt 1 on 'east'"), "{message}");
        assert!(message.contains("attempt 2 on 'west'"), "{message}");
        assert_eq!(line["attempts"][1]["kind"], "transient");
        assert!(!tally.http_error);
        assert_eq!(tally.attempts, 2);
    }

    #[test]
    fn a_job_that_never_ran_because_of_shutdown_is_unfinished() {
        for kind in [JobErrorKind::QueueClosed, JobErrorKind::Cancelled] {
            let error = JobError::new(kind, Vec::new());
            assert_eq!(
                answer_for("L5".into(), "e".into(), &Err(error)),
                Answer::Unfinished
            );
        }
        let disabled = JobError::new(JobErrorKind::AllEndpointsDisabled, Vec::new());
        let (line, _) = line_and_tally(answer_for("L6".into(), "f".into(), &Err(disabled)));
        assert_eq!(line["error"]["code"], "all_endpoints_disabled");
    }
}
