//! Process-wide CPU settings for the numeric code, applied by `main` before any thread starts.
//!
//! Both settings were measured with `penumbra bench infer` on the shipped width-8 model on a
//! shared 2-core machine at load average 12 (docs/benchmarks.md has the runs):
//!
//! - candle 0.11.1 splits element-wise ops of 64 Ki elements or more over its own thread pool,
//!   and the calling thread spin-waits for that pool. When the cores are busy the spinning
//!   thread occupies a core that the pool needs. Setting `CANDLE_NUM_THREADS=1` empties that
//!   pool, so these memory-bound ops run on the calling thread. The convolutions keep using
//!   every rayon thread. Inference went from about 2000 to about 550 ms per slice.
//! - glibc serves allocations above its mmap threshold with fresh pages that the kernel must
//!   zero and fault in. Feature maps of 1 to 32 MiB are allocated and freed for every layer,
//!   so a 32 MiB threshold and a 64 MiB trim threshold keep them in the heap for reuse.
//!   Inference went from about 480 to about 335 ms per slice.
//! - Training frees more than 64 MiB at once at the end of an optimizer step (the feature maps
//!   kept for the backward pass and their gradients). glibc then gave that memory back, and the
//!   next step faulted every page in again. [`keep_freed_memory_for_training`] raises the trim
//!   threshold to 1 GiB for `penumbra train` and `penumbra ablate`. On 5 studies and 10 epochs
//!   (2 AMD EPYC cores) page faults fell from 3.7-3.9 to 1.1 million, system time from 11-15 s
//!   to 4 s and wall time from 67 to 58 s, with the same peak memory.

/// Value of `CANDLE_NUM_THREADS` unless the environment sets it.
const CANDLE_THREADS: &str = "1";

/// Allocations up to this size come from the heap instead of fresh mmap pages.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD_BYTES: libc::c_int = 32 << 20;

/// Free memory at the top of the heap beyond this size goes back to the kernel.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_THRESHOLD_BYTES: libc::c_int = 64 << 20;

/// Free memory at the top of the heap that training keeps for its next step.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRAINING_TRIM_THRESHOLD_BYTES: libc::c_int = 1 << 30;

/// Applies both settings. Call it first in `main`, while the process has one thread, because
/// setting an environment variable is not safe while other threads read the environment.
pub fn apply() {
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", CANDLE_THREADS);
    }

    // SAFETY: mallopt only changes allocator parameters, and no other thread allocates yet.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES);
    }
}

/// Keeps up to 1 GiB of freed memory in the heap instead of returning it to the kernel, for
/// commands that train. A long-running daemon keeps the smaller threshold of [`apply`].
pub fn keep_freed_memory_for_training() {
    // SAFETY: mallopt only changes an allocator parameter, under the allocator's own lock.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRAINING_TRIM_THRESHOLD_BYTES);
    }
}
