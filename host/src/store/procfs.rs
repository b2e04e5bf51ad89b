//! A process's `/proc` entries, read in one place: whether the embedded Redis or a host's
//! process still runs (a zombie does not), when it started (a reused pid is another process),
//! and its CPU time, memory and time spent waiting for a CPU (`tt bench`), and its memory
//! mappings against the system's limit on them (`[host] max_instances`). `pid` is a number or
//! `self`.

use std::fmt::Display;

/// The fields of `/proc/PID/stat` after the command name (which may hold spaces and `)`):
/// the state is `[0]`, user and system CPU ticks `[11]` and `[12]`, the start time `[19]`.
pub fn stat(pid: impl Display) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = text.rsplit_once(')')?;
    Some(rest.split_whitespace().map(str::to_string).collect())
}

/// Whether `stat` (from [`stat`]) is a process that has ended: a zombie (killed, not yet
/// reaped, so it still answers `kill(pid, 0)`) or dead.
pub fn ended(stat: &[String]) -> bool {
    matches!(stat.first().map(String::as_str), Some("Z" | "X"))
}

/// A number of `/proc/PID/status`: `VmRSS`, `VmHWM` (KiB), `Threads`.
pub fn status(pid: impl Display, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The scheduler's account of a process's main thread (`/proc/PID/schedstat`): nanoseconds
/// run and nanoseconds spent runnable but waiting for a CPU.
pub fn schedstat(pid: impl Display) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/schedstat")).ok()?;
    let mut f = text.split_whitespace().map(|v| v.parse::<u64>().ok());
    Some((f.next()??, f.next()??))
}

/// How many memory mappings a process has (the lines of `/proc/PID/maps`).
pub fn maps(pid: impl Display) -> Option<usize> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
    Some(text.lines().count())
}

/// The most memory mappings a process may have (`vm.max_map_count`).
pub fn max_map_count() -> Option<usize> {
    std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .ok()?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn this_process_reads_as_running_with_memory_and_threads() {
        let me = std::process::id();
        let stat = super::stat(me).unwrap();
        assert!(matches!(stat[0].as_str(), "R" | "S"), "{stat:?}");
        assert!(!super::ended(&stat));
        assert!(super::ended(&["Z".to_string()]));
        let (ran, _waited) = super::schedstat(me).unwrap();
        assert!(ran > 0);
        assert_eq!(super::schedstat(u32::MAX), None);
        assert!(stat[19].parse::<u64>().is_ok());
        assert!(super::status("self", "VmRSS").unwrap() > 0);
        assert!(super::status(me, "Threads").unwrap() >= 1);
        assert!(super::stat(u32::MAX).is_none());
        assert!(super::status("self", "NoSuchField").is_none());
        assert!(super::maps("self").unwrap() > 0);
        assert!(super::maps(u32::MAX).is_none());
        assert!(super::max_map_count().unwrap() > super::maps("self").unwrap());
    }
}
