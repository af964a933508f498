//! The event loop: each thread owns a share of the connections, nonblocking and registered
//! with one epoll instance (mio), and keeps them busy. Closed loop refills a connection to
//! its depth as soon as its replies are read, one write per batch of replies; open loop
//! issues requests when they fall due and charges each with the time since it was due.
//! Open-loop requests go round-robin to connections with a free slot, as from many
//! independent clients, so a server sees few requests per read (depth-1-like traffic) until
//! it falls behind; the loop spins through the last millisecond before a due time because
//! epoll waits in whole milliseconds.
//!
//! Nothing is allocated per request: keys are formatted on the stack, every write sends one
//! value buffer, send and receive buffers are reused, and in-flight requests live in a fixed
//! slot table per connection. Every phase ends at its deadline whatever the server does;
//! connection failures are counted, in-flight requests on them become errors, and the
//! connection is reopened after a pause.

use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use super::config::{Config, Mode};
use super::target::{Decoded, Outcome, ProtocolError, Reply, Request, Target, TargetConn};
use super::workload::{self, Op, Workload, KEY_BYTES};

/// Which phase a run of the event loop is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PhaseKind {
    /// Write every key once, as fast as the closed loop allows; ends when all are written.
    Prefill,
    /// Warmup then measurement, with the configured mode and workload.
    Measure,
}

/// What the threads of one phase counted, merged.
#[derive(Debug)]
pub struct PhaseStats {
    /// Latency of every request completed in the measured window, in nanoseconds.
    pub histogram: Histogram<u64>,
    /// Outcomes in the measured window.
    pub counts: Counts,
    /// Connection attempts that failed or timed out.
    pub connect_failures: u64,
    /// Established connections lost (reset, closed, or unreadable replies).
    pub disconnects: u64,
    /// Open loop only: requests that fell due in the window but were never sent because
    /// every connection was full; a sign the target (or the generator) fell behind.
    pub unsent: u64,
    /// The first failure seen, for the report.
    pub first_failure: Option<String>,
    /// Length of the measured window actually run.
    pub measured: Duration,
    /// Replies received in the whole phase, warmup included: with the server's CPU time
    /// over the same run it gives the server's cost per request.
    pub replies_total: u64,
}

/// Outcome counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Requests answered successfully (misses included).
    pub ok: u64,
    /// Reads that found no value (part of `ok`).
    pub misses: u64,
    /// Requests answered with an error, or lost with their connection.
    pub errors: u64,
    /// Read requests answered.
    pub reads: u64,
    /// Write requests answered.
    pub writes: u64,
}

/// Runs one phase on `config.threads` threads and merges their counts; prints a progress
/// line to `progress` every second.
pub fn run_phase<T: Target>(
    target: &T,
    config: &Config,
    kind: PhaseKind,
    progress: &mut dyn Write,
) -> PhaseStats {
    let threads = config.threads;
    let start = Instant::now();
    let (measure_start, end) = match kind {
        PhaseKind::Prefill => (start, start + super::PREFILL_TIMEOUT),
        PhaseKind::Measure => (
            start + config.warmup,
            start + config.warmup + config.duration,
        ),
    };
    let meters: Vec<Meter> = (0..threads).map(|_| Meter::default()).collect();
    let results = std::thread::scope(|scope| {
        let handles: Vec<_> = meters
            .iter()
            .enumerate()
            .map(|(index, meter)| {
                let plan = Plan::new(config, kind, index, start, measure_start, end);
                scope.spawn(move || Worker::new(target, plan, meter).run())
            })
            .collect();
        report_progress(&handles, &meters, kind, start, measure_start, progress);
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect::<Vec<_>>()
    });
    let measured = match kind {
        PhaseKind::Prefill => start.elapsed(),
        PhaseKind::Measure => config.duration,
    };
    merge(results, measured)
}

/// One thread's share of a phase.
struct Plan {
    connections: usize,
    depth: usize,
    source: Source,
    /// Open loop: nanoseconds between due times on this thread.
    interval_ns: Option<f64>,
    /// Prefill: give up after this long without a reply (a dead server must not hold the
    /// run for the whole prefill timeout).
    stall_limit: Option<Duration>,
    value: Vec<u8>,
    start: Instant,
    measure_start: Instant,
    end: Instant,
}

/// Where a thread's operations come from.
enum Source {
    /// The configured workload.
    Random(Workload),
    /// Key numbers `next..end`, each written once.
    Sequential { next: u64, end: u64 },
}

/// Counters a thread publishes for the progress line; each thread writes only its own.
#[derive(Default)]
struct Meter {
    completed: AtomicU64,
    errors: AtomicU64,
}

/// A thread's event loop and the connections it drives.
struct Worker<'a, T: Target> {
    target: &'a T,
    plan: Plan,
    meter: &'a Meter,
    poll: Poll,
    conns: Vec<Conn<T::Conn>>,
    stats: ThreadStats,
    /// Requests in flight over all connections.
    in_flight: usize,
    /// Open loop: requests issued so far; the next is due at `start + issued * interval`.
    issued: u64,
    /// Open loop: where the search for a connection with a free slot resumes.
    cursor: usize,
    /// When the last reply arrived (or the phase started).
    last_reply: Instant,
    /// When connections are next checked for reopening and timeouts.
    next_housekeeping: Instant,
}

/// One connection: socket, protocol state, buffers and in-flight slots.
struct Conn<C> {
    proto: C,
    stream: Option<TcpStream>,
    state: ConnState,
    send: Vec<u8>,
    sent: usize,
    recv: Vec<u8>,
    recv_start: usize,
    recv_end: usize,
    /// Indexed by tag: when each in-flight request was due, and whether it writes.
    slots: Vec<Slot>,
    /// Tags not in flight.
    free: Vec<u32>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ConnState {
    Connecting {
        since: Instant,
    },
    /// Connected; the protocol's handshake reply is awaited before any request.
    Handshaking {
        since: Instant,
    },
    Ready,
    Down {
        retry_at: Instant,
    },
}

#[derive(Clone, Copy, Debug)]
struct Slot {
    due: Instant,
    write: bool,
    busy: bool,
}

/// Why a connection is given up.
#[derive(Debug)]
enum Failure {
    Io(io::Error),
    Closed,
    Protocol(ProtocolError),
    ReplyTooLarge,
    UnknownTag(u32),
    ConnectTimeout,
    Stalled(Duration),
}

struct ThreadStats {
    histogram: Histogram<u64>,
    counts: Counts,
    connect_failures: u64,
    disconnects: u64,
    unsent: u64,
    completed: u64,
    errors_total: u64,
    first_failure: Option<String>,
}

/// Wait before reopening a failed connection, so a dead server is not hammered.
const RECONNECT_DELAY: Duration = Duration::from_millis(100);
/// A connection attempt not finished by then counts as failed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How often connections are scanned for reopening and connect timeouts: far below both
/// delays, far above the time one scan takes.
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_millis(5);
/// Longest poll wait, so deadlines, reconnects and progress are looked at regularly.
const POLL_WAIT_MAX: Duration = Duration::from_millis(10);
/// Receive buffer to start with; grows (up to [`RECV_BYTES_MAX`]) only for larger replies.
const RECV_BYTES_INITIAL: usize = 64 * 1024;
/// Largest receive buffer: one reply of the largest value plus headers must fit.
const RECV_BYTES_MAX: usize = 2 * super::VALUE_BYTES_MAX + 64 * 1024;
/// Bytes of a request beyond its key and value (RESP or Rotor framing), for sizing.
const REQUEST_OVERHEAD_BYTES: usize = 64;
/// Draws tried for an operation whose key belongs to a connection's group before one of
/// another group is sent anyway (and forwarded by the node); far above the group count.
const GROUP_DRAWS_MAX: usize = 256;
/// Events fetched per poll.
const EVENTS_PER_POLL: usize = 256;
/// Histogram range: 1 ns to one hour, 3 significant digits.
const HISTOGRAM_NS_MAX: u64 = 3_600_000_000_000;

impl Plan {
    fn new(
        config: &Config,
        kind: PhaseKind,
        index: usize,
        start: Instant,
        measure_start: Instant,
        end: Instant,
    ) -> Self {
        let threads = config.threads;
        let share = |total: usize| total / threads + usize::from(index < total % threads);
        let (source, depth, interval_ns) = match kind {
            PhaseKind::Prefill => {
                let per = config.keys / threads as u64;
                let first = per * index as u64;
                let last = if index + 1 == threads {
                    config.keys
                } else {
                    first + per
                };
                let source = Source::Sequential {
                    next: first,
                    end: last,
                };
                // Prefill is a chore, not a measurement: pipeline it deeply.
                (source, config.pipeline.max(16), None)
            }
            PhaseKind::Measure => {
                let seed = workload::splitmix64(config.seed ^ (index as u64).rotate_left(32));
                let source = Source::Random(Workload::new(
                    seed,
                    config.keys,
                    config.distribution,
                    config.read_ratio,
                ));
                let interval = match config.mode {
                    Mode::Closed => None,
                    Mode::Open { rate } => Some(1e9 * threads as f64 / rate),
                };
                (source, config.pipeline, interval)
            }
        };
        Self {
            connections: share(config.connections),
            depth,
            source,
            interval_ns,
            stall_limit: (kind == PhaseKind::Prefill).then_some(super::PREFILL_STALL),
            value: (0..config.value_size)
                .map(|i| b'a' + (i % 26) as u8)
                .collect(),
            start,
            measure_start,
            end,
        }
    }
}

impl Source {
    fn next(&mut self) -> Option<Op> {
        match self {
            Self::Random(w) => Some(w.next_op()),
            Self::Sequential { next, end } => {
                if next < end {
                    *next += 1;
                    Some(Op::Put(*next - 1))
                } else {
                    None
                }
            }
        }
    }

    fn exhausted(&self) -> bool {
        matches!(self, Self::Sequential { next, end } if next >= end)
    }
}

impl<'a, T: Target> Worker<'a, T> {
    fn new(target: &'a T, plan: Plan, meter: &'a Meter) -> Self {
        let request_bytes = KEY_BYTES + plan.value.len() + REQUEST_OVERHEAD_BYTES;
        let conns = (0..plan.connections)
            .map(|_| Conn {
                proto: target.new_conn(plan.depth),
                stream: None,
                state: ConnState::Down {
                    retry_at: plan.start,
                },
                send: Vec::with_capacity(plan.depth * request_bytes),
                sent: 0,
                recv: vec![0; RECV_BYTES_INITIAL.max(request_bytes)],
                recv_start: 0,
                recv_end: 0,
                slots: vec![
                    Slot {
                        due: plan.start,
                        write: false,
                        busy: false
                    };
                    plan.depth
                ],
                free: (0..plan.depth as u32).rev().collect(),
            })
            .collect();
        Self {
            target,
            meter,
            // An epoll instance that cannot be created leaves the thread nothing to do; the
            // process is out of descriptors, which the report could not fix either.
            poll: Poll::new().expect("cannot create an epoll instance"),
            conns,
            stats: ThreadStats {
                histogram: Histogram::new_with_bounds(1, HISTOGRAM_NS_MAX, 3)
                    .expect("valid histogram bounds"),
                counts: Counts::default(),
                connect_failures: 0,
                disconnects: 0,
                unsent: 0,
                completed: 0,
                errors_total: 0,
                first_failure: None,
            },
            in_flight: 0,
            issued: 0,
            cursor: 0,
            last_reply: plan.start,
            next_housekeeping: plan.start,
            plan,
        }
    }

    fn run(mut self) -> ThreadStats {
        let mut events = Events::with_capacity(EVENTS_PER_POLL);
        loop {
            let now = Instant::now();
            if now >= self.plan.end || (self.plan.source.exhausted() && self.in_flight == 0) {
                break;
            }
            if let Some(limit) = self.plan.stall_limit {
                if now - self.last_reply > limit {
                    self.note_failure(&Failure::Stalled(limit));
                    break;
                }
            }
            if now >= self.next_housekeeping {
                self.next_housekeeping = now + HOUSEKEEPING_INTERVAL;
                self.reopen_and_expire(now);
            }
            let mut wait = POLL_WAIT_MAX.min(self.plan.end - now);
            if let Some(interval) = self.plan.interval_ns {
                wait = wait.min(self.issue_due(now, interval));
            }
            if let Err(e) = self.poll.poll(&mut events, Some(wait)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    self.note_failure(&Failure::Io(e));
                    break;
                }
            }
            for event in events.iter() {
                // A fresh clock per event: handling fifty connections takes long enough that
                // one timestamp for all would skew both send and completion times.
                self.handle(event.token().0, Instant::now());
            }
            self.meter
                .completed
                .store(self.stats.completed, Ordering::Relaxed);
            self.meter
                .errors
                .store(self.stats.errors_total, Ordering::Relaxed);
        }
        if let Some(interval) = self.plan.interval_ns {
            // Requests that fell due inside the window and never left.
            let window_end = self.plan.end.saturating_duration_since(self.plan.start);
            let due = (window_end.as_nanos() as f64 / interval) as u64;
            let warm = (self
                .plan
                .measure_start
                .saturating_duration_since(self.plan.start)
                .as_nanos() as f64
                / interval) as u64;
            self.stats.unsent = due.saturating_sub(self.issued.max(warm));
        }
        self.stats
    }

    /// Opens connections whose pause is over and fails those stuck connecting.
    fn reopen_and_expire(&mut self, now: Instant) {
        for index in 0..self.conns.len() {
            match self.conns[index].state {
                ConnState::Down { retry_at } if now >= retry_at => self.open(index, now),
                ConnState::Connecting { since } | ConnState::Handshaking { since }
                    if now - since > CONNECT_TIMEOUT =>
                {
                    self.fail(index, Failure::ConnectTimeout, now)
                }
                _ => {}
            }
        }
    }

    fn open(&mut self, index: usize, now: Instant) {
        let addr = self.target.addr(index);
        let result = TcpStream::connect(addr).and_then(|mut stream| {
            self.poll.registry().register(
                &mut stream,
                Token(index),
                Interest::READABLE | Interest::WRITABLE,
            )?;
            Ok(stream)
        });
        let conn = &mut self.conns[index];
        match result {
            Ok(stream) => {
                conn.stream = Some(stream);
                conn.state = ConnState::Connecting { since: now };
            }
            Err(e) => {
                conn.state = ConnState::Connecting { since: now };
                self.fail(index, Failure::Io(e), now);
            }
        }
    }

    /// Reacts to readiness of connection `index`.
    fn handle(&mut self, index: usize, now: Instant) {
        let Some(conn) = self.conns.get_mut(index) else {
            return;
        };
        if let ConnState::Connecting { since } = conn.state {
            match conn.check_connected() {
                Ok(false) => return,
                Ok(true) if conn.proto.handshake(&mut conn.send) => {
                    conn.state = ConnState::Handshaking { since };
                }
                Ok(true) => conn.state = ConnState::Ready,
                Err(e) => return self.fail(index, Failure::Io(e), now),
            }
        }
        if let ConnState::Down { .. } = self.conns[index].state {
            return;
        }
        if let Err(failure) = self.read_replies(index, now) {
            return self.fail(index, failure, now);
        }
        if self.plan.interval_ns.is_none() && self.conns[index].state == ConnState::Ready {
            self.refill(index, now);
        } else if let Err(e) = self.conns[index].flush() {
            self.fail(index, Failure::Io(e), now);
        }
    }

    /// Reads everything available on connection `index` and completes the requests it
    /// answers.
    fn read_replies(&mut self, index: usize, now: Instant) -> Result<(), Failure> {
        loop {
            let conn = &mut self.conns[index];
            let space = conn.make_room()?;
            let Some(stream) = conn.stream.as_mut() else {
                return Ok(());
            };
            let n = match stream.read(&mut conn.recv[conn.recv_end..]) {
                Ok(0) => return Err(Failure::Closed),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Failure::Io(e)),
            };
            conn.recv_end += n;
            while let Some(decoded) = {
                let conn = &mut self.conns[index];
                conn.proto
                    .decode(&conn.recv[conn.recv_start..conn.recv_end])
                    .map_err(Failure::Protocol)?
            } {
                self.complete(index, decoded, now)?;
            }
            // A short read drained the socket; with edge-triggered readiness the next
            // arrival raises a new event, so no extra read (and syscall) is needed.
            if n < space {
                return Ok(());
            }
        }
    }

    fn complete(&mut self, index: usize, decoded: Decoded, now: Instant) -> Result<(), Failure> {
        let conn = &mut self.conns[index];
        conn.recv_start += decoded.len;
        let (tag, outcome) = match decoded.reply {
            Reply::Answer { tag, outcome } => (tag, outcome),
            Reply::HandshakeDone => {
                let ConnState::Handshaking { .. } = conn.state else {
                    return Err(Failure::Protocol(ProtocolError::Unsolicited));
                };
                conn.state = ConnState::Ready;
                return Ok(());
            }
            Reply::Skip => return Ok(()),
        };
        let slot = conn
            .slots
            .get_mut(tag as usize)
            .filter(|s| s.busy)
            .ok_or(Failure::UnknownTag(tag))?;
        slot.busy = false;
        let slot = *slot;
        conn.free.push(tag);
        self.in_flight -= 1;
        self.last_reply = now;
        self.stats.completed += 1;
        if outcome == Outcome::Error {
            self.stats.errors_total += 1;
        }
        if now < self.plan.measure_start || now >= self.plan.end {
            return Ok(());
        }
        let counts = &mut self.stats.counts;
        match outcome {
            Outcome::Ok => counts.ok += 1,
            Outcome::Miss => {
                counts.ok += 1;
                counts.misses += 1;
            }
            Outcome::Error => counts.errors += 1,
        }
        if slot.write {
            counts.writes += 1;
        } else {
            counts.reads += 1;
        }
        let latency = now.saturating_duration_since(slot.due);
        let ns = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        self.stats.histogram.saturating_record(ns.max(1));
        Ok(())
    }

    /// Closed loop: tops connection `index` up to its depth and writes the batch.
    fn refill(&mut self, index: usize, now: Instant) {
        while !self.conns[index].free.is_empty() {
            let Some(op) = self.next_op(index) else {
                break;
            };
            self.issue(index, op, now);
        }
        if let Err(e) = self.conns[index].flush() {
            self.fail(index, Failure::Io(e), now);
        }
    }

    /// Open loop: issues every request due by `now` on connections with a free slot, then
    /// returns how long until the next one is due (zero while behind).
    fn issue_due(&mut self, now: Instant, interval_ns: f64) -> Duration {
        let count = self.conns.len();
        let mut touched = false;
        loop {
            let due = self.plan.start + nanos(self.issued as f64 * interval_ns);
            if due > now {
                if touched {
                    self.flush_all(now);
                }
                let until = due - now;
                // epoll waits in whole milliseconds: spin through the last one.
                return if until < Duration::from_millis(1) {
                    Duration::ZERO
                } else {
                    until - Duration::from_millis(1)
                };
            }
            let free = (0..count).map(|k| (self.cursor + k) % count).find(|&i| {
                self.conns[i].state == ConnState::Ready && !self.conns[i].free.is_empty()
            });
            let Some(index) = free else {
                // Every connection is full: the request waits, and its latency keeps counting
                // from `due`. Wait for replies.
                if touched {
                    self.flush_all(now);
                }
                return POLL_WAIT_MAX;
            };
            let Some(op) = self.next_op(index) else {
                return POLL_WAIT_MAX;
            };
            self.cursor = (index + 1) % count;
            self.issue(index, op, due);
            self.issued += 1;
            touched = true;
        }
    }

    fn flush_all(&mut self, now: Instant) {
        for index in 0..self.conns.len() {
            if self.conns[index].sent < self.conns[index].send.len() {
                if let Err(e) = self.conns[index].flush() {
                    self.fail(index, Failure::Io(e), now);
                }
            }
        }
    }

    /// The next operation for connection `index`: one whose key belongs to the
    /// connection's group (redrawn up to [`GROUP_DRAWS_MAX`] times; the draws are
    /// independent, so the kept ones follow the workload's distribution within the group).
    /// Prefill keys are taken in order wherever they fall: the node forwards them.
    fn next_op(&mut self, index: usize) -> Option<Op> {
        let mut op = self.plan.source.next()?;
        if self.target.groups() <= 1 || matches!(self.plan.source, Source::Sequential { .. }) {
            return Some(op);
        }
        let want = self.target.group_of_conn(index);
        for _ in 0..GROUP_DRAWS_MAX {
            let (Op::Get(key) | Op::Put(key)) = op;
            if self.target.group_of_key(key) == want {
                break;
            }
            op = self.plan.source.next()?;
        }
        Some(op)
    }

    /// Encodes `op` into connection `index`'s send buffer in a free slot, due at `due`.
    fn issue(&mut self, index: usize, op: Op, due: Instant) {
        let conn = &mut self.conns[index];
        let Some(tag) = conn.free.pop() else {
            return;
        };
        let mut key = [0u8; KEY_BYTES];
        let (number, write) = match op {
            Op::Get(k) => (k, false),
            Op::Put(k) => (k, true),
        };
        workload::format_key(number, &mut key);
        let request = if write {
            Request::Put {
                key: &key,
                value: &self.plan.value,
            }
        } else {
            Request::Get { key: &key }
        };
        conn.proto.encode(request, tag, &mut conn.send);
        if let Some(slot) = conn.slots.get_mut(tag as usize) {
            *slot = Slot {
                due,
                write,
                busy: true,
            };
        }
        self.in_flight += 1;
    }

    /// Gives up connection `index`: its in-flight requests become errors and it is reopened
    /// after [`RECONNECT_DELAY`].
    fn fail(&mut self, index: usize, failure: Failure, now: Instant) {
        self.note_failure(&failure);
        let depth = self.plan.depth;
        let fresh = self.target.new_conn(depth);
        let conn = &mut self.conns[index];
        match conn.state {
            ConnState::Connecting { .. } | ConnState::Handshaking { .. } => {
                self.stats.connect_failures += 1
            }
            ConnState::Ready => self.stats.disconnects += 1,
            ConnState::Down { .. } => {}
        }
        if let Some(mut stream) = conn.stream.take() {
            let _ = self.poll.registry().deregister(&mut stream);
        }
        let lost = depth - conn.free.len();
        conn.free.clear();
        conn.free.extend((0..depth as u32).rev());
        for slot in &mut conn.slots {
            slot.busy = false;
        }
        conn.proto = fresh;
        conn.send.clear();
        conn.sent = 0;
        conn.recv_start = 0;
        conn.recv_end = 0;
        conn.state = ConnState::Down {
            retry_at: now + RECONNECT_DELAY,
        };
        self.in_flight -= lost;
        self.stats.errors_total += lost as u64;
        if now >= self.plan.measure_start && now < self.plan.end {
            self.stats.counts.errors += lost as u64;
        }
    }

    fn note_failure(&mut self, failure: &Failure) {
        if self.stats.first_failure.is_none() {
            self.stats.first_failure = Some(match failure {
                Failure::Io(e) => e.to_string(),
                Failure::Closed => "connection closed by the server".into(),
                Failure::Protocol(ProtocolError::Resp(e)) => e.to_string(),
                Failure::Protocol(ProtocolError::Rotor(e)) => format!("bad Rotor frame: {e}"),
                Failure::Protocol(ProtocolError::Unsolicited) => {
                    "a reply arrived with no request waiting".into()
                }
                Failure::Protocol(ProtocolError::HandshakeRefused) => {
                    "the server refused the handshake".into()
                }
                Failure::ReplyTooLarge => "a reply exceeded the receive buffer limit".into(),
                Failure::UnknownTag(tag) => format!("a reply carried unknown request id {tag}"),
                Failure::ConnectTimeout => "connection or handshake timed out".into(),
                Failure::Stalled(limit) => format!("no reply for {limit:?}: gave up"),
            });
        }
    }
}

impl<C: TargetConn> Conn<C> {
    /// Whether a nonblocking connect finished: `Ok(false)` while still in progress.
    fn check_connected(&mut self) -> io::Result<bool> {
        let Some(stream) = self.stream.as_ref() else {
            return Ok(false);
        };
        if let Some(e) = stream.take_error()? {
            return Err(e);
        }
        match stream.peer_addr() {
            Ok(_) => {
                // Requests are small and latency is what is measured: never wait for Nagle.
                stream.set_nodelay(true)?;
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Makes free space at the end of the receive buffer: drops consumed bytes, moves a
    /// partial reply to the front, grows for a reply larger than the buffer. Returns the
    /// free space.
    fn make_room(&mut self) -> Result<usize, Failure> {
        if self.recv_start == self.recv_end {
            self.recv_start = 0;
            self.recv_end = 0;
        }
        let len = self.recv.len();
        if len - self.recv_end < len / 4 && self.recv_start > 0 {
            self.recv.copy_within(self.recv_start..self.recv_end, 0);
            self.recv_end -= self.recv_start;
            self.recv_start = 0;
        }
        if self.recv_end == len {
            if len >= RECV_BYTES_MAX {
                return Err(Failure::ReplyTooLarge);
            }
            self.recv.resize((len * 2).min(RECV_BYTES_MAX), 0);
        }
        Ok(self.recv.len() - self.recv_end)
    }

    /// Writes as much of the send buffer as the socket takes.
    fn flush(&mut self) -> io::Result<()> {
        let Some(stream) = self.stream.as_mut() else {
            return Ok(());
        };
        while self.sent < self.send.len() {
            match stream.write(&self.send[self.sent..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.sent += n,
                // The writable edge resumes it.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.send.clear();
        self.sent = 0;
        Ok(())
    }
}

/// Prints one progress line a second until every worker has finished.
fn report_progress(
    handles: &[std::thread::ScopedJoinHandle<'_, ThreadStats>],
    meters: &[Meter],
    kind: PhaseKind,
    start: Instant,
    measure_start: Instant,
    out: &mut dyn Write,
) {
    let sum = |f: fn(&Meter) -> &AtomicU64| -> u64 {
        meters.iter().map(|m| f(m).load(Ordering::Relaxed)).sum()
    };
    let mut last_time = start;
    let mut last_completed = 0;
    let mut next_line = start + Duration::from_secs(1);
    while !handles.iter().all(|h| h.is_finished()) {
        std::thread::sleep(Duration::from_millis(20));
        let now = Instant::now();
        if now < next_line {
            continue;
        }
        next_line += Duration::from_secs(1);
        let completed = sum(|m| &m.completed);
        let rate = (completed - last_completed) as f64 / (now - last_time).as_secs_f64();
        // A line is labelled by the second it covers, so the last warmup second says warmup.
        let phase = match kind {
            PhaseKind::Prefill => "prefill",
            PhaseKind::Measure if last_time < measure_start => "warmup",
            PhaseKind::Measure => "measure",
        };
        let _ = writeln!(
            out,
            "[{:>6.1}s] {phase:<7} {:>10.0} ops/s  total {completed}  errors {}",
            (now - start).as_secs_f64(),
            rate,
            sum(|m| &m.errors),
        );
        last_time = now;
        last_completed = completed;
    }
}

fn merge(results: Vec<ThreadStats>, measured: Duration) -> PhaseStats {
    let mut histogram =
        Histogram::new_with_bounds(1, HISTOGRAM_NS_MAX, 3).expect("valid histogram bounds");
    let mut merged = PhaseStats {
        histogram: histogram.clone(),
        counts: Counts::default(),
        connect_failures: 0,
        disconnects: 0,
        unsent: 0,
        first_failure: None,
        measured,
        replies_total: 0,
    };
    for r in results {
        // Same bounds on both sides, so adding cannot fail.
        let _ = histogram.add(&r.histogram);
        let c = &mut merged.counts;
        c.ok += r.counts.ok;
        c.misses += r.counts.misses;
        c.errors += r.counts.errors;
        c.reads += r.counts.reads;
        c.writes += r.counts.writes;
        merged.connect_failures += r.connect_failures;
        merged.disconnects += r.disconnects;
        merged.unsent += r.unsent;
        merged.replies_total += r.completed;
        if merged.first_failure.is_none() {
            merged.first_failure = r.first_failure;
        }
    }
    merged.histogram = histogram;
    merged
}

fn nanos(ns: f64) -> Duration {
    Duration::from_nanos(ns as u64)
}
