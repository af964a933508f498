//! The thread-per-core runtime: one pinned glommio executor per selected core, each a
//! *shard* with its own listeners, connections, mailbox ends and service (later: its
//! stores), sharing nothing but the connection cap, the stop signal and the mailbox.
//!
//! Every shard listens on the common port with SO_REUSEPORT (the kernel spreads new
//! connections over the shards) and on its own per-shard port (a shard-aware client goes
//! straight to the owning core). Shutdown: stop accepting, let connections answer what is
//! in flight (bounded by `SHUTDOWN_GRACE_MS`), wait until every shard got there (so no
//! shard forwards to one that already synced), run each shard's shutdown hook, exit.

use std::future::Future;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use futures_lite::future;
use glommio::net::TcpListener;
use glommio::sync::{Gate, Semaphore};
use glommio::{ExecutorJoinHandle, LocalExecutorBuilder, Placement};
use tracing::{debug, info, warn};

use super::config::{allowed_cpus, Config, ConfigError};
use super::connection::{self, ConnectionLimits, FrameHandler};
use super::limits::{ConnectionCap, Latch};
use super::mailbox::{self, Mailbox, MailboxEnds, RequestHandler};
use crate::constants;

/// What a node serves. One instance per shard, created on the shard's own thread by the
/// factory given to [`start`] (so it need not be `Send`: it owns that core's stores).
pub trait Service: 'static {
    /// A request one shard forwards to another through the mailbox.
    type Request: Send + 'static;
    /// The reply to a forwarded request.
    type Response: Send + 'static;
    /// The protocol handler of one client connection.
    type Handler: FrameHandler;

    /// A handler for a new client connection on this shard; `mailbox` reaches the others.
    fn connection(
        self: &Rc<Self>,
        mailbox: &Rc<Mailbox<Self::Request, Self::Response>>,
    ) -> Self::Handler;

    /// Serves a request another shard (`from`) forwarded here because this shard owns it.
    /// Implementations assert the ownership (a misrouted message is a bug, not an input).
    fn serve_forwarded(
        self: Rc<Self>,
        from: u16,
        req: Self::Request,
    ) -> impl Future<Output = Self::Response> + 'static;

    /// Runs once the shard joined the mailbox mesh, before it accepts connections (the
    /// place to start background work that reaches other shards).
    fn started(self: &Rc<Self>, mailbox: &Rc<Mailbox<Self::Request, Self::Response>>) {
        let _ = mailbox;
    }

    /// Runs once at shutdown, after this shard's connections ended and no other shard can
    /// forward here any more (later: sync the stores).
    fn shutdown(self: Rc<Self>) -> impl Future<Output = ()> + 'static;
}

/// Where a shard runs, given to the service factory.
#[derive(Debug, Clone)]
pub struct ShardInfo {
    /// This shard's index, 0..`shards`.
    pub shard: u16,
    /// Number of shards on this node.
    pub shards: u16,
    /// The CPU the shard is pinned to.
    pub cpu: usize,
    /// The node's configuration.
    pub config: Arc<Config>,
}

/// A started server: its addresses, and how to stop and join it.
pub struct RunningServer {
    listen_addr: SocketAddr,
    shard_addrs: Vec<SocketAddr>,
    stop: Latch,
    handles: Vec<ExecutorJoinHandle<Result<(), ()>>>,
}

/// Why the server could not start or did not stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The configuration does not fit this machine.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A listening address is taken or not ours.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The locked-memory limit is below what io_uring needs and cannot be raised.
    #[error(
        "locked-memory limit {have} bytes is below the {need} io_uring needs and cannot be \
         raised ({reason}); raise it with `ulimit -l` or LimitMEMLOCK="
    )]
    Memlock {
        /// Current soft limit.
        have: u64,
        /// Needed.
        need: u64,
        /// Why raising failed.
        reason: String,
    },
    /// An executor could not be created (e.g. io_uring refused) or a shard failed.
    #[error("shard {shard}: {message}")]
    Shard {
        /// The shard.
        shard: u16,
        /// What failed.
        message: String,
    },
}

/// Starts one shard per selected core serving `S`, and returns once every shard listens.
/// `factory` builds each shard's service on that shard's thread.
pub fn start<S, F>(config: &Config, factory: F) -> Result<RunningServer, ServerError>
where
    S: Service,
    F: Fn(&ShardInfo) -> Result<S, String> + Send + Sync + 'static,
{
    config.validate()?;
    let cpus = config.cpus(&allowed_cpus())?;
    let shard_ports = config.shard_ports_for(cpus.len())?;
    let shards = u16::try_from(cpus.len()).map_err(|_| ConfigError::CoresUnavailable {
        requested: config.cores.to_string(),
        available: cpus.clone(),
    })?;
    raise_memlock(cpus.len())?;
    let (listen_addr, _held) = reserve(config.listen_addr()?)?;
    let shard_addrs: Vec<SocketAddr> = shard_ports
        .iter()
        .map(|&port| SocketAddr::new(listen_addr.ip(), port))
        .collect();
    for addr in shard_addrs.iter().filter(|a| a.port() != 0) {
        reserve(*addr)?;
    }

    let config = Arc::new(config.clone());
    let factory = Arc::new(factory);
    let stop = Latch::new(1);
    let drained = Latch::new(usize::from(shards));
    let cap = ConnectionCap::new(config.connections_max);
    let ends = mailbox::mesh::<S::Request, S::Response>(shards, constants::MAILBOX_QUEUE_DEPTH);
    let (ready_tx, ready_rx) = mpsc::channel();
    let mut handles = Vec::with_capacity(cpus.len());
    for ((shard, ends), (&cpu, &shard_addr)) in
        (0..shards).zip(ends).zip(cpus.iter().zip(&shard_addrs))
    {
        let setup = ShardSetup {
            info: ShardInfo {
                shard,
                shards,
                cpu,
                config: config.clone(),
            },
            ends,
            factory: factory.clone(),
            listen_addr,
            shard_addr,
            stop: stop.clone(),
            drained: drained.clone(),
            cap: cap.clone(),
            ready: ready_tx.clone(),
        };
        let spawned = LocalExecutorBuilder::new(Placement::Fixed(cpu))
            .name(&format!("rotor-shard-{shard}"))
            .io_memory(constants::EXECUTOR_IO_MEMORY_BYTES)
            .spawn(move || run_shard(setup));
        match spawned {
            Ok(handle) => handles.push(handle),
            Err(e) => {
                // Shards already started wait in the mailbox for this one: it never comes,
                // and the process exits with the error (threads die with it).
                return Err(ServerError::Shard {
                    shard,
                    message: format!("cannot start an executor on cpu {cpu}: {e}"),
                });
            }
        }
    }
    drop(ready_tx);

    let mut bound = shard_addrs;
    let mut failure = None;
    for _ in 0..shards {
        match ready_rx.recv() {
            Ok(Ok((shard, addr))) => {
                if let Some(slot) = bound.get_mut(usize::from(shard)) {
                    *slot = addr;
                }
            }
            Ok(Err(e)) => {
                failure.get_or_insert(e);
            }
            Err(_) => {
                failure.get_or_insert(ServerError::Shard {
                    shard: 0,
                    message: "a shard ended during start-up".into(),
                });
                break;
            }
        }
    }
    let server = RunningServer {
        listen_addr,
        shard_addrs: bound,
        stop,
        handles,
    };
    if let Some(e) = failure {
        server.stop();
        let _ = server.join();
        return Err(e);
    }
    info!(listen = %server.listen_addr, shards, cpus = ?cpus, "rotord serving");
    Ok(server)
}

impl RunningServer {
    /// The common client address (with the real port if 0 was configured).
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen_addr
    }

    /// Each shard's own address, in shard order.
    pub fn shard_addrs(&self) -> &[SocketAddr] {
        &self.shard_addrs
    }

    /// A handle that stops the server when counted down (for signal handlers).
    pub fn stop_handle(&self) -> Latch {
        self.stop.clone()
    }

    /// Starts a graceful stop; [`RunningServer::join`] waits for it.
    pub fn stop(&self) {
        self.stop.count_down();
    }

    /// Waits until every shard has stopped.
    pub fn join(self) -> Result<(), ServerError> {
        let mut result = Ok(());
        for (shard, handle) in (0u16..).zip(self.handles) {
            let outcome = match handle.join() {
                Ok(Ok(())) => continue,
                Ok(Err(())) => "failed during start-up".to_string(),
                Err(e) => format!("executor ended abnormally: {e}"),
            };
            if result.is_ok() {
                result = Err(ServerError::Shard {
                    shard,
                    message: outcome,
                });
            }
        }
        result
    }
}

/// Everything one shard thread starts from.
struct ShardSetup<S: Service, F> {
    info: ShardInfo,
    ends: MailboxEnds<S::Request, S::Response>,
    factory: Arc<F>,
    listen_addr: SocketAddr,
    shard_addr: SocketAddr,
    stop: Latch,
    drained: Latch,
    cap: ConnectionCap,
    ready: mpsc::Sender<Result<(u16, SocketAddr), ServerError>>,
}

/// Per-shard state every accept loop shares.
struct Listening<S: Service> {
    service: Rc<S>,
    mailbox: Rc<Mailbox<S::Request, S::Response>>,
    cap: ConnectionCap,
    limits: ConnectionLimits,
    /// Closed (never signalled) at shutdown: a broadcast to every loop of this shard.
    stop: Rc<Semaphore>,
    /// Tracks connection tasks so shutdown can wait for them.
    gate: Rc<Gate>,
    shard: u16,
}

async fn run_shard<S, F>(setup: ShardSetup<S, F>) -> Result<(), ()>
where
    S: Service,
    F: Fn(&ShardInfo) -> Result<S, String>,
{
    let shard = setup.info.shard;
    // Every shard joins the mesh before anything can fail, so no peer waits forever.
    let (mailbox, inbox) = setup.ends.connect().await;
    let opened = open_shard(
        &setup.info,
        &*setup.factory,
        setup.listen_addr,
        setup.shard_addr,
    );
    let (service, common, own) = match opened {
        Ok(parts) => parts,
        Err(e) => {
            let _ = setup.ready.send(Err(e));
            setup.drained.count_down();
            return Err(());
        }
    };
    let own_addr = own.local_addr().unwrap_or(setup.shard_addr);
    let _ = setup.ready.send(Ok((shard, own_addr)));
    debug!(shard, cpu = setup.info.cpu, addr = %own_addr, "shard listening");

    let forwarded: RequestHandler<S::Request, S::Response> = {
        let service = service.clone();
        Rc::new(move |from, req| Box::pin(service.clone().serve_forwarded(from, req)))
    };
    mailbox.run(inbox, forwarded);
    service.started(&mailbox);

    let config = &setup.info.config;
    let listening = Rc::new(Listening {
        service: service.clone(),
        mailbox,
        cap: setup.cap,
        limits: ConnectionLimits {
            in_flight_max: usize::try_from(config.connection_in_flight_max).unwrap_or(1),
            output_bytes_max: usize::try_from(config.connection_output_bytes_max)
                .unwrap_or(usize::MAX),
            idle_timeout: Duration::from_millis(config.idle_timeout_ms),
            handshake_timeout: Duration::from_millis(config.handshake_timeout_ms),
        },
        stop: Rc::new(Semaphore::new(0)),
        gate: Rc::new(Gate::new()),
        shard,
    });
    let accepting = [
        glommio::spawn_local(accept_loop(common, listening.clone())),
        glommio::spawn_local(accept_loop(own, listening.clone())),
    ];

    setup.stop.wait().await;
    info!(shard, "stopping: no new connections");
    listening.stop.close();
    for task in accepting {
        task.await;
    }
    let grace = Duration::from_millis(constants::SHUTDOWN_GRACE_MS);
    let gate = listening.gate.clone();
    if glommio::timer::timeout(grace, async move { gate.close().await })
        .await
        .is_err()
    {
        warn!(
            shard,
            "connections still open after the grace period; dropping them"
        );
    }
    setup.drained.count_down();
    let all_drained = setup.drained.wait();
    if glommio::timer::timeout(grace, async move {
        all_drained.await;
        Ok(())
    })
    .await
    .is_err()
    {
        warn!(shard, "other shards still draining after the grace period");
    }
    service.shutdown().await;
    info!(shard, "stopped");
    Ok(())
}

type Opened<S> = (Rc<S>, TcpListener, TcpListener);

fn open_shard<S: Service, F: Fn(&ShardInfo) -> Result<S, String>>(
    info: &ShardInfo,
    factory: &F,
    listen_addr: SocketAddr,
    shard_addr: SocketAddr,
) -> Result<Opened<S>, ServerError> {
    let service = factory(info).map_err(|message| ServerError::Shard {
        shard: info.shard,
        message,
    })?;
    let bind = |addr: SocketAddr| listen(addr).map_err(|source| ServerError::Bind { addr, source });
    let common = bind(listen_addr)?;
    let own = bind(shard_addr)?;
    Ok((Rc::new(service), common, own))
}

/// A listening socket on `addr` shared by the shards (SO_REUSEPORT) that also binds while
/// connections of a previous run linger in TIME_WAIT (SO_REUSEADDR). glommio's own `bind`
/// sets only the former, so a node restarted on its ports right after a crash (its peers'
/// links were connected to them) could not listen for a minute.
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    use std::os::fd::{FromRawFd, IntoRawFd};
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    // SAFETY: `into_raw_fd` hands over ownership of a valid, bound and listening socket
    // descriptor, which the listener takes over (and closes); nothing else refers to it.
    Ok(unsafe { TcpListener::from_raw_fd(socket.into_raw_fd()) })
}

async fn accept_loop<S: Service>(listener: TcpListener, shard: Rc<Listening<S>>) {
    loop {
        let accepted = future::or(async { Some(listener.accept().await) }, async {
            let _ = shard.stop.acquire(1).await;
            None
        })
        .await;
        let Some(accepted) = accepted else {
            return;
        };
        let mut stream = match accepted {
            Ok(stream) => stream,
            Err(e) => {
                // Usually out of descriptors: back off instead of spinning on the error.
                warn!(shard = shard.shard, error = %e, "accept failed");
                glommio::timer::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let Some(slot) = shard.cap.try_acquire() else {
            debug!(
                shard = shard.shard,
                "connection cap reached; refusing a connection"
            );
            continue;
        };
        let mut handler = shard.service.connection(&shard.mailbox);
        let conn = shard.clone();
        let task = shard.gate.spawn(async move {
            let _slot = slot;
            let peer = stream.peer_addr().ok();
            let reason =
                connection::serve(&mut stream, &mut handler, &conn.limits, &conn.stop).await;
            debug!(shard = conn.shard, ?peer, ?reason, "connection closed");
        });
        if let Ok(task) = task {
            task.detach();
        }
    }
}

/// Checks that `addr` is free, or picks a free port for port 0.
///
/// A fixed port is probed with a plain bind, which fails if anyone listens there: with
/// SO_REUSEPORT alone, a second `rotord` of the same user would silently share the port.
/// A free port is chosen by binding (without listening) a SO_REUSEPORT socket, returned to
/// be held until every shard listens on that port: released earlier, the same free port
/// could be handed to another process (or another test's server) in between.
fn reserve(addr: SocketAddr) -> Result<(SocketAddr, Option<socket2::Socket>), ServerError> {
    let bind_error = |source| ServerError::Bind { addr, source };
    if addr.port() != 0 {
        let probe = std::net::TcpListener::bind(addr).map_err(bind_error)?;
        return Ok((probe.local_addr().map_err(bind_error)?, None));
    }
    let domain = socket2::Domain::for_address(addr);
    let socket = socket2::Socket::new(domain, socket2::Type::STREAM, None).map_err(bind_error)?;
    socket.set_reuse_port(true).map_err(bind_error)?;
    socket.bind(&addr.into()).map_err(bind_error)?;
    let bound = socket
        .local_addr()
        .map_err(bind_error)?
        .as_socket()
        .ok_or_else(|| bind_error(std::io::ErrorKind::AddrNotAvailable.into()))?;
    Ok((bound, Some(socket)))
}

/// Raises the soft RLIMIT_MEMLOCK to what glommio needs for `shards` executors, up to the
/// hard limit, and the hard limit too when privileged. glommio refuses to start under
/// `constants::MEMLOCK_BYTES_MIN`; registering its I/O memory beyond the limit only logs.
pub fn raise_memlock(shards: usize) -> Result<(), ServerError> {
    use rlimit::Resource;
    // glommio registers its I/O memory with each of its three rings (main, latency,
    // poll), and the kernel charges each registration to the limit.
    let per_shard = u64::try_from(constants::EXECUTOR_IO_MEMORY_BYTES)
        .map_or(u64::MAX, |bytes| bytes.saturating_mul(3));
    let need = constants::MEMLOCK_BYTES_MIN
        .saturating_add(per_shard.saturating_mul(u64::try_from(shards).unwrap_or(u64::MAX)));
    let (soft, hard) = rlimit::getrlimit(Resource::MEMLOCK).map_err(|e| ServerError::Memlock {
        have: 0,
        need,
        reason: e.to_string(),
    })?;
    if soft >= need {
        return Ok(());
    }
    // Privileged (root or CAP_SYS_RESOURCE): lift both limits; otherwise up to the hard one.
    if rlimit::setrlimit(Resource::MEMLOCK, need, hard.max(need)).is_ok() {
        debug!(from = soft, to = need, "raised RLIMIT_MEMLOCK");
        return Ok(());
    }
    let best = hard.min(need);
    let raised = rlimit::setrlimit(Resource::MEMLOCK, best, hard);
    if best >= constants::MEMLOCK_BYTES_MIN && raised.is_ok() {
        debug!(
            from = soft,
            to = best,
            "raised RLIMIT_MEMLOCK to its hard limit"
        );
        return Ok(());
    }
    Err(ServerError::Memlock {
        have: soft,
        need,
        reason: match raised {
            Err(e) => e.to_string(),
            Ok(()) => format!("hard limit is {hard}"),
        },
    })
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;
    use crate::server::config::Cores;
    use crate::server::echo::{self, EchoService, Reply};

    /// A blocking test client of the echo protocol. Reads time out after 30 s so a broken
    /// server fails the test instead of hanging it; nothing asserts on timing.
    struct Client {
        stream: TcpStream,
        buf: Vec<u8>,
    }

    impl Client {
        fn connect(addr: SocketAddr) -> Client {
            let stream = TcpStream::connect(addr).expect("connect");
            stream
                .set_read_timeout(Some(Duration::from_secs(30)))
                .unwrap();
            Client {
                stream,
                buf: Vec::new(),
            }
        }

        fn send(&mut self, op: u8, target: Option<u16>, payload: &[u8]) {
            self.stream
                .write_all(&echo::request(op, target, payload))
                .expect("send");
        }

        /// The next reply, or `None` once the server closed the connection.
        fn reply(&mut self) -> Option<Reply> {
            loop {
                if let Some((reply, used)) = echo::parse_reply(&self.buf) {
                    self.buf.drain(..used);
                    return Some(reply);
                }
                let mut chunk = [0u8; 64 * 1024];
                match self.stream.read(&mut chunk) {
                    Ok(0) => return None,
                    Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
                    Err(e) => panic!("read: {e}"),
                }
            }
        }

        fn echo(&mut self, payload: &[u8]) -> u16 {
            self.send(echo::OP_ECHO, None, payload);
            match self.reply() {
                Some(Reply::Echo(echo::OP_ECHO, shard, got)) if got == payload => shard,
                other => panic!("unexpected reply {other:?}"),
            }
        }
    }

    /// Two shards on loopback ephemeral ports (pinned to the first two allowed CPUs, or
    /// twice to the only one), counting shutdown hooks in the returned counter.
    fn two_shards(tune: impl FnOnce(&mut Config)) -> (RunningServer, Arc<AtomicU32>) {
        let cpus = allowed_cpus();
        let mut config = Config {
            listen: "127.0.0.1:0".into(),
            cores: Cores::List(vec![cpus[0], *cpus.get(1).unwrap_or(&cpus[0])]),
            ..Config::default()
        };
        tune(&mut config);
        let shutdowns = Arc::new(AtomicU32::new(0));
        let hooks = shutdowns.clone();
        let server = start(&config, move |info| {
            Ok(EchoService::new(info, Some(hooks.clone())))
        })
        .expect("server starts");
        (server, shutdowns)
    }

    fn stop(server: RunningServer, shutdowns: &AtomicU32) {
        server.stop();
        server.join().expect("clean stop");
        assert_eq!(
            shutdowns.load(Ordering::SeqCst),
            2,
            "every shard's hook ran"
        );
    }

    #[test]
    fn two_shards_serve_both_ports_and_forward_through_the_mailbox() {
        let (server, shutdowns) = two_shards(|_| {});
        let shard_addrs = server.shard_addrs().to_vec();
        assert_eq!(shard_addrs.len(), 2);
        assert!(shard_addrs.iter().all(|a| a.port() != 0));

        for (shard, addr) in (0u16..).zip(&shard_addrs) {
            let mut client = Client::connect(*addr);
            assert_eq!(
                client.echo(b"own port"),
                shard,
                "per-shard port reaches its shard"
            );
            let other = 1 - shard;
            client.send(echo::OP_FORWARD, Some(other), b"hop");
            assert_eq!(
                client.reply(),
                Some(Reply::Echo(echo::OP_FORWARD, other, b"hop".to_vec())),
                "forwarded through the mailbox and served by the owner"
            );
            client.send(echo::OP_FORWARD, Some(9), b"nowhere");
            assert_eq!(client.reply(), Some(Reply::Error(echo::ERROR_NO_SHARD)));
            assert_eq!(client.echo(b"still open"), shard);
        }

        for _ in 0..8 {
            let mut client = Client::connect(server.listen_addr());
            assert!(client.echo(b"common port") < 2);
        }

        // Pipelined: local replies and forwarded ones interleave; all arrive.
        let mut client = Client::connect(shard_addrs[0]);
        let mut want = Vec::new();
        for i in 0..300u32 {
            let payload = i.to_le_bytes();
            if i % 3 == 0 {
                client.send(echo::OP_FORWARD, Some(1), &payload);
                want.push(Reply::Echo(echo::OP_FORWARD, 1, payload.to_vec()));
            } else {
                client.send(echo::OP_ECHO, None, &payload);
                want.push(Reply::Echo(echo::OP_ECHO, 0, payload.to_vec()));
            }
        }
        let mut got: Vec<Reply> = (0..want.len()).map(|_| client.reply().unwrap()).collect();
        let key = |r: &Reply| format!("{r:?}");
        got.sort_by_key(key);
        want.sort_by_key(key);
        assert_eq!(got, want);

        stop(server, &shutdowns);
    }

    #[test]
    fn large_frames_and_a_client_that_reads_late_are_served_in_full() {
        let (server, shutdowns) = two_shards(|c| c.connection_output_bytes_max = 64 * 1024);
        let addr = server.shard_addrs()[1];

        // One frame well past the initial receive buffer.
        let big: Vec<u8> = (0..echo::ECHO_FRAME_BYTES_MAX - 1)
            .map(|i| i as u8)
            .collect();
        let mut client = Client::connect(addr);
        assert_eq!(client.echo(&big), 1);

        // 8 MiB of requests before reading anything: the server stops reading while its
        // output is full and resumes as the client drains it; nothing is lost.
        let mut writer = Client::connect(addr);
        let mut reader = Client {
            stream: writer.stream.try_clone().unwrap(),
            buf: Vec::new(),
        };
        let sending = std::thread::spawn(move || {
            for i in 0..2048u32 {
                writer.send(echo::OP_ECHO, None, &[i as u8; 4096]);
            }
        });
        for i in 0..2048u32 {
            assert_eq!(
                reader.reply(),
                Some(Reply::Echo(echo::OP_ECHO, 1, vec![i as u8; 4096]))
            );
        }
        sending.join().unwrap();
        stop(server, &shutdowns);
    }

    #[test]
    fn the_connection_cap_refuses_extra_connections_until_one_closes() {
        let (server, shutdowns) = two_shards(|c| c.connections_max = 1);
        let mut first = Client::connect(server.shard_addrs()[0]);
        first.echo(b"admitted");

        for addr in [server.listen_addr(), server.shard_addrs()[1]] {
            let mut refused = Client::connect(addr);
            // The kernel completes the TCP handshake; the server then closes at once.
            let _ = refused
                .stream
                .write_all(&echo::request(echo::OP_ECHO, None, b"x"));
            assert_eq!(
                refused.reply(),
                None,
                "over the cap: closed without a reply"
            );
        }

        drop(first);
        // The slot frees when the server notices the close: retry a bounded number of times.
        let admitted = (0..500).any(|_| {
            let mut client = Client::connect(server.shard_addrs()[1]);
            client.send(echo::OP_ECHO, None, b"again");
            if client.reply().is_some() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
            false
        });
        assert!(admitted, "a freed slot admits a new connection");
        stop(server, &shutdowns);
    }

    #[test]
    fn idle_and_handshake_timeouts_close_connections() {
        let (server, shutdowns) = two_shards(|c| {
            c.idle_timeout_ms = 50;
            c.handshake_timeout_ms = 3_600_000;
        });
        let mut client = Client::connect(server.shard_addrs()[0]);
        client.echo(b"then silence");
        assert_eq!(client.reply(), None, "closed after the idle timeout");
        stop(server, &shutdowns);

        let (server, shutdowns) = two_shards(|c| {
            c.idle_timeout_ms = 3_600_000;
            c.handshake_timeout_ms = 50;
        });
        let mut silent = Client::connect(server.shard_addrs()[0]);
        assert_eq!(silent.reply(), None, "no handshake: closed");
        let mut partial = Client::connect(server.shard_addrs()[1]);
        partial.stream.write_all(&[10, 0, 0, 0, 0]).unwrap();
        assert_eq!(partial.reply(), None, "half a frame is no handshake");
        stop(server, &shutdowns);
    }

    #[test]
    fn malformed_frames_get_an_error_frame_then_close() {
        let (server, shutdowns) = two_shards(|_| {});
        let addr = server.shard_addrs()[0];
        let bad_frames: [&[u8]; 4] = [
            &[1, 0, 0, 0, 0x42],
            &[0, 0, 0, 0],
            &[0xff, 0xff, 0xff, 0xff],
            &[2, 0, 0, 0, echo::OP_FORWARD, 1],
        ];
        let codes = [
            echo::ERROR_MALFORMED,
            echo::ERROR_MALFORMED,
            echo::ERROR_TOO_LARGE,
            echo::ERROR_MALFORMED,
        ];
        for (frame, code) in bad_frames.iter().zip(codes) {
            let mut client = Client::connect(addr);
            client.echo(b"fine so far");
            client.stream.write_all(frame).unwrap();
            assert_eq!(client.reply(), Some(Reply::Error(code)));
            assert_eq!(client.reply(), None, "closed after the error frame");
        }
        assert_eq!(Client::connect(addr).echo(b"server unharmed"), 0);
        stop(server, &shutdowns);
    }

    /// Sends a `DELAY` request and then an `ECHO`, and waits for the echo: by then the
    /// server has read the delayed request, which is in flight.
    fn delayed_then_echo(client: &mut Client, millis: u32) -> Vec<Reply> {
        let mut body = millis.to_le_bytes().to_vec();
        body.extend_from_slice(b"slow");
        client.send(echo::OP_DELAY, None, &body);
        client.send(echo::OP_ECHO, None, b"fast");
        vec![client.reply().unwrap()]
    }

    /// The story: the connection loop once collected finished deferred replies only after
    /// serving frames. At the in-flight bound, a frame already received stayed unserved
    /// once the slow request finished, and the loop went back to waiting for input that
    /// never came: the client hung. Replies are now collected before serving.
    #[test]
    fn the_in_flight_bound_holds_back_later_frames() {
        let (server, shutdowns) = two_shards(|c| c.connection_in_flight_max = 1);
        let mut client = Client::connect(server.shard_addrs()[0]);
        let mut replies = delayed_then_echo(&mut client, 20);
        replies.push(client.reply().unwrap());
        assert_eq!(
            replies,
            [
                Reply::Echo(echo::OP_DELAY, 0, b"slow".to_vec()),
                Reply::Echo(echo::OP_ECHO, 0, b"fast".to_vec()),
            ],
            "with one request in flight, the echo waits for the slow request"
        );
        stop(server, &shutdowns);
    }

    #[test]
    fn stopping_answers_requests_in_flight_first() {
        let (server, shutdowns) = two_shards(|_| {});
        let mut client = Client::connect(server.shard_addrs()[1]);
        let first = delayed_then_echo(&mut client, 300);
        assert_eq!(first, [Reply::Echo(echo::OP_ECHO, 1, b"fast".to_vec())]);
        stop(server, &shutdowns);
        assert_eq!(
            client.reply(),
            Some(Reply::Echo(echo::OP_DELAY, 1, b"slow".to_vec())),
            "the request in flight was answered before the connection closed"
        );
        assert_eq!(client.reply(), None);
    }

    #[test]
    fn random_bytes_never_harm_the_server() {
        let (server, shutdowns) = two_shards(|_| {});
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            // xorshift64: reproducible garbage without a dependency.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for round in 0..200 {
            let addr = server.shard_addrs()[round % 2];
            let mut client = Client::connect(addr);
            let len = usize::try_from(next() % 2048).unwrap();
            let mut garbage: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if round % 3 == 0 {
                // A plausible length prefix, so the bytes reach the op decoding too.
                let body = u32::try_from(len.saturating_sub(4)).unwrap();
                if let Some(header) = garbage.get_mut(..4) {
                    header.copy_from_slice(&body.to_le_bytes());
                }
            }
            let _ = client.stream.write_all(&garbage);
            let _ = client.stream.shutdown(std::net::Shutdown::Write);
            // Whatever comes back, the connection ends (error frame, or our half-close).
            while client.reply().is_some() {}
        }
        for addr in server.shard_addrs().to_vec() {
            Client::connect(addr).echo(b"still serving");
        }
        stop(server, &shutdowns);
    }

    #[test]
    fn stopping_closes_open_connections_and_runs_every_hook() {
        let (server, shutdowns) = two_shards(|_| {});
        let mut open = Client::connect(server.shard_addrs()[1]);
        open.echo(b"before the stop");
        let listen = server.listen_addr();
        stop(server, &shutdowns);
        assert_eq!(open.reply(), None, "closed by the shutdown");
        // The kernel may still complete a handshake while io_uring tears down the listener
        // (ring teardown is asynchronous), but nothing is served any more.
        if let Ok(late) = TcpStream::connect(listen) {
            let mut late = Client {
                stream: late,
                buf: Vec::new(),
            };
            late.stream
                .set_read_timeout(Some(Duration::from_secs(30)))
                .unwrap();
            let _ = late
                .stream
                .write_all(&echo::request(echo::OP_ECHO, None, b"x"));
            assert_eq!(late.reply(), None, "no longer serving");
        }
    }

    #[test]
    fn a_taken_port_is_a_clear_error() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let config = Config {
            listen: taken.local_addr().unwrap().to_string(),
            shard_ports: Some(vec![0]),
            cores: Cores::Count(1),
            ..Config::default()
        };
        let err = start(&config, |info| Ok(EchoService::new(info, None)))
            .err()
            .expect("refused");
        assert!(matches!(err, ServerError::Bind { .. }), "{err}");
    }

    #[test]
    fn memlock_is_already_enough_or_raised() {
        raise_memlock(2).expect("root or a sufficient limit");
        let (soft, _) = rlimit::getrlimit(rlimit::Resource::MEMLOCK).unwrap();
        assert!(soft >= constants::MEMLOCK_BYTES_MIN);
    }
}
