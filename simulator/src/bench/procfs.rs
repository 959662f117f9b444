//! CPU time and memory of processes and threads, read from `/proc`.

use std::fs;

/// Nanoseconds a task has run on a CPU (first field of `schedstat`, ns precision, unlike the
/// 10 ms ticks of `stat`).
fn schedstat_ns(path: &str) -> u64 {
    fs::read_to_string(path)
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// CPU time of every thread of `pid` (live threads only: exited ones are not counted, so take
/// deltas across an interval in which no thread exits).
pub(crate) fn process_cpu_ns(pid: u32) -> u64 {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .map(|t| schedstat_ns(&format!("{}/schedstat", t.path().display())))
        .sum()
}

/// CPU time of the calling thread.
pub(crate) fn thread_cpu_ns() -> u64 {
    schedstat_ns("/proc/thread-self/schedstat")
}

/// CPU time of thread `tid` of this process.
pub(crate) fn own_thread_cpu_ns(tid: i32) -> u64 {
    schedstat_ns(&format!("/proc/self/task/{tid}/schedstat"))
}

/// Resident set size in KiB (`VmRSS`).
pub(crate) fn rss_kib(pid: u32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

/// Processes whose parent is `pid`.
pub(crate) fn children(pid: u32) -> Vec<u32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&p| {
            fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                // Field 4 is the parent pid; the command name (field 2) may hold spaces, so
                // count from the closing parenthesis.
                .and_then(|s| {
                    s.rsplit_once(')')?
                        .1
                        .split_whitespace()
                        .nth(1)?
                        .parse::<u32>()
                        .ok()
                })
                == Some(pid)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_process() {
        let me = std::process::id();
        assert!(rss_kib(me) > 0);
        let t0 = thread_cpu_ns();
        // `schedstat` of a running thread advances at scheduler ticks: spin across several.
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while start.elapsed() < std::time::Duration::from_millis(50) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(1));
        }
        let t1 = thread_cpu_ns();
        assert!(t1 > t0);
        // The process total includes this thread (read after it, so it can only be larger).
        assert!(process_cpu_ns(me) >= t1);
    }
}
