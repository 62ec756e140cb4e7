//! `sitesyncctl messages`: status messages from `Admin.ListStatusMessages`, filtered by
//! site, id, time, sync run and severity, following page tokens up to `--limit`.

use std::process::ExitCode;

use anyhow::anyhow;
use sitesync_proto::convert::timestamp_to_wire;
use sitesync_proto::v1;

use super::{limit, next_page_token, page_size};
use crate::cli::{MessagesArgs, SeverityArg};
use crate::client::{Node, unary};
use crate::output::{self, OutputFormat, RowSink};
use crate::units::{self, parse_when, to_the_second};
use crate::views::StatusMessageView;

/// Longest message text shown in the table, in characters; JSON has it whole.
const TEXT_WIDTH: usize = 100;

pub async fn run(
    mut node: Node,
    args: &MessagesArgs,
    output: OutputFormat,
) -> anyhow::Result<ExitCode> {
    let mut request = request(args, units::now())?;
    let mut sink = RowSink::new(
        output,
        [
            "time",
            "site",
            "id",
            "severity",
            "component",
            "trace",
            "text",
        ],
        Some("no status messages match"),
    )?;
    let mut remaining = limit(args.limit);
    while remaining > 0 {
        request.page_size = page_size(remaining);
        let page = node
            .admin
            .list_status_messages(unary(request.clone()))
            .await
            .map_err(|status| node.failed("Admin.ListStatusMessages", status))?
            .into_inner();
        for message in page.messages.iter().take(remaining) {
            sink.push(&StatusMessageView::new(message), table_row)?;
            remaining -= 1;
        }
        match next_page_token(&request.page_token, page.next_page_token) {
            Some(token) => request.page_token = token,
            None => break,
        }
    }
    sink.finish()?;
    Ok(ExitCode::SUCCESS)
}

/// The first page's request for the flags.
fn request(
    args: &MessagesArgs,
    now: sitesync_metadata::Timestamp,
) -> anyhow::Result<v1::ListStatusMessagesRequest> {
    let when = |flag: &str, text: &Option<String>| {
        text.as_deref()
            .map(|t| {
                parse_when(t, now)
                    .map(timestamp_to_wire)
                    .map_err(|e| anyhow!("--{flag}: {e}"))
            })
            .transpose()
    };
    let message_ids = args
        .ids
        .iter()
        .map(|&id| i32::try_from(id).map_err(|_| anyhow!("--id {id}: not a status message id")))
        .collect::<anyhow::Result<Vec<i32>>>()?;
    Ok(v1::ListStatusMessagesRequest {
        site_codes: args
            .sites
            .iter()
            .map(|s| s.trim().to_ascii_uppercase())
            .filter(|s| !s.is_empty())
            .collect(),
        message_ids,
        min_severity: match args.severity {
            None => v1::Severity::Unspecified,
            Some(SeverityArg::Informational) => v1::Severity::Informational,
            Some(SeverityArg::Warning) => v1::Severity::Warning,
            Some(SeverityArg::Error) => v1::Severity::Error,
        }
        .into(),
        component: String::new(),
        since: when("since", &args.since)?,
        until: when("until", &args.until)?,
        sync_id: args.sync_id.clone().unwrap_or_default(),
        page_size: 0,
        page_token: String::new(),
        oldest_first: args.oldest_first,
    })
}

fn table_row(message: &StatusMessageView) -> [String; 7] {
    // Tables show seconds; JSON keeps the node's precision.
    let time = message
        .time
        .as_deref()
        .map_or("-".to_owned(), |t| to_the_second(t).into_owned());
    [
        time,
        message.site_code.clone(),
        message.message_id.to_string(),
        message.severity.to_owned(),
        message.component.clone(),
        // Whole: it is what a trace viewer searches for.
        message.trace_id.clone().unwrap_or_else(|| "-".to_owned()),
        output::truncate(&message.text.replace('\n', " "), TEXT_WIDTH),
    ]
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::cli::{Cli, Command};

    fn parse(args: &[&str]) -> MessagesArgs {
        let cli = Cli::try_parse_from([&["sitesyncctl", "messages"], args].concat()).unwrap();
        match cli.command {
            Command::Messages(args) => args,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn flags_become_filters() {
        let now = sitesync_metadata::Timestamp::parse_iso8601("2025-01-31T10:00:00Z").unwrap();
        let args = parse(&[
            "--site",
            "cen",
            "--site",
            "PR1,PR2",
            "--id",
            "6702",
            "--id",
            "6703,6704",
            "--since",
            "1h",
            "--until",
            "2025-01-31T09:30:00Z",
            "--sync-id",
            "abc",
            "--severity",
            "warning",
            "--limit",
            "5",
        ]);
        let request = request(&args, now).unwrap();
        assert_eq!(request.site_codes, ["CEN", "PR1", "PR2"]);
        assert_eq!(request.message_ids, [6702, 6703, 6704]);
        assert_eq!(
            request.since,
            Some(timestamp_to_wire(
                sitesync_metadata::Timestamp::parse_iso8601("2025-01-31T09:00:00Z").unwrap()
            ))
        );
        assert_eq!(
            request.until.unwrap().seconds,
            request.since.unwrap().seconds + 1800
        );
        assert_eq!(request.sync_id, "abc");
        assert_eq!(request.min_severity(), v1::Severity::Warning);
        assert_eq!(args.limit, 5);

        let defaults = parse(&[]);
        assert_eq!(defaults.limit, 100);
        let request = super::request(&defaults, now).unwrap();
        assert_eq!(request, v1::ListStatusMessagesRequest::default());

        let bad = parse(&["--since", "last tuesday"]);
        let error = super::request(&bad, now).unwrap_err().to_string();
        assert!(
            error.starts_with("--since: `last tuesday` is neither"),
            "{error}"
        );
    }

    #[test]
    fn table_rows_show_seconds_and_one_line_of_text() {
        let view = StatusMessageView::new(&v1::StatusMessage {
            site_code: "CEN".into(),
            sequence: 1,
            message_id: 6702,
            component: "SMS_WSUS_SYNC_MANAGER".into(),
            severity: v1::Severity::Informational.into(),
            time: Some(crate::commands::status::tests::time(
                "2025-01-31T08:00:12.5Z",
            )),
            text: "done\nnew 3".into(),
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
            ..Default::default()
        });
        assert_eq!(
            table_row(&view),
            [
                "2025-01-31T08:00:12Z",
                "CEN",
                "6702",
                "informational",
                "SMS_WSUS_SYNC_MANAGER",
                "4bf92f3577b34da6a3ce929d0e0e4736",
                "done new 3"
            ]
        );
        let untraced = StatusMessageView::new(&v1::StatusMessage::default());
        assert_eq!(table_row(&untraced)[5], "-");
    }
}
