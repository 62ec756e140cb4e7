//! The transport stays at the edge: outside the gRPC edge, production code names neither
//! tonic (nor `tonic_health`, `tonic_reflection`, `tonic_prost`, …) nor the generated wire
//! types (`sitesync_proto::v1`), except in the files listed as deliberate exceptions.

use std::collections::{BTreeMap, BTreeSet};

use crate::cycles::{Found, Resolver};
use crate::tree::{SourceFile, Tree};

/// A file outside the edge that may name the transport, and why.
#[derive(Debug)]
pub struct Exception {
    /// Relative to the source directory: `catalog_version.rs`.
    pub file: &'static str,
    pub why: &'static str,
}

/// Where one file names the transport.
#[derive(Debug)]
pub struct Naming {
    pub file: usize,
    /// Each line that brings the transport in (a `use`, or a full path in code): line → text.
    pub lines: BTreeMap<usize, String>,
    /// How many other lines use the names those `use`s bring in (`v1::…`, `Status`, …).
    pub using_lines: usize,
}

#[derive(Debug, Default)]
pub struct TransportReport {
    pub violations: Vec<Naming>,
    pub excepted: Vec<(Naming, &'static Exception)>,
    /// Exceptions for files that no longer exist or no longer name the transport.
    pub stale: Vec<&'static Exception>,
}

/// The gRPC edge: `grpc/` and everything below it (and `grpc.rs`, its module file if it
/// has no `mod.rs`).
pub fn in_edge(rel: &str) -> bool {
    rel.starts_with("grpc/") || rel == "grpc.rs"
}

pub fn check(
    files: &[SourceFile],
    tree: &Tree,
    resolver: &Resolver<'_>,
    exceptions: &'static [Exception],
) -> TransportReport {
    let mut report = TransportReport::default();
    for (i, file) in files.iter().enumerate() {
        if in_edge(&file.rel) || tree.test_files.contains(&i) {
            continue;
        }
        let Some(naming) = naming(i, files, tree, resolver) else {
            continue;
        };
        match exceptions.iter().find(|e| e.file == file.rel) {
            Some(exception) => report.excepted.push((naming, exception)),
            None => report.violations.push(naming),
        }
    }
    report.stale = exceptions
        .iter()
        .filter(|e| !report.excepted.iter().any(|(_, x)| x.file == e.file))
        .collect();
    report
}

fn naming(
    index: usize,
    files: &[SourceFile],
    tree: &Tree,
    resolver: &Resolver<'_>,
) -> Option<Naming> {
    let file = &files[index];
    let parsed = &file.parsed;
    // `use sitesync_proto as proto;` makes `proto::v1` the wire types too.
    let mut proto_names: BTreeSet<&str> = BTreeSet::from(["sitesync_proto"]);
    for leaf in &parsed.uses {
        if without_leading(&leaf.segments) == ["sitesync_proto"]
            && let Some(local) = &leaf.local
        {
            proto_names.insert(local);
        }
    }
    let is_transport = |segments: &[String]| {
        let segments = without_leading(segments);
        let Some(root) = segments.first() else {
            return false;
        };
        root == "tonic"
            || root.starts_with("tonic_")
            || (proto_names.contains(root.as_str()) && segments.get(1).is_some_and(|s| s == "v1"))
    };

    // A path into this crate that ends in the transport all the same: another file
    // re-exports it (`pub use sitesync_proto::v1;` in grpc/, then `use crate::grpc::v1;`).
    let ids = &tree.file_modules[index];
    let through_crate = |module: usize, segments: &[String]| -> Option<String> {
        let resolved = resolver.resolve(*ids.get(module)?, segments)?;
        let Found::External(path) = resolved.found else {
            return None;
        };
        let others: Vec<&str> = resolved
            .via
            .iter()
            .filter(|&&f| f != index)
            .map(|&f| files[f].rel.as_str())
            .collect();
        (!others.is_empty() && is_transport(&path)).then(|| {
            format!(
                "  [names {} through {}]",
                path.join("::"),
                others.join(", ")
            )
        })
    };

    let mut lines = BTreeMap::new();
    let mut imported: BTreeSet<&str> = BTreeSet::new();
    let mut use_lines: BTreeSet<usize> = BTreeSet::new();
    for leaf in &parsed.uses {
        let (first, last) = leaf.stmt_lines;
        use_lines.extend(first..=last);
        let note = if is_transport(&leaf.segments) {
            Some(String::new())
        } else {
            through_crate(leaf.module, &leaf.segments)
        };
        if let Some(note) = note {
            lines
                .entry(first)
                .or_insert_with(|| file.joined(first, last) + &note);
            if let Some(local) = &leaf.local {
                imported.insert(local);
            }
        }
    }
    for path in &parsed.paths {
        let note = if is_transport(&path.segments) {
            Some(String::new())
        } else if use_lines.contains(&path.line) || imported.contains(path.segments[0].as_str()) {
            // Already counted: the `use` that brought the name in is reported.
            None
        } else {
            through_crate(path.module, &path.segments)
        };
        if let Some(note) = note {
            lines
                .entry(path.line)
                .or_insert_with(|| file.line(path.line).to_owned() + &note);
        }
    }
    if lines.is_empty() {
        return None;
    }
    let using: BTreeSet<usize> = file
        .tokens
        .iter()
        .filter(|t| t.ident().is_some_and(|name| imported.contains(name)))
        .map(|t| t.line)
        .filter(|line| !use_lines.contains(line) && !lines.contains_key(line))
        .collect();
    Some(Naming {
        file: index,
        lines,
        using_lines: using.len(),
    })
}

fn without_leading(segments: &[String]) -> &[String] {
    match segments.split_first() {
        Some((first, rest)) if first == "::" => rest,
        _ => segments,
    }
}
