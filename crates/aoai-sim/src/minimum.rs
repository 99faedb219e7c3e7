//! The theoretical minimum of a batch: the makespan of an ideal client that knows every
//! deployment's windows and charges exactly, computed by the simulator's own rule (the same
//! [`DeploymentLimiter`] and [`DeploymentSpec::charge`] the server uses), for every accounting
//! mode.

use std::time::Duration;

use serde_json::Value;

use crate::config::{DeploymentSpec, SimConfig};
use crate::content::completion_length;
use crate::quota::DeploymentLimiter;

/// One request of a batch, as far as the quota and the latency see it.
#[derive(Debug, Clone, PartialEq)]
pub struct MinimumJob {
    /// The `messages` sent.
    pub messages: Vec<Value>,
    /// `max_completion_tokens` / `max_tokens`; `None`: the deployment's `default_max_tokens`.
    pub max_tokens: Option<u64>,
    /// `n` (1 by default).
    pub n: u64,
    /// `best_of`, if sent.
    pub best_of: Option<u64>,
}

impl MinimumJob {
    /// A job with `n` 1 and no `best_of`.
    pub fn new(messages: Vec<Value>, max_tokens: Option<u64>) -> Self {
        MinimumJob {
            messages,
            max_tokens,
            n: 1,
            best_of: None,
        }
    }
}

/// The latency the simulator adds to a plain (non-streamed) reply of `job` on `spec`, without
/// jitter: `ttft_ms + per_token_ms × completion tokens`.
pub fn reply_latency(spec: &DeploymentSpec, job: &MinimumJob) -> Duration {
    let (tokens, _) = completion_length(spec.reply_tokens, job.max_tokens);
    let per_token = Duration::from_millis(spec.latency.per_token_ms);
    Duration::from_millis(spec.latency.ttft_ms)
        + per_token.saturating_mul(u32::try_from(tokens).unwrap_or(u32::MAX))
}

/// The makespan of `jobs` on `config`'s deployments for an ideal client that starts at the
/// simulator's start (time 0) and knows each deployment's limits, window kind, window lengths
/// and charge rule exactly; `None` when some job can never be admitted anywhere (its charge
/// exceeds every standard deployment's TPM).
///
/// The client's rule: at time 0, and then at each instant some usage leaves a window (a fixed
/// window turns, or an admission slides out of a sliding one), it offers the waiting jobs, in
/// order, to each deployment, largest TPM first (ties in config order); a deployment takes every
/// job its limiter admits at that instant (first fit: a job too large for the tokens left is
/// skipped, smaller ones after it may still go) until its request window is full. A job ends
/// [`reply_latency`] after it is sent; the makespan is the last end. Faults, outages and jitter
/// are ignored (the minimum assumes none).
///
/// ```
/// use std::time::Duration;
/// use aoai_sim::{DeploymentSpec, LatencySpec, MinimumJob, SimConfig, minimum_makespan};
///
/// // 1,000 TPM, 60 RPM (1 a second), 100 ms per reply; jobs charged 8 + 92 = 100 tokens.
/// let config = SimConfig::default().deployment(
///     DeploymentSpec::new("d").tpm(1_000).rpm(60).latency(LatencySpec { ttft_ms: 100, ..Default::default() }),
/// );
/// let job = MinimumJob::new(vec![serde_json::json!({"role": "user", "content": "12345678"})], Some(92));
/// // One a second: the third is sent at 2 s.
/// assert_eq!(minimum_makespan(&config, &vec![job.clone(); 3]), Some(Duration::from_millis(2_100)));
/// // Ten fill the minute's tokens: the eleventh waits for the next minute.
/// assert_eq!(minimum_makespan(&config, &vec![job; 11]), Some(Duration::from_millis(60_100)));
/// ```
pub fn minimum_makespan(config: &SimConfig, jobs: &[MinimumJob]) -> Option<Duration> {
    minimum_makespan_from(config, jobs, Duration::ZERO)
}

/// [`minimum_makespan`] for an ideal client that starts `start` after the simulator did (its
/// windows are counted from the simulator's start, so a client that starts later meets them
/// part-way), measured from `start`: what a benchmark compares a client against when the client
/// could only start once the simulator's address was known.
///
/// ```
/// use std::time::Duration;
/// use aoai_sim::{DeploymentSpec, LatencySpec, MinimumJob, SimConfig, minimum_makespan_from};
///
/// // 60 RPM in 1 s windows, 100 ms per reply.
/// let latency = LatencySpec { ttft_ms: 100, per_token_ms: 0, jitter_ms: 0 };
/// let config = SimConfig::default()
///     .deployment(DeploymentSpec::new("d").tpm(100_000).rpm(60).latency(latency));
/// let job = MinimumJob::new(vec![serde_json::json!({"role": "user", "content": "hi"})], Some(1));
/// // Started 0.4 s into a window, the second job waits 0.6 s for the next one.
/// let from = minimum_makespan_from(&config, &vec![job; 2], Duration::from_millis(400));
/// assert_eq!(from, Some(Duration::from_millis(600 + 100)));
/// ```
pub fn minimum_makespan_from(
    config: &SimConfig,
    jobs: &[MinimumJob],
    start: Duration,
) -> Option<Duration> {
    let mut order: Vec<&DeploymentSpec> = config.deployments.iter().collect();
    order.sort_by_key(|spec| std::cmp::Reverse(spec.tpm));
    let mut limiters: Vec<DeploymentLimiter> = order
        .iter()
        .map(|spec| DeploymentLimiter::new(spec.limits(config)))
        .collect();
    let charges: Vec<Vec<u64>> = order
        .iter()
        .map(|spec| {
            jobs.iter()
                .map(|job| spec.charge(&job.messages, job.max_tokens, job.n, job.best_of))
                .collect()
        })
        .collect();
    let mut waiting: Vec<usize> = (0..jobs.len()).collect();
    let mut end = start;
    let mut now = start;
    while !waiting.is_empty() {
        for (d, spec) in order.iter().enumerate() {
            let limiter = &mut limiters[d];
            let mut index = 0;
            while index < waiting.len() {
                let job = waiting[index];
                match limiter.check(now, charges[d][job]) {
                    Ok(_) => {
                        end = end.max(now + reply_latency(spec, &jobs[job]));
                        waiting.remove(index);
                    }
                    Err(rejected) if rejected.remaining_requests == Some(0) => break,
                    Err(_) => index += 1,
                }
            }
        }
        if waiting.is_empty() {
            break;
        }
        now = limiters
            .iter_mut()
            .filter_map(|limiter| limiter.next_release(now))
            .min()?;
    }
    Some(end - start)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{LatencySpec, QuotaWindow, RpmWindow, TokenCharge};
    use serde_json::json;

    fn ms(millis: u64) -> Duration {
        Duration::from_millis(millis)
    }

    /// A job of `chars` characters in one message: prompt estimate 3 + ⌈chars/4⌉ + 3.
    fn job(chars: usize, max_tokens: u64) -> MinimumJob {
        MinimumJob::new(
            vec![json!({"role": "user", "content": "x".repeat(chars)})],
            Some(max_tokens),
        )
    }

    fn latency(ttft_ms: u64) -> LatencySpec {
        LatencySpec {
            ttft_ms,
            ..LatencySpec::default()
        }
    }

    fn one(spec: DeploymentSpec) -> SimConfig {
        SimConfig::default().deployment(spec)
    }

    #[test]
    fn an_empty_batch_takes_no_time() {
        assert_eq!(
            minimum_makespan(&one(DeploymentSpec::new("d")), &[]),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn latency_follows_the_completion_length() {
        let spec = DeploymentSpec::new("d")
            .reply_tokens(40)
            .latency(LatencySpec {
                ttft_ms: 100,
                per_token_ms: 2,
                jitter_ms: 50,
            });
        assert_eq!(reply_latency(&spec, &job(4, 10)), ms(120));
        assert_eq!(reply_latency(&spec, &job(4, 1_000)), ms(180));
    }

    #[test]
    fn fixed_one_second_request_windows() {
        // 120 RPM: 2 a second. 5 jobs: sent at 0, 0, 1, 1, 2 s.
        let config = one(DeploymentSpec::new("d")
            .tpm(1_000_000)
            .rpm(120)
            .latency(latency(50)));
        assert_eq!(
            minimum_makespan(&config, &vec![job(8, 10); 5]),
            Some(ms(2_050))
        );
    }

    #[test]
    fn a_later_start_meets_the_windows_part_way() {
        // 120 RPM, 2 a second, windows from the simulator's start. From 2.5 s: 2 jobs at 2.5 s,
        // 2 at 3 s, 1 at 4 s; measured from 2.5 s.
        let config = one(DeploymentSpec::new("d")
            .tpm(1_000_000)
            .rpm(120)
            .latency(latency(50)));
        let jobs = vec![job(8, 10); 5];
        assert_eq!(
            minimum_makespan_from(&config, &jobs, ms(2_500)),
            Some(ms(1_550))
        );
        assert_eq!(
            minimum_makespan_from(&config, &jobs, Duration::ZERO),
            minimum_makespan(&config, &jobs)
        );
    }

    #[test]
    fn ten_and_sixty_second_request_windows_allow_bursts() {
        // 120 RPM in 10 s windows: 20 at once, the 21st at 10 s.
        let ten = one(DeploymentSpec::new("d")
            .tpm(1_000_000)
            .rpm(120)
            .rpm_window(RpmWindow::TenSeconds));
        assert_eq!(minimum_makespan(&ten, &vec![job(8, 10); 20]), Some(ms(0)));
        assert_eq!(
            minimum_makespan(&ten, &vec![job(8, 10); 21]),
            Some(ms(10_000))
        );
        // 120 RPM in 60 s windows: 120 at once, the 121st at 60 s.
        let sixty = one(DeploymentSpec::new("d")
            .tpm(1_000_000)
            .rpm(120)
            .rpm_window(RpmWindow::SixtySeconds));
        assert_eq!(
            minimum_makespan(&sixty, &vec![job(8, 10); 121]),
            Some(ms(60_000))
        );
        // The simulator-wide window applies when the deployment has none.
        let global = SimConfig {
            rpm_window: RpmWindow::TenSeconds,
            ..one(DeploymentSpec::new("d").tpm(1_000_000).rpm(120))
        };
        assert_eq!(
            minimum_makespan(&global, &vec![job(8, 10); 21]),
            Some(ms(10_000))
        );
    }

    #[test]
    fn each_charge_rule_changes_what_fits_in_a_minute() {
        // 40 characters, max_tokens 50. prompt_plus_max: 3 + 10 + 3 + 50 = 66;
        // chars_plus_max: 10 + 50 = 60; max_only: 50. 600 TPM: 9, 10 and 12 jobs a minute.
        let spec = DeploymentSpec::new("d").tpm(600).rpm(1_000_000);
        let jobs = vec![job(40, 50); 12];
        let with = |charge| minimum_makespan(&one(spec.clone().token_charge(charge)), &jobs);
        assert_eq!(with(TokenCharge::MaxOnly), Some(ms(0)));
        assert_eq!(with(TokenCharge::CharsPlusMax), Some(ms(60_000)));
        assert_eq!(with(TokenCharge::PromptPlusMax), Some(ms(60_000)));
        let jobs = vec![job(40, 50); 19];
        let with = |charge| minimum_makespan(&one(spec.clone().token_charge(charge)), &jobs);
        assert_eq!(with(TokenCharge::PromptPlusMax), Some(ms(120_000)));
        assert_eq!(with(TokenCharge::CharsPlusMax), Some(ms(60_000)));
    }

    #[test]
    fn a_fixed_minute_frees_everything_when_it_turns_a_sliding_one_admission_by_admission() {
        // 200 TPM, 1 request per 10 s window; jobs of 100, 100 and 200 tokens.
        let spec = DeploymentSpec::new("d")
            .tpm(200)
            .rpm(6)
            .rpm_window(RpmWindow::TenSeconds);
        let jobs = vec![job(8, 92), job(8, 92), job(8, 192)];
        // Fixed: 0 s, 10 s, then the 200 at 60 s, when the minute turns.
        assert_eq!(
            minimum_makespan(&one(spec.clone()), &jobs),
            Some(ms(60_000))
        );
        // Sliding: at 60 s only the first 100 has slid out; the 200 waits for 70 s.
        let sliding = spec.window(QuotaWindow::Sliding);
        assert_eq!(minimum_makespan(&one(sliding), &jobs), Some(ms(70_000)));
    }

    #[test]
    fn a_burst_from_the_start_is_the_same_under_both_window_kinds() {
        // 2 per 10 s window: 0, 0, 10, 10, 20 s either way.
        let spec = DeploymentSpec::new("d")
            .tpm(1_000_000)
            .rpm(12)
            .rpm_window(RpmWindow::TenSeconds);
        let jobs = vec![job(8, 10); 5];
        assert_eq!(
            minimum_makespan(&one(spec.clone()), &jobs),
            Some(ms(20_000))
        );
        let sliding = spec.window(QuotaWindow::Sliding);
        assert_eq!(minimum_makespan(&one(sliding), &jobs), Some(ms(20_000)));
    }

    #[test]
    fn larger_deployments_are_offered_jobs_first() {
        // big: 2 a second, 500 ms; small: 1 a second, 10 ms. 3 jobs at 0 s: 2 on big, 1 on small.
        let small = DeploymentSpec::new("small").tpm(10_000).rpm(60);
        let big = DeploymentSpec::new("big").tpm(20_000).rpm(120);
        let config = SimConfig::default()
            .deployment(small.latency(latency(10)))
            .deployment(big.latency(latency(500)));
        assert_eq!(
            minimum_makespan(&config, &vec![job(8, 10); 3]),
            Some(ms(500))
        );
        // A fourth waits for 1 s; big takes it: 1.5 s.
        assert_eq!(
            minimum_makespan(&config, &vec![job(8, 10); 4]),
            Some(ms(1_500))
        );
    }

    #[test]
    fn a_large_mixed_batch_stays_between_its_bounds_in_every_mode() {
        // Three deployments like the quota benchmark's, 3,000 jobs of mixed sizes.
        let jobs: Vec<MinimumJob> = (0..3_000u64)
            .map(|i| {
                job(
                    40 + (i * 37 % 2_000) as usize,
                    [16, 64, 128, 256, 512][(i % 5) as usize],
                )
            })
            .collect();
        for window in [QuotaWindow::Fixed, QuotaWindow::Sliding] {
            for charge in [
                TokenCharge::PromptPlusMax,
                TokenCharge::MaxOnly,
                TokenCharge::CharsPlusMax,
            ] {
                let config = [300_000, 150_000, 75_000].into_iter().fold(
                    SimConfig::default(),
                    |config, tpm| {
                        config.deployment(
                            DeploymentSpec::new(format!("d{tpm}"))
                                .tpm(tpm)
                                .token_charge(charge)
                                .window(window)
                                .latency(latency(40)),
                        )
                    },
                );
                let charged: u64 = jobs
                    .iter()
                    .map(|job| config.deployments[0].charge(&job.messages, job.max_tokens, 1, None))
                    .sum();
                let minutes_of_tokens = charged as f64 / 525_000.0;
                // 3,150 RPM: the requests alone need 3,000 / 52.5 per second.
                let seconds_of_requests = 3_000.0 / (3_150.0 / 60.0);
                let makespan = minimum_makespan(&config, &jobs)
                    .unwrap_or_else(|| panic!("{window:?} {charge:?}: no minimum"));
                let secs = makespan.as_secs_f64();
                let lower =
                    (60.0 * (minutes_of_tokens.ceil() - 1.0)).max(seconds_of_requests - 1.0);
                assert!(secs >= lower, "{window:?} {charge:?}: {secs} < {lower}");
                assert!(
                    secs <= 60.0 * (minutes_of_tokens.ceil() + 1.0) + seconds_of_requests,
                    "{window:?} {charge:?}: {secs}"
                );
            }
        }
    }

    #[test]
    fn a_job_no_deployment_can_take_has_no_minimum() {
        let config = one(DeploymentSpec::new("d").tpm(100).rpm(60));
        assert_eq!(
            minimum_makespan(&config, &[job(8, 10), job(8, 1_000)]),
            None
        );
        // A provisioned deployment takes it while its minute is not over 100 %.
        let ptu = one(DeploymentSpec::new("d").tpm(100).provisioned());
        assert_eq!(
            minimum_makespan(&ptu, &[job(8, 1_000), job(8, 10)]),
            Some(ms(60_000))
        );
    }
}
