//! `rotord` as a real process: configuration errors and `--print-config`, serving on
//! loopback, a graceful stop on SIGTERM and SIGINT with exit status 0, and start-up under a
//! locked-memory limit too low for glommio.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rotor::wire;

fn rotord() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rotord"))
}

/// A running `rotord` on a free loopback port, its address read from its start-up log.
struct Server {
    child: Child,
    listen: SocketAddr,
    _data: tempfile::TempDir,
}

impl Server {
    fn start(wrapper: &[&str]) -> Server {
        let data = tempfile::tempdir().unwrap();
        let program = env!("CARGO_BIN_EXE_rotord");
        let mut command = match wrapper.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(program);
                c
            }
            None => Command::new(program),
        };
        let mut child = command
            .args(["--listen", "127.0.0.1:0", "--cores", "1", "--data-dir"])
            .arg(data.path())
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("rotord starts");
        let mut log = BufReader::new(child.stderr.take().unwrap());
        let mut listen = None;
        let mut seen = String::new();
        let mut line = String::new();
        while listen.is_none() && log.read_line(&mut line).unwrap_or(0) > 0 {
            seen.push_str(&line);
            listen = line
                .split_whitespace()
                .find_map(|word| word.strip_prefix("listen="))
                .and_then(|addr| addr.parse().ok());
            line.clear();
        }
        let listen = listen.unwrap_or_else(|| panic!("no listen address in the log:\n{seen}"));
        // Keep draining the log so the server never blocks on a full pipe.
        std::thread::spawn(move || std::io::copy(&mut log, &mut std::io::sink()));
        Server {
            child,
            listen,
            _data: data,
        }
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    fn wait(mut self) -> std::process::ExitStatus {
        self.child.wait().unwrap()
    }
}

/// Connects and completes the handshake (HELLO, then its reply from shard 0).
fn echo_once(addr: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let hello = wire::Message::Hello(wire::Hello {
        version_min: 1,
        version_max: 1,
        role: wire::Role::Client,
        features: 0,
        cluster_id: 0,
        node_id: 0,
    });
    let mut frame = Vec::new();
    wire::encode(1, &hello, &mut frame).unwrap();
    stream.write_all(&frame).unwrap();
    let mut reply = vec![0u8; wire::HEADER_BYTES + 30];
    stream.read_exact(&mut reply).unwrap();
    match wire::decode(&reply) {
        Ok(wire::Decoded::Frame { frame, .. }) => match frame.message {
            wire::Message::HelloReply(h) => assert_eq!((h.shard, h.shard_count), (0, 1)),
            other => panic!("unexpected {other:?}"),
        },
        other => panic!("unexpected {other:?}"),
    }
    stream
}

fn assert_closed(mut stream: TcpStream) {
    let mut rest = Vec::new();
    match stream.read_to_end(&mut rest) {
        Ok(_) => assert!(rest.is_empty()),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset),
    }
}

#[test]
fn sigterm_stops_gracefully_with_status_0() {
    let server = Server::start(&[]);
    let open = echo_once(server.listen);
    server.signal("TERM");
    let status = server.wait();
    assert!(status.success(), "{status:?}");
    assert_closed(open);
}

#[test]
fn sigint_stops_gracefully_with_status_0() {
    let server = Server::start(&[]);
    drop(echo_once(server.listen));
    server.signal("INT");
    let status = server.wait();
    assert!(status.success(), "{status:?}");
}

#[test]
fn raises_a_low_locked_memory_limit_itself() {
    // glommio refuses to start under 512 KiB of locked memory; many machines default to
    // 64 KiB soft. rotord raises the soft limit up to the hard one.
    if Command::new("prlimit").arg("--version").output().is_err() {
        eprintln!("prlimit not installed: skipped");
        return;
    }
    let server = Server::start(&["prlimit", "--memlock=65536:"]);
    drop(echo_once(server.listen));
    server.signal("TERM");
    assert!(server.wait().success());
}

#[test]
fn a_hard_locked_memory_limit_too_low_is_a_clear_error() {
    if Command::new("prlimit").arg("--version").output().is_err() {
        eprintln!("prlimit not installed: skipped");
        return;
    }
    // The listen port is taken, so a rotord privileged enough to lift the hard limit
    // (CAP_SYS_RESOURCE) stops at the bind instead of serving; without that capability
    // (a user, or root in a container) it stops at the limit.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let out = Command::new("prlimit")
        .arg("--memlock=65536:65536")
        .arg(env!("CARGO_BIN_EXE_rotord"))
        .arg("--listen")
        .arg(taken.local_addr().unwrap().to_string())
        .args(["--cores", "1"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    if !err.contains("cannot listen") {
        assert!(
            err.contains("locked-memory limit") && err.contains("ulimit -l"),
            "{err}"
        );
    }
}

#[test]
fn print_config_shows_the_effective_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rotor.toml");
    std::fs::write(&file, "fsync = \"never\"\nconnections_max = 5\n").unwrap();
    let out = rotord()
        .arg("--config")
        .arg(&file)
        .args(["--fsync", "always", "--print-config"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("fsync = \"always\""), "{text}");
    assert!(text.contains("connections_max = 5"), "{text}");
    assert!(text.contains("listen = \"127.0.0.1:7070\""), "{text}");
}

#[test]
fn configuration_errors_exit_2_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rotor.toml");
    std::fs::write(&file, "lisen = \"127.0.0.1:1\"\n").unwrap();
    let out = rotord().arg("--config").arg(&file).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("unknown field") && err.contains("lisen"),
        "{err}"
    );

    let out = rotord().args(["--cores", "0-"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = rotord().args(["--cores", "4096"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("not available"), "{err}");
}
