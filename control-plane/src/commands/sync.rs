//! `sitesyncctl sync [--manual] [--wait]`: `Admin.RunSync`, and with `--wait`
//! `Admin.WatchSync` until the run finishes.
//!
//! stdout gets one result: the disposition (started or queued, with the sync id) without
//! `--wait`; the finished run with it. While waiting, the phase, the counts and the phase's
//! progress are drawn as a progress bar on stderr when stderr is a terminal, and each status
//! message the run raises is printed on stderr as a line. The exit status is 0 when the run
//! succeeded (6702) and 1 when it failed (6703), so scripts can `sitesyncctl sync --wait &&`.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::bail;
use comfy_table::Table;
use indicatif::{HumanBytes, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use sitesync_proto::v1;
use tonic::Code;

use crate::cli::SyncArgs;
use crate::client::{Node, printable, unary};
use crate::output::{self, OutputFormat};
use crate::units::{self, short_time, to_the_second};
use crate::views::{CountsView, SyncRunView, sync_kind_name};

/// How often, and how many times, to re-attach to a run after the connection was lost while
/// waiting (the node restarting mid-sync finishes or redoes the run under the same id).
const REATTACH_DELAY: Duration = Duration::from_secs(1);
const REATTACH_ATTEMPTS: u32 = 30;

/// How often, and how many times, to ask again when the node does not know the run it has
/// just created: its view of runs may trail `RunSync`'s answer by a moment.
const ATTACH_DELAY: Duration = Duration::from_millis(100);
const ATTACH_ATTEMPTS: u32 = 20;

/// What `sync` prints without `--wait`.
#[derive(Debug, Serialize)]
struct Disposition {
    sync_id: String,
    /// `started` or `queued`.
    disposition: &'static str,
    /// `full` or `manual`.
    kind: &'static str,
}

impl Disposition {
    fn sentence(&self) -> String {
        match self.disposition {
            "queued" => format!(
                "sync {} queued ({}): it starts when the sync in progress finishes",
                self.sync_id, self.kind
            ),
            disposition => format!("sync {} {disposition} ({})", self.sync_id, self.kind),
        }
    }
}

pub async fn run(
    mut node: Node,
    args: &SyncArgs,
    output: OutputFormat,
) -> anyhow::Result<ExitCode> {
    let kind = if args.manual {
        v1::SyncKind::Manual
    } else {
        v1::SyncKind::Full
    };
    let response = node
        .admin
        .run_sync(unary(v1::RunSyncRequest { kind: kind.into() }))
        .await
        .map_err(|status| node.failed("Admin.RunSync", status))?
        .into_inner();
    let disposition = Disposition {
        sync_id: response.sync_id.clone(),
        disposition: match response.disposition() {
            v1::RunSyncDisposition::Started => "started",
            v1::RunSyncDisposition::Queued => "queued",
            v1::RunSyncDisposition::Unspecified => "requested",
        },
        kind: sync_kind_name(kind.into()),
    };

    if !args.wait {
        match output {
            OutputFormat::Json => output::print_json(&disposition)?,
            OutputFormat::Table | OutputFormat::Dot => println!("{}", disposition.sentence()),
        }
        return Ok(ExitCode::SUCCESS);
    }

    eprintln!("{}", disposition.sentence());
    let run = watch(&mut node, &response.sync_id).await?;
    let view = SyncRunView::new(&run);
    match output {
        OutputFormat::Json => output::print_json(&view)?,
        OutputFormat::Table | OutputFormat::Dot => output::print_table(&summary_table(&view))?,
    }
    match run.result() {
        v1::SyncResult::Succeeded => Ok(ExitCode::SUCCESS),
        v1::SyncResult::Failed => {
            eprintln!("{}", failure_sentence(&view));
            Ok(ExitCode::FAILURE)
        }
        v1::SyncResult::Unspecified => {
            bail!(
                "the node reported sync {} finished without a result",
                view.sync_id
            )
        }
    }
}

/// `the sync failed: <reason>; it is retried at <time> (in 59m 58s)`.
fn failure_sentence(run: &SyncRunView) -> String {
    let reason = run
        .failure_reason
        .as_deref()
        .unwrap_or("the node gave no reason");
    let retry = match &run.retry_at {
        Some(at) => {
            let wire = sitesync_metadata::Timestamp::parse_iso8601(at)
                .map(sitesync_proto::convert::timestamp_to_wire);
            let relative = wire
                .as_ref()
                .and_then(|w| units::relative(w, units::now()))
                .map(|r| format!(" ({r})"))
                .unwrap_or_default();
            format!("; it is retried at {}{relative}", short_time(wire.as_ref()))
        }
        None => "; no retry is scheduled".to_owned(),
    };
    format!("error: sync {} failed: {reason}{retry}", run.sync_id)
}

/// Follows run `sync_id` until its phase is FINISHED and returns its final state. Re-attaches
/// when the connection is lost after the watch started.
async fn watch(node: &mut Node, sync_id: &str) -> anyhow::Result<v1::SyncRun> {
    let mut display = ProgressDisplay::new();
    let mut attempts = 0;
    let mut attach_attempts = 0;
    loop {
        let result = follow(node, sync_id, &mut display).await;
        match result {
            Ok(run) => {
                display.finish();
                return Ok(run);
            }
            Err(status)
                if status.code() == Code::NotFound
                    && !display.seen_any
                    && attach_attempts < ATTACH_ATTEMPTS =>
            {
                attach_attempts += 1;
                tokio::time::sleep(ATTACH_DELAY).await;
            }
            Err(status)
                if status.code() == Code::Unavailable
                    && display.seen_any
                    && attempts < REATTACH_ATTEMPTS =>
            {
                attempts += 1;
                if attempts == 1 {
                    display.line("lost the connection to the node; re-attaching to the sync…");
                }
                tokio::time::sleep(REATTACH_DELAY).await;
            }
            Err(status) => {
                display.finish();
                return Err(node.failed("Admin.WatchSync", status));
            }
        }
    }
}

/// One `WatchSync` stream: `Ok` with the finished run, or the status that ended it.
async fn follow(
    node: &mut Node,
    sync_id: &str,
    display: &mut ProgressDisplay,
) -> Result<v1::SyncRun, tonic::Status> {
    let mut stream = node
        .admin
        .watch_sync(v1::WatchSyncRequest {
            sync_id: sync_id.to_owned(),
        })
        .await?
        .into_inner();
    while let Some(progress) = stream.message().await? {
        for message in &progress.messages {
            display.line(&message_line(message));
        }
        let Some(run) = progress.run else { continue };
        display.update(&run);
        if run.phase() == v1::SyncPhase::Finished {
            return Ok(run);
        }
    }
    Err(tonic::Status::unavailable(
        "the node ended the watch before the sync finished",
    ))
}

/// The progress bar (on a terminal) and the status-message lines.
struct ProgressDisplay {
    bar: ProgressBar,
    /// Whether the bar currently shows a bounded bar (the phase's total is known).
    bounded: Option<bool>,
    /// Whether any progress arrived: only then is re-attaching after a lost connection
    /// worth it (a node that never answered is unreachable, not restarting).
    seen_any: bool,
}

impl ProgressDisplay {
    fn new() -> Self {
        // Drawn on stderr only when it is a terminal, so scripts see no progress noise.
        // Styled before it can draw, so the default bar never flashes.
        let bar = ProgressBar::hidden()
            .with_style(bar_style(false))
            .with_prefix("waiting for the node");
        bar.set_draw_target(ProgressDrawTarget::stderr());
        bar.enable_steady_tick(Duration::from_millis(120));
        Self {
            bar,
            bounded: Some(false),
            seen_any: false,
        }
    }

    fn update(&mut self, run: &v1::SyncRun) {
        self.seen_any = true;
        let view = SyncRunView::new(run);
        let (done, total) = run
            .progress
            .as_ref()
            .filter(|p| p.phase == run.phase)
            .map_or((0, 0), |p| (p.done, p.total));
        let bounded = total > 0;
        if self.bounded != Some(bounded) {
            self.bar.set_style(bar_style(bounded));
            self.bounded = Some(bounded);
        }
        if bounded {
            self.bar.set_length(total);
        } else {
            self.bar.unset_length();
        }
        self.bar.set_position(done);
        self.bar.set_prefix(view.phase_description);
        self.bar.set_message(view.counts.summary());
    }

    /// A line above the bar, or on stderr when there is no terminal to draw on.
    fn line(&self, text: &str) {
        if self.bar.is_hidden() {
            eprintln!("{text}");
        } else {
            self.bar.println(text);
        }
    }

    fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// The progress bar of a sync (bounded when its total is known), shared with `demo`.
pub(crate) fn bar_style(bounded: bool) -> ProgressStyle {
    let template = if bounded {
        "{spinner} {prefix} [{bar:30}] {pos}/{len} ({percent}%) · {msg}"
    } else {
        "{spinner} {prefix} · {msg}"
    };
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_spinner())
        .progress_chars("=> ")
}

/// `2025-01-31T08:00:00Z CEN 6704 WSUS synchronization in progress…`; warnings and errors
/// say so.
fn message_line(message: &v1::StatusMessage) -> String {
    format!(
        "{} {}",
        short_time(message.time.as_ref()),
        message_text(message)
    )
}

/// `CEN 6702 Synchronization done (full): …`: a status message without its time, with
/// `warning: ` or `error: ` before the text of one that is not informational.
pub(crate) fn message_text(message: &v1::StatusMessage) -> String {
    let severity = match message.severity() {
        v1::Severity::Warning => "warning: ",
        v1::Severity::Error => "error: ",
        _ => "",
    };
    format!(
        "{} {} {severity}{}",
        printable(&message.site_code),
        message.message_id,
        printable(&message.text)
    )
}

/// The finished run for people.
fn summary_table(run: &SyncRunView) -> Table {
    let took = match (&run.started, &run.finished) {
        (Some(started), Some(finished)) => {
            let parse = |t: &str| {
                sitesync_metadata::Timestamp::parse_iso8601(t)
                    .map(sitesync_proto::convert::timestamp_to_wire)
            };
            match (parse(started), parse(finished)) {
                (Some(from), Some(to)) => units::between(&from, &to)
                    .map(|d| format!(" (took {})", units::human_duration(d)))
                    .unwrap_or_default(),
                _ => String::new(),
            }
        }
        _ => String::new(),
    };
    let or_dash = |value: Option<&str>| value.unwrap_or("-").to_owned();
    let CountsView {
        new,
        changed,
        expired,
        deleted,
        unchanged,
        skipped_documents,
        bytes_received,
    } = run.counts;
    let mut rows: Vec<(&str, String)> = vec![
        ("sync", run.sync_id.clone()),
        ("kind", run.kind.to_owned()),
        ("trigger", or_dash(run.trigger)),
        ("result", or_dash(run.result)),
        ("started", or_dash(run.started.as_deref())),
        (
            "finished",
            format!("{}{took}", or_dash(run.finished.as_deref())),
        ),
        ("new", new.to_string()),
        ("changed", changed.to_string()),
        ("expired", expired.to_string()),
        ("deleted", deleted.to_string()),
        ("unchanged", unchanged.to_string()),
        ("skipped documents", skipped_documents.to_string()),
        (
            "received",
            format!("{bytes_received} bytes ({})", HumanBytes(bytes_received)),
        ),
    ];
    if let Some(reason) = &run.failure_reason {
        rows.push(("failure", reason.clone()));
    }
    if let Some(retry_at) = &run.retry_at {
        rows.push(("retry at", to_the_second(retry_at).into_owned()));
    }
    output::name_value_table(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::status::tests::{finished_run, time};

    #[test]
    fn dispositions_read_as_sentences() {
        let queued = Disposition {
            sync_id: "abc".into(),
            disposition: "queued",
            kind: "manual",
        };
        assert_eq!(
            queued.sentence(),
            "sync abc queued (manual): it starts when the sync in progress finishes"
        );
        let json = serde_json::to_value(&queued).unwrap();
        assert_eq!(json["disposition"], "queued");
        assert_eq!(json["sync_id"], "abc");
    }

    #[test]
    fn the_summary_names_counts_and_failures() {
        let mut run = finished_run();
        run.result = v1::SyncResult::Failed.into();
        run.failure_reason = "the upstream directory /srv/catalog cannot be read".into();
        run.retry_at = Some(time("2025-01-31T09:00:12Z"));
        let view = SyncRunView::new(&run);
        let text = summary_table(&view).to_string();
        assert!(text.contains("failed"), "{text}");
        assert!(text.contains("(took 12.5 s)"), "{text}");
        assert!(text.contains("cannot be read"), "{text}");
        assert!(text.contains("2025-01-31T09:00:12Z"), "{text}");
        let sentence = failure_sentence(&view);
        assert!(
            sentence.starts_with(
                "error: sync 9b2f6c1e-1d5c-4d6e-9a57-3c1f0e6b1a01 failed: the upstream directory \
                 /srv/catalog cannot be read; it is retried at 2025-01-31T09:00:12Z"
            ),
            "{sentence}"
        );
    }

    #[test]
    fn message_lines_flag_warnings() {
        let message = v1::StatusMessage {
            site_code: "CEN".into(),
            sequence: 4,
            message_id: 6790,
            component: "SMS_WSUS_SYNC_MANAGER".into(),
            severity: v1::Severity::Warning.into(),
            time: Some(time("2025-01-31T08:00:03.5Z")),
            text: "skipped bad.xml: not XML".into(),
            ..Default::default()
        };
        assert_eq!(
            message_line(&message),
            "2025-01-31T08:00:03Z CEN 6790 warning: skipped bad.xml: not XML"
        );
    }
}
