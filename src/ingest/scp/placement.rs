//! Work after the C-STORE response, on a thread of the association's own.
//!
//! With the intake journal a sink acknowledges an instance once its record is on disk and leaves
//! the spool file to a [`Completion`]: write the file, link it, notify the assembler. Run on the
//! association's thread, that work kept the next data set waiting in the socket. Each
//! association therefore starts a placement thread. The receiver hands it the completion with
//! the instance's buffer and reads on, and the thread sends the buffer back for reuse.
//!
//! At most [`QUEUE_DEPTH`] instances wait in the queue, so a slow disk slows the sender instead of
//! filling memory. [`Placer::finish`] waits for every instance handed over. The association calls
//! it before it replies to a release request or closes, so every acknowledged instance is in the
//! spool once the association has ended.

use std::ops::Range;
use std::thread::{self, Scope, ScopedJoinHandle};

use crossbeam_channel::{bounded, Receiver, SendError, Sender};

use super::Completion;

/// Instances that may wait for their placement while the association reads on.
pub(super) const QUEUE_DEPTH: usize = 2;

/// One instance to place: its completion, and the buffer with its file at `file`.
struct Job<'env> {
    completion: Completion<'env>,
    buffer: Vec<u8>,
    file: Range<usize>,
}

/// The placement thread of one association.
pub(super) struct Placer<'scope, 'env> {
    jobs: Option<Sender<Job<'env>>>,
    returned: Receiver<Vec<u8>>,
    worker: Option<ScopedJoinHandle<'scope, ()>>,
}

impl<'scope, 'env> Placer<'scope, 'env> {
    /// Starts the placement thread in `scope`. When the thread cannot be started, every
    /// instance is placed on the caller's thread, after its response and before the next
    /// instance is read.
    pub(super) fn start(scope: &'scope Scope<'scope, 'env>) -> Self {
        let (jobs, queue) = bounded::<Job<'env>>(QUEUE_DEPTH);
        let (give_back, returned) = bounded(QUEUE_DEPTH + 1);
        // The association's span (peer address and AE title) stays on the placement's log lines.
        let span = tracing::Span::current();
        let worker = thread::Builder::new().name("scp-placement".into()).spawn_scoped(scope, move || {
            let _entered = span.enter();
            for job in queue {
                (job.completion)(&job.buffer[job.file.clone()]);
                // When the receiver already has enough buffers waiting, this one is freed.
                let _ = give_back.try_send(job.buffer);
            }
        });

        match worker {
            Ok(worker) => Self { jobs: Some(jobs), returned, worker: Some(worker) },
            Err(error) => {
                tracing::warn!(%error, "could not start a placement thread; instances are placed before the next one is read");
                Self { jobs: None, returned, worker: None }
            }
        }
    }

    /// Places the file `buffer[file]` with `completion`. Returns the buffer when the placement
    /// ran on this thread, `None` when the placement thread took it.
    pub(super) fn place(&self, completion: Completion<'env>, buffer: Vec<u8>, file: Range<usize>) -> Option<Vec<u8>> {
        let job = Job { completion, buffer, file };
        let job = match &self.jobs {
            Some(jobs) => match jobs.send(job) {
                Ok(()) => return None,
                Err(SendError(job)) => {
                    tracing::warn!("the placement thread has ended; the instance is placed on the association's thread");
                    job
                }
            },
            None => job,
        };

        (job.completion)(&job.buffer[job.file.clone()]);
        Some(job.buffer)
    }

    /// Returns a buffer whose instance has been placed, when one is waiting.
    pub(super) fn returned_buffer(&self) -> Option<Vec<u8>> {
        self.returned.try_recv().ok()
    }

    /// Waits until every instance handed over is placed, and ends the thread.
    pub(super) fn finish(&mut self) {
        drop(self.jobs.take());
        if let Some(worker) = self.worker.take() {
            if worker.join().is_err() {
                tracing::error!("the placement thread panicked; the journal keeps the instances it had not placed until the next start");
            }
        }
    }
}

impl Drop for Placer<'_, '_> {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;
    use std::time::Duration;

    use super::*;

    #[test]
    fn placement_runs_on_another_thread() {
        let caller = thread::current().id();
        let seen = Mutex::new(Vec::new());

        thread::scope(|scope| {
            let mut placer = Placer::start(scope);
            let completion: Completion<'_> = Box::new(|bytes: &[u8]| {
                seen.lock().unwrap().push((thread::current().id(), bytes.to_vec()));
            });
            let left_here = placer.place(completion, b"..file..".to_vec(), 2..6);
            placer.finish();

            assert!(left_here.is_none(), "the buffer went to the placement thread");
        });

        let seen = seen.into_inner().unwrap();
        assert_eq!(seen.len(), 1);
        assert_ne!(seen[0].0, caller);
        assert_eq!(seen[0].1, b"file");
    }

    #[test]
    fn finish_waits_for_every_placement() {
        let placed = AtomicUsize::new(0);

        thread::scope(|scope| {
            let mut placer = Placer::start(scope);
            for _ in 0..5 {
                let completion: Completion<'_> = Box::new(|_: &[u8]| {
                    thread::sleep(Duration::from_millis(20));
                    placed.fetch_add(1, Ordering::SeqCst);
                });
                placer.place(completion, vec![0; 8], 0..8);
            }
            placer.finish();

            assert_eq!(placed.load(Ordering::SeqCst), 5);
        });
    }

    #[test]
    fn placed_buffers_come_back() {
        thread::scope(|scope| {
            let mut placer = Placer::start(scope);
            let completion: Completion<'_> = Box::new(|_: &[u8]| {});
            placer.place(completion, Vec::with_capacity(4096), 0..0);
            placer.finish();

            let buffer = placer.returned_buffer().expect("the placed buffer is returned");
            assert_eq!(buffer.capacity(), 4096);
            assert!(placer.returned_buffer().is_none());
        });
    }
}
