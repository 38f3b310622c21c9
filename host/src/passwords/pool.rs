//! The process-wide budget for argon2: at most `permits` hashes run at once
//! (each takes ~19 MiB and a core for tens of milliseconds), so a flood of
//! logins costs bounded memory and CPU instead of one blocking thread and
//! 19 MiB per request.
//!
//! Why process-wide: memory and cores are shared by every caller (login,
//! user creation, password changes), so they share one budget.

use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::PasswordError;

/// How long a login waits for a free hasher before it is shed: long enough
/// to ride out a burst, short enough that every login gets an answer fast.
pub const QUEUE_WAIT: Duration = Duration::from_secs(2);

/// Waiters beyond this many (per permit) are shed at once instead of queued.
const WAITERS_PER_PERMIT: usize = 32;

/// Seconds a shed caller is told to wait (`Retry-After`).
pub const RETRY_AFTER_SECS: u64 = 2;

/// A bounded set of argon2 slots with a bounded, FIFO wait queue.
#[derive(Debug)]
pub struct HashPool {
    slots: Arc<Semaphore>,
    permits: usize,
    waiting: AtomicUsize,
}

impl HashPool {
    /// A pool running at most `permits` (at least 1) hashes at once.
    pub fn new(permits: usize) -> HashPool {
        let permits = permits.max(1);
        HashPool {
            slots: Arc::new(Semaphore::new(permits)),
            permits,
            waiting: AtomicUsize::new(0),
        }
    }

    /// How many hashes may run at once.
    pub fn permits(&self) -> usize {
        self.permits
    }

    /// Takes a slot, waiting at most `wait`; `Busy` when none frees up in
    /// time or the queue is already full. The permit is meant to move into
    /// the blocking task, so a caller that goes away (a dropped connection)
    /// does not free the slot while its hash still runs.
    pub async fn acquire_within(
        &self,
        wait: Duration,
    ) -> Result<OwnedSemaphorePermit, PasswordError> {
        if let Ok(permit) = self.slots.clone().try_acquire_owned() {
            return Ok(permit);
        }
        let _queued = self.enqueue()?;
        match tokio::time::timeout(wait, self.slots.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            // The semaphore is never closed; treat it like a timeout anyway.
            Ok(Err(_)) | Err(_) => Err(PasswordError::Busy {
                retry_after: RETRY_AFTER_SECS,
            }),
        }
    }

    /// Takes a slot, waiting as long as it takes (FIFO behind other
    /// callers): for authenticated work such as setting a password, which
    /// an anonymous flood must not be able to refuse.
    pub async fn acquire(&self) -> Result<OwnedSemaphorePermit, PasswordError> {
        self.slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| PasswordError::Task(e.to_string()))
    }

    /// Joins the wait queue, or refuses when it is full.
    fn enqueue(&self) -> Result<QueueSpot<'_>, PasswordError> {
        let limit = self.permits.saturating_mul(WAITERS_PER_PERMIT);
        let before = self.waiting.fetch_add(1, Ordering::AcqRel);
        let spot = QueueSpot(&self.waiting);
        if before >= limit {
            return Err(PasswordError::Busy {
                retry_after: RETRY_AFTER_SECS,
            });
        }
        Ok(spot)
    }
}

/// One place in the wait queue; leaving it (however) frees it.
struct QueueSpot<'a>(&'a AtomicUsize);

impl Drop for QueueSpot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

static POOL: OnceLock<HashPool> = OnceLock::new();

/// Sizes the process-wide pool; only the first call (before any hash) has
/// an effect. Returns the size in force.
pub fn configure(permits: usize) -> usize {
    global_or(permits).permits()
}

/// The process-wide pool (sized by [`default_permits`] unless configured).
pub fn global() -> &'static HashPool {
    global_or(default_permits())
}

/// The size of the process-wide pool, if it has been made yet (without
/// making it, so a caller cannot fix its size by asking).
pub fn permits_in_force() -> Option<usize> {
    POOL.get().map(HashPool::permits)
}

fn global_or(permits: usize) -> &'static HashPool {
    POOL.get_or_init(|| HashPool::new(permits))
}

/// One fewer than the cores (at least 1): a core stays free for the
/// requests that do not hash, so a login flood cannot starve them.
pub fn default_permits() -> usize {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    cores.saturating_sub(1).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[tokio::test]
    async fn a_full_pool_sheds_after_the_wait() {
        let pool = HashPool::new(1);
        let held = pool.acquire_within(QUEUE_WAIT).await.unwrap();
        let started = Instant::now();
        let err = pool
            .acquire_within(Duration::from_millis(50))
            .await
            .unwrap_err();
        assert!(
            matches!(err, PasswordError::Busy { retry_after } if retry_after > 0),
            "{err}"
        );
        assert!(started.elapsed() < Duration::from_secs(1));
        drop(held);
        assert!(pool.acquire_within(Duration::from_millis(50)).await.is_ok());
    }

    #[tokio::test]
    async fn a_waiter_gets_the_slot_when_it_frees() {
        let pool = Arc::new(HashPool::new(1));
        let held = pool.acquire_within(QUEUE_WAIT).await.unwrap();
        let waiter = tokio::spawn({
            let pool = pool.clone();
            async move { pool.acquire_within(QUEUE_WAIT).await.is_ok() }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(held);
        assert!(waiter.await.unwrap());
    }

    #[tokio::test]
    async fn the_queue_is_bounded() {
        let pool = Arc::new(HashPool::new(1));
        let _held = pool.acquire_within(QUEUE_WAIT).await.unwrap();
        let waiters: Vec<_> = (0..WAITERS_PER_PERMIT)
            .map(|_| {
                let pool = pool.clone();
                tokio::spawn(
                    async move { pool.acquire_within(Duration::from_secs(5)).await.is_ok() },
                )
            })
            .collect();
        // Let every waiter queue up, then one more is refused at once.
        while pool.waiting.load(Ordering::Acquire) < WAITERS_PER_PERMIT {
            tokio::task::yield_now().await;
        }
        let started = Instant::now();
        assert!(pool.acquire_within(Duration::from_secs(5)).await.is_err());
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "refused without waiting"
        );
        for w in waiters {
            w.abort();
        }
    }

    #[test]
    fn at_least_one_permit() {
        assert_eq!(HashPool::new(0).permits(), 1);
        assert!(default_permits() >= 1);
    }
}
