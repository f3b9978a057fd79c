//! Rayon thread pools sized by an instance's CPU weight (`resources.cpus`), so that the rayon
//! work inside a stage (KSG, augmentation, Monte Carlo) uses as many threads as the instance
//! was admitted with, not the whole machine: parallel instances no longer oversubscribe the
//! cores through rayon's global pool.
//!
//! Pools are reused: a finished instance hands its pool back, and the next instance of the
//! same weight takes it. Building a pool starts its threads, which at ten thousand small
//! instances would cost more than the instances themselves; at most as many pools of a size
//! exist as instances of that size ever ran at once. A pool of one thread is still a pool:
//! outside one, rayon work goes to the global pool (every core), not to the calling thread.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use rayon::{ThreadPool, ThreadPoolBuilder};

/// Idle pools by thread count.
#[derive(Default)]
pub struct Pools {
    idle: Mutex<HashMap<usize, Vec<Arc<ThreadPool>>>>,
}

/// A pool of `threads` threads taken from [`Pools`] until dropped.
pub struct Lease {
    home: &'static Pools,
    threads: usize,
    pool: Option<Arc<ThreadPool>>,
}

impl Pools {
    /// The process's pools.
    pub fn shared() -> &'static Pools {
        static POOLS: OnceLock<Pools> = OnceLock::new();
        POOLS.get_or_init(Pools::default)
    }

    /// An idle pool of `threads` (at least 1) threads, or a new one.
    pub fn take(&'static self, threads: usize) -> Result<Lease, rayon::ThreadPoolBuildError> {
        let threads = threads.max(1);
        let idle = self
            .idle
            .lock()
            .ok()
            .and_then(|mut idle| idle.get_mut(&threads).and_then(Vec::pop));
        let pool = match idle {
            Some(pool) => pool,
            None => Arc::new(
                ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .thread_name(move |i| format!("cbound-{threads}t-{i}"))
                    // A panic escaping a job would otherwise abort the process; jobs catch
                    // their own (see the local executor), so this only logs.
                    .panic_handler(|_| tracing::error!("a job panicked outside its stage"))
                    .build()?,
            ),
        };
        Ok(Lease {
            home: self,
            threads,
            pool: Some(pool),
        })
    }

    /// How many idle pools of `threads` threads there are (for tests).
    pub fn idle(&self, threads: usize) -> usize {
        self.idle
            .lock()
            .map(|idle| idle.get(&threads).map_or(0, Vec::len))
            .unwrap_or(0)
    }
}

impl Lease {
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Runs `op` in the pool: directly when called from one of its threads, else on one of
    /// them while the caller waits.
    pub fn install<R: Send>(&self, op: impl FnOnce() -> R + Send) -> R {
        match &self.pool {
            Some(pool) => pool.install(op),
            // Only while dropping; kept total rather than panicking.
            None => op(),
        }
    }

    /// Starts `op` on one of the pool's threads and returns at once; when `op` is done the
    /// pool goes back to the idle ones, and only then `then` gets its result, so the next
    /// instance (started once `then` reports this one finished) finds the pool idle.
    pub fn spawn<R: Send + 'static>(
        self,
        op: impl FnOnce(&Lease) -> R + Send + 'static,
        then: impl FnOnce(R) + Send + 'static,
    ) {
        let pool = self.pool.clone();
        let job = move || {
            let result = op(&self);
            drop(self);
            then(result);
        };
        match pool {
            Some(pool) => pool.spawn(job),
            None => job(),
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.take() {
            if let Ok(mut idle) = self.home.idle.lock() {
                idle.entry(self.threads).or_default().push(pool);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_runs_rayon_work_on_its_own_threads_and_is_reused() {
        static POOLS: OnceLock<Pools> = OnceLock::new();
        let pools = POOLS.get_or_init(Pools::default);
        for threads in [1, 3] {
            let lease = pools.take(threads).unwrap();
            let (inside, workers) = lease.install(|| {
                use rayon::prelude::*;
                let names: std::collections::HashSet<String> = (0..10_000)
                    .into_par_iter()
                    .map(|_| std::thread::current().name().unwrap_or("").to_string())
                    .collect();
                (rayon::current_num_threads(), names)
            });
            assert_eq!(inside, threads);
            // Every piece of work ran on one of the pool's threads, none on the global pool.
            let prefix = format!("cbound-{threads}t-");
            assert!(
                workers.iter().all(|n| n.starts_with(&prefix)) && workers.len() <= threads,
                "{workers:?}"
            );
            drop(lease);
            assert_eq!(pools.idle(threads), 1);
            let again = pools.take(threads).unwrap();
            assert_eq!(pools.idle(threads), 0, "the idle pool was reused");
            drop(again);
        }
    }
}
