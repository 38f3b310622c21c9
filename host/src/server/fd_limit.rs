//! The open-files limit: raised to its hard maximum at start (as Go's
//! runtime does), so the connection cap, not file descriptors, is what runs
//! out first.

/// Descriptors kept free of client connections: upstream connections, the
/// database, plugin files and the file watcher need their own.
pub const RESERVED: u64 = 128;

/// Raises the soft `RLIMIT_NOFILE` to the hard one and returns the soft
/// limit now in force (`None` when it cannot be read or is unlimited).
#[cfg(unix)]
pub fn raise() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read/write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return None;
        }
        if lim.rlim_max != libc::RLIM_INFINITY && lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
    }
    (lim.rlim_cur != libc::RLIM_INFINITY).then_some(lim.rlim_cur)
}

/// Not available here: the cap alone applies.
#[cfg(not(unix))]
pub fn raise() -> Option<u64> {
    None
}

/// The connection cap that fits `fd_limit`: at most the limit minus
/// [`RESERVED`], and at least one.
pub fn fit(max_connections: usize, fd_limit: Option<u64>) -> usize {
    match fd_limit {
        Some(limit) => max_connections.min(limit.saturating_sub(RESERVED).max(1) as usize),
        None => max_connections,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_leaves_descriptors_for_everything_else() {
        assert_eq!(fit(1024, Some(20_000)), 1024);
        assert_eq!(fit(1024, Some(1024)), 1024 - RESERVED as usize);
        assert_eq!(fit(1024, Some(10)), 1);
        assert_eq!(fit(1024, None), 1024);
    }
}
