//! The operating system's limits that a server with many connections meets
//! first (chapter 11.3): the number of open files, since every connection's
//! socket is one.
//!
//! Most Linux systems start a process with a *soft* open-file limit of 1,024
//! and a much higher *hard* limit (up to which a process may raise its soft
//! limit itself, without privileges). A server that needs room for 10,000
//! connections raises its soft limit to the hard one at start, as Go's
//! runtime does for every Go program, and says so when even the hard limit
//! is too low: past it, `accept()` fails with `EMFILE` and clients wait.

use tracing::{debug, warn};

/// File descriptors a server needs besides its connections' sockets:
/// standard streams, the listener, the runtime's epoll and wakers, a Redis
/// connection or two, the log thread. Generous on purpose.
pub const SPARE_FILES: u64 = 64;

// ANCHOR: raise
/// Raises this process's soft open-file limit to its hard limit, and warns
/// (once, in the log) when that leaves fewer than `connections` plus
/// [`SPARE_FILES`] descriptors. Returns the soft limit in force afterwards,
/// or `None` where there is no such limit to read (not Unix) or reading it
/// failed.
pub fn raise_open_files(connections: usize) -> Option<u64> {
    let limit = raise_soft_to_hard()?;
    let wanted = connections as u64 + SPARE_FILES;
    if limit < wanted {
        warn!(
            limit,
            wanted,
            "the open-file limit is below --max-connections: raise it (`ulimit -n`, or \
             LimitNOFILE= under systemd), or clients past it will wait"
        );
    } else {
        debug!(limit, "open-file limit");
    }
    Some(limit)
}
// ANCHOR_END: raise

#[cfg(unix)]
#[allow(clippy::unnecessary_cast)] // rlim_t is 32 bits on some targets
fn raise_soft_to_hard() -> Option<u64> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit only read and write the struct given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return None;
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
        // SAFETY: as above. Failing leaves the soft limit as it was.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit = raised;
        }
    }
    Some(limit.rlim_cur as u64)
}

#[cfg(not(unix))]
fn raise_soft_to_hard() -> Option<u64> {
    None
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[allow(clippy::unnecessary_cast)] // as in raise_soft_to_hard
    fn limits() -> (u64, u64) {
        let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: as in raise_soft_to_hard.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) }, 0);
        (limit.rlim_cur as u64, limit.rlim_max as u64)
    }

    #[test]
    fn the_soft_limit_is_raised_to_the_hard_one() {
        // Lowered first, as a shell's default of 1,024 would be: otherwise a
        // process started with both limits equal proves nothing.
        let (_, hard) = limits();
        let low = libc::rlimit { rlim_cur: hard.min(256) as _, rlim_max: hard as _ };
        // SAFETY: as in raise_soft_to_hard.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &low) }, 0);
        assert_eq!(limits().0, hard.min(256));
        let soft = raise_open_files(10).expect("Unix has an open-file limit");
        assert_eq!(limits(), (soft, soft), "soft limit raised to the hard limit");
    }
}
