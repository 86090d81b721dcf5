//! The connection limit inside the file-descriptor limit.
//!
//! `--max-connections` protects the master's descriptors and memory from a
//! flood of connections (docs/security.md). Every open connection is a
//! descriptor, so the limit only protects anything if it fits under
//! `RLIMIT_NOFILE` with room left for the store, image files and uploads:
//! past the descriptor limit `accept` fails and so do the master's own
//! opens. At start the master raises its soft limit toward the hard one
//! (as nginx's `worker_rlimit_nofile` and Go's runtime do), and if even the
//! hard limit is too low it takes fewer connections and says so.

/// Descriptors kept for everything but client connections: the store's
/// files on each of its connections, image files, uploads, imports, logs.
pub const RESERVED_FDS: u64 = 256;

/// The soft and hard `RLIMIT_NOFILE` (`None`: unlimited).
fn nofile() -> (u64, u64) {
    let r = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    (r.current.unwrap_or(u64::MAX), r.maximum.unwrap_or(u64::MAX))
}

fn set_soft_nofile(soft: u64, hard: u64) -> std::io::Result<()> {
    let r = rustix::process::Rlimit {
        current: Some(soft),
        maximum: (hard != u64::MAX).then_some(hard),
    };
    rustix::process::setrlimit(rustix::process::Resource::Nofile, r)?;
    Ok(())
}

/// Raise the soft descriptor limit so that `max` connections fit beside
/// [`RESERVED_FDS`]; the number of connections that fit (`max`, or fewer
/// when the hard limit is lower, with a warning).
pub fn fit_connections(max: usize) -> usize {
    let want = u64::try_from(max)
        .unwrap_or(u64::MAX)
        .saturating_add(RESERVED_FDS);
    let (soft, hard) = nofile();
    let mut have = soft;
    if soft < want {
        let raised = want.min(hard);
        match set_soft_nofile(raised, hard) {
            Ok(()) => have = raised,
            Err(e) => tracing::warn!("cannot raise the file descriptor limit to {raised}: {e}"),
        }
    }
    let fits = usize::try_from(have.saturating_sub(RESERVED_FDS).max(1)).unwrap_or(usize::MAX);
    if fits < max {
        tracing::warn!(
            "max_connections {max} lowered to {fits}: the file descriptor limit is {have} \
             ({RESERVED_FDS} kept for the store and files; raise LimitNOFILE / ulimit -n)"
        );
        return fits;
    }
    max
}

#[cfg(test)]
mod tests {
    use super::*;

    // nextest runs each test in its own process: the limits changed here
    // are this test's own.
    #[test]
    fn a_low_soft_limit_is_raised_and_a_low_hard_limit_lowers_the_connections() {
        let (_, hard) = nofile();
        if hard < 2048 {
            return;
        }
        set_soft_nofile(512, hard).unwrap();
        assert_eq!(fit_connections(1500), 1500);
        assert_eq!(nofile().0, 1500 + RESERVED_FDS);

        // A hard limit of 1000 leaves 1000 - 256 connections.
        set_soft_nofile(1000, 1000).unwrap();
        assert_eq!(fit_connections(4096), 1000 - 256);
        assert_eq!(nofile(), (1000, 1000));
    }
}
