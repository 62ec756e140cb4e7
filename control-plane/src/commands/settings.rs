//! `sitesyncctl settings get|set`: the sync settings, from `Admin.GetSyncSettings` and
//! `Admin.SetSyncSettings`.
//!
//! `set` reads the settings, changes only what its flags name, and writes them back with
//! the revision it read, so that an operator's change made in between is not overwritten
//! unknowingly: the node refuses with ABORTED and we say so.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use comfy_table::Table;
use serde::Serialize;
use sitesync_proto::v1;
use tonic::Code;

use super::updates::{category_selector, selector_text};
use crate::cli::SettingsSetArgs;
use crate::client::{Node, unary};
use crate::output::{self, OutputFormat};
use crate::units::{
    describe_schedule, duration_from_wire, duration_to_wire, format_duration, format_schedule,
    parse_duration, parse_schedule, same_schedule,
};

/// S9: a failed sync is retried after 60 minutes unless the settings say otherwise.
const DEFAULT_RETRY_DELAY: Duration = Duration::from_secs(60 * 60);
/// S13: the legacy scan catalog is refreshed every 7 days unless the settings say otherwise.
const DEFAULT_LEGACY_REFRESH: Duration = Duration::from_secs(7 * 24 * 60 * 60);

pub async fn get(mut node: Node, output: OutputFormat) -> anyhow::Result<ExitCode> {
    let settings = fetch(&mut node).await?;
    let view = SettingsView::new(&settings);
    match output {
        OutputFormat::Json => output::print_json(&view)?,
        OutputFormat::Table | OutputFormat::Dot => output::print_table(&view.table())?,
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn set(
    mut node: Node,
    args: &SettingsSetArgs,
    output: OutputFormat,
) -> anyhow::Result<ExitCode> {
    let current = fetch(&mut node).await?;
    let expected_revision = current.revision;
    let changed = apply(current, args)?;
    let asked_schedule = changed.schedule.clone();
    let response = node
        .admin
        .set_sync_settings(unary(v1::SetSyncSettingsRequest {
            settings: Some(changed),
            expected_revision,
        }))
        .await;
    let response = match response {
        Ok(response) => response.into_inner(),
        Err(status) if status.code() == Code::Aborted => {
            bail!("settings changed meanwhile; run settings get and try again")
        }
        Err(status) => return Err(node.failed("Admin.SetSyncSettings", status)),
    };
    let settings = response
        .settings
        .context("the node's answer has no settings (SetSyncSettingsResponse.settings)")?;
    if response.next_sync_full {
        eprintln!("the sync criteria changed: the next sync is full");
    }
    if args.schedule.is_some()
        && !same_schedule(settings.schedule.as_ref(), asked_schedule.as_ref())
    {
        eprintln!(
            "warning: the node keeps the schedule {} instead of the one asked for ({})",
            format_schedule(settings.schedule.as_ref()),
            format_schedule(asked_schedule.as_ref())
        );
    }
    let view = SetView {
        settings: SettingsView::new(&settings),
        next_sync_full: response.next_sync_full,
    };
    match output {
        OutputFormat::Json => output::print_json(&view)?,
        OutputFormat::Table | OutputFormat::Dot => output::print_table(&view.settings.table())?,
    }
    Ok(ExitCode::SUCCESS)
}

async fn fetch(node: &mut Node) -> anyhow::Result<v1::SyncSettings> {
    Ok(node
        .admin
        .get_sync_settings(unary(v1::GetSyncSettingsRequest {}))
        .await
        .map_err(|status| node.failed("Admin.GetSyncSettings", status))?
        .into_inner())
}

/// `settings` with the flags given applied; everything else as it was.
fn apply(
    mut settings: v1::SyncSettings,
    args: &SettingsSetArgs,
) -> anyhow::Result<v1::SyncSettings> {
    if let Some(products) = &args.products {
        settings.products = list(products).map(category_selector).collect();
    }
    if let Some(classifications) = &args.classifications {
        settings.classifications = list(classifications).map(category_selector).collect();
    }
    if let Some(languages) = &args.languages {
        settings.languages = list(languages)
            .map(|tag| {
                let valid = tag.len() <= 35
                    && tag
                        .split('-')
                        .all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_alphanumeric()));
                if valid {
                    Ok(tag.to_owned())
                } else {
                    Err(anyhow!(
                        "--languages: `{tag}` is not a language tag; write tags such as en, de, pt-br"
                    ))
                }
            })
            .collect::<anyhow::Result<_>>()?;
    }
    if let Some(schedule) = &args.schedule {
        settings.schedule = parse_schedule(schedule).map_err(|e| anyhow!("--schedule: {e}"))?;
    }
    if let Some(retry) = &args.retry {
        settings.retry_delay = Some(positive_duration("--retry", retry)?);
    }
    if let Some(refresh) = &args.legacy_catalog_refresh {
        settings.legacy_catalog_refresh =
            Some(positive_duration("--legacy-catalog-refresh", refresh)?);
    }
    Ok(settings)
}

fn positive_duration(flag: &str, text: &str) -> anyhow::Result<prost_types::Duration> {
    let duration = parse_duration(text).map_err(|e| anyhow!("{flag}: {e}"))?;
    if duration.is_zero() {
        bail!("{flag}: the duration must be longer than zero");
    }
    Ok(duration_to_wire(duration))
}

/// The non-empty items of a comma-separated list.
fn list(text: &str) -> impl Iterator<Item = &str> {
    text.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
}

/// What `settings get --output json` prints. Categories are written as `--products` takes
/// them (a name, or an id), the schedule as `--schedule` takes it, durations in seconds
/// with the defaults applied.
#[derive(Debug, Serialize)]
pub struct SettingsView {
    pub products: Vec<String>,
    pub classifications: Vec<String>,
    /// Empty means every language.
    pub languages: Vec<String>,
    /// `7d`, `12h`, `2w`, `cron:0 3 * * 0`, or `manual`.
    pub schedule: String,
    pub retry_delay_seconds: u64,
    pub legacy_catalog_refresh_seconds: u64,
    /// Increases with every change.
    pub revision: u64,
}

#[derive(Debug, Serialize)]
struct SetView {
    #[serde(flatten)]
    settings: SettingsView,
    /// The change makes the next sync full (the criteria changed).
    next_sync_full: bool,
}

impl SettingsView {
    pub fn new(settings: &v1::SyncSettings) -> Self {
        let effective = |wire: Option<&prost_types::Duration>, default: Duration| {
            wire.and_then(duration_from_wire)
                .unwrap_or(default)
                .as_secs()
        };
        Self {
            products: settings.products.iter().map(selector_text).collect(),
            classifications: settings.classifications.iter().map(selector_text).collect(),
            languages: settings.languages.clone(),
            schedule: format_schedule(settings.schedule.as_ref()),
            retry_delay_seconds: effective(settings.retry_delay.as_ref(), DEFAULT_RETRY_DELAY),
            legacy_catalog_refresh_seconds: effective(
                settings.legacy_catalog_refresh.as_ref(),
                DEFAULT_LEGACY_REFRESH,
            ),
            revision: settings.revision,
        }
    }

    fn table(&self) -> Table {
        let listed = |items: &[String], empty: &str| {
            if items.is_empty() {
                empty.to_owned()
            } else {
                items.join("\n")
            }
        };
        let schedule = parse_schedule(&self.schedule)
            .map(|s| describe_schedule(s.as_ref()))
            .unwrap_or_else(|_| self.schedule.clone());
        let duration = |seconds: u64, default: Duration| {
            let text = format_duration(Duration::from_secs(seconds));
            if seconds == default.as_secs() {
                format!("{text} (default)")
            } else {
                text
            }
        };
        let rows = [
            ("products", listed(&self.products, "all")),
            ("classifications", listed(&self.classifications, "all")),
            ("languages", listed(&self.languages, "all")),
            ("schedule", schedule),
            (
                "retry after failure",
                duration(self.retry_delay_seconds, DEFAULT_RETRY_DELAY),
            ),
            (
                "legacy catalog refresh",
                duration(self.legacy_catalog_refresh_seconds, DEFAULT_LEGACY_REFRESH),
            ),
            ("revision", self.revision.to_string()),
        ];
        output::name_value_table(rows)
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::cli::{Cli, Command, SettingsCommand};

    fn parse(args: &[&str]) -> Result<SettingsSetArgs, clap::Error> {
        let cli = Cli::try_parse_from([&["sitesyncctl", "settings", "set"], args].concat())?;
        match cli.command {
            Command::Settings(SettingsCommand::Set(args)) => Ok(args),
            other => panic!("{other:?}"),
        }
    }

    fn current() -> v1::SyncSettings {
        v1::SyncSettings {
            products: vec![category_selector("Windows XP")],
            classifications: vec![category_selector("Security Updates")],
            languages: vec!["en".into()],
            schedule: parse_schedule("7d").unwrap(),
            retry_delay: None,
            legacy_catalog_refresh: None,
            revision: 4,
        }
    }

    #[test]
    fn only_the_flags_given_change() {
        let args = parse(&[
            "--products",
            "Windows 10, Local publisher",
            "--retry",
            "30m",
        ])
        .unwrap();
        let changed = apply(current(), &args).unwrap();
        let view = SettingsView::new(&changed);
        assert_eq!(view.products, ["Windows 10", "Local publisher"]);
        assert_eq!(view.classifications, ["Security Updates"]);
        assert_eq!(view.languages, ["en"]);
        assert_eq!(view.schedule, "7d");
        assert_eq!(view.retry_delay_seconds, 1800);
        assert_eq!(changed.revision, 4);

        let args = parse(&[
            "--schedule",
            "0 3 * * 0",
            "--languages",
            "en,pt-br",
            "--classifications",
            "",
        ])
        .unwrap();
        let view = SettingsView::new(&apply(current(), &args).unwrap());
        assert_eq!(view.schedule, "cron:0 3 * * 0");
        assert_eq!(view.languages, ["en", "pt-br"]);
        assert!(view.classifications.is_empty());
        assert_eq!(view.products, ["Windows XP"]);

        let manual = apply(current(), &parse(&["--schedule", "manual"]).unwrap()).unwrap();
        assert_eq!(manual.schedule, None);
    }

    #[test]
    fn bad_values_name_the_flag() {
        for (args, flag) in [
            (&["--schedule", "7y"][..], "--schedule"),
            (&["--retry", "0m"][..], "--retry"),
            (&["--retry", "soon"][..], "--retry"),
            (&["--languages", "en,de_DE"][..], "--languages"),
        ] {
            let error = apply(current(), &parse(args).unwrap())
                .unwrap_err()
                .to_string();
            assert!(error.starts_with(flag), "{args:?}: {error}");
        }
        assert!(parse(&[]).is_err(), "set without a change is refused");
    }

    #[test]
    fn the_view_applies_defaults() {
        let view = SettingsView::new(&current());
        let json = serde_json::to_value(&view).unwrap();
        assert_eq!(json["retry_delay_seconds"], 3600);
        assert_eq!(json["legacy_catalog_refresh_seconds"], 7 * 86_400);
        assert_eq!(json["schedule"], "7d");
        assert_eq!(json["revision"], 4);
        let text = view.table().to_string();
        assert!(text.contains("every 7 days"), "{text}");
        assert!(text.contains("1h (default)"), "{text}");
    }
}
