//! `sitesyncctl export --out FILE [--since PREVIOUS_FILE | --since-anchor LOG_ID:SEQUENCE]
//! [--force]`: `Admin.ExportCatalog` into an export file (S12, `WSUSutil export`); and
//! `export inspect`, which reads one without a node ([`inspect`]).
//!
//! The stream's bytes go to a temporary file beside FILE ([`file::PartialFile`]), which
//! gets FILE's name only when the node's end arrived, the byte counts agree and the file
//! reads back with the header the node announced; on any error or Ctrl-C it is removed.
//! While the bytes arrive, stderr shows a bar of the bytes written at a terminal and lines
//! otherwise. stdout gets the written file as `export inspect` shows it.

use std::fs::File;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use indicatif::{HumanBytes, ProgressBar, ProgressDrawTarget, ProgressStyle};
use sitesync_archive::{Archive, v1};

use crate::cli::{Cli, ExportArgs, ExportCommand};
use crate::client::Node;
use crate::output::{self, OutputFormat};
use crate::units::anchor_text;
use file::PartialFile;
use view::ArchiveView;

mod file;
pub(crate) mod inspect;
pub mod view;

/// How often a line says how far the export is when stderr is not a terminal.
const LINE_INTERVAL: Duration = Duration::from_secs(10);

pub fn run(cli: &Cli, args: &ExportArgs) -> anyhow::Result<ExitCode> {
    match &args.command {
        Some(ExportCommand::Inspect(inspect)) => inspect::run(&cli.node.tls, inspect, cli.output),
        None => export(cli, args),
    }
}

/// Checks what can be checked here, then exports from `--node`.
fn export(cli: &Cli, args: &ExportArgs) -> anyhow::Result<ExitCode> {
    let Some(out) = args.out.as_deref() else {
        bail!("give the file to write with --out FILE (or `export inspect FILE` to read one)");
    };
    let since = match (&args.since, &args.since_anchor) {
        (Some(previous), _) => Some(previous_target(previous)?),
        (None, anchor) => anchor.clone(),
    };
    if out.is_dir() {
        bail!(
            "--out {} is a directory: name the file to write",
            out.display()
        );
    }
    if out.exists() && !args.force {
        bail!("{} exists: pass --force to replace it", out.display());
    }
    let output = cli.output;
    super::on_node(cli, |node| async move {
        let outcome = tokio::select! {
            result = receive(node, since, out, args.force) => result.map(Some),
            signal = super::interrupted() => signal.map(|()| None),
        };
        let Some(archive) = outcome? else {
            eprintln!(
                "interrupted: {} was not written, and the partial file was removed",
                out.display()
            );
            return Ok(ExitCode::from(130));
        };
        let view = ArchiveView::new(out, &archive);
        match output {
            OutputFormat::Json => output::print_json(&view)?,
            OutputFormat::Table | OutputFormat::Dot => output::print_table(&view.table())?,
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// The target of the earlier export file `path`: where the next file starts.
fn previous_target(path: &Path) -> anyhow::Result<v1::Anchor> {
    let (_, archive) = inspect::open(path).context("--since")?;
    archive
        .header()
        .target
        .clone()
        .with_context(|| format!("--since {}: the file names no target", path.display()))
}

/// Receives the export stream into `out` and returns the completed file, opened.
async fn receive(
    mut node: Node,
    since: Option<v1::Anchor>,
    out: &Path,
    replace: bool,
) -> anyhow::Result<Archive<File>> {
    use v1::export_catalog_chunk::Kind;
    let failed = |node: &Node, status| node.failed("Admin.ExportCatalog", status);
    let mut stream = node
        .admin
        .export_catalog(v1::ExportCatalogRequest { since })
        .await
        .map_err(|status| failed(&node, status))?
        .into_inner();
    let start = match stream.message().await.map_err(|s| failed(&node, s))? {
        Some(v1::ExportCatalogChunk {
            kind: Some(Kind::Start(start)),
        }) => start,
        Some(_) => bail!("the node's export stream did not begin with what the file holds"),
        None => bail!("the node ended the export stream before it began"),
    };
    let header = start
        .header
        .context("the node's export stream did not say what the file holds (no header)")?;
    let mut progress = Progress::new();
    progress.started(&header, start.estimated_records);
    let mut partial = PartialFile::create(out)?;
    loop {
        let message = stream.message().await.map_err(|s| failed(&node, s))?;
        match message.and_then(|m| m.kind) {
            Some(Kind::Chunk(chunk)) => {
                partial.append(&chunk)?;
                progress.written(partial.written());
            }
            Some(Kind::End(end)) => {
                progress.finished(partial.written());
                return partial.complete(end.total_bytes, &header, replace);
            }
            Some(Kind::Start(_)) => bail!("the node began the export stream a second time"),
            None => bail!(
                "the export stream was cut short after {} bytes: the node ended it without \
                 its end; {} was not written",
                partial.written(),
                out.display()
            ),
        }
    }
}

/// What stderr shows while the bytes arrive: a bar at a terminal; otherwise a line when
/// the export starts, every [`LINE_INTERVAL`], and when the bytes are in.
#[derive(Debug)]
struct Progress {
    bar: ProgressBar,
    /// Whether stderr is a terminal the bar is drawn on; lines otherwise.
    terminal: bool,
    /// When the last line was printed (without a terminal).
    last_line: Instant,
    /// `about N records`, for the lines.
    records: String,
}

impl Progress {
    fn new() -> Self {
        let bar = ProgressBar::hidden()
            .with_style(
                ProgressStyle::with_template(
                    "{spinner} {prefix} {bytes} ({binary_bytes_per_sec}) · {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            )
            .with_prefix("exporting");
        bar.set_draw_target(ProgressDrawTarget::stderr());
        bar.enable_steady_tick(Duration::from_millis(120));
        Self {
            terminal: !bar.is_hidden(),
            bar,
            last_line: Instant::now(),
            records: String::new(),
        }
    }

    fn line(&self, text: &str) {
        if self.terminal {
            self.bar.println(text);
        } else {
            eprintln!("{text}");
        }
    }

    fn started(&mut self, header: &v1::ArchiveHeader, estimated_records: u64) {
        let what = match &header.base {
            Some(base) => format!("the changes after {}", anchor_text(base)),
            None => "the whole catalog".to_owned(),
        };
        let version = header
            .catalog_version
            .as_ref()
            .and_then(|signed| signed.decode_catalog_version().ok())
            .map(|v| format!(" (catalog version {})", v.version))
            .unwrap_or_default();
        self.records = format!("about {estimated_records} records");
        self.line(&format!(
            "exporting {what} from {}{version}: {}",
            crate::client::printable(&header.source_site),
            self.records
        ));
        self.bar.set_message(self.records.clone());
        self.last_line = Instant::now();
    }

    fn written(&mut self, bytes: u64) {
        self.bar.set_position(bytes);
        if !self.terminal && self.last_line.elapsed() >= LINE_INTERVAL {
            eprintln!("written {} of {}", HumanBytes(bytes), self.records);
            self.last_line = Instant::now();
        }
    }

    fn finished(&mut self, bytes: u64) {
        self.bar.finish_and_clear();
        if !self.terminal {
            eprintln!("received {bytes} bytes; checking the file");
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}
