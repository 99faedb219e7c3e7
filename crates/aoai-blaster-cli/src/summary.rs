//! The figures of a run: counted per job as results arrive, printed at the end and written with
//! `--summary-json`.

use std::fmt::Write as _;
use std::time::Duration;

use aoai_blaster::{EndpointReport, EndpointState, QuotaSharing};
use serde::ser::SerializeStruct;
use serde::{Serialize, Serializer};

use crate::redis_use::RedisFigures;

/// Exit status: every job succeeded.
pub(crate) const EXIT_OK: u8 = 0;
/// Exit status: some jobs failed or some input lines were invalid.
pub(crate) const EXIT_SOME_FAILED: u8 = 1;
/// Exit status: bad usage, or a config, input or output file that cannot be used.
pub(crate) const EXIT_USAGE: u8 = 2;
/// Exit status: interrupted (SIGINT/SIGTERM).
pub(crate) const EXIT_INTERRUPTED: u8 = 130;

/// What one finished job adds to the summary.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct JobTally {
    /// Answered with a 2xx reply.
    pub(crate) succeeded: bool,
    /// Failed with a final HTTP error reply (as opposed to no reply at all).
    pub(crate) http_error: bool,
    /// Attempts sent (0 when it failed before any was sent).
    pub(crate) attempts: u32,
    /// Of those, attempts answered with 429.
    pub(crate) rate_limited: u32,
    /// Prompt tokens of the answer.
    pub(crate) prompt_tokens: u64,
    /// Completion tokens of the answer.
    pub(crate) completion_tokens: u64,
}

/// One endpoint's figures at the end of the run: the blaster's report, and the quota the config
/// gives the deployment.
///
/// Its JSON (in `--summary-json`) keeps the report's name, state, reason and counts, the mean
/// latency in milliseconds (`mean_latency_ms`), `tpm_limit`, and with `shared:` how the quota
/// was paced at the end (`shared_quota`: `shared` or `local`, else null) and for how long it
/// was paced locally because Redis was away (`quota_local_secs`); in-flight and cooldown
/// figures mean nothing once the run is over and are left out.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct EndpointSummary {
    /// The endpoint's state and counts when the run ended.
    pub(crate) report: EndpointReport,
    /// The configured `tpm_limit`, if any.
    pub(crate) tpm_limit: Option<u64>,
}

impl Serialize for EndpointSummary {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let (report, counts) = (&self.report, &self.report.counts);
        let mut json = serializer.serialize_struct("EndpointSummary", 15)?;
        json.serialize_field("name", &report.name)?;
        json.serialize_field("state", &report.state)?;
        json.serialize_field("disabled_reason", &report.disabled_reason)?;
        json.serialize_field("requests", &counts.requests)?;
        json.serialize_field("successes", &counts.successes)?;
        json.serialize_field("rate_limited", &counts.rate_limited)?;
        json.serialize_field("timeouts", &counts.timeouts)?;
        json.serialize_field("errors", &counts.errors)?;
        json.serialize_field("stale_retries", &counts.stale_retries)?;
        json.serialize_field("prompt_tokens", &counts.prompt_tokens)?;
        json.serialize_field("completion_tokens", &counts.completion_tokens)?;
        json.serialize_field("mean_latency_ms", &self.mean_latency_ms())?;
        json.serialize_field("tpm_limit", &self.tpm_limit)?;
        json.serialize_field("shared_quota", &report.shared_quota)?;
        let local = report.quota_local_for.map(|d| d.as_secs_f64());
        json.serialize_field("quota_local_secs", &local)?;
        json.end()
    }
}

impl EndpointSummary {
    /// Mean duration of answered attempts, in milliseconds.
    pub(crate) fn mean_latency_ms(&self) -> Option<f64> {
        self.report
            .mean_latency()
            .map(|latency| latency.as_secs_f64() * 1000.0)
    }

    /// Tokens (prompt + completion) per minute over `makespan`.
    pub(crate) fn tokens_per_minute(&self, makespan: Duration) -> f64 {
        let counts = &self.report.counts;
        per_minute(counts.prompt_tokens + counts.completion_tokens, makespan)
    }
}

/// The figures of one run.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub(crate) struct Summary {
    /// Non-blank input lines read.
    pub(crate) lines_read: u64,
    /// Valid lines skipped because the output file already answers their `custom_id`.
    pub(crate) skipped: u64,
    /// Of those, ids whose earlier answer is a failure (kept: run with `--retry-failed`).
    pub(crate) skipped_failed: u64,
    /// Jobs sent to the dispatcher.
    pub(crate) submitted: u64,
    /// Jobs answered with a 2xx reply.
    pub(crate) succeeded: u64,
    /// Jobs that failed for good (with or without an HTTP reply).
    pub(crate) failed: u64,
    /// Of the failed, those with a final HTTP error reply.
    pub(crate) http_errors: u64,
    /// Input lines rejected (written now or reported by an earlier run).
    pub(crate) invalid_lines: u64,
    /// Jobs submitted but not finished when the run was interrupted (they run again next time).
    pub(crate) unfinished: u64,
    /// Jobs that needed more than one attempt.
    pub(crate) retried_jobs: u64,
    /// Attempts beyond each job's first.
    pub(crate) retry_attempts: u64,
    /// Attempts answered with 429.
    pub(crate) rate_limited: u64,
    /// Prompt tokens of the answers.
    pub(crate) prompt_tokens: u64,
    /// Completion tokens of the answers.
    pub(crate) completion_tokens: u64,
    /// Wall time of the run.
    #[serde(rename = "makespan_secs", serialize_with = "seconds")]
    pub(crate) makespan: Duration,
    /// Sum of the configured `tpm_limit`s, when every deployment has one.
    pub(crate) configured_tpm: Option<u64>,
    /// The run was interrupted.
    pub(crate) interrupted: bool,
    /// Per-endpoint figures.
    pub(crate) endpoints: Vec<EndpointSummary>,
    /// The first few input lines rejected in this run (at most [`FIRST_INVALID_LINES`]).
    pub(crate) first_invalid_lines: Vec<InvalidLine>,
    /// The output file, when there is one.
    pub(crate) output: Option<String>,
    /// With `shared:`, what the shared quotas cost in Redis.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) redis: Option<RedisFigures>,
}

/// How many rejected lines the summary names.
pub(crate) const FIRST_INVALID_LINES: usize = 5;

/// A rejected input line, as the summary names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct InvalidLine {
    /// Its 1-based number in the input.
    pub(crate) line: u64,
    /// Its `error.code`.
    pub(crate) code: String,
}

fn seconds<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_f64(duration.as_secs_f64())
}

/// `count` per minute of `over`; a span under a minute counts as one minute, so a short run's
/// rate is what it did, not an extrapolation of a few seconds (a quota is per minute too).
fn per_minute(count: u64, over: Duration) -> f64 {
    if over.is_zero() {
        0.0
    } else {
        count as f64 * 60.0 / over.max(Duration::from_secs(60)).as_secs_f64()
    }
}

impl Summary {
    /// Counts one finished job.
    pub(crate) fn record_job(&mut self, job: &JobTally) {
        if job.succeeded {
            self.succeeded += 1;
        } else {
            self.failed += 1;
            self.http_errors += u64::from(job.http_error);
        }
        if job.attempts > 1 {
            self.retried_jobs += 1;
            self.retry_attempts += u64::from(job.attempts - 1);
        }
        self.rate_limited += u64::from(job.rate_limited);
        self.prompt_tokens += job.prompt_tokens;
        self.completion_tokens += job.completion_tokens;
    }

    /// Notes a rejected input line: the first few are named at the end.
    pub(crate) fn record_invalid(&mut self, line: u64, code: &str) {
        self.invalid_lines += 1;
        if self.first_invalid_lines.len() < FIRST_INVALID_LINES {
            self.first_invalid_lines.push(InvalidLine {
                line,
                code: code.to_owned(),
            });
        }
    }

    /// Jobs finished (succeeded or failed).
    pub(crate) fn finished(&self) -> u64 {
        self.succeeded + self.failed
    }

    /// Answered tokens (prompt + completion) per minute of makespan (a run under a minute
    /// counts as one).
    pub(crate) fn tokens_per_minute(&self) -> f64 {
        per_minute(self.prompt_tokens + self.completion_tokens, self.makespan)
    }

    /// Achieved tokens per minute as a percentage of the configured TPM, if every deployment
    /// has a `tpm_limit`.
    pub(crate) fn quota_use_percent(&self) -> Option<f64> {
        self.configured_tpm
            .filter(|tpm| *tpm > 0)
            .map(|tpm| self.tokens_per_minute() * 100.0 / tpm as f64)
    }

    /// The process exit status this run ends with: [`EXIT_INTERRUPTED`] when interrupted, else
    /// [`EXIT_SOME_FAILED`] when any job failed, any input line was invalid, or an id kept an
    /// earlier failed answer, else [`EXIT_OK`].
    pub(crate) fn exit_status(&self) -> u8 {
        if self.interrupted {
            EXIT_INTERRUPTED
        } else if self.failed + self.invalid_lines + self.skipped_failed > 0 {
            EXIT_SOME_FAILED
        } else {
            EXIT_OK
        }
    }

    /// The summary for a person: totals, then one row per endpoint; no line is wider than
    /// [`WIDTH`] columns, except for a long path or name that cannot be broken.
    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        self.render_totals(&mut out);
        self.render_invalid(&mut out);
        if !self.endpoints.is_empty() {
            self.render_endpoints(&mut out);
            self.render_sharing(&mut out);
        }
        if let Some(redis) = &self.redis {
            wrap_clauses(&mut out, &redis.clauses());
        }
        out
    }

    /// With `shared:`, which quotas were shared through Redis, and how long they were paced
    /// locally (1/N) because Redis was away.
    fn render_sharing(&self, out: &mut String) {
        let shared: Vec<&EndpointReport> = self
            .endpoints
            .iter()
            .map(|e| &e.report)
            .filter(|r| r.shared_quota.is_some())
            .collect();
        if shared.is_empty() {
            return;
        }
        let names: Vec<&str> = shared.iter().map(|r| r.name.as_str()).collect();
        let mut text = format!("quotas shared through Redis: {}", names.join(", "));
        let local = shared.iter().filter_map(|r| r.quota_local_for).max();
        match local {
            Some(local) if !local.is_zero() => {
                let _ = write!(
                    text,
                    "; paced locally (1/N of each quota) for {:.1}s while Redis was away",
                    local.as_secs_f64()
                );
            }
            _ => text.push_str("; Redis answered throughout"),
        }
        if shared
            .iter()
            .any(|r| r.shared_quota == Some(QuotaSharing::Local))
        {
            text.push_str(", and still away at the end");
        }
        wrap_words(out, &text, "");
    }

    /// The totals: outcomes, unfinished jobs, retries, 429s, tokens and the quota used.
    fn render_totals(&self, out: &mut String) {
        let head = format!(
            "{} in {:.1}s: {} succeeded",
            if self.interrupted {
                "Interrupted"
            } else {
                "Done"
            },
            self.makespan.as_secs_f64(),
            self.succeeded,
        );
        let skipped = format!("{} skipped (already answered)", self.skipped);
        wrap_clauses(
            out,
            &[
                head,
                format!(
                    "{} failed ({} with an HTTP error)",
                    self.failed, self.http_errors
                ),
                format!("{} invalid lines", self.invalid_lines),
                skipped,
            ],
        );
        if self.skipped_failed > 0 {
            let _ = writeln!(
                out,
                "{} of the skipped failed before: use --retry-failed",
                self.skipped_failed
            );
        }
        if self.unfinished > 0 {
            let _ = writeln!(
                out,
                "{} jobs did not finish; run the same command again to complete them",
                self.unfinished
            );
        }
        let mut rate = if self.makespan < Duration::from_secs(60) {
            format!(
                "{} tokens in a run under a minute",
                self.prompt_tokens + self.completion_tokens
            )
        } else {
            format!("{:.0} tokens/min", self.tokens_per_minute())
        };
        if let (Some(tpm), Some(percent)) = (self.configured_tpm, self.quota_use_percent()) {
            let _ = write!(rate, " ({percent:.0}% of the configured {tpm} TPM)");
        }
        wrap_clauses(
            out,
            &[
                format!(
                    "retried {} jobs ({} extra attempts)",
                    self.retried_jobs, self.retry_attempts
                ),
                format!("429s seen {}", self.rate_limited),
                format!(
                    "tokens {} in / {} out",
                    self.prompt_tokens, self.completion_tokens
                ),
                rate,
            ],
        );
    }

    /// The first invalid lines (number and code) and where to find them all.
    fn render_invalid(&self, out: &mut String) {
        if self.invalid_lines == 0 {
            return;
        }
        let shown = self.first_invalid_lines.len() as u64;
        if shown > 0 {
            let mut clauses = vec![format!(
                "Invalid lines (first {shown} of {}): line {} {}",
                self.invalid_lines,
                self.first_invalid_lines[0].line,
                self.first_invalid_lines[0].code
            )];
            clauses.extend(
                self.first_invalid_lines[1..]
                    .iter()
                    .map(|invalid| format!("line {} {}", invalid.line, invalid.code)),
            );
            wrap_clauses(out, &clauses);
        }
        if let Some(output) = &self.output {
            let _ = writeln!(
                out,
                "  each has an error line in {output}, with error.line set; all of them:\n  \
                 jq -c 'select(.error.line)' {output}"
            );
        }
    }

    /// A header, then one row per endpoint (a long name gets a line of its own).
    fn render_endpoints(&self, out: &mut String) {
        const NAME: usize = 11;
        let row = |out: &mut String, name: &str, cells: [&str; 8]| {
            let _ = writeln!(
                out,
                "{name:<NAME$} {:<8} {:>9} {:>9} {:>5} {:>4} {:>6} {:>7} {:>13}",
                cells[0], cells[1], cells[2], cells[3], cells[4], cells[5], cells[6], cells[7]
            );
        };
        row(
            out,
            "endpoint",
            [
                "state",
                "requests",
                "ok",
                "429",
                "t/o",
                "errors",
                "mean ms",
                "tokens/min",
            ],
        );
        for e in &self.endpoints {
            let rate = e.tokens_per_minute(self.makespan);
            let report = &e.report;
            let rate = match e.tpm_limit {
                Some(limit) if limit > 0 => {
                    format!("{rate:.0} ({:.0}%)", rate * 100.0 / limit as f64)
                }
                _ => format!("{rate:.0}"),
            };
            let name = if report.name.chars().count() > NAME {
                let _ = writeln!(out, "{}", report.name);
                ""
            } else {
                report.name.as_str()
            };
            let counts = &report.counts;
            row(
                out,
                name,
                [
                    report.state.as_str(),
                    &counts.requests.to_string(),
                    &counts.successes.to_string(),
                    &counts.rate_limited.to_string(),
                    &counts.timeouts.to_string(),
                    &counts.errors.to_string(),
                    &e.mean_latency_ms()
                        .map_or_else(|| "-".to_owned(), |ms| format!("{ms:.1}")),
                    &rate,
                ],
            );
            if counts.stale_retries > 0 {
                let resent = format!(
                    "{} resent on a fresh connection (the server had closed the pooled one)",
                    counts.stale_retries
                );
                wrap_words(out, &resent, "  ");
            }
            // What held it when the run ended, if jobs were left (a disable always shows).
            let held = self.unfinished > 0 || report.state == EndpointState::Disabled;
            if held && let Some(waiting) = report.waiting_for(std::time::SystemTime::now()) {
                wrap_words(out, &waiting, "  ");
            }
        }
    }
}

/// The widest line [`Summary::render`] writes.
pub(crate) const WIDTH: usize = 80;

/// Writes `clauses` joined by `, `, starting a new line (indented by two) rather than going
/// past [`WIDTH`]; a clause is never broken.
fn wrap_clauses(out: &mut String, clauses: &[String]) {
    let mut line = String::new();
    for (i, clause) in clauses.iter().enumerate() {
        let separator = if i + 1 < clauses.len() { "," } else { "" };
        if !line.is_empty() && line.len() + 1 + clause.len() + separator.len() > WIDTH {
            let _ = writeln!(out, "{line}");
            line = "  ".to_owned();
        } else if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(clause);
        line.push_str(separator);
    }
    let _ = writeln!(out, "{line}");
}

/// Writes `text` word-wrapped at [`WIDTH`], each line starting with `indent`.
fn wrap_words(out: &mut String, text: &str, indent: &str) {
    let mut line = indent.to_owned();
    for word in text.split_whitespace() {
        if line.len() > indent.len() && line.len() + 1 + word.len() > WIDTH {
            let _ = writeln!(out, "{line}");
            line = format!("{indent}  ");
        } else if line.len() > indent.len() {
            line.push(' ');
        }
        line.push_str(word);
    }
    let _ = writeln!(out, "{line}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use aoai_blaster::EndpointCounters;

    #[test]
    fn the_module_example_holds() {
        use std::time::Duration;

        let mut summary = Summary::default();
        summary.record_job(&JobTally {
            succeeded: true,
            attempts: 3,
            rate_limited: 1,
            prompt_tokens: 10,
            completion_tokens: 5,
            ..Default::default()
        });
        summary.makespan = Duration::from_secs(120);
        assert_eq!(summary.retried_jobs, 1);
        assert_eq!(summary.retry_attempts, 2);
        assert_eq!(summary.tokens_per_minute(), 7.5);
    }

    fn endpoint(name: &str, requests: u64, latency_ms: Option<f64>) -> EndpointSummary {
        EndpointSummary {
            report: EndpointReport {
                name: name.into(),
                state: EndpointState::Healthy,
                counts: EndpointCounters {
                    requests,
                    successes: requests,
                    prompt_tokens: 100,
                    completion_tokens: 20,
                    latency_total: Duration::from_secs_f64(latency_ms.unwrap_or(0.0) / 1000.0),
                    latency_count: u64::from(latency_ms.is_some()),
                    ..Default::default()
                },
                ..Default::default()
            },
            tpm_limit: Some(1_000),
        }
    }

    #[test]
    fn record_job_counts_each_kind() {
        let mut summary = Summary::default();
        summary.record_job(&JobTally {
            succeeded: true,
            attempts: 1,
            prompt_tokens: 7,
            completion_tokens: 3,
            ..Default::default()
        });
        summary.record_job(&JobTally {
            http_error: true,
            attempts: 4,
            rate_limited: 2,
            ..Default::default()
        });
        summary.record_job(&JobTally::default());
        assert_eq!(summary.succeeded, 1);
        assert_eq!(summary.failed, 2);
        assert_eq!(summary.http_errors, 1);
        assert_eq!(summary.retried_jobs, 1);
        assert_eq!(summary.retry_attempts, 3);
        assert_eq!(summary.rate_limited, 2);
        assert_eq!(summary.finished(), 3);
        assert_eq!((summary.prompt_tokens, summary.completion_tokens), (7, 3));
    }

    #[test]
    fn rates_are_per_minute_of_makespan() {
        let summary = Summary {
            prompt_tokens: 900,
            completion_tokens: 100,
            makespan: Duration::from_secs(30),
            configured_tpm: Some(4_000),
            ..Default::default()
        };
        // Under a minute: what the run did, not 30 s extrapolated.
        assert_eq!(summary.tokens_per_minute(), 1_000.0);
        assert_eq!(summary.quota_use_percent(), Some(25.0));
        assert!(
            summary
                .render()
                .contains("1000 tokens in a run under a minute (25% of the configured 4000 TPM)")
        );
        let longer = Summary {
            makespan: Duration::from_secs(120),
            ..summary.clone()
        };
        assert_eq!(longer.tokens_per_minute(), 500.0);
        assert!(!longer.render().contains("under a minute"));
        assert_eq!(Summary::default().tokens_per_minute(), 0.0);
        assert_eq!(Summary::default().quota_use_percent(), None);
    }

    #[test]
    fn exit_status_follows_the_documented_order() {
        let mut summary = Summary {
            succeeded: 3,
            ..Default::default()
        };
        assert_eq!(summary.exit_status(), EXIT_OK);
        summary.skipped_failed = 1;
        assert_eq!(summary.exit_status(), EXIT_SOME_FAILED);
        summary.skipped_failed = 0;
        summary.invalid_lines = 1;
        assert_eq!(summary.exit_status(), EXIT_SOME_FAILED);
        summary.invalid_lines = 0;
        summary.failed = 1;
        assert_eq!(summary.exit_status(), EXIT_SOME_FAILED);
        summary.interrupted = true;
        assert_eq!(summary.exit_status(), EXIT_INTERRUPTED);
    }

    #[test]
    fn json_has_seconds_and_every_figure() {
        let summary = Summary {
            succeeded: 1,
            makespan: Duration::from_millis(1500),
            endpoints: vec![endpoint("east", 1, None)],
            ..Default::default()
        };
        let json = serde_json::to_value(&summary).unwrap();
        assert_eq!(json["makespan_secs"], 1.5);
        assert_eq!(json["succeeded"], 1);
        assert_eq!(json["endpoints"][0]["name"], "east");
        assert_eq!(json["endpoints"][0]["tpm_limit"], 1000);
    }

    #[test]
    fn redis_figures_appear_only_with_shared_quotas() {
        let mut summary = Summary::default();
        let json = serde_json::to_value(&summary).unwrap();
        assert!(json.get("redis").is_none(), "{json}");
        assert!(!summary.render().contains("Redis"));
        summary.redis = Some(RedisFigures {
            calls: 12,
            job_p99_us: 250,
            ..Default::default()
        });
        let json = serde_json::to_value(&summary).unwrap();
        assert_eq!(json["redis"]["calls"], 12);
        assert_eq!(json["redis"]["job_p99_us"], 250);
        let text = summary.render();
        assert!(text.contains("Redis (shared quotas): 12 calls"), "{text}");
        assert!(text.lines().all(|l| l.chars().count() <= WIDTH), "{text}");
    }

    #[test]
    fn render_counts_stale_connection_resends_only_when_there_were_some() {
        let mut summary = Summary {
            endpoints: vec![endpoint("east", 2, None)],
            ..Default::default()
        };
        assert!(!summary.render().contains("fresh connection"));
        summary.endpoints[0].report.counts.stale_retries = 3;
        let text = summary.render();
        assert!(text.contains("3 resent on a fresh connection"), "{text}");
        assert!(text.lines().all(|l| l.chars().count() <= WIDTH), "{text}");
        let json = serde_json::to_value(&summary.endpoints[0]).unwrap();
        assert_eq!(json["stale_retries"], 3);
    }

    #[test]
    fn endpoint_json_keeps_its_field_names() {
        let json = serde_json::to_value(endpoint("east", 4, Some(12.5))).unwrap();
        let keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            [
                "completion_tokens",
                "disabled_reason",
                "errors",
                "mean_latency_ms",
                "name",
                "prompt_tokens",
                "quota_local_secs",
                "rate_limited",
                "requests",
                "shared_quota",
                "stale_retries",
                "state",
                "successes",
                "timeouts",
                "tpm_limit"
            ]
        );
        assert_eq!(json["state"], "healthy");
        assert_eq!(json["mean_latency_ms"], 12.5);
        assert_eq!(json["shared_quota"], serde_json::Value::Null);
        let mut shared = endpoint("east", 4, None);
        shared.report.shared_quota = Some(QuotaSharing::Shared);
        shared.report.quota_local_for = Some(Duration::from_millis(2_500));
        let json = serde_json::to_value(shared).unwrap();
        assert_eq!(json["shared_quota"], "shared");
        assert_eq!(json["quota_local_secs"], 2.5);
    }

    #[test]
    fn render_says_which_quotas_were_shared_and_how_long_they_were_local() {
        let shared = |name: &str, sharing: QuotaSharing, local_ms: u64| {
            let mut e = endpoint(name, 1, None);
            e.report.shared_quota = Some(sharing);
            e.report.quota_local_for = Some(Duration::from_millis(local_ms));
            e
        };
        let mut summary = Summary {
            endpoints: vec![endpoint("alone", 1, None)],
            ..Default::default()
        };
        assert!(!summary.render().contains("Redis"));
        summary.endpoints = vec![
            shared("east", QuotaSharing::Shared, 0),
            endpoint("alone", 1, None),
            shared("west", QuotaSharing::Shared, 0),
        ];
        let text = summary.render();
        assert!(
            text.contains("quotas shared through Redis: east, west; Redis answered throughout\n"),
            "{text}"
        );
        summary.endpoints = vec![shared("east", QuotaSharing::Local, 12_340)];
        let text = summary.render();
        assert!(
            text.contains(
                "quotas shared through Redis: east; paced locally (1/N of each quota) for 12.3s\n  \
                 while Redis was away, and still away at the end\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn render_shows_totals_and_one_row_per_endpoint() {
        let summary = Summary {
            succeeded: 9,
            failed: 1,
            skipped: 4,
            skipped_failed: 2,
            unfinished: 3,
            prompt_tokens: 60,
            completion_tokens: 60,
            makespan: Duration::from_secs(60),
            endpoints: vec![endpoint("east", 10, Some(12.34)), {
                let mut west = endpoint("west", 0, None);
                west.report.disabled_reason = Some("HTTP 401".into());
                west.report.state = EndpointState::Disabled;
                west
            }],
            ..Default::default()
        };
        let text = summary.render();
        assert!(
            text.starts_with("Done in 60.0s: 9 succeeded, 1 failed"),
            "{text}"
        );
        assert!(
            text.contains("2 of the skipped failed before: use --retry-failed"),
            "{text}"
        );
        assert!(text.contains("3 jobs did not finish"), "{text}");
        assert!(text.contains("120 tokens/min"), "{text}");
        assert!(!text.contains("under a minute"), "{text}");
        let rows: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("east") || l.starts_with("west"))
            .collect();
        assert_eq!(rows.len(), 2);
        assert!(rows[0].contains("12.3"), "{}", rows[0]);
        assert!(rows[0].contains("120 (12%)"), "{}", rows[0]);
        assert!(text.contains("  disabled: HTTP 401"), "{text}");
    }

    #[test]
    fn render_fits_80_columns_with_large_figures() {
        let big = 123_456_789;
        let mut summary = Summary {
            succeeded: big,
            failed: big,
            http_errors: big,
            skipped: big,
            skipped_failed: big,
            unfinished: big,
            retried_jobs: big,
            retry_attempts: big,
            rate_limited: big,
            prompt_tokens: big * 100,
            completion_tokens: big * 10,
            configured_tpm: Some(30_000_000),
            makespan: Duration::from_secs(86_400),
            interrupted: true,
            output: Some("out/results.jsonl".into()),
            endpoints: vec![endpoint("east", 12_345_678, Some(12_345.6)), {
                let mut long = endpoint("a-deployment-with-a-long-name", 3, None);
                long.report.disabled_reason = Some(
                        "HTTP 401 from https://example.openai.azure.com/: Access denied due to invalid subscription key or wrong API endpoint".into(),
                    );
                long.report.state = EndpointState::Disabled;
                long
            }],
            ..Default::default()
        };
        for line in 1..=7 {
            summary.record_invalid(line * 1_000_000, "duplicate_custom_id");
        }
        let text = summary.render();
        for line in text.lines() {
            assert!(
                line.chars().count() <= WIDTH,
                "{} columns: {line}\n{text}",
                line.chars().count()
            );
        }
        assert!(text.contains(&format!("{big} succeeded")), "{text}");
        assert!(
            text.contains("Invalid lines (first 5 of 7): line 1000000 duplicate_custom_id"),
            "{text}"
        );
        assert!(text.contains("line 5000000 duplicate_custom_id"), "{text}");
        assert!(!text.contains("line 6000000"), "{text}");
        assert!(
            text.contains("jq -c 'select(.error.line)' out/results.jsonl"),
            "{text}"
        );
        assert!(text.contains("\na-deployment-with-a-long-name\n"), "{text}");
        assert!(text.contains("  disabled: HTTP 401"), "{text}");
    }
}
