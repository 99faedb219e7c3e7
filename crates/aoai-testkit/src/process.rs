//! [`Proc`]: a process (or one of this process's threads) as Linux's `/proc` shows it, for the
//! benchmarks that sample a child's CPU time, memory and open files while it runs; and
//! [`blaster_run`], the `aoai-blaster run` command they start.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Clock ticks per second of `/proc/*/stat` times (`getconf CLK_TCK`: 100 on Linux).
const TICKS_PER_SECOND: u64 = 100;

/// A process or thread under `/proc`. Every reading is `None` once it is gone (or off Linux).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proc(String);

/// What `/proc/<…>/stat` says of a process or thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    /// Its command name (`comm`), or a thread's name.
    pub name: String,
    /// Its state: `R` running, `S` sleeping, `Z` exited and not yet reaped, ...
    pub state: char,
    /// User + system CPU time so far (10 ms resolution).
    pub cpu: Duration,
}

impl Proc {
    /// Process `pid`.
    pub fn pid(pid: u32) -> Proc {
        Proc(pid.to_string())
    }

    /// This process.
    pub fn this() -> Proc {
        Proc("self".to_owned())
    }

    /// Thread `tid` of this process.
    pub fn thread(tid: u64) -> Proc {
        Proc(format!("self/task/{tid}"))
    }

    /// Its name, state and CPU time.
    pub fn stat(&self) -> Option<Stat> {
        let text = std::fs::read_to_string(format!("/proc/{}/stat", self.0)).ok()?;
        // `pid (comm) state ...`: comm may hold spaces and parentheses, so split at the last ')'.
        let open = text.find('(')?;
        let close = text.rfind(')')?;
        let name = text.get(open + 1..close)?.to_owned();
        let fields: Vec<&str> = text.get(close + 2..)?.split_whitespace().collect();
        // After comm: state is field 3, utime field 14, stime field 15 (1-based).
        let state = fields.first()?.chars().next()?;
        let utime: u64 = fields.get(11)?.parse().ok()?;
        let stime: u64 = fields.get(12)?.parse().ok()?;
        let cpu = Duration::from_millis((utime + stime) * 1000 / TICKS_PER_SECOND);
        Some(Stat { name, state, cpu })
    }

    /// A `kB` field of `/proc/<…>/status`, named with its colon: `VmRSS:` (resident now),
    /// `VmHWM:` (the peak so far).
    pub fn status_kib(&self, field: &str) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.0)).ok()?;
        status
            .lines()
            .find_map(|line| line.strip_prefix(field))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|value| value.parse().ok())
    }

    /// How many file descriptors it has open.
    pub fn open_fds(&self) -> Option<usize> {
        Some(
            std::fs::read_dir(format!("/proc/{}/fd", self.0))
                .ok()?
                .count(),
        )
    }
}

/// `BIN run --config CONFIG --input INPUT --output OUTPUT`, `bin` being the `aoai-blaster`
/// binary, with `RUST_LOG=warn`, stdin closed, stdout piped (the summary) and stderr dropped
/// (progress); the caller may change any of these before it spawns the command.
pub fn blaster_run(bin: &str, config: &Path, input: &Path, output: &Path) -> Command {
    let mut command = Command::new(bin);
    command
        .args(["run", "--config"])
        .arg(config)
        .arg("--input")
        .arg(input)
        .arg("--output")
        .arg(output)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    command
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_is_read_while_it_runs_and_as_a_zombie_before_it_is_reaped() {
        let mut child = Command::new("sleep")
            .arg("30")
            .stdout(Stdio::null())
            .spawn()
            .expect("sleep starts");
        let proc = Proc::pid(child.id());
        let stat = proc.stat().expect("a live child has a stat");
        assert_eq!(stat.name, "sleep");
        assert_ne!(stat.state, 'Z');
        let rss = proc.status_kib("VmRSS:").expect("VmRSS is in kB");
        let peak = proc.status_kib("VmHWM:").expect("VmHWM is in kB");
        assert!(rss > 0 && peak >= rss, "rss {rss} peak {peak}");
        assert_eq!(proc.status_kib("NoSuchField:"), None);
        // stdin, stdout, stderr at least.
        assert!(proc.open_fds().expect("fds are listed") >= 3);

        child.kill().expect("killed");
        // Killed but not reaped: a zombie, whose stat is still there. The kill is
        // asynchronous: read until the kernel has finished it, within a bound.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while proc.stat().expect("a zombie keeps its stat").state != 'Z' {
            assert!(
                std::time::Instant::now() < deadline,
                "not a zombie after 10 s"
            );
            std::thread::yield_now();
        }
        child.wait().expect("reaped");
        assert_eq!(proc.stat(), None, "a reaped child is gone");
        assert_eq!(proc.open_fds(), None);
    }

    #[test]
    fn this_process_and_the_thread_running_this_test_are_read() {
        let this = Proc::this().stat().expect("this process");
        let exe = std::env::current_exe().expect("the test binary");
        let exe = exe.file_name().and_then(|n| n.to_str()).expect("a name");
        // The kernel keeps the first 15 bytes of the name.
        assert!(exe.starts_with(&this.name), "{exe} vs {}", this.name);
        // `/proc/thread-self` is `<pid>/task/<tid>` of the thread that reads it.
        let link = std::fs::read_link("/proc/thread-self").expect("thread-self");
        let tid: u64 = link
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.parse().ok())
            .expect("a thread id");
        let thread = Proc::thread(tid).stat().expect("this thread's stat");
        assert_eq!(thread.state, 'R', "it is running this test");
        // The test harness names the thread after the test (its first 15 bytes).
        assert!(
            "process::tests::this_process".starts_with(&thread.name),
            "{}",
            thread.name
        );
    }

    #[test]
    fn blaster_run_names_the_files_and_quiets_the_log() {
        let (config, input, output) = ("blaster.yaml", "requests.jsonl", "results.jsonl");
        let command = blaster_run(
            "/bin/aoai-blaster",
            Path::new(config),
            Path::new(input),
            Path::new(output),
        );
        assert_eq!(command.get_program(), "/bin/aoai-blaster");
        let args: Vec<_> = command.get_args().collect();
        let expected = [
            "run", "--config", config, "--input", input, "--output", output,
        ];
        assert_eq!(args, expected);
        let envs: Vec<_> = command.get_envs().collect();
        assert_eq!(
            envs,
            [(
                std::ffi::OsStr::new("RUST_LOG"),
                Some(std::ffi::OsStr::new("warn"))
            )]
        );
    }
}
