//! Live progress on stderr: indicatif bars when stderr is a terminal (one line for the run, one
//! per endpoint), plain periodic log lines otherwise.
//!
//! Log lines must print above the bars, never through them: [`ProgressWriter`] is the
//! `tracing-subscriber` writer that suspends the bars while a log line is written. The figures
//! are formatted by plain functions ([`run_line`], [`endpoint_line`]) so they are tested with
//! exact values.

use std::io::{self, Write};
use std::time::{Duration, Instant, SystemTime};

use aoai_blaster::{EndpointReport, EndpointState};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tracing_subscriber::fmt::MakeWriter;

/// The figures of a run at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct ProgressSnapshot {
    /// Input lines dealt with (answered, rejected, skipped, blank).
    pub(crate) done: u64,
    /// Input lines in the file, once counted.
    pub(crate) total: Option<u64>,
    /// Jobs answered with a 2xx.
    pub(crate) succeeded: u64,
    /// Jobs that failed for good.
    pub(crate) failed: u64,
    /// Input lines rejected.
    pub(crate) invalid: u64,
    /// Lines skipped because the output already answers them.
    pub(crate) skipped: u64,
    /// Jobs submitted and not finished.
    pub(crate) in_flight: u64,
    /// Attempts answered with 429.
    pub(crate) rate_limited: u64,
    /// Attempts beyond each job's first.
    pub(crate) retries: u64,
    /// Answered tokens (prompt + completion).
    pub(crate) tokens: u64,
    /// Time since the run started.
    pub(crate) elapsed: Duration,
    /// Each endpoint's state and counts, as the blaster reports them.
    pub(crate) endpoints: Vec<EndpointReport>,
}

impl ProgressSnapshot {
    /// Lines dealt with per second.
    pub(crate) fn rate(&self) -> f64 {
        per_second(self.done, self.elapsed)
    }

    /// Answered tokens per minute.
    pub(crate) fn tokens_per_minute(&self) -> f64 {
        per_second(self.tokens, self.elapsed) * 60.0
    }

    /// Time left at the current rate, once the total is known and the rate is not zero.
    pub(crate) fn eta(&self) -> Option<Duration> {
        let total = self.total?;
        let rate = self.rate();
        if rate <= 0.0 {
            return None;
        }
        let left = total.saturating_sub(self.done) as f64;
        Some(Duration::from_secs_f64(left / rate))
    }
}

fn per_second(count: u64, over: Duration) -> f64 {
    if over.is_zero() {
        0.0
    } else {
        count as f64 / over.as_secs_f64()
    }
}

fn short_duration(duration: Duration) -> String {
    let seconds = duration.as_secs();
    if seconds >= 3600 {
        format!("{}h{:02}m", seconds / 3600, (seconds % 3600) / 60)
    } else if seconds >= 60 {
        format!("{}m{:02}s", seconds / 60, seconds % 60)
    } else if duration < Duration::from_secs(10) && !duration.is_zero() {
        format!("{:.1}s", duration.as_secs_f64())
    } else {
        format!("{seconds}s")
    }
}

/// The run's position: lines done, rate and ETA (the bar's line).
pub(crate) fn position_line(snapshot: &ProgressSnapshot) -> String {
    let done = match snapshot.total {
        Some(total) => format!("{}/{total} lines", snapshot.done),
        None => format!("{} lines", snapshot.done),
    };
    let eta = snapshot
        .eta()
        .map_or_else(|| "-".to_owned(), short_duration);
    format!("{done} | {:.1}/s | ETA {eta}", snapshot.rate())
}

/// The run's counts: outcomes, in flight, 429s, retries, tokens per minute.
pub(crate) fn counts_line(snapshot: &ProgressSnapshot) -> String {
    format!(
        "ok {} failed {} invalid {} skipped {} | in flight {} | 429s {} | retries {} | {:.0} tokens/min",
        snapshot.succeeded,
        snapshot.failed,
        snapshot.invalid,
        snapshot.skipped,
        snapshot.in_flight,
        snapshot.rate_limited,
        snapshot.retries,
        snapshot.tokens_per_minute(),
    )
}

/// The run's progress in one line (for plain log lines).
pub(crate) fn run_line(snapshot: &ProgressSnapshot) -> String {
    format!("{} | {}", position_line(snapshot), counts_line(snapshot))
}

/// One endpoint's status in one line, e.g. `flaky  cooling for 1.5s | in flight 0 | ...`.
pub(crate) fn endpoint_line(endpoint: &EndpointReport, now: SystemTime) -> String {
    let state = match (endpoint.state, endpoint.cooling_until) {
        (EndpointState::Cooling, Some(until)) => {
            let left = until.duration_since(now).unwrap_or_default();
            format!("cooling for {}", short_duration(left))
        }
        (EndpointState::Disabled, until) => {
            let reason = endpoint
                .disabled_reason
                .as_deref()
                .unwrap_or("no reason given");
            match until.and_then(|until| until.duration_since(now).ok()) {
                Some(left) => format!("disabled for {}: {reason}", short_duration(left)),
                None => format!("disabled: {reason}"),
            }
        }
        (state, _) => state.as_str().to_owned(),
    };
    format!(
        "{:<16} {state} | in flight {} | requests {} | ok {} | 429s {}",
        endpoint.name,
        endpoint.in_flight,
        endpoint.counts.requests,
        endpoint.counts.successes,
        endpoint.counts.rate_limited
    )
}

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProgressMode {
    /// indicatif bars on stderr (stderr is a terminal).
    Bars,
    /// A log line every `interval` (stderr is not a terminal).
    Plain {
        /// Time between lines.
        interval: Duration,
    },
}

impl ProgressMode {
    /// Bars when stderr is a terminal, otherwise plain lines every `interval`.
    pub(crate) fn detect(interval: Duration) -> ProgressMode {
        use std::io::IsTerminal;
        if io::stderr().is_terminal() {
            ProgressMode::Bars
        } else {
            ProgressMode::Plain { interval }
        }
    }

    /// The bar container for this mode (drawing nothing in plain mode).
    pub(crate) fn multi(self) -> MultiProgress {
        match self {
            ProgressMode::Bars => MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
            ProgressMode::Plain { .. } => {
                MultiProgress::with_draw_target(ProgressDrawTarget::hidden())
            }
        }
    }
}

/// The live display of one run.
#[derive(Debug)]
pub(crate) struct ProgressDisplay {
    mode: ProgressMode,
    multi: MultiProgress,
    main: ProgressBar,
    counts: ProgressBar,
    endpoints: Vec<ProgressBar>,
    last_plain: Option<Instant>,
}

impl ProgressDisplay {
    /// A display in `multi` (from [`ProgressMode::multi`]) with one line per endpoint.
    pub(crate) fn new(
        mode: ProgressMode,
        multi: MultiProgress,
        endpoints: usize,
    ) -> ProgressDisplay {
        let main = multi.add(ProgressBar::no_length());
        main.set_style(spinner_style());
        main.enable_steady_tick(Duration::from_millis(200));
        let line_style =
            ProgressStyle::with_template("  {msg}").unwrap_or_else(|_| spinner_style());
        let counts = multi.add(ProgressBar::no_length());
        counts.set_style(line_style.clone());
        let endpoints = (0..endpoints)
            .map(|_| {
                let bar = multi.add(ProgressBar::no_length());
                bar.set_style(line_style.clone());
                bar
            })
            .collect();
        ProgressDisplay {
            mode,
            multi,
            main,
            counts,
            endpoints,
            last_plain: None,
        }
    }

    /// Shows `snapshot`. In plain mode, logs a line when `interval` has passed since the last.
    pub(crate) fn update(&mut self, snapshot: &ProgressSnapshot, now: Instant) {
        match self.mode {
            ProgressMode::Bars => {
                if let Some(total) = snapshot.total
                    && self.main.length() != Some(total)
                {
                    self.main.set_length(total);
                    self.main.set_style(bar_style());
                }
                self.main.set_position(snapshot.done);
                self.main.set_message(position_line(snapshot));
                self.counts.set_message(counts_line(snapshot));
                let wall = SystemTime::now();
                for (bar, endpoint) in self.endpoints.iter().zip(&snapshot.endpoints) {
                    bar.set_message(endpoint_line(endpoint, wall));
                }
            }
            ProgressMode::Plain { interval } => {
                let due = self
                    .last_plain
                    .is_none_or(|last| now.saturating_duration_since(last) >= interval);
                if due {
                    self.last_plain = Some(now);
                    self.log_plain(snapshot);
                }
            }
        }
    }

    fn log_plain(&self, snapshot: &ProgressSnapshot) {
        let wall = SystemTime::now();
        let endpoints: Vec<String> = snapshot
            .endpoints
            .iter()
            .map(|endpoint| endpoint_line(endpoint, wall))
            .collect();
        tracing::info!(
            target: "aoai_blaster_cli::progress",
            "{} || {}",
            run_line(snapshot),
            endpoints.join(" || ")
        );
    }

    /// Removes the bars (call before printing the summary).
    pub(crate) fn finish(&self) {
        self.main.finish_and_clear();
        self.counts.finish_and_clear();
        for bar in &self.endpoints {
            bar.finish_and_clear();
        }
        let _ = self.multi.clear();
    }
}

fn spinner_style() -> ProgressStyle {
    ProgressStyle::with_template("{spinner} {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_spinner())
}

fn bar_style() -> ProgressStyle {
    ProgressStyle::with_template("{spinner} [{bar:30}] {percent:>3}% {msg}")
        .map(|style| style.progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_bar())
}

/// A `tracing-subscriber` writer that prints each log line to stderr above the progress bars.
#[derive(Debug, Clone)]
pub(crate) struct ProgressWriter {
    multi: MultiProgress,
}

impl ProgressWriter {
    /// Writes through `multi`'s suspension.
    pub(crate) fn new(multi: MultiProgress) -> ProgressWriter {
        ProgressWriter { multi }
    }
}

/// The per-event writer of [`ProgressWriter`].
#[derive(Debug)]
pub(crate) struct SuspendingStderr {
    multi: MultiProgress,
}

impl Write for SuspendingStderr {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.multi.suspend(|| io::stderr().lock().write_all(buf))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}

impl<'a> MakeWriter<'a> for ProgressWriter {
    type Writer = SuspendingStderr;

    fn make_writer(&'a self) -> Self::Writer {
        SuspendingStderr {
            multi: self.multi.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aoai_blaster::core::scheduler::EndpointCounters;

    #[test]
    fn the_module_example_holds() {
        use std::time::Duration;

        let snapshot = ProgressSnapshot {
            done: 50,
            total: Some(100),
            succeeded: 48,
            failed: 2,
            tokens: 6_000,
            elapsed: Duration::from_secs(10),
            ..Default::default()
        };
        assert_eq!(
            run_line(&snapshot),
            "50/100 lines | 5.0/s | ETA 10s | ok 48 failed 2 invalid 0 skipped 0 | in flight 0 | \
             429s 0 | retries 0 | 36000 tokens/min"
        );
    }

    #[test]
    fn eta_needs_a_total_and_a_rate() {
        let mut snapshot = ProgressSnapshot {
            done: 30,
            elapsed: Duration::from_secs(3),
            ..Default::default()
        };
        assert_eq!(snapshot.eta(), None);
        snapshot.total = Some(90);
        assert_eq!(snapshot.eta(), Some(Duration::from_secs(6)));
        snapshot.elapsed = Duration::ZERO;
        assert_eq!(snapshot.eta(), None);
        assert_eq!(snapshot.tokens_per_minute(), 0.0);
    }

    #[test]
    fn run_line_without_total() {
        let snapshot = ProgressSnapshot {
            done: 7,
            in_flight: 3,
            rate_limited: 2,
            retries: 4,
            elapsed: Duration::from_secs(2),
            ..Default::default()
        };
        assert_eq!(
            run_line(&snapshot),
            "7 lines | 3.5/s | ETA - | ok 0 failed 0 invalid 0 skipped 0 | in flight 3 | \
             429s 2 | retries 4 | 0 tokens/min"
        );
    }

    #[test]
    fn endpoint_lines_show_state_and_why() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let base = EndpointReport {
            name: "east".into(),
            state: EndpointState::Healthy,
            in_flight: 2,
            counts: EndpointCounters {
                requests: 10,
                successes: 9,
                rate_limited: 1,
                ..Default::default()
            },
            ..Default::default()
        };
        assert_eq!(
            endpoint_line(&base, now),
            "east             healthy | in flight 2 | requests 10 | ok 9 | 429s 1"
        );
        let cooling = EndpointReport {
            state: EndpointState::Cooling,
            cooling_until: Some(now + Duration::from_millis(1500)),
            ..base.clone()
        };
        assert!(endpoint_line(&cooling, now).contains("cooling for 1.5s"));
        let disabled = EndpointReport {
            state: EndpointState::Disabled,
            disabled_reason: Some("HTTP 401: bad key".into()),
            ..base.clone()
        };
        assert!(endpoint_line(&disabled, now).contains("disabled: HTTP 401: bad key"));
        let timed = EndpointReport {
            cooling_until: Some(now + Duration::from_secs(125)),
            ..disabled
        };
        assert!(
            endpoint_line(&timed, now).contains("disabled for 2m05s: HTTP 401: bad key"),
            "{}",
            endpoint_line(&timed, now)
        );
    }

    #[test]
    fn short_durations_pick_a_unit() {
        assert_eq!(short_duration(Duration::from_millis(2500)), "2.5s");
        assert_eq!(short_duration(Duration::from_secs(42)), "42s");
        assert_eq!(short_duration(Duration::from_secs(3 * 3600 + 120)), "3h02m");
        assert_eq!(short_duration(Duration::ZERO), "0s");
    }

    #[test]
    fn plain_mode_draws_no_bars() {
        let mode = ProgressMode::Plain {
            interval: Duration::from_secs(5),
        };
        let multi = mode.multi();
        assert!(multi.is_hidden());
        let mut display = ProgressDisplay::new(mode, multi, 2);
        let start = Instant::now();
        display.update(&ProgressSnapshot::default(), start);
        assert_eq!(display.last_plain, Some(start));
        display.update(&ProgressSnapshot::default(), start + Duration::from_secs(1));
        assert_eq!(display.last_plain, Some(start), "not due yet");
        display.update(&ProgressSnapshot::default(), start + Duration::from_secs(5));
        assert_eq!(display.last_plain, Some(start + Duration::from_secs(5)));
        display.finish();
    }
}
