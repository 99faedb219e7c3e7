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
    /// Lines this run did work for (answered or rejected now; not skipped or blank): the rates
    /// and the ETA count these.
    pub(crate) worked: u64,
    /// Jobs answered with a 2xx.
    pub(crate) succeeded: u64,
    /// Jobs that failed for good.
    pub(crate) failed: u64,
    /// Input lines rejected.
    pub(crate) invalid: u64,
    /// Lines skipped because the output already answers them.
    pub(crate) skipped: u64,
    /// Jobs handed to the blaster and not finished: waiting in its queue or on the wire.
    pub(crate) in_flight: u64,
    /// Of those, attempts on the wire (the endpoints' in-flight counts).
    pub(crate) on_the_wire: u64,
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
    /// Jobs handed to the blaster that wait in its queue (not on the wire).
    pub(crate) fn queued(&self) -> u64 {
        self.in_flight.saturating_sub(self.on_the_wire)
    }
}

/// The span rates are measured over: the last minute, or the run so far when it is shorter.
pub(crate) const RATE_WINDOW: Duration = Duration::from_secs(60);

/// Rates over a real window, not extrapolated from the whole run: see [`RateWindow`].
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Rates {
    /// Lines this run worked per second.
    pub(crate) lines_per_second: f64,
    /// Answered tokens per minute.
    pub(crate) tokens_per_minute: f64,
    /// The span measured.
    pub(crate) over: Duration,
    /// The span is the whole run (shorter than [`RATE_WINDOW`]).
    pub(crate) whole_run: bool,
}

impl Rates {
    /// Time left for `snapshot`'s lines at this rate, once the total is known and the rate is
    /// not zero. Only this run's own work counts towards the rate (skipped lines cost nothing).
    /// When every line left is with the blaster and some wait while no endpoint may take them
    /// (quota, cooling, disabled for a while), the time until the first may is a floor: the
    /// last jobs of a run do not finish at the rate of the ones before them.
    pub(crate) fn eta(&self, snapshot: &ProgressSnapshot, now: SystemTime) -> Option<Duration> {
        let total = snapshot.total?;
        let left = total.saturating_sub(snapshot.done);
        let at_rate = (self.lines_per_second > 0.0)
            .then(|| Duration::from_secs_f64(left as f64 / self.lines_per_second));
        let held = left > 0 && left <= snapshot.in_flight && snapshot.queued() > 0;
        let floor = if held {
            next_room(&snapshot.endpoints, now)
        } else {
            None
        };
        match (at_rate, floor) {
            (Some(at_rate), Some(floor)) => Some(at_rate.max(floor)),
            (at_rate, floor) => at_rate.or(floor),
        }
    }

    /// What the rates are over, e.g. `last 1m` or `run, 12s`.
    pub(crate) fn label(&self) -> String {
        if self.whole_run {
            format!("run, {}", short_duration(self.over))
        } else {
            format!("last {}", short_duration(self.over))
        }
    }
}

/// Samples of the run's work and tokens, kept for [`RATE_WINDOW`]: rates are the difference
/// between the newest sample and the oldest one inside the window.
#[derive(Debug, Clone)]
pub(crate) struct RateWindow {
    /// (elapsed, lines worked, tokens), oldest first; the first may be older than the window,
    /// as the base of the difference.
    samples: std::collections::VecDeque<(Duration, u64, u64)>,
}

impl Default for RateWindow {
    fn default() -> Self {
        RateWindow {
            samples: std::collections::VecDeque::from([(Duration::ZERO, 0, 0)]),
        }
    }
}

impl RateWindow {
    /// Adds `snapshot`'s figures and returns the rates over the window.
    pub(crate) fn record(&mut self, snapshot: &ProgressSnapshot) -> Rates {
        let now = snapshot.elapsed;
        self.samples
            .push_back((now, snapshot.worked, snapshot.tokens));
        while self.samples.len() > 2 && now.saturating_sub(self.samples[1].0) >= RATE_WINDOW {
            self.samples.pop_front();
        }
        let (since, worked, tokens) = self.samples[0];
        let over = now.saturating_sub(since);
        Rates {
            lines_per_second: per_second(snapshot.worked.saturating_sub(worked), over),
            tokens_per_minute: per_second(snapshot.tokens.saturating_sub(tokens), over) * 60.0,
            over,
            whole_run: since.is_zero(),
        }
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
        if seconds.is_multiple_of(60) {
            format!("{}m", seconds / 60)
        } else {
            format!("{}m{:02}s", seconds / 60, seconds % 60)
        }
    } else if duration < Duration::from_secs(10) && !duration.is_zero() {
        format!("{:.1}s", duration.as_secs_f64())
    } else {
        format!("{seconds}s")
    }
}

/// How long until some endpoint may take a queued job, when none may at `now` (each waits for
/// quota, cools, or is disabled until a known time); `None` when one may now, or when none
/// ever will by what is known (disabled for good).
fn next_room(endpoints: &[EndpointReport], now: SystemTime) -> Option<Duration> {
    let mut soonest: Option<Duration> = None;
    for endpoint in endpoints {
        let until = match endpoint.state {
            EndpointState::Healthy => endpoint.waiting_for_quota_until,
            EndpointState::Cooling | EndpointState::Disabled => endpoint.cooling_until,
            EndpointState::Probing => return None,
        };
        let wait = match until {
            Some(until) => until.duration_since(now).unwrap_or_default(),
            None if endpoint.state == EndpointState::Disabled => continue,
            None => return None,
        };
        if wait.is_zero() {
            return None;
        }
        soonest = Some(soonest.map_or(wait, |s| s.min(wait)));
    }
    soonest
}

/// The run's position: lines done, this run's rate and the ETA (the bar's line).
pub(crate) fn position_line(snapshot: &ProgressSnapshot, rates: &Rates, now: SystemTime) -> String {
    let done = match snapshot.total {
        Some(total) => format!("{}/{total} lines", snapshot.done),
        None => format!("{} lines", snapshot.done),
    };
    let eta = rates
        .eta(snapshot, now)
        .map_or_else(|| "-".to_owned(), short_duration);
    format!(
        "{done} | {:.1}/s ({}) | ETA {eta}",
        rates.lines_per_second,
        rates.label()
    )
}

/// The run's counts: outcomes, queued and on the wire, 429s, retries, tokens per minute.
pub(crate) fn counts_line(snapshot: &ProgressSnapshot, rates: &Rates) -> String {
    format!(
        "ok {} failed {} invalid {} skipped {} | queued {} on the wire {} | 429s {} | retries {} | {:.0} tokens/min ({})",
        snapshot.succeeded,
        snapshot.failed,
        snapshot.invalid,
        snapshot.skipped,
        snapshot.queued(),
        snapshot.on_the_wire,
        snapshot.rate_limited,
        snapshot.retries,
        rates.tokens_per_minute,
        rates.label(),
    )
}

/// The run's progress in one line (for plain log lines).
pub(crate) fn run_line(snapshot: &ProgressSnapshot, rates: &Rates, now: SystemTime) -> String {
    format!(
        "{} | {}",
        position_line(snapshot, rates, now),
        counts_line(snapshot, rates)
    )
}

/// One endpoint's status in one line, e.g. `flaky  cooling for 1.5s (rate limited) | in flight
/// 0/8 | ...`; an endpoint that could take attempts but whose quota refuses says
/// `quota, next room in 12 s`.
pub(crate) fn endpoint_line(endpoint: &EndpointReport, now: SystemTime) -> String {
    let state = match (endpoint.state, endpoint.cooling_until) {
        (EndpointState::Cooling, Some(until)) => {
            let left = until.duration_since(now).unwrap_or_default();
            match &endpoint.cooling_cause {
                Some(cause) => format!("cooling for {} ({cause})", short_duration(left)),
                None => format!("cooling for {}", short_duration(left)),
            }
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
        (EndpointState::Healthy, _) => match endpoint.waiting_for(now) {
            Some(waiting) if waiting.starts_with("quota") => waiting,
            _ => EndpointState::Healthy.as_str().to_owned(),
        },
        (state, _) => state.as_str().to_owned(),
    };
    let in_flight = if endpoint.max_in_flight > 0 {
        format!("{}/{}", endpoint.in_flight, endpoint.max_in_flight)
    } else {
        endpoint.in_flight.to_string()
    };
    let sharing = endpoint
        .shared_quota
        .map_or(String::new(), |s| format!(" | quota {}", s.as_str()));
    format!(
        "{:<16} {state} | in flight {in_flight} | requests {} | ok {} | 429s {}{sharing}",
        endpoint.name,
        endpoint.counts.requests,
        endpoint.counts.successes,
        endpoint.counts.rate_limited
    )
}

/// Jobs left at most for the progress line to name what holds them.
pub(crate) const LAST_JOBS: u64 = 10;

/// When few lines are left (at most [`LAST_JOBS`]) and some of them are with the blaster, what
/// they wait for: e.g. `last 2: 1 on the wire, 1 queued (east: quota, next room in 12 s;
/// west: cooling until 12:00:05 UTC (rate limited))`. `None` otherwise.
pub(crate) fn last_jobs_line(snapshot: &ProgressSnapshot, now: SystemTime) -> Option<String> {
    let left = snapshot.total?.saturating_sub(snapshot.done);
    if left == 0 || left > LAST_JOBS || snapshot.in_flight == 0 {
        return None;
    }
    let queued = snapshot.queued();
    let mut line = format!("last {left}: ");
    match (snapshot.on_the_wire, queued) {
        (0, queued) => line.push_str(&format!("{queued} queued")),
        (wire, 0) => line.push_str(&format!("{wire} on the wire, waiting for the answers")),
        (wire, queued) => line.push_str(&format!("{wire} on the wire, {queued} queued")),
    }
    if queued > 0 {
        let holds: Vec<String> = snapshot
            .endpoints
            .iter()
            .filter_map(|e| Some(format!("{}: {}", e.name, e.waiting_for(now)?)))
            .collect();
        if !holds.is_empty() {
            line.push_str(&format!(" ({})", holds.join("; ")));
        }
    }
    Some(line)
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
    window: RateWindow,
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
            window: RateWindow::default(),
        }
    }

    /// Shows `snapshot`. In plain mode, logs a line when `interval` has passed since the last.
    pub(crate) fn update(&mut self, snapshot: &ProgressSnapshot, now: Instant) {
        let rates = self.window.record(snapshot);
        match self.mode {
            ProgressMode::Bars => {
                if let Some(total) = snapshot.total
                    && self.main.length() != Some(total)
                {
                    self.main.set_length(total);
                    self.main.set_style(bar_style());
                }
                self.main.set_position(snapshot.done);
                let wall = SystemTime::now();
                let mut position = position_line(snapshot, &rates, wall);
                if let Some(last) = last_jobs_line(snapshot, wall) {
                    position.push_str(" | ");
                    position.push_str(&last);
                }
                self.main.set_message(position);
                self.counts.set_message(counts_line(snapshot, &rates));
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
                    self.log_plain(snapshot, &rates);
                }
            }
        }
    }

    fn log_plain(&self, snapshot: &ProgressSnapshot, rates: &Rates) {
        let wall = SystemTime::now();
        let endpoints: Vec<String> = snapshot
            .endpoints
            .iter()
            .map(|endpoint| endpoint_line(endpoint, wall))
            .collect();
        let mut run = run_line(snapshot, rates, wall);
        if let Some(last) = last_jobs_line(snapshot, wall) {
            run.push_str(" | ");
            run.push_str(&last);
        }
        tracing::info!(
            target: "aoai_blaster_cli::progress",
            "{} || {}",
            run,
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
    use aoai_blaster::{EndpointCounters, QuotaSharing};

    #[test]
    fn the_module_example_holds() {
        use std::time::Duration;

        let snapshot = ProgressSnapshot {
            done: 50,
            total: Some(100),
            worked: 50,
            succeeded: 48,
            failed: 2,
            in_flight: 12,
            on_the_wire: 8,
            tokens: 6_000,
            elapsed: Duration::from_secs(10),
            ..Default::default()
        };
        let rates = RateWindow::default().record(&snapshot);
        assert_eq!(
            run_line(&snapshot, &rates, SystemTime::UNIX_EPOCH),
            "50/100 lines | 5.0/s (run, 10s) | ETA 10s | ok 48 failed 2 invalid 0 skipped 0 | \
             queued 4 on the wire 8 | 429s 0 | retries 0 | 36000 tokens/min (run, 10s)"
        );
    }

    /// The window's rates after samples of (seconds, lines worked, tokens).
    fn rates_after(samples: &[(u64, u64, u64)]) -> Rates {
        let mut window = RateWindow::default();
        let mut rates = Rates::default();
        for &(seconds, worked, tokens) in samples {
            rates = window.record(&ProgressSnapshot {
                worked,
                tokens,
                elapsed: Duration::from_secs(seconds),
                ..Default::default()
            });
        }
        rates
    }

    #[test]
    fn rates_cover_the_last_minute_not_the_whole_run() {
        // A burst in the first 10 s, then a slow minute and more: the rate is the slow one.
        let rates = rates_after(&[
            (10, 1_000, 100_000),
            (40, 1_030, 103_000),
            (100, 1_090, 109_000),
        ]);
        assert!(!rates.whole_run);
        assert_eq!(rates.over, Duration::from_secs(60));
        assert_eq!(rates.lines_per_second, 1.0);
        assert_eq!(rates.tokens_per_minute, 6_000.0);
        assert_eq!(rates.label(), "last 1m");
        // Shorter than a minute: over the run so far, and labelled so.
        let short = rates_after(&[(5, 100, 1_000), (12, 120, 1_200)]);
        assert!(short.whole_run);
        assert_eq!(short.over, Duration::from_secs(12));
        assert_eq!(short.lines_per_second, 10.0);
        assert_eq!(short.label(), "run, 12s");
    }

    #[test]
    fn eta_counts_this_runs_work_only() {
        // 900 of 1,000 lines were skipped at once; this run worked 20 lines in 10 s.
        let snapshot = ProgressSnapshot {
            done: 920,
            total: Some(1_000),
            worked: 20,
            skipped: 900,
            elapsed: Duration::from_secs(10),
            ..Default::default()
        };
        let rates = RateWindow::default().record(&snapshot);
        assert_eq!(rates.lines_per_second, 2.0);
        let now = SystemTime::UNIX_EPOCH;
        assert_eq!(rates.eta(&snapshot, now), Some(Duration::from_secs(40)));
        assert_eq!(rates.eta(&ProgressSnapshot::default(), now), None);
        assert_eq!(Rates::default().eta(&snapshot, now), None);
    }

    #[test]
    fn run_line_without_total() {
        let snapshot = ProgressSnapshot {
            done: 7,
            worked: 7,
            in_flight: 3,
            on_the_wire: 3,
            rate_limited: 2,
            retries: 4,
            elapsed: Duration::from_secs(2),
            ..Default::default()
        };
        let rates = RateWindow::default().record(&snapshot);
        assert_eq!(
            run_line(&snapshot, &rates, SystemTime::UNIX_EPOCH),
            "7 lines | 3.5/s (run, 2.0s) | ETA - | ok 0 failed 0 invalid 0 skipped 0 | \
             queued 0 on the wire 3 | 429s 2 | retries 4 | 0 tokens/min (run, 2.0s)"
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
        let local = EndpointReport {
            shared_quota: Some(QuotaSharing::Local),
            ..base.clone()
        };
        assert_eq!(
            endpoint_line(&local, now),
            "east             healthy | in flight 2 | requests 10 | ok 9 | 429s 1 | quota local"
        );
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
    fn an_endpoint_waiting_for_quota_says_so_and_the_last_jobs_say_what_holds_them() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(3600);
        let east = EndpointReport {
            name: "east".into(),
            in_flight: 0,
            max_in_flight: 8,
            waiting_for_quota_until: Some(now + Duration::from_secs(12)),
            ..Default::default()
        };
        assert_eq!(
            endpoint_line(&east, now),
            "east             quota, next room in 12 s | in flight 0/8 | requests 0 | ok 0 | 429s 0"
        );
        let west = EndpointReport {
            name: "west".into(),
            state: EndpointState::Cooling,
            cooling_until: Some(now + Duration::from_secs(5)),
            cooling_cause: Some("rate limited".into()),
            max_in_flight: 8,
            ..Default::default()
        };
        assert!(endpoint_line(&west, now).contains("cooling for 5.0s (rate limited)"));
        let mut snapshot = ProgressSnapshot {
            done: 1997,
            total: Some(2000),
            in_flight: 3,
            on_the_wire: 1,
            endpoints: vec![east, west],
            ..Default::default()
        };
        assert_eq!(
            last_jobs_line(&snapshot, now).as_deref(),
            Some(
                "last 3: 1 on the wire, 2 queued (east: quota, next room in 12 s; \
                 west: cooling until 01:00:05 UTC (rate limited))"
            )
        );
        // 3 lines left at 10 lines/s would be 0.3 s; the queued two wait 5 s at least.
        let rates = Rates {
            lines_per_second: 10.0,
            ..Rates::default()
        };
        assert_eq!(rates.eta(&snapshot, now), Some(Duration::from_secs(5)));
        assert!(position_line(&snapshot, &rates, now).ends_with("ETA 5.0s"));
        assert_eq!(
            Rates::default().eta(&snapshot, now),
            Some(Duration::from_secs(5)),
            "no rate yet: the wait alone"
        );
        let mut ready = snapshot.clone();
        ready.endpoints[0].waiting_for_quota_until = None;
        assert_eq!(
            rates.eta(&ready, now),
            Some(Duration::from_millis(300)),
            "east may take them now"
        );
        let mut gone = snapshot.clone();
        gone.endpoints[0].state = EndpointState::Disabled;
        gone.endpoints[0].cooling_until = None;
        assert_eq!(
            rates.eta(&gone, now),
            Some(Duration::from_secs(5)),
            "disabled for good: west's cooling is what counts"
        );
        snapshot.on_the_wire = 3;
        assert_eq!(
            rates.eta(&snapshot, now),
            Some(Duration::from_millis(300)),
            "none queued: no floor"
        );
        assert_eq!(
            last_jobs_line(&snapshot, now).as_deref(),
            Some("last 3: 3 on the wire, waiting for the answers")
        );
        snapshot.done = 1000;
        assert_eq!(last_jobs_line(&snapshot, now), None, "many lines left");
        snapshot.total = None;
        assert_eq!(last_jobs_line(&snapshot, now), None, "total unknown");
    }

    #[test]
    fn short_durations_pick_a_unit() {
        assert_eq!(short_duration(Duration::from_millis(2500)), "2.5s");
        assert_eq!(short_duration(Duration::from_secs(42)), "42s");
        assert_eq!(short_duration(Duration::from_secs(60)), "1m");
        assert_eq!(short_duration(Duration::from_secs(61)), "1m01s");
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
