//! The command line, as clap derive types. `aoai-blaster --help` shows it all.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::batch::lines::DEFAULT_MAX_LINE_BYTES;

/// Push chat-completion traffic through many Azure OpenAI deployments at once, as fast as their
/// quotas allow, without losing a job.
#[derive(Debug, Parser)]
#[command(name = "aoai-blaster", version, about, long_about = None)]
#[command(
    after_help = "Exit codes: 0 every job succeeded, 1 some jobs failed or input lines were \
invalid, 2 usage or config error, 130 interrupted.\nLogging: RUST_LOG=debug (or any filter) \
and --log-format json."
)]
pub(crate) struct Cli {
    /// Log format on stderr (logs print above the progress display).
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub(crate) log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run N generated prompts through an embedded simulator with three deployments of different
    /// character (a tight TPM quota, a flaky one with 5xx and timeouts, a slow one), with live
    /// progress, then print the summary and the per-endpoint health table.
    Demo(DemoArgs),
    /// Run a Batch JSONL input file through the configured deployments into an output file;
    /// resumable: re-running skips every custom_id already answered in the output.
    Run(RunArgs),
    /// Validate the config, resolve credentials and send one tiny request to each deployment.
    Check(CheckArgs),
    /// Run the Azure OpenAI simulator standalone (same as the `aoai-sim` binary).
    Sim(SimArgs),
    /// Serve an OpenAI-compatible API (`/v1/chat/completions`, `/v1/models`, ...) over the
    /// configured deployments, until Ctrl-C: any OpenAI SDK pointed at `http://ADDR/v1` gets
    /// the blaster's pacing, failover and metrics.
    Serve(ServeArgs),
}

/// Options shared by `run` and `demo`.
#[derive(Debug, Clone, Args)]
pub(crate) struct RunOptions {
    /// Also write the summary as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub(crate) summary_json: Option<PathBuf>,
    /// After the first Ctrl-C (SIGINT/SIGTERM), how long in-flight jobs may take to finish
    /// before the run stops without them (e.g. `10s`, `500ms`); a second Ctrl-C stops at once.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub(crate) grace_period: Duration,
    /// Without a terminal on stderr: seconds between plain progress log lines.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    pub(crate) progress_interval: Duration,
    /// Serve Prometheus metrics at `http://ADDR/metrics` while the run lasts
    /// (e.g. `127.0.0.1:9464`).
    #[arg(long, value_name = "ADDR")]
    pub(crate) metrics_addr: Option<String>,
}

impl RunOptions {
    /// Starts the metrics listener when `--metrics-addr` is given.
    pub(crate) fn start_metrics(
        &self,
    ) -> Result<Option<aoai_blaster::metrics::MetricsServer>, String> {
        let Some(addr) = &self.metrics_addr else {
            return Ok(None);
        };
        let handle = aoai_blaster::metrics::MetricsHandle::install()
            .map_err(|error| format!("cannot record metrics: {error}"))?;
        let server = aoai_blaster::metrics::serve(handle, addr.as_str())
            .map_err(|error| format!("cannot listen on --metrics-addr {addr}: {error}"))?;
        tracing::info!("metrics at http://{}/metrics", server.local_addr());
        Ok(Some(server))
    }
}

/// `demo` options.
#[derive(Debug, Clone, Args)]
pub(crate) struct DemoArgs {
    /// Number of prompts to send.
    #[arg(long, default_value_t = 3000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub(crate) requests: u64,
    /// Also write every answer as a Batch output line to this file.
    #[arg(long, value_name = "FILE")]
    pub(crate) output: Option<PathBuf>,
    /// Shared run options.
    #[command(flatten)]
    pub(crate) options: RunOptions,
}

/// `run` options.
#[derive(Debug, Clone, Args)]
pub(crate) struct RunArgs {
    /// Blaster config (YAML, JSON or TOML, by extension); `AOAI_BLASTER__<KEY>` overrides
    /// top-level keys.
    #[arg(long, short, value_name = "FILE")]
    pub(crate) config: PathBuf,
    /// Batch JSONL input: one `{"custom_id", "method", "url", "body"}` per line; `-` reads
    /// standard input.
    #[arg(long, short, value_name = "FILE")]
    pub(crate) input: PathBuf,
    /// Batch JSONL output, appended to; ids already answered in it are skipped. `OUT.lock`
    /// beside it keeps a second run off the same output.
    #[arg(long, short, value_name = "FILE")]
    pub(crate) output: PathBuf,
    /// Longest input line taken, default 10MiB (bytes, or with a unit: `512KiB`, `10MiB`); a
    /// longer one gets a `line_too_long` error line. Output lines longer than this are kept
    /// but not read on resume.
    #[arg(
        long,
        value_name = "BYTES",
        default_value_t = DEFAULT_MAX_LINE_BYTES,
        hide_default_value = true,
        value_parser = parse_bytes
    )]
    pub(crate) max_line_bytes: u64,
    /// Run again the ids whose answer in the output is a failure (the output is rewritten
    /// atomically without those lines first).
    #[arg(long)]
    pub(crate) retry_failed: bool,
    /// Shared run options.
    #[command(flatten)]
    pub(crate) options: RunOptions,
}

/// `check` options.
#[derive(Debug, Clone, Args)]
pub(crate) struct CheckArgs {
    /// Blaster config (YAML, JSON or TOML, by extension).
    #[arg(long, short, value_name = "FILE")]
    pub(crate) config: PathBuf,
}

/// `serve` options.
#[derive(Debug, Clone, Args)]
pub(crate) struct ServeArgs {
    /// Blaster config (YAML, JSON or TOML, by extension); its `gateway:` section holds the
    /// inbound keys and model aliases.
    #[arg(long, short, value_name = "FILE")]
    pub(crate) config: PathBuf,
    /// Address to listen on (port 0 picks a free one; the `listening on` line names it).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    pub(crate) listen: String,
    /// Listen on a non-loopback address without `gateway.api_keys` (anyone who reaches it can
    /// spend the quota).
    #[arg(long)]
    pub(crate) allow_unauthenticated: bool,
    /// HTTP worker threads. 1: that thread also runs the Dispatcher, so no request crosses
    /// threads (the fastest on small machines); more (0: one per core) hand jobs to the
    /// Dispatcher's own thread.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub(crate) workers: usize,
}

/// `sim` options.
#[derive(Debug, Clone, Args)]
pub(crate) struct SimArgs {
    /// Simulator config (YAML, JSON or TOML, by extension).
    #[arg(long, short, value_name = "FILE")]
    pub(crate) config: PathBuf,
    /// Address and HTTPS.
    #[command(flatten)]
    pub(crate) listen: aoai_sim::ListenFlags,
}

fn parse_bytes(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let scale: u64 = match unit.trim() {
        "" | "B" => 1,
        "K" | "KiB" => 1 << 10,
        "M" | "MiB" => 1 << 20,
        "G" | "GiB" => 1 << 30,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return Err(format!("{text:?} is not a size; use e.g. 10MiB or 1048576")),
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("{text:?} is not a size above 0; use e.g. 10MiB or 1048576"))
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    if let Ok(seconds) = text.parse::<f64>() {
        if seconds.is_finite() && seconds >= 0.0 {
            return Ok(Duration::from_secs_f64(seconds));
        }
        return Err(format!("{text:?} is not a duration; use e.g. 10s or 500ms"));
    }
    humantime::parse_duration(text)
        .map_err(|error| format!("{text:?} is not a duration ({error}); use e.g. 10s or 500ms"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn run_takes_its_flags() {
        let cli = Cli::try_parse_from([
            "aoai-blaster",
            "--log-format",
            "json",
            "run",
            "--config",
            "c.yaml",
            "--input",
            "in.jsonl",
            "--output",
            "out.jsonl",
            "--retry-failed",
            "--summary-json",
            "s.json",
            "--grace-period",
            "1500ms",
        ])
        .unwrap();
        assert_eq!(cli.log_format, LogFormat::Json);
        let Command::Run(run) = cli.command else {
            panic!("expected run");
        };
        assert!(run.retry_failed);
        assert_eq!(run.max_line_bytes, 10 << 20);
        assert_eq!(run.options.grace_period, Duration::from_millis(1500));
        assert_eq!(run.options.progress_interval, Duration::from_secs(5));
        assert_eq!(run.options.summary_json, Some(PathBuf::from("s.json")));
    }

    #[test]
    fn demo_defaults_to_a_few_thousand_requests() {
        let cli = Cli::try_parse_from(["aoai-blaster", "demo"]).unwrap();
        let Command::Demo(demo) = cli.command else {
            panic!("expected demo");
        };
        assert_eq!(demo.requests, 3000);
        assert_eq!(demo.options.grace_period, Duration::from_secs(10));
        assert!(Cli::try_parse_from(["aoai-blaster", "demo", "--requests", "0"]).is_err());
    }

    #[test]
    fn run_without_input_is_a_usage_error() {
        let error = Cli::try_parse_from(["aoai-blaster", "run", "--config", "c.yaml"]).unwrap_err();
        assert_eq!(
            error.kind(),
            clap::error::ErrorKind::MissingRequiredArgument
        );
    }

    #[test]
    fn sizes_accept_bytes_and_units() {
        assert_eq!(parse_bytes("1048576").unwrap(), 1 << 20);
        assert_eq!(parse_bytes("10MiB").unwrap(), 10 << 20);
        assert_eq!(parse_bytes("512 KiB").unwrap(), 512 << 10);
        assert_eq!(parse_bytes("2MB").unwrap(), 2_000_000);
        assert!(parse_bytes("0").unwrap_err().contains("use e.g. 10MiB"));
        assert!(parse_bytes("ten").unwrap_err().contains("use e.g. 10MiB"));
        assert!(parse_bytes("1.5MiB").is_err());
    }

    #[test]
    fn durations_accept_seconds_and_units() {
        assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("0.25").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("1m").unwrap(), Duration::from_secs(60));
        assert!(parse_duration("-1").unwrap_err().contains("use e.g. 10s"));
        assert!(parse_duration("soon").unwrap_err().contains("use e.g. 10s"));
    }
}
