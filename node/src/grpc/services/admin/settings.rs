//! Sync settings on the wire: the operator's selectors, schedule and retry delay, checked
//! as they arrive.

use std::time::Duration;

use sitesync_metadata::UpdateId;

use sitesync_proto::v1;
use tonic::Status;

use crate::sync::schedule::{RetryPolicy, Schedule};
use crate::sync::settings::{CategorySelector, SyncSettings};

pub(super) fn wire_selector(selector: &CategorySelector) -> v1::CategorySelector {
    v1::CategorySelector {
        by: Some(match selector {
            CategorySelector::Id(id) => v1::category_selector::By::Id((*id).into()),
            CategorySelector::Name(name) => v1::category_selector::By::Name(name.clone()),
        }),
    }
}

pub(super) fn selector_from_wire(
    wire: v1::CategorySelector,
    field: &str,
) -> Result<CategorySelector, Status> {
    match wire.by {
        Some(v1::category_selector::By::Id(id)) => {
            Ok(CategorySelector::Id(UpdateId::try_from(id)?))
        }
        Some(v1::category_selector::By::Name(name)) => name
            .parse()
            .map_err(|e: String| Status::invalid_argument(format!("{field}: {e}"))),
        None => Err(Status::invalid_argument(format!(
            "{field}: a selector needs an id or a name"
        ))),
    }
}

pub(super) fn wire_settings(settings: &SyncSettings) -> v1::SyncSettings {
    let schedule = match &settings.schedule {
        Schedule::Interval(every) => {
            let minutes = every.as_secs() / 60;
            let (every, unit) = if minutes % (7 * 24 * 60) == 0 {
                (minutes / (7 * 24 * 60), v1::IntervalUnit::Weeks)
            } else if minutes % (24 * 60) == 0 {
                (minutes / (24 * 60), v1::IntervalUnit::Days)
            } else if minutes % 60 == 0 {
                (minutes / 60, v1::IntervalUnit::Hours)
            } else {
                (minutes, v1::IntervalUnit::Minutes)
            };
            v1::sync_schedule::Kind::Interval(v1::ScheduleInterval {
                every: every as u32,
                unit: unit as i32,
            })
        }
        Schedule::Cron(cron) => v1::sync_schedule::Kind::Cron(cron.expression().to_owned()),
    };
    v1::SyncSettings {
        products: settings.products.iter().map(wire_selector).collect(),
        classifications: settings.classifications.iter().map(wire_selector).collect(),
        languages: settings.languages.clone(),
        schedule: Some(v1::SyncSchedule {
            kind: Some(schedule),
        }),
        retry_delay: Some(prost_duration(settings.retry.delay)),
        legacy_catalog_refresh: None,
        revision: settings.revision,
    }
}

pub(super) fn prost_duration(duration: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: duration.as_secs() as i64,
        nanos: duration.subsec_nanos() as i32,
    }
}

/// New settings from the wire; fields left empty keep `before`'s schedule and retry.
pub(super) fn settings_from_wire(
    wire: v1::SyncSettings,
    before: &SyncSettings,
) -> Result<SyncSettings, Status> {
    let products = wire
        .products
        .into_iter()
        .map(|s| selector_from_wire(s, "settings.products"))
        .collect::<Result<_, _>>()?;
    let classifications = wire
        .classifications
        .into_iter()
        .map(|s| selector_from_wire(s, "settings.classifications"))
        .collect::<Result<_, _>>()?;
    let schedule = match wire.schedule.and_then(|s| s.kind) {
        None => before.schedule.clone(),
        Some(v1::sync_schedule::Kind::Cron(expression)) => expression
            .parse::<Schedule>()
            .map_err(|e| Status::invalid_argument(format!("settings.schedule: {e}")))?,
        Some(v1::sync_schedule::Kind::Interval(interval)) => {
            let unit = match v1::IntervalUnit::try_from(interval.unit) {
                Ok(v1::IntervalUnit::Minutes) => "m",
                Ok(v1::IntervalUnit::Hours) => "h",
                Ok(v1::IntervalUnit::Days) => "d",
                Ok(v1::IntervalUnit::Weeks) => "w",
                _ => {
                    return Err(Status::invalid_argument(
                        "settings.schedule.interval.unit: use MINUTES, HOURS, DAYS or WEEKS",
                    ));
                }
            };
            format!("{}{unit}", interval.every)
                .parse::<Schedule>()
                .map_err(|e| Status::invalid_argument(format!("settings.schedule: {e}")))?
        }
    };
    let retry = match wire.retry_delay {
        None => before.retry,
        Some(delay) if delay.seconds > 0 && delay.seconds % 60 == 0 => {
            format!("{}m", delay.seconds / 60)
                .parse::<RetryPolicy>()
                .map_err(|e| Status::invalid_argument(format!("settings.retry_delay: {e}")))?
        }
        Some(_) => {
            return Err(Status::invalid_argument(
                "settings.retry_delay: give a whole number of minutes, at least one",
            ));
        }
    };
    Ok(SyncSettings {
        products,
        classifications,
        languages: wire.languages,
        schedule,
        retry,
        revision: before.revision,
    })
}
