//! The one worker pool every parallel step runs on: candle's CPU pool
//! (`candle_core::utils::barrier_pool`: the calling thread plus `threads - 1` workers).
//!
//! candle's quantised matmuls run on that pool, and its workers spin for a while after each
//! call before they park. A second pool (rayon's) woken right after a forward pass found a core
//! taken by the spinning worker: on a 2-core machine the sampler's two-half pass ran at one
//! core's speed in real runs (the figures are in `bench/perf-notes.md`). So declab's own
//! kernels and the sampler's halves run on this pool (a batch's rows are sampled one after
//! another, each row's passes split over the pool).
//!
//! Work is split into fixed pieces (two halves, or one item per index), so no result depends on
//! the number of threads.

use std::cell::Cell;
use std::ops::Range;
use std::sync::Mutex;

use candle_core::utils::barrier_pool;

thread_local! {
    /// Set while this thread runs work for the pool: a nested call runs inline (candle's pool
    /// takes one call at a time).
    static IN_POOL: Cell<bool> = const { Cell::new(false) };
}

/// Threads the pool runs work on (1: everything inline).
pub fn threads() -> usize {
    barrier_pool().n_workers() + 1
}

fn inline() -> bool {
    threads() < 2 || IN_POOL.with(Cell::get) || rayon::current_thread_index().is_some()
}

/// Runs `f` marked as pool work (see [`IN_POOL`]), restoring the mark afterwards.
fn as_pool_work<R>(f: impl FnOnce() -> R) -> R {
    let was = IN_POOL.with(|c| c.replace(true));
    let r = f();
    IN_POOL.with(|c| c.set(was));
    r
}

/// `(first(), second())`, on two threads when the pool has them; inline inside pool work (its
/// threads are busy already, and candle's pool takes one call at a time).
pub fn join<A: Send, B: Send>(
    first: impl FnOnce() -> A + Send,
    second: impl FnOnce() -> B + Send,
) -> (A, B) {
    if inline() {
        return (first(), second());
    }
    let first = Mutex::new(Some(first));
    let second = Mutex::new(Some(second));
    let (ra, rb) = (Mutex::new(None), Mutex::new(None));
    barrier_pool().execute(|tid| match tid {
        0 => {
            if let Some(f) = first.lock().unwrap().take() {
                *ra.lock().unwrap() = Some(as_pool_work(f));
            }
        }
        1 => {
            if let Some(f) = second.lock().unwrap().take() {
                *rb.lock().unwrap() = Some(as_pool_work(f));
            }
        }
        _ => {}
    });
    let a = ra.into_inner().unwrap().expect("the first half ran");
    let b = rb.into_inner().unwrap().expect("the second half ran");
    (a, b)
}

/// Calls `f` on ranges covering `0..n` (in chunks taken by whichever thread is free), on every
/// thread of the pool; inline when the pool has one thread or when called from pool work. A
/// single item runs on the calling thread as ordinary (not pool) work, so its inner
/// [`join`]s still split.
pub fn for_each_chunk(n: usize, f: impl Fn(Range<usize>) + Sync) {
    if n == 0 {
        return;
    }
    if n == 1 {
        // one item: run it here, unmarked, so that its own joins can use the pool
        return f(0..1);
    }
    if inline() {
        return as_pool_work(|| f(0..n));
    }
    barrier_pool().execute_chunked(n, |r| as_pool_work(|| f(r)));
}

/// `f(i)` for every `i` in `0..n`, results in index order.
pub fn map<T: Send>(n: usize, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let out: Vec<Mutex<Option<T>>> = (0..n).map(|_| Mutex::new(None)).collect();
    for_each_chunk(n, |r| {
        for i in r {
            *out[i].lock().unwrap() = Some(f(i));
        }
    });
    out.into_iter()
        .map(|m| m.into_inner().unwrap().expect("every index ran"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_and_map_give_every_result_in_order() {
        let (a, b) = join(|| (0..1000u64).sum::<u64>(), || "second");
        assert_eq!((a, b), (499_500, "second"));
        let v = map(1000, |i| i * i);
        assert_eq!(v, (0..1000).map(|i| i * i).collect::<Vec<_>>());
        // nested use runs inline instead of waiting on the pool it is part of
        let nested = map(8, |i| join(|| i, || map(3, |j| i + j)));
        assert_eq!(nested[5], (5, vec![5, 6, 7]));
        assert!(map(0, |i| i).is_empty());
    }
}
