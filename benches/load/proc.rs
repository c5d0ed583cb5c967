//! What the benchmark learns about processes and the machine: CPU time and
//! resident memory from `/proc`, the open-file limit, and a description of the
//! machine for `results.json`.
//!
//! Linux only, like the rest of the benchmark: `/proc/PID/stat` and
//! `/proc/PID/status` are the cheapest honest source of a child's CPU time and
//! memory, and need no crate.

use std::fs;
use std::path::Path;
use std::process::Command;

/// Clock ticks per second, the unit of `utime` and `stime` in
/// `/proc/PID/stat` (100 on every common Linux configuration).
pub fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf only reads a configuration value.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as u64 } else { 100 }
}

/// CPU time the process has used so far, user plus system, in clock ticks.
/// The figure covers all of its threads (tokio's workers included).
pub fn cpu_ticks(pid: u32) -> Result<u64, String> {
    let path = format!("/proc/{pid}/stat");
    let stat = fs::read_to_string(&path).map_err(|e| format!("read {path}: {e}"))?;
    // Field 2, the command name, is in parentheses and may contain spaces,
    // so count from the last `)`: after it come field 3 (state) onward, and
    // utime and stime are fields 14 and 15.
    let after_name = stat.rfind(')').map(|i| &stat[i + 1..]).ok_or("no ) in stat")?;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let field = |n: usize| -> Result<u64, String> {
        fields
            .get(n - 3)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("field {n} missing in {path}"))
    };
    Ok(field(14)? + field(15)?)
}

/// Resident memory of the process (`VmRSS`), in KiB.
pub fn rss_kib(pid: u32) -> Result<u64, String> {
    let path = format!("/proc/{pid}/status");
    let status = fs::read_to_string(&path).map_err(|e| format!("read {path}: {e}"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| format!("no VmRSS in {path}"))
}

/// Raises the soft limit on open files to the hard limit, and returns the
/// new soft limit.
///
/// 10,000 connections need 10,000 descriptors in this process, and as many in
/// the server, which inherits the raised limit when we start it.
// `rlim_t` is u64 on 64-bit Linux but not everywhere; keep the casts.
#[allow(clippy::unnecessary_cast)]
pub fn raise_open_file_limit() -> Result<u64, String> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct we pass and nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(format!("getrlimit: {}", std::io::Error::last_os_error()));
    }
    // An unlimited hard limit still cannot go past the kernel's nr_open.
    let nr_open: u64 = fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1 << 20);
    let wanted = (limit.rlim_max as u64).min(nr_open);
    if (limit.rlim_cur as u64) < wanted {
        limit.rlim_cur = wanted as libc::rlim_t;
        // SAFETY: setrlimit reads the struct we pass.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            return Err(format!("setrlimit: {}", std::io::Error::last_os_error()));
        }
    }
    Ok(limit.rlim_cur as u64)
}

/// The machine and code a result belongs to, for `results.json`.
#[derive(Debug, Clone)]
pub struct Machine {
    pub nproc: usize,
    pub cpu_model: String,
    pub kernel: String,
    pub date: String,
    pub git_commit: String,
}

impl Machine {
    pub fn describe(repo: &Path) -> Machine {
        let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')))
            .map(|(_, model)| model.trim().to_string())
            .unwrap_or_else(|| "unknown".into());
        let kernel = fs::read_to_string("/proc/version")
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|_| "unknown".into());
        let git_commit = Command::new("git")
            .args(["rev-parse", "--short", "HEAD"])
            .current_dir(repo)
            .output()
            .ok()
            .filter(|out| out.status.success())
            .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_string())
            .unwrap_or_else(|| "unknown".into());
        Machine {
            nproc: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_model,
            kernel,
            date: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            git_commit,
        }
    }
}
