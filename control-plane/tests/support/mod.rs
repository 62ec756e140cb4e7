//! What the integration tests that talk to a node share: running `sitesyncctl`, and export
//! files to inspect, export and import ([`archive`]). Tests that start real nodes take the
//! `sitesync-node` binary from `sitesync_tests::cluster::node_binary`, built once per test
//! process.
// Each test crate uses a part of it.
#![allow(dead_code)]

pub mod archive;

use std::io::{BufRead as _, BufReader, Read as _};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, TryRecvError};
use std::time::{Duration, Instant};

use serde_json::Value;
use sitesync_tests::cluster::HARNESS_OPERATOR;

/// Runs the built `sitesyncctl` against `node` over plaintext (`--insecure`): for the
/// fake node, which serves plaintext. No `SITESYNC_*` setting of the test's environment
/// chooses the node or its certificates instead.
pub fn sitesyncctl(node: &str, args: &[&str]) -> Output {
    command(node)
        .arg("--insecure")
        .args(args)
        .output()
        .expect("sitesyncctl runs")
}

/// Runs the built `sitesyncctl` against the real node `node` over mutual TLS, as the
/// operator `admin` of the PKI directory `pki_dir`.
pub fn sitesyncctl_tls(node: &str, pki_dir: &Path, args: &[&str]) -> Output {
    tls_command(node, pki_dir, args)
        .output()
        .expect("sitesyncctl runs")
}

/// The command [`sitesyncctl_tls`] runs, for a test that starts it and talks to it.
pub fn tls_command(node: &str, pki_dir: &Path, args: &[&str]) -> Command {
    let mut command = command(node);
    command.arg("--pki-dir").arg(pki_dir).args(args);
    command
}

/// The command [`sitesyncctl`] runs, for a test that starts it and talks to it.
pub fn insecure_command(node: &str, args: &[&str]) -> Command {
    let mut command = command(node);
    command.arg("--insecure").args(args);
    command
}

fn command(node: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sitesyncctl"));
    command.args(["--node", node]);
    sitesync_supervise::clear_sitesync_environment(&mut command);
    command
}

/// A `sitesyncctl` that runs until told to stop (`tree --watch`), its stdout read line by
/// line as it comes. Killed when dropped, so a failing test leaves no process behind.
pub struct Running {
    child: Child,
    /// Lines of stdout, from a thread that reads until the pipe closes; the channel closes
    /// with it.
    lines: Receiver<String>,
    /// Everything on stderr, once the process has ended; taken by [`Running::wait`].
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl Running {
    pub fn start(mut command: Command) -> Self {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("sitesyncctl starts");
        let stdout = child.stdout.take().expect("piped");
        let mut stderr = child.stderr.take().expect("piped");
        let (send, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        Self {
            child,
            lines,
            stderr: Some(stderr),
        }
    }

    /// The next line of stdout; `None` when stdout closed first, panics after `timeout`.
    pub fn next_line(&mut self, timeout: Duration) -> Option<String> {
        match self.lines.recv_timeout(timeout) {
            Ok(line) => Some(line),
            Err(RecvTimeoutError::Disconnected) => None,
            Err(RecvTimeoutError::Timeout) => {
                panic!("no line on stdout in {timeout:?}")
            }
        }
    }

    /// Sends SIGINT, as Ctrl-C at a terminal does.
    #[cfg(unix)]
    pub fn interrupt(&mut self) {
        use rustix::process::{Pid, Signal, kill_process};
        kill_process(Pid::from_child(&self.child), Signal::INT).expect("SIGINT is sent");
    }

    /// Waits up to `timeout` for the process to end and returns its status and stderr;
    /// panics if it does not end.
    pub fn wait(&mut self, timeout: Duration) -> (ExitStatus, String) {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("the process can be waited on") {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "sitesyncctl did not end in {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        let stderr = self.stderr.take().expect("waited on once");
        (status, stderr.join().expect("stderr is read"))
    }

    /// Whether stdout was closed: every process that held it has ended.
    pub fn stdout_closed(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            match self.lines.try_recv() {
                Err(TryRecvError::Disconnected) => return true,
                Ok(_) => continue,
                Err(TryRecvError::Empty) if Instant::now() >= deadline => return false,
                Err(TryRecvError::Empty) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `sitesyncctl` run: its arguments and what it printed, for assertion messages.
pub struct Run {
    pub args: Vec<String>,
    pub output: Output,
}

impl Run {
    pub fn code(&self) -> Option<i32> {
        self.output.status.code()
    }

    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }

    /// The command, its exit status, stdout and stderr.
    pub fn describe(&self) -> String {
        format!(
            "sitesyncctl {}\nexit status: {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.args.join(" "),
            self.code(),
            self.stdout(),
            self.stderr()
        )
    }

    /// Stdout as JSON, after checking that the command succeeded.
    pub fn json(&self) -> Value {
        assert!(self.output.status.success(), "{}", self.describe());
        serde_json::from_slice(&self.output.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.describe()))
    }
}

/// Runs the built `sitesyncctl` against `node` (`host:port`) as the harness's operator of
/// `pki_dir`, off the runtime's worker threads.
pub async fn sitesyncctl_as_harness(node: &str, pki_dir: &Path, args: &[&str]) -> Run {
    let mut all = vec!["--operator", HARNESS_OPERATOR];
    all.extend_from_slice(args);
    let mut command: Command = tls_command(node, pki_dir, &all);
    let args = std::iter::once(format!("--node {node} --pki-dir {}", pki_dir.display()))
        .chain(all.iter().map(|a| (*a).to_owned()))
        .collect();
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("the blocking task ends")
        .expect("sitesyncctl runs");
    Run { args, output }
}
