//! Shared by the integration tests that need a real node: start `rotord` on a free loopback
//! port with a temporary data directory, learn its address from its start-up log, stop it.

#![allow(dead_code)]

pub mod cluster;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Time a node has to print its ready line.
pub const NODE_START_TIMEOUT: Duration = Duration::from_secs(60);

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
    spawn_on("rotord", "127.0.0.1:0", data, cores, extra)
}

/// [`spawn`] listening on `listen` (`HOST:PORT`; shard `i` then listens on PORT + 1 + i),
/// with its log echoed under `label`.
pub fn spawn_on(
    label: &str,
    listen: &str,
    data: &Path,
    cores: &str,
    extra: &[&str],
) -> (Child, SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rotord"))
        .args(["--listen", listen, "--cores", cores])
        .arg("--data-dir")
        .arg(data)
        .args(extra)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("rotord starts");
    // One thread reads the log for the node's whole life: it hands lines over until the
    // node is ready, then echoes them to stderr, so the wait below is bounded even if the
    // node never prints its ready line.
    let log = BufReader::new(child.stderr.take().expect("piped stderr"));
    let (lines, startup) = mpsc::channel::<String>();
    let label = label.to_owned();
    let echo_label = label.clone();
    std::thread::spawn(move || {
        let mut starting = true;
        for line in log.lines().map_while(Result::ok) {
            if starting && lines.send(line.clone()).is_ok() {
                starting = !line.contains("node ready");
                continue;
            }
            starting = false;
            eprintln!("{echo_label}: {line}");
        }
    });
    let deadline = Instant::now() + NODE_START_TIMEOUT;
    let mut listen = None;
    let mut seen = String::new();
    let ready = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(line) = startup.recv_timeout(left) else {
            break false;
        };
        seen.push_str(&line);
        seen.push('\n');
        if listen.is_none() {
            listen = line
                .split_whitespace()
                .find_map(|word| word.strip_prefix("listen="))
                .and_then(|addr| addr.parse().ok());
        }
        if line.contains("node ready") {
            break true;
        }
    };
    let listen = match (listen, ready) {
        (Some(listen), true) => listen,
        _ => {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{label} did not start (it exited, or logged no `listen=` and `node ready` \
                 within {NODE_START_TIMEOUT:?}); its log:\n{seen}"
            );
        }
    };
    (child, listen)
}

/// Stops `child` with SIGTERM and waits for it (SIGKILL after 30 s).
pub fn terminate(mut child: Child) -> ExitStatus {
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
