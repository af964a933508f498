//! Shared by the integration tests that need a real node: start `rotord` on a free loopback
//! port with a temporary data directory, learn its address from its start-up log, stop it.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A running `rotord`; stopped (SIGTERM, then SIGKILL if it lingers) when dropped.
pub struct Rotord {
    child: Option<Child>,
    /// The common client port.
    pub listen: SocketAddr,
    /// The data directory (kept until the value is dropped).
    pub data: tempfile::TempDir,
}

impl Rotord {
    /// Starts a node with `cores` shards (e.g. "1" or "2") in a fresh data directory.
    pub fn start(cores: &str) -> Rotord {
        Rotord::start_in(tempfile::tempdir().expect("temp dir"), cores)
    }

    /// Starts a node with `cores` shards and `extra` flags (e.g. `--seeds`) in a fresh data
    /// directory.
    pub fn start_with(cores: &str, extra: &[&str]) -> Rotord {
        Rotord::start_in_with(tempfile::tempdir().expect("temp dir"), cores, extra)
    }

    /// Starts a node on an existing data directory (for restarts).
    pub fn start_in(data: tempfile::TempDir, cores: &str) -> Rotord {
        Rotord::start_in_with(data, cores, &[])
    }

    /// Starts a node on an existing data directory with `extra` flags.
    pub fn start_in_with(data: tempfile::TempDir, cores: &str, extra: &[&str]) -> Rotord {
        let (child, listen) = spawn(data.path(), cores, extra);
        let node = Rotord {
            child: Some(child),
            listen,
            data,
        };
        node.wait_until_accepting();
        node
    }

    fn wait_until_accepting(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(self.listen).is_err() {
            assert!(
                Instant::now() < deadline,
                "rotord never accepted on {}",
                self.listen
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The process id (for signals).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// Stops the node with SIGTERM and waits for it; returns its exit status and the data
    /// directory, so the node can be restarted on it.
    pub fn stop(mut self) -> (ExitStatus, tempfile::TempDir) {
        let status = terminate(self.child.take().expect("running"));
        let data = std::mem::replace(&mut self.data, tempfile::tempdir().expect("temp dir"));
        (status, data)
    }

    /// The data directory's path.
    pub fn data_path(&self) -> &Path {
        self.data.path()
    }
}

impl Drop for Rotord {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            terminate(child);
        }
    }
}

/// Starts `rotord` on `data` with `cores` shards (a count or a list) and `extra` flags,
/// listening on a free loopback port; waits for its "node ready" log line and returns the
/// process and its common address. The log keeps being drained (and echoed to stderr, which
/// cargo shows for failing tests) so the node never blocks on a full pipe.
pub fn spawn(data: &Path, cores: &str, extra: &[&str]) -> (Child, SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rotord"))
        .args(["--listen", "127.0.0.1:0", "--cores", cores])
        .arg("--data-dir")
        .arg(data)
        .args(extra)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("rotord starts");
    let mut log = BufReader::new(child.stderr.take().expect("piped stderr"));
    let mut listen = None;
    let mut ready = false;
    let mut seen = String::new();
    let mut line = String::new();
    while !ready && log.read_line(&mut line).unwrap_or(0) > 0 {
        seen.push_str(&line);
        if listen.is_none() {
            listen = line
                .split_whitespace()
                .find_map(|word| word.strip_prefix("listen="))
                .and_then(|addr| addr.parse().ok());
        }
        ready = line.contains("node ready");
        line.clear();
    }
    let listen = match (listen, ready) {
        (Some(listen), true) => listen,
        _ => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("rotord did not start:\n{seen}");
        }
    };
    std::thread::spawn(move || {
        for line in log.lines().map_while(Result::ok) {
            eprintln!("rotord: {line}");
        }
    });
    (child, listen)
}

fn terminate(mut child: Child) -> ExitStatus {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return child.wait().expect("wait for rotord");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
