//! CPU time and resident memory: our own (getrusage) and the broker's (/proc/<pid>). Knows
//! nothing of AMQP.

use std::fs;
use std::io;

/// User + system CPU seconds this process has used so far.
pub fn self_cpu_secs() -> f64 {
    // SAFETY: getrusage only writes into the struct we hand it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    if rc != 0 {
        return 0.0;
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcSample {
    pub cpu_secs: f64,
    pub rss_bytes: u64,
}

/// CPU seconds (utime + stime of /proc/<pid>/stat) and VmRSS of `pid`.
pub fn sample_process(pid: u32) -> io::Result<ProcSample> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    parse(&stat, &status).ok_or_else(|| io::Error::other(format!("cannot parse /proc/{pid}")))
}

fn parse(stat: &str, status: &str) -> Option<ProcSample> {
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // Field 3 (state) is fields[0]; utime is field 14, stime field 15.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    let rss_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(ProcSample {
        cpu_secs: (utime + stime) / clock_ticks_per_sec(),
        rss_bytes: rss_kib * 1024,
    })
}

fn clock_ticks_per_sec() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

/// Raises the open-file limit to its hard maximum so that the connections scenario can hold
/// thousands of sockets.
pub fn raise_fd_limit() {
    // SAFETY: plain syscalls on a struct we own.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_odd_command_names() {
        let stat = "42 (beam.smp) (x) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 30 0";
        let status = "Name:\tbeam.smp\nVmRSS:\t  123456 kB\nThreads:\t30\n";
        let s = parse(stat, status).unwrap();
        assert!((s.cpu_secs - 300.0 / clock_ticks_per_sec()).abs() < 1e-9);
        assert_eq!(s.rss_bytes, 123_456 * 1024);
    }

    #[test]
    fn samples_this_process() {
        let s = sample_process(std::process::id()).unwrap();
        assert!(s.rss_bytes > 0);
        assert!(self_cpu_secs() >= 0.0);
    }
}
