//! End-to-end runs of the load generator against tiny RESP servers started in the test on
//! loopback: a well-behaved one that remembers written keys, one that speaks garbage, and
//! none at all. They check counts and that every run ends by itself.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use super::resp::{parse_reply, ReplyKind};
use super::target::{
    Decoded, ProtocolError, RedisConn, RedisTarget, Reply, Request, Target, TargetConn,
};
use super::*;

/// What the fake server does with each request.
#[derive(Clone, Copy)]
enum Behaviour {
    /// `+OK` to SET, the value or `$-1` to GET, like Redis.
    Redis,
    /// Bytes that are not RESP.
    Garbage,
    /// Like `Redis`, but each batch of replies leaves only after this pause.
    Slow(Duration),
}

struct FakeServer {
    addr: SocketAddr,
    requests: Arc<AtomicU64>,
}

/// Starts a fake RESP server on 127.0.0.1:0, one thread per connection. The threads end
/// when their client disconnects; the listener lives as long as the test process.
fn fake_server(behaviour: Behaviour) -> FakeServer {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let requests = Arc::new(AtomicU64::new(0));
    let keys = Arc::new(Mutex::new(HashSet::<Vec<u8>>::new()));
    let counter = requests.clone();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let (counter, keys) = (counter.clone(), keys.clone());
            thread::spawn(move || serve(stream, behaviour, &counter, &keys));
        }
    });
    FakeServer { addr, requests }
}

fn serve(
    mut stream: TcpStream,
    behaviour: Behaviour,
    counter: &AtomicU64,
    keys: &Mutex<HashSet<Vec<u8>>>,
) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let mut out = Vec::new();
    loop {
        let n = match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        let mut at = 0;
        while let Ok(Some(request)) = parse_reply(&buf[at..]) {
            assert_eq!(request.kind, ReplyKind::Array);
            let body = &buf[at..at + request.len];
            at += request.len;
            counter.fetch_add(1, Ordering::Relaxed);
            if body == b"*1\r\n$4\r\nPING\r\n" {
                match behaviour {
                    Behaviour::Garbage => out.extend_from_slice(b"-ERR go away\r\n"),
                    _ => out.extend_from_slice(b"+PONG\r\n"),
                }
                continue;
            }
            // "*N\r\n$3\r\nCMD\r\n$16\r\n" then the 16-byte key.
            let command = &body[8..11];
            let key = body[18..34].to_vec();
            match behaviour {
                Behaviour::Garbage => out.extend_from_slice(b"?garbage\r\n"),
                _ if command == b"SET" => {
                    keys.lock().unwrap().insert(key);
                    out.extend_from_slice(b"+OK\r\n");
                }
                _ if keys.lock().unwrap().contains(&key) => {
                    out.extend_from_slice(b"$5\r\nvalue\r\n")
                }
                _ => out.extend_from_slice(b"$-1\r\n"),
            }
        }
        buf.drain(..at);
        if let Behaviour::Slow(pause) = behaviour {
            thread::sleep(pause);
        }
        if stream.write_all(&out).is_err() {
            return;
        }
        out.clear();
    }
}

fn config(addr: SocketAddr) -> Config {
    Config {
        target: TargetSpec::Redis(addr),
        connections: 4,
        pipeline: 8,
        threads: 2,
        mode: Mode::Closed,
        keys: 1000,
        distribution: Distribution::Uniform,
        value_size: 100,
        read_ratio: 0.5,
        warmup: Duration::from_millis(100),
        duration: Duration::from_millis(400),
        seed: 5,
        prefill: false,
        rotor: Default::default(),
    }
}

/// Runs `config` and checks it ended by itself: well after its deadline would mean a hang.
/// The bound is generous because the machine is shared; it catches hangs, not slowness.
fn run_bounded(config: &Config) -> Report {
    let started = Instant::now();
    let mut progress = Vec::new();
    let report = run(config, &mut progress).unwrap();
    let limit = config.warmup + config.duration + Duration::from_secs(20);
    assert!(
        started.elapsed() < limit,
        "run did not stop: {:?}",
        started.elapsed()
    );
    report
}

#[test]
fn closed_loop_with_prefill_reads_what_it_wrote() {
    let server = fake_server(Behaviour::Redis);
    let config = Config {
        prefill: true,
        ..config(server.addr)
    };
    let report = run_bounded(&config);
    assert_eq!(report.prefill_ok, Some(1000));
    assert!(report.ok > 0, "{report:?}");
    assert_eq!(report.errors, 0, "{report:?}");
    // Every key was written by the prefill, so no read misses.
    assert_eq!(report.misses, 0, "{report:?}");
    assert_eq!(report.reads + report.writes, report.ok);
    assert!(report.reads > 0 && report.writes > 0);
    assert_eq!((report.connect_failures, report.disconnects), (0, 0));
    // The server answered at least the prefill, the warmup and the measured requests.
    assert!(server.requests.load(Ordering::Relaxed) >= 1000 + report.ok);
    assert!(report.p50_us > 0.0 && report.p50_us <= report.max_us);
    assert!(report.ops_per_sec > 0.0);
}

#[test]
fn reads_of_unwritten_keys_are_misses() {
    let server = fake_server(Behaviour::Redis);
    let config = Config {
        read_ratio: 1.0,
        threads: 1,
        ..config(server.addr)
    };
    let report = run_bounded(&config);
    assert!(report.ok > 0);
    assert_eq!(report.misses, report.ok);
    assert_eq!(report.writes, 0);
}

#[test]
fn open_loop_keeps_to_its_rate() {
    let server = fake_server(Behaviour::Redis);
    let config = Config {
        mode: Mode::Open { rate: 2000.0 },
        warmup: Duration::ZERO,
        duration: Duration::from_millis(500),
        ..config(server.addr)
    };
    let report = run_bounded(&config);
    assert!(report.ok > 0, "{report:?}");
    // At most the requests due in the window (2000/s for 0.5 s) plus one per thread.
    assert!(report.ok <= 1002, "{report:?}");
    assert_eq!(report.errors, 0);
}

/// Coordinated omission: a server that takes 20 ms per reply, asked for 1000 requests a
/// second on one connection, falls further behind with every request. Latency counted from
/// the send time would stay near 20 ms; counted from the due time it grows with the backlog,
/// which is what a user of such a server would see.
#[test]
fn open_loop_charges_the_backlog_to_the_server() {
    let server = fake_server(Behaviour::Slow(Duration::from_millis(20)));
    let config = Config {
        mode: Mode::Open { rate: 1000.0 },
        connections: 1,
        threads: 1,
        pipeline: 1,
        warmup: Duration::ZERO,
        duration: Duration::from_millis(600),
        ..config(server.addr)
    };
    let report = run_bounded(&config);
    assert!(report.ok > 0, "{report:?}");
    // At most one reply per 20 ms, so at most ~30 of the 600 requests due were sent.
    assert!(report.ok <= 31, "{report:?}");
    assert!(report.unsent >= 500, "{report:?}");
    // The last replies answer requests due hundreds of milliseconds earlier.
    assert!(report.max_us >= 200_000.0, "{report:?}");
}

#[test]
fn refused_connections_are_counted_and_the_run_ends() {
    // Bind then drop, so the port is (almost certainly) closed.
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let report = run_bounded(&config(addr));
    assert_eq!(report.ok, 0);
    assert!(report.connect_failures > 0, "{report:?}");
    assert!(report.first_failure.is_some());
}

#[test]
fn a_prefill_against_a_dead_server_gives_up() {
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let config = Config {
        prefill: true,
        ..config(addr)
    };
    let started = Instant::now();
    let report = run(&config, &mut Vec::new()).unwrap();
    let limit = PREFILL_STALL + config.warmup + config.duration + Duration::from_secs(20);
    assert!(started.elapsed() < limit, "{:?}", started.elapsed());
    assert_eq!((report.prefill_ok, report.ok), (Some(0), 0));
    assert!(report.connect_failures > 0);
}

#[test]
fn garbage_replies_close_connections_and_count_errors() {
    let server = fake_server(Behaviour::Garbage);
    let report = run_bounded(&config(server.addr));
    assert_eq!(report.ok, 0);
    assert!(report.disconnects > 0, "{report:?}");
    assert!(report.errors > 0, "{report:?}");
    assert!(report.first_failure.unwrap().contains("RESP"));
}

#[test]
fn an_unreachable_rotor_target_is_refused_before_the_run() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let config = Config {
        target: TargetSpec::Rotor(closed),
        ..config(closed)
    };
    let err = run(&config, &mut Vec::new()).unwrap_err();
    assert!(matches!(err, BenchError::Config(_)));
    assert!(err.to_string().contains("cannot reach"));
}

#[test]
fn invalid_configs_are_refused() {
    let base = config("127.0.0.1:1".parse().unwrap());
    for bad in [
        Config {
            connections: 0,
            ..base.clone()
        },
        Config {
            threads: 5,
            ..base.clone()
        },
        Config {
            pipeline: 0,
            ..base.clone()
        },
        Config {
            read_ratio: 1.5,
            ..base.clone()
        },
        Config {
            duration: Duration::ZERO,
            ..base.clone()
        },
        Config {
            distribution: Distribution::Zipf { theta: 1.0 },
            ..base.clone()
        },
        Config {
            mode: Mode::Open { rate: 0.0 },
            ..base.clone()
        },
        Config {
            keys: workload::KEYS_MAX + 1,
            ..base.clone()
        },
    ] {
        assert!(
            matches!(run(&bad, &mut Vec::new()), Err(BenchError::Config(_))),
            "{bad:?}"
        );
    }
}

/// A protocol with a handshake, as Rotor's HELLO: PING first, requests only after PONG.
struct PingFirst(RedisTarget);

struct PingFirstConn {
    redis: RedisConn,
    greeted: bool,
}

impl Target for PingFirst {
    type Conn = PingFirstConn;

    fn addr(&self, index: usize) -> SocketAddr {
        self.0.addr(index)
    }

    fn new_conn(&self, depth: usize) -> PingFirstConn {
        PingFirstConn {
            redis: self.0.new_conn(depth),
            greeted: false,
        }
    }
}

impl TargetConn for PingFirstConn {
    fn handshake(&mut self, out: &mut Vec<u8>) -> bool {
        out.extend_from_slice(b"*1\r\n$4\r\nPING\r\n");
        true
    }

    fn encode(&mut self, request: Request<'_>, tag: u32, out: &mut Vec<u8>) {
        assert!(
            self.greeted,
            "a request was sent before the handshake finished"
        );
        self.redis.encode(request, tag, out);
    }

    fn decode(&mut self, input: &[u8]) -> Result<Option<Decoded>, ProtocolError> {
        if self.greeted {
            return self.redis.decode(input);
        }
        match parse_reply(input).map_err(ProtocolError::Resp)? {
            None => Ok(None),
            Some(r) if r.len == 7 && input.starts_with(b"+PONG\r\n") => {
                self.greeted = true;
                Ok(Some(Decoded {
                    len: r.len,
                    reply: Reply::HandshakeDone,
                }))
            }
            Some(_) => Err(ProtocolError::HandshakeRefused),
        }
    }
}

#[test]
fn requests_wait_for_the_handshake() {
    let server = fake_server(Behaviour::Redis);
    let config = config(server.addr);
    let started = Instant::now();
    let report = run_with(
        &PingFirst(RedisTarget::new(server.addr)),
        &config,
        &mut Vec::new(),
    );
    assert!(started.elapsed() < config.warmup + config.duration + Duration::from_secs(20));
    assert!(report.ok > 0, "{report:?}");
    assert_eq!(
        (report.errors, report.connect_failures),
        (0, 0),
        "{report:?}"
    );
    // One PING per connection on top of the requests.
    assert!(server.requests.load(Ordering::Relaxed) >= report.ok + 4);
}

#[test]
fn a_refused_handshake_counts_as_a_connect_failure() {
    let server = fake_server(Behaviour::Garbage);
    let config = config(server.addr);
    let report = run_with(
        &PingFirst(RedisTarget::new(server.addr)),
        &config,
        &mut Vec::new(),
    );
    assert_eq!(report.ok, 0);
    assert!(report.connect_failures > 0, "{report:?}");
}
