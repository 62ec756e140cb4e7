//! `sitesyncctl tree`: the hierarchy as the queried site sees it (`Admin.GetHierarchy`) —
//! drawn as a tree for people, as JSON for scripts, or as Graphviz DOT (`--output dot`).
//! Each site shows its role, address, both stores (revisions and short digest), its last
//! sync, its lag behind its parent (revisions and time), when its last report arrived, and
//! whether it is reachable.
//!
//! The node sends a flat list, parents before their children; the tree is rebuilt here from
//! each site's parent code. A site whose parent is not in the list is drawn under the root,
//! so nothing the node reports is hidden.
//!
//! [`watch`] is `tree --watch`: the same view, asked for again every interval and redrawn.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::process::ExitCode;

use comfy_table::{Attribute, Cell, Color};
use serde::Serialize;
use sitesync_metadata::Timestamp;
use sitesync_proto::v1;

use crate::client::{Node, printable, unary};
use crate::output::{self, OutputFormat};
use crate::units::{self, human_duration, rfc3339_opt};
use crate::views::{CatalogVersionView, StoreView, SyncRunView, non_empty, role_name};

pub mod watch;

pub async fn run(mut node: Node, output: OutputFormat) -> anyhow::Result<ExitCode> {
    let hierarchy = node
        .admin
        .get_hierarchy(unary(v1::GetHierarchyRequest { stale_after: None }))
        .await
        .map_err(|status| node.failed("Admin.GetHierarchy", status))?
        .into_inner();
    let tree = TreeView::new(&hierarchy);
    match output {
        OutputFormat::Json => output::print_json(&tree)?,
        OutputFormat::Dot => print!("{}", tree.dot()),
        OutputFormat::Table => {
            let mut table = tree.table(units::now());
            output::set_colour(&mut table, output::colour_on_stdout());
            output::print_table(&table)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// What `tree --output json` prints.
#[derive(Debug, Serialize)]
pub struct TreeView {
    pub root_site_code: String,
    pub as_of: Option<String>,
    /// Every site, parents before their children, in drawing order.
    pub sites: Vec<SiteView>,
}

#[derive(Debug, Serialize)]
pub struct SiteView {
    pub site_code: String,
    /// Null at the root.
    pub parent_site_code: Option<String>,
    /// How deep in the drawn tree: 0 at the root.
    pub depth: usize,
    pub role: &'static str,
    pub address: Option<String>,
    /// False when the site's last report is older than the node's threshold, or when it
    /// registered and never reported.
    pub reachable: bool,
    /// False for a child that registered with its parent but has never reported its state:
    /// only its code, role and address are known.
    pub reported: bool,
    pub update_server: Option<StoreView>,
    pub site_database: Option<StoreView>,
    /// The top site's signed catalog version the site holds (null without TLS).
    pub catalog_version: Option<u64>,
    pub last_sync: Option<SyncRunView>,
    /// The sync in progress or queued, if any.
    pub current_sync: Option<SyncRunView>,
    /// The sequence of its parent's site-database log it has applied (child sites only).
    pub replication_applied_sequence: Option<u64>,
    /// When the site produced the state shown, by its own clock.
    pub observed_at: Option<String>,
    pub node_version: Option<String>,
    /// Revisions (change-log records) the site database has still to apply.
    pub lag_revisions: Option<u64>,
    /// Seconds since the site last matched its parent's position; 0 when it matches.
    pub lag_seconds: Option<f64>,
    /// When the queried node received the site's last report.
    pub last_report_at: Option<String>,
    /// Drawing prefix for tables (`├── `); not in JSON.
    #[serde(skip)]
    prefix: String,
    /// When the last sync finished, for "5m ago" in tables.
    #[serde(skip)]
    last_sync_finished: Option<prost_types::Timestamp>,
    /// When the last report arrived, for "3s ago" in tables.
    #[serde(skip)]
    last_report: Option<prost_types::Timestamp>,
}

impl SiteView {
    /// Whether the site's site database is behind its parent's: revisions still to apply,
    /// or time since it last matched.
    pub fn is_behind(&self) -> bool {
        self.lag_revisions.is_some_and(|r| r > 0) || self.lag_seconds.is_some_and(|s| s > 0.0)
    }
}

impl TreeView {
    pub fn new(hierarchy: &v1::HierarchyTree) -> Self {
        let nodes: Vec<&v1::HierarchyNode> = hierarchy
            .sites
            .iter()
            .filter(|n| n.state.is_some())
            .collect();
        let code = |n: &v1::HierarchyNode| {
            n.state
                .as_ref()
                .map_or("", |s| s.site_code.as_str())
                .to_owned()
        };
        let known: Vec<String> = nodes.iter().map(|n| code(n)).collect();
        let root = non_empty(&hierarchy.root_site_code)
            .or_else(|| known.first().cloned())
            .unwrap_or_default();
        // Children in the order the node listed them; orphans hang under the root.
        let mut children: HashMap<String, Vec<usize>> = HashMap::new();
        for (index, node) in nodes.iter().enumerate() {
            let site = code(node);
            if site == root {
                continue;
            }
            let parent = node
                .state
                .as_ref()
                .map(|s| s.parent_site_code.clone())
                .filter(|p| known.contains(p) && *p != site)
                .unwrap_or_else(|| root.clone());
            children.entry(parent).or_default().push(index);
        }
        let mut sites = Vec::with_capacity(nodes.len());
        if let Some(root_index) = known.iter().position(|c| *c == root) {
            let mut visited = vec![false; nodes.len()];
            walk(
                &nodes,
                &children,
                root_index,
                0,
                "",
                "",
                &mut visited,
                &mut sites,
            );
        }
        Self {
            root_site_code: root,
            as_of: rfc3339_opt(hierarchy.as_of.as_ref()),
            sites,
        }
    }

    /// The tree as a table for people, the lag of a site that is behind in bold yellow and
    /// an unreachable site's status in red (shown when the table is styled: see
    /// [`output::set_colour`]).
    pub fn table(&self, now: Timestamp) -> comfy_table::Table {
        let mut table = output::table();
        table.set_header([
            "site",
            "role",
            "address",
            "update server",
            "site database",
            "version",
            "last sync",
            "lag",
            "last report",
            "status",
        ]);
        for site in &self.sites {
            let store = |store: &Option<StoreView>| match store {
                Some(s) => format!("{} rev  {}", s.revisions, s.short_digest()),
                None => "-".to_owned(),
            };
            let last_sync = match &site.last_sync {
                Some(run) => {
                    let when = site
                        .last_sync_finished
                        .as_ref()
                        .and_then(|t| units::relative(t, now))
                        .unwrap_or_default();
                    format!("{} {when}", run.result.unwrap_or(run.phase))
                        .trim_end()
                        .to_owned()
                }
                None => "never".to_owned(),
            };
            let lag = match (site.lag_revisions, site.lag_seconds) {
                (Some(0), Some(0.0)) => "in step".to_owned(),
                (Some(revisions), Some(seconds)) => format!(
                    "{revisions} rev, {}",
                    human_duration(std::time::Duration::from_secs_f64(seconds))
                ),
                (Some(revisions), None) => format!("{revisions} rev"),
                _ => "-".to_owned(),
            };
            let name = if site.reachable {
                format!("{}{}", site.prefix, site.site_code)
            } else {
                format!("{}{} (unreachable)", site.prefix, site.site_code)
            };
            let last_report = match (&site.last_report, site.depth) {
                (Some(at), _) => units::relative(at, now).unwrap_or_else(|| "-".to_owned()),
                (None, 0) => "-".to_owned(),
                (None, _) => "never".to_owned(),
            };
            let status = match (site.reachable, site.reported) {
                (true, _) => "ok",
                (false, true) => "UNREACHABLE",
                (false, false) => "UNREACHABLE (never reported)",
            };
            let mut lag = Cell::new(lag);
            if site.is_behind() {
                lag = lag.fg(Color::Yellow).add_attribute(Attribute::Bold);
            }
            let mut status = Cell::new(status);
            if !site.reachable {
                status = status.fg(Color::Red).add_attribute(Attribute::Bold);
            }
            table.add_row([
                Cell::new(name),
                Cell::new(site.role),
                Cell::new(site.address.as_deref().unwrap_or("-")),
                Cell::new(store(&site.update_server)),
                Cell::new(store(&site.site_database)),
                Cell::new(
                    site.catalog_version
                        .map_or_else(|| "-".to_owned(), |v| v.to_string()),
                ),
                Cell::new(last_sync),
                lag,
                Cell::new(last_report),
                status,
            ]);
        }
        table
    }

    /// Graphviz DOT: a node per site labelled with its role, revisions and digests, an edge
    /// per parent; unreachable sites are dashed and red.
    pub fn dot(&self) -> String {
        let mut dot = String::from(
            "digraph sitesync {\n  rankdir=TB;\n  node [shape=box, fontname=\"monospace\"];\n",
        );
        for site in &self.sites {
            let mut label = format!("{}\\n{}", escape(&site.site_code), site.role);
            if let Some(store) = &site.update_server {
                let _ = write!(
                    label,
                    "\\nupdate server: {} rev {}",
                    store.revisions,
                    store.short_digest()
                );
            }
            if let Some(store) = &site.site_database {
                let _ = write!(
                    label,
                    "\\nsite database: {} rev {}",
                    store.revisions,
                    store.short_digest()
                );
            }
            if let (Some(revisions), Some(seconds)) = (site.lag_revisions, site.lag_seconds) {
                let _ = write!(label, "\\nlag: {revisions} rev, {seconds:.0} s");
            }
            if !site.reachable {
                label.push_str("\\nUNREACHABLE");
            }
            let style = if site.reachable {
                ""
            } else {
                ", style=dashed, color=red"
            };
            let _ = writeln!(
                dot,
                "  \"{}\" [label=\"{label}\"{style}];",
                escape(&site.site_code)
            );
        }
        for site in &self.sites {
            if let Some(parent) = &site.parent_site_code {
                let _ = writeln!(
                    dot,
                    "  \"{}\" -> \"{}\";",
                    escape(parent),
                    escape(&site.site_code)
                );
            }
        }
        dot.push_str("}\n");
        dot
    }
}

#[allow(clippy::too_many_arguments)]
fn walk(
    nodes: &[&v1::HierarchyNode],
    children: &HashMap<String, Vec<usize>>,
    index: usize,
    depth: usize,
    prefix: &str,
    continuation: &str,
    visited: &mut [bool],
    out: &mut Vec<SiteView>,
) {
    if visited[index] {
        return;
    }
    visited[index] = true;
    let node = nodes[index];
    let Some(state) = node.state.as_ref() else {
        return;
    };
    let lag = node.lag.as_ref();
    out.push(SiteView {
        site_code: printable(&state.site_code),
        parent_site_code: (depth > 0)
            .then(|| printable(&state.parent_site_code))
            .filter(|p| !p.is_empty()),
        depth,
        role: role_name(state.role),
        address: non_empty(&state.address),
        reachable: node.reachable,
        reported: depth == 0 || node.last_report_at.is_some(),
        update_server: state.update_server.as_ref().map(StoreView::new),
        site_database: state.site_database.as_ref().map(StoreView::new),
        catalog_version: state
            .catalog_version
            .as_ref()
            .and_then(CatalogVersionView::new)
            .map(|v| v.version),
        last_sync: state.last_sync.as_ref().map(SyncRunView::new),
        current_sync: state.current_sync.as_ref().map(SyncRunView::new),
        replication_applied_sequence: state
            .replication
            .as_ref()
            .and_then(|r| r.applied.as_ref())
            .map(|a| a.sequence),
        observed_at: rfc3339_opt(state.observed_at.as_ref()),
        node_version: non_empty(&state.node_version).map(|v| printable(&v)),
        lag_revisions: lag.map(|l| l.revisions),
        lag_seconds: lag
            .and_then(|l| l.behind.as_ref())
            .and_then(units::duration_from_wire)
            .map(|d| d.as_secs_f64()),
        last_report_at: rfc3339_opt(node.last_report_at.as_ref()),
        prefix: prefix.to_owned(),
        last_sync_finished: state.last_sync.as_ref().and_then(|r| r.finished_at),
        last_report: node.last_report_at,
    });
    let kids = children
        .get(&state.site_code)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    for (position, child) in kids.iter().enumerate() {
        let last = position + 1 == kids.len();
        let (branch, next) = if last {
            ("└── ", "    ")
        } else {
            ("├── ", "│   ")
        };
        walk(
            nodes,
            children,
            *child,
            depth + 1,
            &format!("{continuation}{branch}"),
            &format!("{continuation}{next}"),
            visited,
            out,
        );
    }
}

fn escape(text: &str) -> String {
    text.replace('\\', "\\\\").replace('"', "\\\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn site(
        code: &str,
        parent: &str,
        role: v1::SiteRole,
        reachable: bool,
    ) -> v1::HierarchyNode {
        v1::HierarchyNode {
            state: Some(v1::SiteState {
                site_code: code.into(),
                role: role as i32,
                parent_site_code: parent.into(),
                address: format!("{}.example:8530", code.to_lowercase()),
                update_server: Some(v1::StoreInfo {
                    revision_count: 10,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            reachable,
            last_report_at: None,
            lag: (!parent.is_empty()).then_some(v1::SiteLag {
                revisions: 3,
                behind: Some(prost_types::Duration {
                    seconds: 90,
                    nanos: 0,
                }),
            }),
        }
    }

    pub(super) fn hierarchy() -> v1::HierarchyTree {
        v1::HierarchyTree {
            root_site_code: "CEN".into(),
            as_of: None,
            sites: vec![
                site("CEN", "", v1::SiteRole::Site, true),
                site("PR1", "CEN", v1::SiteRole::Site, true),
                site("PR2", "CEN", v1::SiteRole::Site, true),
                site("GR1", "PR1", v1::SiteRole::Site, false),
                site("INT", "CEN", v1::SiteRole::Internet, true),
                // Its parent is not in the list: drawn under the root, not lost.
                site("ORP", "ZZZ", v1::SiteRole::Site, true),
            ],
        }
    }

    #[test]
    fn the_flat_list_is_drawn_as_a_tree_with_unreachable_sites_flagged() {
        let tree = TreeView::new(&hierarchy());
        let drawn: Vec<String> = tree
            .sites
            .iter()
            .map(|s| format!("{}{}", s.prefix, s.site_code))
            .collect();
        assert_eq!(
            drawn,
            vec![
                "CEN",
                "├── PR1",
                "│   └── GR1",
                "├── PR2",
                "├── INT",
                "└── ORP"
            ]
        );
        let depths: Vec<usize> = tree.sites.iter().map(|s| s.depth).collect();
        assert_eq!(depths, vec![0, 1, 2, 1, 1, 1]);
        let table = tree.table(Timestamp::from_unix_millis(0)).to_string();
        assert!(table.contains("GR1 (unreachable)"), "{table}");
        assert!(table.contains("3 rev, 1m 30s"), "{table}");
        let json = serde_json::to_value(&tree).unwrap();
        assert_eq!(json["sites"][2]["site_code"], "GR1");
        assert_eq!(json["sites"][2]["parent_site_code"], "PR1");
        assert_eq!(json["sites"][2]["reachable"], false);
        assert_eq!(
            json["sites"][0]["parent_site_code"],
            serde_json::Value::Null
        );
    }

    #[test]
    fn the_table_flags_unreachable_sites_and_shows_sites_in_step() {
        let mut tree = hierarchy();
        for node in &mut tree.sites {
            node.last_report_at = Some(prost_types::Timestamp {
                seconds: 100,
                nanos: 0,
            });
        }
        tree.sites[1].lag = Some(v1::SiteLag {
            revisions: 0,
            behind: Some(prost_types::Duration::default()),
        });
        // A child that registered and never reported.
        tree.sites[4].last_report_at = None;
        tree.sites[4].reachable = false;
        let view = TreeView::new(&tree);
        let table = view.table(Timestamp::from_unix_millis(103_000)).to_string();
        let row = |code: &str| {
            table
                .lines()
                .find(|l| l.contains(code))
                .unwrap_or_else(|| panic!("no row for {code}: {table}"))
                .to_owned()
        };
        assert!(row("PR1").contains("in step"), "{table}");
        assert!(row("PR1").contains("3.0 s ago"), "{table}");
        assert!(row("PR1").contains(" ok "), "{table}");
        assert!(row("GR1").contains("UNREACHABLE"), "{table}");
        assert!(
            row("INT").contains("UNREACHABLE (never reported)"),
            "{table}"
        );
        assert!(row("INT").contains("never"), "{table}");
        let json = serde_json::to_value(&view).unwrap();
        assert_eq!(json["sites"][1]["lag_seconds"], 0.0);
        assert_eq!(json["sites"][4]["reported"], false);
        assert_eq!(json["sites"][2]["reported"], true);
        let dot = view.dot();
        assert!(
            dot.contains("\\nUNREACHABLE\", style=dashed, color=red];"),
            "{dot}"
        );
        assert!(dot.contains("\\nUNREACHABLE\""), "{dot}");
    }

    #[test]
    fn dot_has_a_node_per_site_and_an_edge_per_parent() {
        let dot = TreeView::new(&hierarchy()).dot();
        assert!(dot.starts_with("digraph sitesync {"));
        assert!(dot.contains("\"PR1\" -> \"GR1\";"), "{dot}");
        assert!(dot.contains("\"CEN\" -> \"INT\";"), "{dot}");
        assert!(dot.contains("\"GR1\" [label=\"GR1\\nsite"), "{dot}");
        assert!(dot.contains("style=dashed, color=red"), "{dot}");
        assert_eq!(dot.matches(" -> ").count(), 5);
    }
}
