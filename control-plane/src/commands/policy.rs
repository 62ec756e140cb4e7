//! `sitesyncctl policy`: the client policy the site serves (S8) — its version, where clients
//! scan, and which catalog they should expect — from `Admin.GetClientPolicy`, or with
//! `--as-client` from `ClientPolicy.GetMachinePolicy` as clients read it.

use std::process::ExitCode;

use comfy_table::Table;
use serde::Serialize;
use sitesync_proto::v1;

use crate::cli::PolicyArgs;
use crate::client::{Node, unary};
use crate::output::{self, OutputFormat, hex};
use crate::units::rfc3339_opt;
use crate::views::{AnchorView, CatalogVersionView, non_empty};

pub async fn run(
    mut node: Node,
    args: &PolicyArgs,
    output: OutputFormat,
) -> anyhow::Result<ExitCode> {
    let policy = if args.as_client {
        node.client_policy
            .get_machine_policy(unary(v1::GetMachinePolicyRequest {}))
            .await
            .map_err(|status| node.failed("ClientPolicy.GetMachinePolicy", status))?
    } else {
        node.admin
            .get_client_policy(unary(v1::GetClientPolicyRequest {}))
            .await
            .map_err(|status| node.failed("Admin.GetClientPolicy", status))?
    }
    .into_inner();
    let mut view = PolicyView::new(&policy);
    if let (Some(version), Some(signed), Some(trust)) = (
        view.catalog_version.as_mut(),
        policy.catalog_version.as_ref(),
        node.trust.as_ref(),
    ) {
        version.check(signed, trust);
    }
    match output {
        OutputFormat::Json => output::print_json(&view)?,
        OutputFormat::Table | OutputFormat::Dot => output::print_table(&view.table())?,
    }
    Ok(ExitCode::SUCCESS)
}

/// What `policy --output json` prints.
#[derive(Debug, Serialize)]
pub struct PolicyView {
    /// 0 before the first successful sync: clients do not scan yet.
    pub version: u64,
    pub site_code: String,
    pub update_servers: Vec<EndpointView>,
    /// 64 hex characters; null before the first successful sync.
    pub catalog_digest: Option<String>,
    pub revision_count: u64,
    pub created_at: Option<String>,
    pub sync_id: Option<String>,
    pub catalog_position: Option<AnchorView>,
    /// Decoded for display, not verified.
    pub catalog_version: Option<CatalogVersionView>,
}

#[derive(Debug, Serialize)]
pub struct EndpointView {
    pub address: String,
    pub internet_facing: bool,
}

impl PolicyView {
    pub fn new(policy: &v1::MachinePolicy) -> Self {
        Self {
            version: policy.version,
            site_code: policy.site_code.clone(),
            update_servers: policy
                .update_servers
                .iter()
                .map(|e| EndpointView {
                    address: e.address.clone(),
                    internet_facing: e.internet_facing,
                })
                .collect(),
            catalog_digest: policy.catalog_digest.as_ref().map(|d| hex(&d.value)),
            revision_count: policy.revision_count,
            created_at: rfc3339_opt(policy.created_at.as_ref()),
            sync_id: non_empty(&policy.sync_id),
            catalog_position: policy.catalog_position.as_ref().map(AnchorView::new),
            catalog_version: policy
                .catalog_version
                .as_ref()
                .and_then(CatalogVersionView::new),
        }
    }

    fn table(&self) -> Table {
        let or_dash = |value: Option<&str>| value.unwrap_or("-").to_owned();
        let mut rows: Vec<(&str, String)> = vec![
            (
                "version",
                match self.version {
                    0 => "0 (no sync has succeeded yet: clients do not scan)".to_owned(),
                    version => version.to_string(),
                },
            ),
            ("site", self.site_code.clone()),
            (
                "update servers",
                if self.update_servers.is_empty() {
                    "-".to_owned()
                } else {
                    self.update_servers
                        .iter()
                        .map(|e| {
                            if e.internet_facing {
                                format!("{} (internet-facing)", e.address)
                            } else {
                                e.address.clone()
                            }
                        })
                        .collect::<Vec<_>>()
                        .join("\n")
                },
            ),
            ("catalog digest", or_dash(self.catalog_digest.as_deref())),
            ("revisions", self.revision_count.to_string()),
            ("created at", or_dash(self.created_at.as_deref())),
            ("sync", or_dash(self.sync_id.as_deref())),
        ];
        if let Some(position) = &self.catalog_position {
            rows.push((
                "catalog position",
                format!("sequence {} of log {}", position.sequence, position.log_id),
            ));
        }
        if let Some(version) = &self.catalog_version {
            rows.push((
                "catalog version",
                format!(
                    "{} (signed by {}, expires {}; signature {})",
                    version.version,
                    version.top_site_code,
                    version.expires_at.as_deref().unwrap_or("-"),
                    version.signature.as_deref().unwrap_or("not checked")
                ),
            ));
        }
        output::name_value_table(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::status::tests::time;

    #[test]
    fn policy_view() {
        let policy = v1::MachinePolicy {
            version: 3,
            site_code: "CEN".into(),
            update_servers: vec![
                v1::UpdateServerEndpoint {
                    address: "https://cen.example:8531".into(),
                    internet_facing: false,
                },
                v1::UpdateServerEndpoint {
                    address: "https://int.example:8531".into(),
                    internet_facing: true,
                },
            ],
            catalog_digest: Some(v1::CatalogDigest {
                value: vec![0x11; 32],
            }),
            revision_count: 152,
            catalog_version: None,
            created_at: Some(time("2025-01-31T08:00:12Z")),
            sync_id: "run-1".into(),
            catalog_position: Some(v1::Anchor {
                log_id: "log".into(),
                sequence: 160,
                snapshot_through: None,
            }),
        };
        let view = PolicyView::new(&policy);
        let json = serde_json::to_value(&view).unwrap();
        assert_eq!(json["version"], 3);
        assert_eq!(json["catalog_digest"], "11".repeat(32));
        assert_eq!(json["update_servers"][1]["internet_facing"], true);
        assert_eq!(json["created_at"], "2025-01-31T08:00:12Z");
        assert_eq!(json["catalog_position"]["sequence"], 160);
        let text = view.table().to_string();
        assert!(
            text.contains("https://int.example:8531 (internet-facing)"),
            "{text}"
        );

        let empty = PolicyView::new(&v1::MachinePolicy::default())
            .table()
            .to_string();
        assert!(empty.contains("clients do not scan"), "{empty}");
    }
}
