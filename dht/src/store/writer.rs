//! The writer: commits [`Batch`]es on a thread of its own, several per transaction, and reports
//! each result to the event loop.
//!
//! redb commits block on a disk flush, so the event loop must not make them. It hands each
//! batch to the [`Writer`] with an id it chose and goes on; the writer thread takes one batch,
//! drains whatever else is queued by then (up to [`MAX_GROUP_BATCHES`] batches or
//! [`MAX_GROUP_BYTES`] bytes), commits them all in one transaction (flushed to disk unless
//! every batch in it is deferred, see [`Batch::set_deferred`]) and reports one
//! [`Committed`] per commit on [`WriterEvents`]. The event loop acknowledges a write (a put, a
//! replica's answer, a notice's answer) only once its id comes back with `Ok`, and refuses it
//! otherwise.
//!
//! Flow control: at most `queue` batches are in flight, from [`Writer::send`] until their
//! [`Committed`] is taken from [`WriterEvents::recv`]. While that many are in flight,
//! [`Writer::send`] waits, so the event loop must keep receiving events while it waits (both in
//! one `select!`), or use [`Writer::try_send`] and hold back new input while it is full. In
//! exchange the thread never waits on the event loop: it can always report, so
//! [`Writer::close`] returns even if nobody reads the events.

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;

use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{Semaphore, TryAcquireError, mpsc};

use super::batch::Batch;
use super::persist::{Persist, StorageError};

/// Batches one commit takes at most; more wait for the next commit. Bounds how long a commit
/// holds results back and how much one failure refuses.
pub const MAX_GROUP_BATCHES: usize = 1024;

/// Payload bytes ([`Batch::payload_len`]) one commit takes at most, unless a single batch is
/// larger (then it is committed alone). Bounds the memory and the write of one transaction.
pub const MAX_GROUP_BYTES: usize = 8 << 20;

/// The caller's id for a batch, reported back in [`Committed::ids`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WriteId(pub u64);

/// The result of one group commit.
#[derive(Debug)]
pub struct Committed {
    /// The batches the commit held, in the order they were sent.
    pub ids: Vec<WriteId>,
    /// `Ok` if every batch is on disk; otherwise none of them is, and the writes must be
    /// refused, never acknowledged.
    pub result: Result<(), StorageError>,
}

/// Counters of a [`Writer`], for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Successful commits.
    pub commits: u64,
    /// Failed commits.
    pub failed_commits: u64,
    /// Batches committed successfully.
    pub batches: u64,
    /// Operations committed successfully.
    pub ops: u64,
}

/// Why the writer could not take a batch or shut down.
#[derive(Debug, thiserror::Error)]
pub enum WriterError {
    /// `queue` batches are in flight ([`Writer::try_send`]); the batch, handed back, was not
    /// queued and nothing changed.
    #[error("writer queue full (batch {0:?} not queued)")]
    Full(WriteId, Batch),
    /// The writer thread ended (it panicked) or the [`WriterEvents`] were dropped, so nobody
    /// would learn the result; the batch, handed back, was not queued and nothing changed.
    #[error("writer closed (batch {0:?} not queued)")]
    Closed(WriteId, Batch),
    /// The OS could not start the writer thread; nothing was started and nothing changed.
    #[error("could not start the writer thread: {0}")]
    Spawn(#[source] std::io::Error),
    /// The writer thread panicked ([`Writer::close`]). Batches whose [`Committed`] was reported
    /// are as reported; any other batch may or may not be on disk.
    #[error("the writer thread panicked")]
    Panicked,
}

/// Called by the thread after it gathered a group and before it commits it (tests pause the
/// thread there).
type Hook = Box<dyn FnMut() + Send>;

/// The sending half of the writer: queues batches for the writer thread.
///
/// Dropping it ends the thread once it committed everything queued; [`Writer::close`] also
/// waits for that.
#[derive(Debug)]
pub struct Writer {
    queue: mpsc::Sender<(WriteId, Batch)>,
    /// One permit per batch that may still be put in flight. Taken by a send, given back when
    /// the batch's [`Committed`] is received; closed when no result could be learned any more.
    slots: Arc<Semaphore>,
    counters: Arc<Counters>,
    thread: JoinHandle<()>,
}

/// The receiving half of the writer: one [`Committed`] per commit.
///
/// Dropping it makes further sends fail with [`WriterError::Closed`]; batches already queued
/// are still committed.
#[derive(Debug)]
pub struct WriterEvents {
    events: mpsc::Receiver<Committed>,
    slots: Arc<Semaphore>,
}

#[derive(Debug, Default)]
struct Counters {
    commits: AtomicU64,
    failed_commits: AtomicU64,
    batches: AtomicU64,
    ops: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> WriterStats {
        WriterStats {
            commits: self.commits.load(Ordering::Relaxed),
            failed_commits: self.failed_commits.load(Ordering::Relaxed),
            batches: self.batches.load(Ordering::Relaxed),
            ops: self.ops.load(Ordering::Relaxed),
        }
    }
}

impl Writer {
    /// Starts the writer thread over `persist`, with at most `queue` batches in flight (see
    /// the module docs).
    pub fn spawn(
        persist: Arc<Persist>,
        queue: NonZeroUsize,
    ) -> Result<(Writer, WriterEvents), WriterError> {
        Self::spawn_with_hook(persist, queue, None)
    }

    fn spawn_with_hook(
        persist: Arc<Persist>,
        queue: NonZeroUsize,
        hook: Option<Hook>,
    ) -> Result<(Writer, WriterEvents), WriterError> {
        // tokio's semaphore and channels count at most MAX_PERMITS.
        let queue = queue.get().min(Semaphore::MAX_PERMITS);
        let slots = Arc::new(Semaphore::new(queue));
        // Neither channel can fill: at most `queue` batches are in flight, each waits in the
        // queue at most once and is reported in exactly one Committed.
        let (queue_tx, queue_rx) = mpsc::channel(queue);
        let (events_tx, events_rx) = mpsc::channel(queue);
        let counters = Arc::new(Counters::default());
        let thread = std::thread::Builder::new()
            .name("shoal-dht-writer".into())
            .spawn({
                let guard = CloseOnExit(slots.clone());
                let counters = counters.clone();
                move || run(&persist, queue_rx, &events_tx, &counters, hook, guard)
            })
            .map_err(WriterError::Spawn)?;
        let writer = Writer {
            queue: queue_tx,
            slots: slots.clone(),
            counters,
            thread,
        };
        let events = WriterEvents {
            events: events_rx,
            slots,
        };
        Ok((writer, events))
    }

    /// Queues `batch` under `id`, waiting while `queue` batches are in flight. Its result
    /// comes on [`WriterEvents`]. Not cancel safe: if the future is dropped while waiting, the
    /// batch is dropped unqueued.
    pub async fn send(&self, id: WriteId, batch: Batch) -> Result<(), WriterError> {
        match self.slots.acquire().await {
            // The permit comes back through WriterEvents once the result was received.
            Ok(permit) => permit.forget(),
            Err(_) => return Err(WriterError::Closed(id, batch)),
        }
        self.enqueue(id, batch)
    }

    /// Queues `batch` under `id` if fewer than `queue` batches are in flight.
    pub fn try_send(&self, id: WriteId, batch: Batch) -> Result<(), WriterError> {
        match self.slots.try_acquire() {
            // The permit comes back through WriterEvents once the result was received.
            Ok(permit) => permit.forget(),
            Err(TryAcquireError::NoPermits) => return Err(WriterError::Full(id, batch)),
            Err(TryAcquireError::Closed) => return Err(WriterError::Closed(id, batch)),
        }
        self.enqueue(id, batch)
    }

    /// Counters so far.
    pub fn stats(&self) -> WriterStats {
        self.counters.snapshot()
    }

    /// Ends the writer: the thread commits every batch still queued, reports it, and exits,
    /// dropping its handle on the database. Blocks until then (from async code, call it through
    /// `spawn_blocking`). Returns the final counters.
    pub fn close(self) -> Result<WriterStats, WriterError> {
        let Writer {
            queue,
            counters,
            thread,
            ..
        } = self;
        // The thread ends once the queue is closed and empty.
        drop(queue);
        thread.join().map_err(|_| WriterError::Panicked)?;
        Ok(counters.snapshot())
    }

    fn enqueue(&self, id: WriteId, batch: Batch) -> Result<(), WriterError> {
        self.queue.try_send((id, batch)).map_err(|e| {
            // The batch is not in flight, so its slot is free again.
            self.slots.add_permits(1);
            match e {
                TrySendError::Full((id, batch)) => WriterError::Full(id, batch),
                TrySendError::Closed((id, batch)) => WriterError::Closed(id, batch),
            }
        })
    }
}

impl WriterEvents {
    /// The next commit's result, or `None` once the writer thread ended and every result was
    /// received (after [`Writer::close`] or a drop of the [`Writer`], or because the thread
    /// panicked: then batches not reported may or may not be on disk). Cancel safe.
    pub async fn recv(&mut self) -> Option<Committed> {
        let committed = self.events.recv().await?;
        self.release(&committed);
        Some(committed)
    }

    /// The next commit's result if one is waiting.
    pub fn try_recv(&mut self) -> Option<Committed> {
        let committed = self.events.try_recv().ok()?;
        self.release(&committed);
        Some(committed)
    }

    fn release(&self, committed: &Committed) {
        self.slots.add_permits(committed.ids.len());
    }
}

impl Drop for WriterEvents {
    fn drop(&mut self) {
        // Results can no longer be received, so a send could never be acknowledged, and its
        // slot would never come back.
        self.slots.close();
    }
}

/// Closes the slots when the thread ends, even by a panic, so that no send waits forever for
/// results that will not come.
struct CloseOnExit(Arc<Semaphore>);

impl Drop for CloseOnExit {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// The writer thread: group, commit, report, until the queue is closed and empty.
fn run(
    persist: &Persist,
    mut queue: mpsc::Receiver<(WriteId, Batch)>,
    events: &mpsc::Sender<Committed>,
    counters: &Counters,
    mut hook: Option<Hook>,
    _guard: CloseOnExit,
) {
    // A batch taken from the queue that did not fit the previous group.
    let mut carried: Option<(WriteId, Batch)> = None;
    loop {
        let first = match carried.take() {
            Some(item) => item,
            None => match queue.blocking_recv() {
                Some(item) => item,
                None => return,
            },
        };
        let mut bytes = first.1.payload_len();
        let mut group = vec![first];
        while group.len() < MAX_GROUP_BATCHES && bytes < MAX_GROUP_BYTES {
            // Empty or closed: commit what we have; a closed queue ends the loop on the next
            // blocking_recv, after everything queued was committed.
            let Ok(item) = queue.try_recv() else { break };
            let len = item.1.payload_len();
            if bytes + len > MAX_GROUP_BYTES {
                carried = Some(item);
                break;
            }
            bytes += len;
            group.push(item);
        }
        if let Some(hook) = hook.as_mut() {
            hook();
        }
        let result = persist.commit_many(group.iter().map(|(_, batch)| batch));
        match &result {
            Ok(()) => {
                let ops: usize = group.iter().map(|(_, batch)| batch.len()).sum();
                counters.commits.fetch_add(1, Ordering::Relaxed);
                counters
                    .batches
                    .fetch_add(group.len() as u64, Ordering::Relaxed);
                counters.ops.fetch_add(ops as u64, Ordering::Relaxed);
            }
            Err(e) => {
                counters.failed_commits.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, batches = group.len(), "group commit failed");
            }
        }
        let ids = group.into_iter().map(|(id, _)| id).collect();
        // Never waits: the channel has room for every batch in flight (see spawn). It fails
        // only if the events were dropped; the queued batches are still committed, since the
        // event loop may have promised them to someone.
        let _ = events.try_send(Committed { ids, result });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc as std_mpsc;
    use std::time::{Duration, Instant};

    use super::*;

    const WAIT: Duration = Duration::from_secs(10);

    fn put(i: u64) -> Batch {
        let mut batch = Batch::new();
        batch.put_record(format!("key-{i:05}"), format!("value-{i}"));
        batch
    }

    fn queue(n: usize) -> NonZeroUsize {
        NonZeroUsize::new(n).unwrap()
    }

    fn ids(range: std::ops::Range<u64>) -> Vec<WriteId> {
        range.map(WriteId).collect()
    }

    /// A hook that stops the thread before each commit: `arrived` says it stopped, a message
    /// on `go` lets it commit. Dropping both halves lets it run freely.
    struct Gate {
        arrived: std_mpsc::Receiver<()>,
        go: std_mpsc::SyncSender<()>,
    }

    impl Gate {
        fn new() -> (Gate, Hook) {
            let (arrived_tx, arrived) = std_mpsc::sync_channel(0);
            let (go, go_rx) = std_mpsc::sync_channel(0);
            let hook: Hook = Box::new(move || {
                if arrived_tx.send(()).is_ok() {
                    let _ = go_rx.recv();
                }
            });
            (Gate { arrived, go }, hook)
        }

        fn wait_arrived(&self) {
            self.arrived
                .recv_timeout(WAIT)
                .expect("the writer thread reaches the gate");
        }

        fn open_once(&self) {
            self.go.send(()).unwrap();
        }
    }

    #[tokio::test]
    async fn groups_batches_queued_while_a_commit_runs() {
        let persist = Arc::new(Persist::in_memory().unwrap());
        let (gate, hook) = Gate::new();
        let (writer, mut events) =
            Writer::spawn_with_hook(persist.clone(), queue(16), Some(hook)).unwrap();

        writer.try_send(WriteId(0), put(0)).unwrap();
        // The thread holds [0] and is about to commit it; what is sent now waits in the queue.
        gate.wait_arrived();
        for i in 1..6 {
            writer.try_send(WriteId(i), put(i)).unwrap();
        }
        gate.open_once();
        gate.wait_arrived();
        gate.open_once();

        let first = events.recv().await.unwrap();
        assert_eq!(first.ids, ids(0..1));
        first.result.unwrap();
        let second = events.recv().await.unwrap();
        assert_eq!(second.ids, ids(1..6));
        second.result.unwrap();

        drop(gate);
        let stats = writer.close().unwrap();
        assert_eq!(
            stats,
            WriterStats {
                commits: 2,
                failed_commits: 0,
                batches: 6,
                ops: 6
            }
        );
        assert!(events.recv().await.is_none());
        assert_eq!(persist.records().unwrap().len(), 6);
    }

    #[tokio::test]
    async fn reports_every_id_once_in_order_under_backpressure() {
        const N: u64 = 300;
        let persist = Arc::new(Persist::in_memory().unwrap());
        let (writer, mut events) = Writer::spawn(persist.clone(), queue(8)).unwrap();
        let sender = async {
            for i in 0..N {
                writer.send(WriteId(i), put(i)).await.unwrap();
            }
        };
        let receiver = async {
            let mut seen = Vec::new();
            while (seen.len() as u64) < N {
                let committed = events.recv().await.unwrap();
                committed.result.unwrap();
                assert!(committed.ids.len() <= 8, "at most `queue` in flight");
                seen.extend(committed.ids);
            }
            seen
        };
        let ((), seen) = tokio::join!(sender, receiver);
        assert_eq!(seen, ids(0..N));
        let stats = writer.close().unwrap();
        assert_eq!(stats.batches, N);
        assert_eq!(stats.ops, N);
        assert!(stats.commits <= N);
        assert_eq!(persist.records().unwrap().len() as u64, N);
    }

    #[tokio::test]
    async fn try_send_refuses_when_full_and_frees_slots_on_receive() {
        let persist = Arc::new(Persist::in_memory().unwrap());
        let (writer, mut events) = Writer::spawn(persist, queue(2)).unwrap();
        writer.try_send(WriteId(0), put(0)).unwrap();
        writer.try_send(WriteId(1), put(1)).unwrap();
        let Err(WriterError::Full(WriteId(2), back)) = writer.try_send(WriteId(2), put(2)) else {
            panic!("a third batch must not fit a queue of two");
        };
        assert_eq!(back, put(2));
        let mut seen = Vec::new();
        while seen.len() < 2 {
            seen.extend(events.recv().await.unwrap().ids);
        }
        writer.try_send(WriteId(2), put(2)).unwrap();
        assert_eq!(events.recv().await.unwrap().ids, ids(2..3));

        drop(events);
        assert!(matches!(
            writer.try_send(WriteId(3), put(3)),
            Err(WriterError::Closed(WriteId(3), _))
        ));
        writer.close().unwrap();
    }

    #[tokio::test]
    async fn failed_commit_refuses_its_batches_and_later_commits_succeed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.redb");
        let persist = Arc::new(Persist::open(&path).unwrap());
        let (writer, mut events) = Writer::spawn(persist.clone(), queue(4)).unwrap();

        persist.dangerous_fail_commits(1);
        writer.send(WriteId(0), put(0)).await.unwrap();
        let failed = events.recv().await.unwrap();
        assert_eq!(failed.ids, ids(0..1));
        assert!(matches!(failed.result, Err(StorageError::Injected)));
        assert!(persist.records().unwrap().is_empty());

        writer.send(WriteId(1), put(1)).await.unwrap();
        let ok = events.recv().await.unwrap();
        assert_eq!(ok.ids, ids(1..2));
        ok.result.unwrap();

        let stats = writer.close().unwrap();
        assert_eq!(
            stats,
            WriterStats {
                commits: 1,
                failed_commits: 1,
                batches: 1,
                ops: 1
            }
        );
        drop(persist);
        let persist = Persist::open(&path).unwrap();
        assert_eq!(
            persist.records().unwrap(),
            vec![(b"key-00001".to_vec(), b"value-1".to_vec())]
        );
    }

    #[tokio::test]
    async fn close_commits_everything_queued() {
        const N: u64 = 50;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.redb");
        let persist = Arc::new(Persist::open(&path).unwrap());
        let (gate, hook) = Gate::new();
        let (writer, mut events) =
            Writer::spawn_with_hook(persist.clone(), queue(64), Some(hook)).unwrap();

        writer.try_send(WriteId(0), put(0)).unwrap();
        gate.wait_arrived();
        for i in 1..N {
            writer.try_send(WriteId(i), put(i)).unwrap();
        }
        // Lets the thread run on its own: the rest is still queued when close begins, and
        // nobody reads the events until close returned.
        drop(gate);
        let stats = writer.close().unwrap();
        assert_eq!(stats.batches, N);
        assert_eq!(stats.commits, 2);
        assert_eq!(
            Arc::strong_count(&persist),
            1,
            "the thread let go of the database"
        );

        assert_eq!(events.recv().await.unwrap().ids, ids(0..1));
        assert_eq!(events.recv().await.unwrap().ids, ids(1..N));
        assert!(events.recv().await.is_none());

        drop(persist);
        let persist = Persist::open(&path).unwrap();
        assert_eq!(persist.records().unwrap().len() as u64, N);
    }

    #[test]
    fn large_batches_split_groups_by_bytes() {
        let persist = Arc::new(Persist::in_memory().unwrap());
        let (gate, hook) = Gate::new();
        let (writer, mut events) = Writer::spawn_with_hook(persist, queue(8), Some(hook)).unwrap();
        let big = |i: u64| {
            let mut batch = Batch::new();
            // Two fit one group, three do not.
            batch.put_record(format!("big-{i}"), vec![0u8; MAX_GROUP_BYTES / 2 - 16]);
            batch
        };
        writer.try_send(WriteId(0), put(0)).unwrap();
        gate.wait_arrived();
        for i in 1..4 {
            writer.try_send(WriteId(i), big(i)).unwrap();
        }
        drop(gate);
        writer.close().unwrap();
        let mut groups = Vec::new();
        while let Some(committed) = events.try_recv() {
            committed.result.unwrap();
            groups.push(committed.ids);
        }
        // Two halves fill a group; the third does not fit and goes to the next one.
        assert_eq!(groups, vec![ids(0..1), ids(1..3), ids(3..4)]);
    }

    /// Times single-op batches committed one per commit against the same batches grouped by
    /// the writer, on the disk holding the temporary directory. Run with
    /// `cargo test -p shoal-dht --release --lib store -- --ignored --nocapture`.
    #[tokio::test]
    #[ignore = "measurement, prints figures"]
    async fn measure_group_commit() {
        const N: u64 = 2_000;
        const IN_FLIGHT: usize = 64;
        let envelope = vec![0xab; 256];
        let batch = |i: u64| {
            let mut batch = Batch::new();
            batch.put_record(format!("key-{i:032}"), envelope.clone());
            batch
        };
        let dir = tempfile::tempdir().unwrap();
        println!(
            "dir {}, {N} batches of one 32-byte key and 256-byte envelope",
            dir.path().display()
        );

        let persist = Persist::open(&dir.path().join("single.redb")).unwrap();
        let start = Instant::now();
        for i in 0..N {
            persist.commit(&batch(i)).unwrap();
        }
        let single = start.elapsed().as_secs_f64();
        println!(
            "one per commit:   {N} commits in {single:.3} s: {:.0} commits/s, {:.0} ops/s",
            N as f64 / single,
            N as f64 / single
        );

        let persist = Arc::new(Persist::open(&dir.path().join("grouped.redb")).unwrap());
        let (writer, mut events) = Writer::spawn(persist, queue(IN_FLIGHT)).unwrap();
        let start = Instant::now();
        let sender = async {
            for i in 0..N {
                writer.send(WriteId(i), batch(i)).await.unwrap();
            }
        };
        let receiver = async {
            let mut done = 0;
            while done < N {
                let committed = events.recv().await.unwrap();
                committed.result.unwrap();
                done += committed.ids.len() as u64;
            }
        };
        tokio::join!(sender, receiver);
        let grouped = start.elapsed().as_secs_f64();
        let stats = writer.close().unwrap();
        println!(
            "grouped, {IN_FLIGHT} in flight: {} commits in {grouped:.3} s: {:.0} commits/s, \
             {:.0} ops/s, {:.1} batches per commit",
            stats.commits,
            stats.commits as f64 / grouped,
            stats.ops as f64 / grouped,
            stats.batches as f64 / stats.commits as f64
        );
    }
}
