//! A finished job as an output line: a completion, Azure's final error reply, or an error with
//! no reply, each with what every attempt met.

use aoai_blaster::core::retry::{AttemptKind, AttemptRecord};
use aoai_blaster::{ChatResult, JobError, JobErrorKind};
use serde_json::{Value, json};

use super::output::OutputLine;
use crate::summary::JobTally;

/// What a job's result turns into.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// A line to write, and what it adds to the summary.
    Line(Box<OutputLine>, JobTally),
    /// The job did not finish (the blaster was stopping): no line, so it runs again next time.
    Unfinished,
}

/// The name of an attempt's kind in output lines.
pub fn kind_name(kind: AttemptKind) -> &'static str {
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
pub fn attempts_json(attempts: &[AttemptRecord]) -> Vec<Value> {
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
pub fn answer_for(
    line_id: String,
    custom_id: String,
    result: &Result<ChatResult, JobError>,
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
            let body = serde_json::to_value(&result.completion).unwrap_or_else(
                |error| json!({"error": {"code": "unserializable", "message": error.to_string()}}),
            );
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
                    OutputLine::answer(
                        line_id,
                        custom_id,
                        reply.status,
                        None,
                        json!({"error": inner}),
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
