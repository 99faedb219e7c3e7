//! CPU time from `/proc` (Linux): the whole process, or each thread by name.

use std::time::Duration;

use aoai_testkit::Proc;

/// CPU time (user + system, every thread, 10 ms resolution) of this process so far.
pub fn process_cpu() -> Duration {
    Proc::this().stat().map(|s| s.cpu).unwrap_or_default()
}

/// CPU time of process `pid` so far.
pub fn pid_cpu(pid: u32) -> Duration {
    Proc::pid(pid).stat().map(|s| s.cpu).unwrap_or_default()
}

/// CPU time of each live thread of this process, as `(thread id, name, cpu)`.
pub fn threads_cpu() -> Vec<(u64, String, Duration)> {
    let Ok(entries) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    let mut threads: Vec<(u64, String, Duration)> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let tid: u64 = entry.file_name().to_str()?.parse().ok()?;
            let stat = Proc::thread(tid).stat()?;
            Some((tid, stat.name, stat.cpu))
        })
        .collect();
    threads.sort_by_key(|(tid, _, _)| *tid);
    threads
}

/// Per-thread CPU spent between two [`threads_cpu`] snapshots, busiest first, as
/// `(name, cpu)`; threads that ended in between are not listed.
pub fn threads_delta(
    before: &[(u64, String, Duration)],
    after: &[(u64, String, Duration)],
) -> Vec<(String, Duration)> {
    let mut delta: Vec<(String, Duration)> = after
        .iter()
        .map(|(tid, name, cpu)| {
            let earlier = before
                .iter()
                .find(|(t, _, _)| t == tid)
                .map(|(_, _, c)| *c)
                .unwrap_or_default();
            (name.clone(), cpu.saturating_sub(earlier))
        })
        .filter(|(_, cpu)| !cpu.is_zero())
        .collect();
    delta.sort_by_key(|(_, cpu)| std::cmp::Reverse(*cpu));
    delta
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_work_shows_up_as_cpu_time() {
        let start = process_cpu();
        let wall = std::time::Instant::now();
        let mut x = 0u64;
        // Spin until the process has used 50 ms more CPU (ticks are 10 ms), within 10 s.
        while process_cpu() < start + Duration::from_millis(50) {
            assert!(
                wall.elapsed() < Duration::from_secs(10),
                "no CPU time counted"
            );
            for _ in 0..100_000 {
                x = x.wrapping_add(std::hint::black_box(1));
            }
        }
        assert!(x > 0);
        let later = pid_cpu(std::process::id());
        assert!(later >= start + Duration::from_millis(50));
        let threads = threads_cpu();
        assert!(!threads.is_empty());
        let total: Duration = threads.iter().map(|(_, _, cpu)| *cpu).sum();
        let delta = threads_delta(&[], &threads);
        assert_eq!(delta.iter().map(|(_, cpu)| *cpu).sum::<Duration>(), total);
        assert!(delta.windows(2).all(|w| w[0].1 >= w[1].1));
    }
}
