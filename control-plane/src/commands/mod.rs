//! Running parsed commands: one module per command group.
//!
//! `catalog` and `export inspect` work on local files; `demo` starts node processes of its
//! own and talks to them. Every other group talks to a node: [`on_node`] builds a
//! current-thread runtime, connects once ([`Node::connect`]) and runs the command's async
//! body, whose errors [`exit_code`] maps to the exit status; `export` and `import` check
//! their local files first, so a bad file is refused before any node is asked. `tree
//! --watch` connects itself, and again after the node was lost, since a node that is down
//! must not end the watch.

use std::future::Future;
use std::process::ExitCode;

use anyhow::Context as _;
use sitesync_proto::MAX_PAGE_SIZE;

use crate::cli::{Cli, Command, SettingsCommand, UpdatesCommand};
use crate::client::{self, Node};
use crate::output::OutputFormat;

pub mod catalog;
mod demo;
mod export;
mod import;
mod messages;
mod pki;
mod policy;
mod publish;
mod settings;
mod status;
mod sync;
mod tree;
mod updates;

/// Runs one command. `Ok` carries the exit code (a command may finish its output and still
/// report failure, as `catalog inspect` does for bad documents and `sync --wait` for a failed
/// sync); `Err` is a failure the binary prints as `error: …` on stderr.
pub fn run(cli: &Cli) -> anyhow::Result<ExitCode> {
    let output = cli.output;
    if output == OutputFormat::Dot && !matches!(cli.command, Command::Tree(_)) {
        eprintln!(
            "error: --output dot draws the hierarchy, for `sitesyncctl tree`; other commands print table or json"
        );
        return Ok(ExitCode::from(64));
    }
    match &cli.command {
        Command::Tree(args) if args.watch => {
            if output == OutputFormat::Dot {
                eprintln!(
                    "error: `tree --watch` redraws a table or prints a JSON line per refresh; \
                     --output dot draws the tree once"
                );
                return Ok(ExitCode::from(64));
            }
            client::runtime()?.block_on(tree::watch::run(&cli.node, args.interval, output))
        }
        Command::Tree(_) => on_node(cli, |node| tree::run(node, output)),
        Command::Catalog(command) => catalog::run(cli, command, output),
        Command::Demo(args) => demo::run(args, output),
        Command::Pki(command) => pki::run(command, output),
        Command::Status => on_node(cli, |node| status::run(node, output)),
        Command::Sync(args) => on_node(cli, |node| sync::run(node, args, output)),
        Command::Messages(args) => on_node(cli, |node| messages::run(node, args, output)),
        Command::Updates(UpdatesCommand::List(args)) => {
            on_node(cli, |node| updates::list::run(node, args, output))
        }
        Command::Updates(UpdatesCommand::Show(args)) => {
            on_node(cli, |node| updates::show::run(node, args, output))
        }
        Command::Settings(SettingsCommand::Get) => on_node(cli, |node| settings::get(node, output)),
        Command::Settings(SettingsCommand::Set(args)) => {
            on_node(cli, |node| settings::set(node, args, output))
        }
        Command::Policy(args) => on_node(cli, |node| policy::run(node, args, output)),
        Command::Export(args) => export::run(cli, args),
        Command::Import(args) => import::run(cli, args),
        Command::Publish(args) => publish::run(cli, args),
        Command::Publishers(command) => {
            on_node(cli, |node| publish::publishers(node, command, cli.output))
        }
    }
}

/// The exit status for a command that failed with `error`: 2 when the node could not be
/// reached (so scripts can wait and retry), 1 otherwise.
pub fn exit_code(error: &anyhow::Error) -> ExitCode {
    if client::is_unreachable(error) {
        ExitCode::from(2)
    } else {
        ExitCode::FAILURE
    }
}

/// Runs a node command: connects to `--node`, then runs `command` on a current-thread
/// runtime.
fn on_node<F, Fut>(cli: &Cli, command: F) -> anyhow::Result<ExitCode>
where
    F: FnOnce(Node) -> Fut,
    Fut: Future<Output = anyhow::Result<ExitCode>>,
{
    client::runtime()?.block_on(async {
        let node = Node::connect(&cli.node).await?;
        command(node).await
    })
}

/// Ctrl-C, or SIGTERM on Unix: what ends a command that runs until told to stop (`demo`,
/// `tree --watch`), or stops `export` before its file is complete.
async fn interrupted() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut terminate = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
        tokio::select! {
            result = tokio::signal::ctrl_c() => result.context("cannot listen for Ctrl-C"),
            _ = terminate.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c()
            .await
            .context("cannot listen for Ctrl-C")
    }
}

/// `--limit N` of listings; 0 means no limit.
fn limit(limit: usize) -> usize {
    if limit == 0 { usize::MAX } else { limit }
}

/// The page to ask for when `remaining` more items are wanted: no more than that, and no
/// more than the node serves in one page.
fn page_size(remaining: usize) -> u32 {
    u32::try_from(remaining).map_or(MAX_PAGE_SIZE, |r| r.min(MAX_PAGE_SIZE))
}

/// The token asking for the page after one the node answered with `next`, or `None` when
/// there is no more. A page may be short, even empty, when the node filters after paging;
/// only the token says whether there is more. A token that does not move would loop forever.
fn next_page_token(asked: &str, next: String) -> Option<String> {
    (!next.is_empty() && next != asked).then_some(next)
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::client::NodeUnreachable;

    #[test]
    fn pages_never_ask_for_more_than_wanted() {
        assert_eq!(page_size(5), 5);
        assert_eq!(page_size(100_000), MAX_PAGE_SIZE);
        assert_eq!(page_size(limit(0)), MAX_PAGE_SIZE);
        assert_eq!(limit(7), 7);
    }

    #[test]
    fn paging_ends_without_a_new_token() {
        assert_eq!(next_page_token("", "p2".into()).as_deref(), Some("p2"));
        assert_eq!(next_page_token("p2", "p3".into()).as_deref(), Some("p3"));
        assert_eq!(next_page_token("p2", String::new()), None);
        assert_eq!(next_page_token("p2", "p2".into()), None);
    }

    #[test]
    fn unreachable_nodes_exit_with_2() {
        let unreachable = anyhow::Error::new(NodeUnreachable {
            address: "http://127.0.0.1:1".into(),
            reason: "Connection refused".into(),
        })
        .context("while reading the status");
        assert_eq!(exit_code(&unreachable), ExitCode::from(2));
        assert_eq!(exit_code(&anyhow::anyhow!("refused")), ExitCode::FAILURE);
    }

    #[test]
    fn the_node_flag_is_global_with_a_default() {
        let cli = Cli::try_parse_from(["sitesyncctl", "status"]).unwrap();
        // SITESYNC_NODE may be set where the tests run; the default applies only without it.
        if std::env::var_os("SITESYNC_NODE").is_none() {
            assert_eq!(cli.node.address, crate::cli::DEFAULT_NODE);
        }
        let cli = Cli::try_parse_from([
            "sitesyncctl",
            "sync",
            "--wait",
            "--node",
            "n:1",
            "-o",
            "json",
        ])
        .unwrap();
        assert_eq!(cli.node.address, "n:1");
        assert_eq!(cli.output, crate::output::OutputFormat::Json);
        assert!(matches!(cli.command, Command::Sync(ref args) if args.wait && !args.manual));
        let cli =
            Cli::try_parse_from(["sitesyncctl", "--node", "n:2", "updates", "show", "x"]).unwrap();
        assert_eq!(cli.node.address, "n:2");
    }
}
