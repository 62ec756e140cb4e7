//! `sitesyncctl tree --watch`: the hierarchy asked for again every interval and shown each
//! time, until Ctrl-C or SIGTERM ends the watch with status 0.
//!
//! Each refresh makes a [`Frame`]: the node asked, when, the interval, and what came back
//! ([`Outcome`]). [`Frame::text`] draws it for people and [`Frame::json`] for scripts; both
//! are pure, so tests read the strings. A [`Screen`] puts frames on stdout: redrawn in place
//! at a terminal ([`in_place`]), one after another with a blank line between when piped, or
//! one JSON object per line (NDJSON) with `--output json`.
//!
//! A refresh that fails because the node is down, slow or failing for a while is a frame
//! that says so, and the next tick connects afresh. A failure that would only repeat
//! ([`client::is_lasting`]: the certificate or the operator refused; a bad address or
//! certificate file) ends the watch with the usual error and exit status.

use std::convert::Infallible;
use std::io::{self, IsTerminal as _, Write};
use std::process::ExitCode;
use std::time::Duration;

use serde::Serialize;
use sitesync_metadata::Timestamp;
use sitesync_proto::v1;
use tokio::time::MissedTickBehavior;

use super::TreeView;
use crate::cli::NodeArgs;
use crate::client::{self, Node, unary};
use crate::output::{self, OutputFormat};
use crate::units;

/// The call deadline of one refresh, unless the interval is longer: a node that does not
/// answer in this time is shown as not answering instead of holding the screen.
const REFRESH_TIMEOUT: Duration = Duration::from_secs(10);

const RPC: &str = "Admin.GetHierarchy";

/// Terminal control sequences (ECMA-48), all a redraw needs.
const CURSOR_HOME: &str = "\x1b[H";
const CLEAR_SCREEN: &str = "\x1b[2J";
const CLEAR_TO_END_OF_LINE: &str = "\x1b[K";
const CLEAR_TO_END_OF_SCREEN: &str = "\x1b[J";
const HIDE_CURSOR: &str = "\x1b[?25l";
const SHOW_CURSOR: &str = "\x1b[?25h";
const BOLD_RED: &str = "\x1b[1;31m";
const RESET: &str = "\x1b[0m";

/// Watches the node `args` names, every `interval`, printing as `output` says, until
/// interrupted (exit status 0) or a failure that would repeat (`Err`).
pub async fn run(
    args: &NodeArgs,
    interval: Duration,
    output: OutputFormat,
) -> anyhow::Result<ExitCode> {
    let node = shown_address(&args.address);
    let stdout = io::stdout();
    let mode = Mode::for_output(output, stdout.is_terminal());
    let mut screen = Screen::new(stdout, mode, output::colour_on_stdout());
    tokio::select! {
        result = refresh_forever(args, &node, interval, &mut screen) => {
            result.map(|never| match never {})
        }
        signal = super::super::interrupted() => signal.map(|()| ExitCode::SUCCESS),
    }
    // `screen` is dropped here, showing the cursor again before any error is printed.
}

/// Refreshes every `interval` and shows each frame; returns only with a lasting failure
/// (or one writing to stdout).
async fn refresh_forever<W: Write>(
    args: &NodeArgs,
    node: &str,
    interval: Duration,
    screen: &mut Screen<W>,
) -> anyhow::Result<Infallible> {
    let mut connection = None;
    let mut last_answer = None;
    // The first tick is at once; a slow refresh delays the next instead of bunching them.
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let outcome = refresh(args, &mut connection, interval.max(REFRESH_TIMEOUT)).await?;
        let refreshed_at = units::now();
        if matches!(outcome, Outcome::Tree(_)) {
            last_answer = Some(refreshed_at);
        }
        screen.show(&Frame {
            node,
            refreshed_at,
            interval,
            last_answer,
            outcome,
        })?;
    }
}

/// Asks the node for the hierarchy once, connecting first when there is no connection.
/// `Err` only for a failure that would repeat; a connection whose call failed is dropped,
/// so the next refresh dials again.
async fn refresh(
    args: &NodeArgs,
    connection: &mut Option<Node>,
    deadline: Duration,
) -> anyhow::Result<Outcome> {
    let node = match connection {
        Some(node) => node,
        None => match Node::connect(args).await {
            Ok(node) => connection.insert(node),
            Err(error) if client::is_unreachable(&error) => {
                return Ok(Outcome::NoAnswer(format!("{error:#}")));
            }
            Err(error) => return Err(error),
        },
    };
    let mut request = unary(v1::GetHierarchyRequest { stale_after: None });
    request.set_timeout(deadline);
    match node.admin.get_hierarchy(request).await {
        Ok(response) => Ok(Outcome::Tree(TreeView::new(&response.into_inner()))),
        Err(status) if client::is_lasting(&status) => Err(node.failed(RPC, status)),
        Err(status) => {
            let error = node.failed(RPC, status);
            *connection = None;
            Ok(Outcome::NoAnswer(format!("{error:#}")))
        }
    }
}

/// The node as the header names it: `host:port`, or what was given if that does not parse
/// (connecting then says why).
fn shown_address(address: &str) -> String {
    client::node_uri(address)
        .ok()
        .and_then(|uri| uri.authority().map(|a| a.to_string()))
        .unwrap_or_else(|| address.trim().to_owned())
}

/// What one refresh found.
#[derive(Debug)]
pub enum Outcome {
    /// The node answered.
    Tree(TreeView),
    /// The node could not be asked, or did not answer in time: why, in the words an error
    /// would use.
    NoAnswer(String),
}

/// One refresh, as shown.
#[derive(Debug)]
pub struct Frame<'a> {
    /// The node asked, as `host:port`.
    pub node: &'a str,
    pub refreshed_at: Timestamp,
    pub interval: Duration,
    /// When the node last answered, so a frame without an answer says how old the last
    /// one is.
    pub last_answer: Option<Timestamp>,
    pub outcome: Outcome,
}

/// What `tree --watch --output json` prints for a frame, on one line.
#[derive(Debug, Serialize)]
struct FrameJson<'a> {
    node: &'a str,
    refreshed_at: String,
    interval_seconds: u64,
    /// Whether the node answered this refresh; when it did not, `error` says why and
    /// `tree` is null.
    answered: bool,
    error: Option<&'a str>,
    last_answer_at: Option<String>,
    tree: Option<&'a TreeView>,
}

impl Frame<'_> {
    /// The frame for people: a header line (the node, the time of the refresh, the
    /// interval), then a line counting the sites behind and unreachable and the tree's
    /// table, or why the node did not answer. With `colour`, ANSI colours mark what is
    /// wrong. Ends with a newline.
    pub fn text(&self, colour: bool) -> String {
        let mut text = format!(
            "node {} · refreshed {} · every {}\n",
            self.node,
            seconds(self.refreshed_at),
            units::format_duration(self.interval)
        );
        match &self.outcome {
            Outcome::Tree(tree) => {
                text.push_str(&summary(tree));
                text.push('\n');
                let mut table = tree.table(self.refreshed_at);
                output::set_colour(&mut table, colour);
                text.push_str(&table.to_string());
                text.push('\n');
            }
            Outcome::NoAnswer(error) => {
                let last = match self.last_answer {
                    Some(at) => format!("last answered {}", seconds(at)),
                    None => "no answer yet".to_owned(),
                };
                let headline = format!(
                    "NO ANSWER from the node; trying again in {} ({last})",
                    units::format_duration(self.interval)
                );
                if colour {
                    text.push_str(&format!("{BOLD_RED}{headline}{RESET}\n"));
                } else {
                    text.push_str(&headline);
                    text.push('\n');
                }
                text.push_str(error);
                text.push('\n');
            }
        }
        text
    }

    /// The frame for scripts: one JSON object, without a newline.
    pub fn json(&self) -> serde_json::Result<String> {
        let (tree, error) = match &self.outcome {
            Outcome::Tree(tree) => (Some(tree), None),
            Outcome::NoAnswer(error) => (None, Some(error.as_str())),
        };
        serde_json::to_string(&FrameJson {
            node: self.node,
            refreshed_at: self.refreshed_at.to_string(),
            interval_seconds: self.interval.as_secs(),
            answered: tree.is_some(),
            error,
            last_answer_at: self.last_answer.map(|at| at.to_string()),
            tree,
        })
    }
}

/// A time in a header, to the second.
fn seconds(at: Timestamp) -> String {
    units::to_the_second(&at.to_string()).into_owned()
}

/// `5 sites from CEN down: 1 behind, 2 unreachable`.
fn summary(tree: &TreeView) -> String {
    let sites = tree.sites.len();
    let behind = tree.sites.iter().filter(|s| s.is_behind()).count();
    let unreachable = tree.sites.iter().filter(|s| !s.reachable).count();
    let plural = if sites == 1 { "" } else { "s" };
    let state = match (behind, unreachable) {
        (0, 0) => "all in step and reachable".to_owned(),
        (behind, 0) => format!("{behind} behind"),
        (0, unreachable) => format!("{unreachable} unreachable"),
        (behind, unreachable) => format!("{behind} behind, {unreachable} unreachable"),
    };
    format!(
        "{sites} site{plural} from {} down: {state}",
        tree.root_site_code
    )
}

/// A frame for a terminal, drawn over the last from the top-left corner: each line clears
/// what is left of the old line after it, and the end clears the old frame's lines below.
/// Nothing is blanked before drawing, so the screen does not flicker.
pub fn in_place(text: &str) -> String {
    let mut drawn = String::with_capacity(text.len() + 64);
    drawn.push_str(CURSOR_HOME);
    for line in text.lines() {
        drawn.push_str(line);
        drawn.push_str(CLEAR_TO_END_OF_LINE);
        drawn.push('\n');
    }
    drawn.push_str(CLEAR_TO_END_OF_SCREEN);
    drawn
}

/// How frames go to stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Redrawn in place: a terminal.
    InPlace,
    /// One after another, a blank line between: a pipe or a file.
    Frames,
    /// One JSON object per line: `--output json`, wherever stdout goes.
    JsonLines,
}

impl Mode {
    pub fn for_output(output: OutputFormat, terminal: bool) -> Self {
        match (output, terminal) {
            (OutputFormat::Json, _) => Self::JsonLines,
            (_, true) => Self::InPlace,
            (_, false) => Self::Frames,
        }
    }
}

/// Frames on their way out. In place, the cursor is hidden while frames are drawn and shown
/// again when the screen is dropped, however the watch ends.
#[derive(Debug)]
pub struct Screen<W: Write> {
    out: W,
    mode: Mode,
    /// Colours on a terminal only; frames written elsewhere are plain text.
    colour: bool,
    /// How many frames were shown: the first in place clears the screen and hides the
    /// cursor, and piped frames after the first need a blank line before them.
    shown: usize,
}

impl<W: Write> Screen<W> {
    pub fn new(out: W, mode: Mode, colour: bool) -> Self {
        Self {
            out,
            mode,
            colour: colour && mode == Mode::InPlace,
            shown: 0,
        }
    }

    /// Writes one frame, whole, and flushes it.
    pub fn show(&mut self, frame: &Frame<'_>) -> io::Result<()> {
        let mut bytes = String::new();
        match self.mode {
            Mode::InPlace => {
                if self.shown == 0 {
                    bytes.push_str(HIDE_CURSOR);
                    bytes.push_str(CLEAR_SCREEN);
                }
                bytes.push_str(&in_place(&frame.text(self.colour)));
            }
            Mode::Frames => {
                if self.shown > 0 {
                    bytes.push('\n');
                }
                bytes.push_str(&frame.text(false));
            }
            Mode::JsonLines => {
                bytes.push_str(&frame.json()?);
                bytes.push('\n');
            }
        }
        self.out.write_all(bytes.as_bytes())?;
        self.out.flush()?;
        self.shown += 1;
        Ok(())
    }
}

impl<W: Write> Drop for Screen<W> {
    fn drop(&mut self) {
        if self.mode == Mode::InPlace && self.shown > 0 {
            // Nothing more can be done about a terminal that went away.
            let _ = self.out.write_all(SHOW_CURSOR.as_bytes());
            let _ = self.out.flush();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::hierarchy;
    use super::*;

    /// 2025-01-31T08:01:00Z.
    const REFRESHED: i64 = 1_738_310_460_000;

    fn frame(outcome: Outcome) -> Frame<'static> {
        Frame {
            node: "cen.example:8530",
            refreshed_at: Timestamp::from_unix_millis(REFRESHED),
            interval: Duration::from_secs(2),
            last_answer: None,
            outcome,
        }
    }

    fn answered() -> Frame<'static> {
        frame(Outcome::Tree(TreeView::new(&hierarchy())))
    }

    fn unanswered() -> Frame<'static> {
        Frame {
            last_answer: Some(Timestamp::from_unix_millis(REFRESHED - 4_000)),
            ..frame(Outcome::NoAnswer(
                "cannot reach the node at http://cen.example:8530: Connection refused (os \
                 error 111); is it running? set --node or SITESYNC_NODE"
                    .to_owned(),
            ))
        }
    }

    fn row<'a>(text: &'a str, code: &str) -> &'a str {
        text.lines()
            .find(|l| l.contains(code))
            .unwrap_or_else(|| panic!("no row for {code}: {text}"))
    }

    #[test]
    fn a_frame_has_a_header_a_count_and_the_tree() {
        let text = answered().text(false);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "node cen.example:8530 · refreshed 2025-01-31T08:01:00Z · every 2s"
        );
        // Every child in the fixture is 3 revisions behind; GR1 is unreachable.
        assert_eq!(lines[1], "6 sites from CEN down: 5 behind, 1 unreachable");
        assert!(
            row(&text, "│   └── GR1").contains("3 rev, 1m 30s"),
            "{text}"
        );
        assert!(row(&text, "GR1").contains("UNREACHABLE"), "{text}");
        assert!(text.ends_with("┘\n"), "{text:?}");
        assert!(
            !text.contains('\x1b'),
            "plain text has no escapes: {text:?}"
        );
    }

    #[test]
    fn colour_marks_the_lag_of_sites_behind_and_unreachable_sites() {
        let mut tree = hierarchy();
        tree.sites[2].lag = Some(v1::SiteLag {
            revisions: 0,
            behind: Some(prost_types::Duration::default()),
        });
        let text = frame(Outcome::Tree(TreeView::new(&tree))).text(true);
        // Bold and yellow (crossterm's 256-colour 11), bold and red (9); the text only.
        let behind = row(&text, "PR1");
        assert!(
            behind.contains("\x1b[38;5;11m\x1b[1m3 rev, 1m 30s\x1b[0m"),
            "{behind:?}"
        );
        let in_step = row(&text, "PR2");
        assert!(in_step.contains("in step"), "{text}");
        assert!(!in_step.contains('\x1b'), "{in_step:?}");
        let unreachable = row(&text, "GR1");
        assert!(
            unreachable.contains("\x1b[38;5;9m\x1b[1mUNREACHABLE (never reported)\x1b[0m"),
            "{unreachable:?}"
        );
        assert_eq!(
            summary(&TreeView::new(&tree)),
            "6 sites from CEN down: 4 behind, 1 unreachable"
        );
    }

    #[test]
    fn a_node_that_does_not_answer_is_a_frame_that_says_so() {
        let text = unanswered().text(false);
        assert_eq!(
            text,
            "node cen.example:8530 · refreshed 2025-01-31T08:01:00Z · every 2s\n\
             NO ANSWER from the node; trying again in 2s (last answered 2025-01-31T08:00:56Z)\n\
             cannot reach the node at http://cen.example:8530: Connection refused (os error \
             111); is it running? set --node or SITESYNC_NODE\n"
        );
        let first = frame(Outcome::NoAnswer("timed out".into())).text(true);
        assert!(
            first.contains(&format!(
                "{BOLD_RED}NO ANSWER from the node; trying again in 2s (no answer yet){RESET}\n"
            )),
            "{first:?}"
        );
    }

    #[test]
    fn json_frames_are_one_line_each() {
        let line = answered().json().unwrap();
        assert!(!line.contains('\n'));
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["node"], "cen.example:8530");
        assert_eq!(value["refreshed_at"], "2025-01-31T08:01:00Z");
        assert_eq!(value["interval_seconds"], 2);
        assert_eq!(value["answered"], true);
        assert_eq!(value["error"], serde_json::Value::Null);
        assert_eq!(value["tree"]["root_site_code"], "CEN");
        assert_eq!(value["tree"]["sites"][2]["site_code"], "GR1");

        let value: serde_json::Value = serde_json::from_str(&unanswered().json().unwrap()).unwrap();
        assert_eq!(value["answered"], false);
        assert_eq!(value["tree"], serde_json::Value::Null);
        assert_eq!(value["last_answer_at"], "2025-01-31T08:00:56Z");
        assert!(
            value["error"]
                .as_str()
                .unwrap()
                .starts_with("cannot reach the node at")
        );
    }

    #[test]
    fn in_place_draws_over_the_last_frame_without_blanking_it() {
        assert_eq!(in_place("one\ntwo\n"), "\x1b[Hone\x1b[K\ntwo\x1b[K\n\x1b[J");
    }

    #[test]
    fn the_screen_hides_the_cursor_while_drawing_and_shows_it_at_the_end() {
        let mut out = Vec::new();
        {
            let mut screen = Screen::new(&mut out, Mode::InPlace, false);
            screen.show(&unanswered()).unwrap();
            screen.show(&answered()).unwrap();
        }
        let written = String::from_utf8(out).unwrap();
        assert!(
            written.starts_with("\x1b[?25l\x1b[2J\x1b[Hnode "),
            "{written:?}"
        );
        assert_eq!(written.matches(CLEAR_SCREEN).count(), 1, "{written:?}");
        assert_eq!(written.matches(CURSOR_HOME).count(), 2, "{written:?}");
        assert!(written.ends_with("\x1b[J\x1b[?25h"), "{written:?}");
    }

    #[test]
    fn piped_frames_follow_each_other_with_a_blank_line_between() {
        let mut out = Vec::new();
        {
            let mut screen = Screen::new(&mut out, Mode::Frames, true);
            screen.show(&unanswered()).unwrap();
            screen.show(&unanswered()).unwrap();
        }
        let written = String::from_utf8(out).unwrap();
        let one = unanswered().text(false);
        assert_eq!(written, format!("{one}\n{one}"));

        let mut out = Vec::new();
        {
            let mut screen = Screen::new(&mut out, Mode::JsonLines, true);
            screen.show(&answered()).unwrap();
            screen.show(&unanswered()).unwrap();
        }
        let written = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = written.lines().collect();
        assert_eq!(lines.len(), 2, "{written}");
        assert!(written.ends_with('\n') && !written.contains('\x1b'));
    }

    #[test]
    fn the_mode_follows_the_output_and_the_terminal() {
        assert_eq!(Mode::for_output(OutputFormat::Json, true), Mode::JsonLines);
        assert_eq!(Mode::for_output(OutputFormat::Table, true), Mode::InPlace);
        assert_eq!(Mode::for_output(OutputFormat::Table, false), Mode::Frames);
    }
}
