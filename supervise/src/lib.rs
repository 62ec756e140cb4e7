//! Supervision of `sitesync-node` processes, for everything that runs real nodes on one
//! machine: `sitesyncctl demo` and the multi-process tests.
//!
//! A node is started from a [`NodeCommand`] (the binary, a name for messages, the node's own
//! directory and its flags) and runs as a [`SupervisedNode`]:
//! 1. [`NodeCommand::spawn`] starts it with the layout both callers use — in its directory
//!    the database `data/`, the log `node.log` (its stdout and stderr, appended across
//!    starts), the `address` file and, when its metrics are on, the `metrics-address` file —
//!    and with no `SITESYNC_*` variable of this process's environment, so its flags alone
//!    configure it (other variables, such as `OTEL_*` and `RUST_BACKTRACE`, pass through).
//! 2. [`SupervisedNode::wait_listening`] learns the address it bound from `--address-file`,
//!    which is how a node started on port 0 tells it; then
//!    [`SupervisedNode::metrics_address`] is where its metrics listen, if they do. A node
//!    that exits or does not listen in time is an [`Error`] that quotes the end of its log
//!    ([`log_tail`]).
//! 3. [`stop_all`] (or [`SupervisedNode::stop`]) stops nodes the way an operator does:
//!    SIGTERM, a grace period to finish what they write, then SIGKILL; each [`Ending`] says
//!    which it took. [`SupervisedNode::kill`] is a crash instead.
//! 4. Dropping a [`SupervisedNode`] kills it, so an error or a panic leaves no process
//!    behind; [`SupervisedNode::detach`] is the one way to leave it running.
#![forbid(unsafe_code)]

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs::{self, OpenOptions};
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The node binary's name, without the platform's executable suffix.
pub const NODE_BINARY: &str = "sitesync-node";

/// How often a starting node's address file, or a stopping node, is looked at.
const POLL_INTERVAL: Duration = Duration::from_millis(25);

/// How many lines of a node's log an [`Error`] quotes.
const ERROR_LOG_LINES: usize = 15;

/// Removes every `SITESYNC_*` variable of this process's environment from `command`, so a
/// node (or `sitesyncctl`) it starts is configured by its arguments alone.
pub fn clear_sitesync_environment(command: &mut Command) {
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("SITESYNC_") {
            command.env_remove(name);
        }
    }
}

/// How to start one node; kept to start it again on the same directory and address.
#[derive(Debug)]
pub struct NodeCommand {
    /// The `sitesync-node` to run: a release or a debug build.
    binary: PathBuf,
    /// Names the node in messages: its site code.
    name: String,
    /// Holds `data/`, `node.log` and `address`.
    dir: PathBuf,
    /// `--listen`: port 0 until the caller fixes it, for example to restart a node where its
    /// parent and children still find it.
    listen: SocketAddr,
    /// The node's other flags: its site, role, upstream and certificates.
    args: Vec<OsString>,
    /// `RUST_LOG` for the node.
    log_filter: OsString,
    /// Whether the node gets a process group of its own.
    own_process_group: bool,
    /// Variables set for the node besides what it inherits (for example `OTEL_*`).
    envs: Vec<(OsString, OsString)>,
}

impl NodeCommand {
    /// A node of `binary`, named `name` in messages, living in `dir` (created at the start),
    /// listening on a free loopback port, logging at this process's `RUST_LOG` or `info`.
    pub fn new(binary: &Path, name: &str, dir: &Path) -> Self {
        Self {
            binary: binary.to_owned(),
            name: name.to_owned(),
            dir: dir.to_owned(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            args: Vec::new(),
            log_filter: std::env::var_os("RUST_LOG").unwrap_or_else(|| "info".into()),
            own_process_group: false,
            envs: Vec::new(),
        }
    }

    /// Sets an environment variable for the node.
    pub fn env(&mut self, name: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> &mut Self {
        self.envs
            .push((name.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    /// Adds a flag or value for the node.
    pub fn arg(&mut self, arg: impl AsRef<OsStr>) -> &mut Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    /// The address of the next start (`--listen`).
    pub fn listen(&mut self, address: SocketAddr) -> &mut Self {
        self.listen = address;
        self
    }

    /// The node's log filter (`RUST_LOG`).
    pub fn log_filter(&mut self, filter: impl AsRef<OsStr>) -> &mut Self {
        self.log_filter = filter.as_ref().to_owned();
        self
    }

    /// Starts the node in a process group of its own (Unix): Ctrl-C at a terminal then
    /// reaches only the supervisor, which stops the node in order, and a node left running
    /// outlives the terminal's job control.
    pub fn own_process_group(&mut self) -> &mut Self {
        self.own_process_group = true;
        self
    }

    /// The node's `--data-dir`.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// The node's log: its stdout and stderr.
    pub fn log(&self) -> PathBuf {
        self.dir.join("node.log")
    }

    fn address_file(&self) -> PathBuf {
        self.dir.join("address")
    }

    fn metrics_address_file(&self) -> PathBuf {
        self.dir.join("metrics-address")
    }

    /// Starts the node. The address file of an earlier start is removed first, so
    /// [`SupervisedNode::wait_listening`] reads only this start's.
    pub fn spawn(&self) -> Result<SupervisedNode, Error> {
        let created = |path: &Path| {
            let path = path.to_owned();
            move |source| Error::Create { path, source }
        };
        fs::create_dir_all(&self.dir).map_err(created(&self.dir))?;
        let log_path = self.log();
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(created(&log_path))?;
        let stderr = log.try_clone().map_err(created(&log_path))?;
        let address_file = self.address_file();
        let _ = fs::remove_file(&address_file);
        let metrics_address_file = self.metrics_address_file();
        let _ = fs::remove_file(&metrics_address_file);
        let mut command = Command::new(&self.binary);
        command
            .args(&self.args)
            .arg("--data-dir")
            .arg(self.data_dir())
            .arg("--listen")
            .arg(self.listen.to_string())
            .arg("--address-file")
            .arg(&address_file)
            // Written only by a node whose metrics are on (`--metrics-listen`).
            .arg("--metrics-address-file")
            .arg(&metrics_address_file);
        clear_sitesync_environment(&mut command);
        command
            .env("RUST_LOG", &self.log_filter)
            .env("NO_COLOR", "1")
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(stderr);
        #[cfg(unix)]
        if self.own_process_group {
            std::os::unix::process::CommandExt::process_group(&mut command, 0);
        }
        let child = command.spawn().map_err(|source| Error::Spawn {
            binary: self.binary.clone(),
            name: self.name.clone(),
            source,
        })?;
        Ok(SupervisedNode {
            child: Some(child),
            name: self.name.clone(),
            log: log_path,
            address_file,
            metrics_address_file,
        })
    }
}

/// A running node process, killed when dropped.
#[derive(Debug)]
pub struct SupervisedNode {
    /// `Some` until [`Self::detach`] takes it; every other method may count on it.
    child: Option<Child>,
    /// Names the node in messages: its site code.
    name: String,
    /// Quoted in errors, so a node that fails says why.
    log: PathBuf,
    /// Where the node tells the address it bound.
    address_file: PathBuf,
    /// Where the node tells the address its metrics listener bound.
    metrics_address_file: PathBuf,
}

/// Why a [`SupervisedNode`] always has its child.
const DETACHED: &str = "only detach takes the child, and it consumes the node";

impl SupervisedNode {
    fn child(&mut self) -> &mut Child {
        self.child.as_mut().expect(DETACHED)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).expect(DETACHED)
    }

    /// The node's log file.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// Waits until the node wrote the address it listens on, for at most `timeout`.
    pub async fn wait_listening(&mut self, timeout: Duration) -> Result<SocketAddr, Error> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(text) = fs::read_to_string(&self.address_file) {
                // The node writes the file whole and renames it into place.
                return text.trim().parse().map_err(|_| Error::Address {
                    name: self.name.clone(),
                    file: self.address_file.clone(),
                    text,
                });
            }
            if let Some(status) = self.exit_status()? {
                return Err(Error::ExitedBeforeListening {
                    name: self.name.clone(),
                    status,
                    log: self.log.clone(),
                    tail: log_tail(&self.log, ERROR_LOG_LINES),
                });
            }
            if Instant::now() > deadline {
                return Err(Error::NotListening {
                    name: self.name.clone(),
                    timeout,
                    log: self.log.clone(),
                    tail: log_tail(&self.log, ERROR_LOG_LINES),
                });
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Where the node serves its metrics: `None` when they are off. A node writes this
    /// address before its gRPC address, so it is known once [`Self::wait_listening`] returned.
    pub fn metrics_address(&self) -> Option<SocketAddr> {
        fs::read_to_string(&self.metrics_address_file)
            .ok()
            .and_then(|text| text.trim().parse().ok())
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child().try_wait(), Ok(None))
    }

    /// Fails if the node exited, while its supervisor still needs it.
    pub fn check_running(&mut self) -> Result<(), Error> {
        match self.exit_status()? {
            None => Ok(()),
            Some(status) => Err(Error::Exited {
                name: self.name.clone(),
                status,
                log: self.log.clone(),
                tail: log_tail(&self.log, ERROR_LOG_LINES),
            }),
        }
    }

    fn exit_status(&mut self) -> Result<Option<ExitStatus>, Error> {
        self.child().try_wait().map_err(|source| Error::Wait {
            name: self.name.clone(),
            source,
        })
    }

    /// Kills the node with SIGKILL and reaps it: a crash.
    pub fn kill(&mut self) {
        let child = self.child();
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Stops the node as [`stop_all`] does; blocks for up to `grace`.
    pub fn stop(&mut self, grace: Duration) -> Ending {
        let mut endings = stop_all([self], grace);
        endings.pop().expect("one node, one ending")
    }

    /// Leaves the node running and unsupervised: it is neither stopped nor killed any more.
    /// Returns its process id, the one way left to reach it.
    pub fn detach(mut self) -> u32 {
        let pid = self.pid();
        // Dropping a `Child` neither kills nor waits for it.
        drop(self.child.take());
        pid
    }

    /// Asks the node to stop (SIGTERM: it finishes what it is writing and exits), unless it
    /// has ended already.
    fn terminate(&mut self) -> Option<Ending> {
        let child = self.child();
        match child.try_wait() {
            Ok(Some(status)) => Some(Ending::HadExited(status)),
            Err(e) => Some(Ending::Unknown(e)),
            Ok(None) => {
                #[cfg(unix)]
                {
                    use rustix::process::{Pid, Signal, kill_process};
                    if kill_process(Pid::from_child(child), Signal::TERM).is_err() {
                        let _ = child.kill();
                    }
                }
                #[cfg(not(unix))]
                {
                    let _ = child.kill();
                }
                None
            }
        }
    }
}

impl Drop for SupervisedNode {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.kill();
        }
    }
}

/// Stops every node at once: SIGTERM to all, up to `grace` for them to exit, then SIGKILL
/// for any left. Blocks until each has ended; returns the endings in the nodes' order. A
/// node that ended already is reported as it ended, so stopping twice is harmless.
pub fn stop_all<'a>(
    nodes: impl IntoIterator<Item = &'a mut SupervisedNode>,
    grace: Duration,
) -> Vec<Ending> {
    let mut nodes: Vec<&mut SupervisedNode> = nodes.into_iter().collect();
    let mut endings: Vec<Option<Ending>> = nodes.iter_mut().map(|n| n.terminate()).collect();
    let deadline = Instant::now() + grace;
    loop {
        for (node, ending) in nodes.iter_mut().zip(endings.iter_mut()) {
            if ending.is_none()
                && let Ok(Some(status)) = node.child().try_wait()
            {
                *ending = Some(Ending::Exited(status));
            }
        }
        if endings.iter().all(Option::is_some) {
            break;
        }
        if Instant::now() > deadline {
            for (node, ending) in nodes.iter_mut().zip(endings.iter_mut()) {
                if ending.is_none() {
                    node.kill();
                    *ending = Some(Ending::Killed { grace });
                }
            }
            break;
        }
        std::thread::sleep(POLL_INTERVAL);
    }
    endings.into_iter().flatten().collect()
}

/// How a node ended when it was stopped.
#[derive(Debug)]
pub enum Ending {
    /// It had exited before it was asked to stop.
    HadExited(ExitStatus),
    /// It exited after SIGTERM.
    Exited(ExitStatus),
    /// It did not exit within the grace period, and was killed.
    Killed { grace: Duration },
    /// It could not be waited for.
    Unknown(io::Error),
}

impl Ending {
    /// Whether the node stopped on SIGTERM with success.
    pub fn is_clean(&self) -> bool {
        matches!(self, Self::Exited(status) if status.success())
    }
}

impl fmt::Display for Ending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::HadExited(status) => write!(f, "had exited ({status})"),
            Self::Exited(status) => write!(f, "exited ({status})"),
            Self::Killed { grace } => write!(
                f,
                "killed: it did not stop within {:.1} s",
                grace.as_secs_f64()
            ),
            Self::Unknown(e) => write!(f, "cannot be waited for: {e}"),
        }
    }
}

/// What went wrong starting or watching a node. The variants about the node itself quote
/// the end of its log, which says why.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot create {path}: {source}")]
    Create { path: PathBuf, source: io::Error },
    #[error("cannot start {binary} for {name}: {source}")]
    Spawn {
        binary: PathBuf,
        name: String,
        source: io::Error,
    },
    #[error("cannot wait for the node of {name}: {source}")]
    Wait { name: String, source: io::Error },
    #[error("the node of {name} exited ({status}) before it listened; its log {log}:\n{tail}")]
    ExitedBeforeListening {
        name: String,
        status: ExitStatus,
        log: PathBuf,
        tail: String,
    },
    #[error(
        "the node of {name} did not listen within {:.1} s; its log {log}:\n{tail}",
        timeout.as_secs_f64()
    )]
    NotListening {
        name: String,
        timeout: Duration,
        log: PathBuf,
        tail: String,
    },
    #[error("the node of {name} wrote {text:?} into {file}, which is not an address")]
    Address {
        name: String,
        file: PathBuf,
        text: String,
    },
    #[error("the node of {name} exited unexpectedly ({status}); its log {log}:\n{tail}")]
    Exited {
        name: String,
        status: ExitStatus,
        log: PathBuf,
        tail: String,
    },
}

/// The last `lines` lines of a log file, indented, with control characters replaced: for
/// error messages on a terminal.
pub fn log_tail(log: &Path, lines: usize) -> String {
    let Ok(text) = fs::read(log) else {
        return "  (the log cannot be read)".to_owned();
    };
    let text = String::from_utf8_lossy(&text);
    let all: Vec<&str> = text.lines().collect();
    let tail = &all[all.len().saturating_sub(lines)..];
    if tail.is_empty() {
        return "  (the log is empty)".to_owned();
    }
    tail.iter()
        .map(|line| {
            let printable: String = line
                .chars()
                .map(|c| if c.is_control() { '\u{fffd}' } else { c })
                .collect();
            format!("  {printable}")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    /// A stand-in for the node, run by `sh`: it writes an address into its
    /// `--address-file` and waits; `fail` exits at once as a node that cannot bind does,
    /// and `stubborn` ignores SIGTERM.
    const STAND_IN: &str = r#"
        mode="$1"; shift
        while [ $# -gt 0 ]; do
            [ "$1" = --address-file ] && file="$2"
            shift
        done
        echo "stand-in $mode"
        case "$mode" in
            fail) echo "Error: cannot listen on 127.0.0.1:1"; exit 3 ;;
            stubborn) trap '' TERM ;;
            *) trap 'echo stopping; exit 0' TERM ;;
        esac
        echo 127.0.0.1:4321 > "$file.partial" && mv "$file.partial" "$file"
        while :; do sleep 0.05; done
    "#;

    fn stand_in(dir: &Path, mode: &str) -> NodeCommand {
        let mut command = NodeCommand::new(Path::new("/bin/sh"), "CEN", &dir.join("CEN"));
        command.arg("-c").arg(STAND_IN).arg("stand-in").arg(mode);
        command
    }

    fn exists(pid: u32) -> bool {
        let pid = rustix::process::Pid::from_raw(pid as i32).expect("a pid is positive");
        rustix::process::test_kill_process(pid).is_ok()
    }

    #[tokio::test]
    async fn a_node_is_started_learned_and_stopped_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let command = stand_in(dir.path(), "serve");
        let mut node = command.spawn().unwrap();
        let address = node.wait_listening(Duration::from_secs(10)).await.unwrap();
        assert_eq!(address, SocketAddr::from(([127, 0, 0, 1], 4321)));
        assert!(node.is_running());
        node.check_running().unwrap();

        let ending = node.stop(Duration::from_secs(10));
        assert!(ending.is_clean(), "{ending}");
        assert_eq!(ending.to_string(), "exited (exit status: 0)");
        // Stopping again reports how it ended.
        assert!(!node.stop(Duration::from_secs(10)).is_clean());
        assert!(node.check_running().is_err());
        let log = fs::read_to_string(command.log()).unwrap();
        assert_eq!(log, "stand-in serve\nstopping\n");
    }

    #[tokio::test]
    async fn a_node_that_exits_before_listening_is_explained_by_its_log() {
        let dir = tempfile::tempdir().unwrap();
        let mut node = stand_in(dir.path(), "fail").spawn().unwrap();
        let error = node
            .wait_listening(Duration::from_secs(10))
            .await
            .unwrap_err();
        assert!(
            matches!(error, Error::ExitedBeforeListening { .. }),
            "{error}"
        );
        let text = error.to_string();
        let quoted = "  stand-in fail\n  Error: cannot listen on 127.0.0.1:1";
        assert!(
            text.starts_with("the node of CEN exited (exit status: 3)") && text.ends_with(quoted),
            "{text}"
        );
    }

    #[test]
    fn a_node_that_ignores_sigterm_is_killed_after_the_grace_period() {
        let dir = tempfile::tempdir().unwrap();
        let mut nodes = [
            stand_in(&dir.path().join("a"), "stubborn").spawn().unwrap(),
            stand_in(&dir.path().join("b"), "serve").spawn().unwrap(),
        ];
        // Both have set their traps once they have written their address.
        for node in &mut nodes {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .unwrap();
            runtime
                .block_on(node.wait_listening(Duration::from_secs(10)))
                .unwrap();
        }
        let endings = stop_all(&mut nodes, Duration::from_millis(300));
        assert!(
            matches!(endings[0], Ending::Killed { .. }),
            "{}",
            endings[0]
        );
        assert!(!endings[0].is_clean());
        assert_eq!(
            endings[0].to_string(),
            "killed: it did not stop within 0.3 s"
        );
        assert!(endings[1].is_clean(), "{}", endings[1]);
    }

    #[test]
    fn a_dropped_node_is_killed_and_a_detached_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let node = stand_in(&dir.path().join("a"), "serve").spawn().unwrap();
        let pid = node.pid();
        assert!(exists(pid));
        drop(node);
        assert!(!exists(pid), "{pid} is still running");

        let node = stand_in(&dir.path().join("b"), "serve").spawn().unwrap();
        let pid = node.detach();
        assert!(exists(pid));
        rustix::process::kill_process(
            rustix::process::Pid::from_raw(pid as i32).unwrap(),
            rustix::process::Signal::KILL,
        )
        .unwrap();
    }

    #[test]
    fn a_log_tail_is_the_last_lines_indented_and_printable() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("node.log");
        assert_eq!(log_tail(&log, 2), "  (the log cannot be read)");
        fs::write(&log, "").unwrap();
        assert_eq!(log_tail(&log, 2), "  (the log is empty)");
        fs::write(&log, "one\ntwo\x1b[31m\nthree\n").unwrap();
        assert_eq!(log_tail(&log, 2), "  two\u{fffd}[31m\n  three");
    }
}
