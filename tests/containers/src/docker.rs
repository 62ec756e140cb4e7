//! The Docker engine and Compose, driven through their command-line tools: the same
//! commands an operator types.
//!
//! [`Compose`] is one Compose project (a unique name per run) over the deployment's file and
//! the tests' override. It finds the working Compose command (`docker compose` or
//! `docker-compose`), names containers by service, and tears the project down with its
//! volumes when dropped, so a failed or interrupted run leaves nothing behind.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use anyhow::{Context, bail};

/// Runs `docker` with `args`; returns its stdout, or an error with its stderr.
pub fn docker(args: &[&str]) -> anyhow::Result<String> {
    let mut command = Command::new("docker");
    command.args(args);
    output_of(command, &format!("docker {}", args.join(" ")))
}

/// A container's log: what it wrote on stdout and stderr.
pub fn container_log(container: &str) -> anyhow::Result<String> {
    let output = Command::new("docker")
        .args(["logs", container])
        .stdin(Stdio::null())
        .output()
        .context("cannot run docker logs")?;
    anyhow::ensure!(output.status.success(), "docker logs {container} failed");
    Ok(format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    ))
}

fn output_of(mut command: Command, what: &str) -> anyhow::Result<String> {
    let Output {
        status,
        stdout,
        stderr,
    } = command
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {what}"))?;
    if !status.success() {
        bail!(
            "{what} failed ({status}): {}{}",
            String::from_utf8_lossy(&stderr).trim(),
            String::from_utf8_lossy(&stdout).trim()
        );
    }
    Ok(String::from_utf8_lossy(&stdout).into_owned())
}

/// One Compose project.
#[derive(Debug)]
pub struct Compose {
    /// `["docker", "compose"]` or `["docker-compose"]`, whichever answers.
    program: Vec<String>,
    pub project: String,
    files: Vec<PathBuf>,
    /// The image every service runs (`SITESYNC_IMAGE` in the Compose file).
    pub image: String,
    /// Kept after the run (no `down -v`) when asked, to look at it.
    keep: bool,
    /// Variables the Compose files read (`${NAME}`), set on every Compose command.
    variables: std::sync::Mutex<Vec<(String, String)>>,
}

impl Compose {
    pub fn new(project: &str, files: &[&Path], image: &str, keep: bool) -> anyhow::Result<Self> {
        let plugin = Command::new("docker")
            .args(["compose", "version"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        let program = if plugin {
            vec!["docker".to_owned(), "compose".to_owned()]
        } else {
            let standalone = Command::new("docker-compose")
                .arg("version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            anyhow::ensure!(
                standalone,
                "neither `docker compose` nor `docker-compose` answers"
            );
            vec!["docker-compose".to_owned()]
        };
        Ok(Self {
            program,
            project: project.to_owned(),
            files: files.iter().map(|f| f.to_path_buf()).collect(),
            image: image.to_owned(),
            keep,
            variables: std::sync::Mutex::default(),
        })
    }

    /// The Compose command in use, for messages.
    pub fn program(&self) -> String {
        self.program.join(" ")
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.program[0]);
        command.args(&self.program[1..]);
        command.arg("--project-name").arg(&self.project);
        for file in &self.files {
            command.arg("--file").arg(file);
        }
        command.args(args).env("SITESYNC_IMAGE", &self.image);
        for (name, value) in self.variables.lock().unwrap().iter() {
            command.env(name, value);
        }
        command
    }

    /// Sets a variable the Compose files read, for every later command.
    pub fn set_variable(&self, name: &str, value: &str) {
        let mut variables = self.variables.lock().unwrap();
        variables.retain(|(n, _)| n != name);
        variables.push((name.to_owned(), value.to_owned()));
    }

    /// Runs a Compose command; returns its stdout.
    pub fn run(&self, args: &[&str]) -> anyhow::Result<String> {
        output_of(
            self.command(args),
            &format!("{} {}", self.program(), args.join(" ")),
        )
    }

    /// `sitesyncctl` in the operator's container, against the top site unless `args` name
    /// another node; returns its stdout.
    pub fn operator(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut full = vec!["run", "--rm", "-T", "operator"];
        full.extend_from_slice(args);
        self.run(&full)
    }

    /// The container of `service` (running or not).
    pub fn container(&self, service: &str) -> anyhow::Result<String> {
        let project = format!("label=com.docker.compose.project={}", self.project);
        let service_label = format!("label=com.docker.compose.service={service}");
        let ids = docker(&[
            "ps",
            "-aq",
            "--no-trunc",
            "--filter",
            &project,
            "--filter",
            &service_label,
        ])?;
        match ids.split_whitespace().next() {
            Some(id) => Ok(id.to_owned()),
            None => bail!("the project has no container for {service}"),
        }
    }

    /// `host:port` on the host where `service`'s port 8530 is published (it changes each
    /// time the container starts).
    pub fn published(&self, service: &str) -> anyhow::Result<String> {
        let container = self.container(service)?;
        let port = docker(&["port", &container, "8530/tcp"])?;
        port.lines()
            .map(str::trim)
            .find(|l| l.starts_with("127.0.0.1:"))
            .map(str::to_owned)
            .with_context(|| format!("{service}'s port 8530 is not published: {port}"))
    }

    /// The project's name for one of its networks or volumes.
    pub fn scoped(&self, name: &str) -> String {
        // Compose v1 drops characters other than letters, digits, `-` and `_`.
        format!("{}_{name}", self.project)
    }

    /// Prints the logs of `services` (every service when empty) to stderr.
    pub fn print_logs(&self, services: &[&str]) {
        let mut args = vec!["logs", "--no-color", "--timestamps", "--tail", "400"];
        args.extend_from_slice(services);
        eprintln!(
            "---- logs of {} ----",
            if services.is_empty() {
                "every container".to_owned()
            } else {
                services.join(", ")
            }
        );
        let status = self.command(&args).stdin(Stdio::null()).status();
        if let Err(e) = status {
            eprintln!("cannot print the logs: {e}");
        }
        eprintln!("---- end of logs ----");
    }

    /// Removes the project: containers, networks and volumes.
    pub fn down(&self) {
        if self.keep {
            eprintln!(
                "keeping project {} (remove it with: {} --project-name {} {} down -v)",
                self.project,
                self.program(),
                self.project,
                self.files
                    .iter()
                    .map(|f| format!("--file {}", f.display()))
                    .collect::<Vec<_>>()
                    .join(" ")
            );
            return;
        }
        let result = self
            .command(&[
                "--profile",
                "operator",
                "--profile",
                "faults",
                "down",
                "-v",
                "--remove-orphans",
                "--timeout",
                "5",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if !result.is_ok_and(|s| s.success()) {
            eprintln!("warning: `down -v` of project {} failed", self.project);
        }
    }
}

impl Drop for Compose {
    fn drop(&mut self) {
        self.down();
    }
}
