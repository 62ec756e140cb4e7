//! `check-layering`: the structural check CI runs on the node crate (`node/src`).
//!
//! 1. **Transport at the edge.** Only the gRPC edge, `node/src/grpc/`, names tonic or the
//!    generated wire types (`sitesync_proto::v1`); the domain knows nothing of them
//!    (STYLE.md item 2). A few files are deliberate exceptions, listed below with why.
//! 2. **No import cycles.** No two files of the node import each other, directly or round a
//!    circle, so each file can be read, tested and moved after the ones it uses.
//!
//! Comments, doc comments, string literals and `#[cfg(test)]` code never count.
//!
//! - [`lex`]: tokens, comments and literals dropped.
//! - [`source`]: one file's `use` trees, inline paths, modules and defined names.
//! - [`tree`]: the files and the module tree rustc would build from them.
//! - [`transport`] and [`cycles`]: the two checks.

#![forbid(unsafe_code)]

mod cycles;
mod lex;
mod source;
mod transport;
mod tree;

use std::env;
use std::fmt::Write as _;
use std::fs;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::cycles::{Cycle, Resolver};
use crate::transport::{Exception, Naming, TransportReport};
use crate::tree::{SourceFile, Tree};

/// Files outside `grpc/` that may name tonic or `sitesync_proto::v1`, relative to the
/// node's `src/`. Each entry is a decision, not a backlog: say why the file needs the
/// transport and why that is right. An entry whose file stops naming the transport is
/// reported as stale, to be removed.
const TRANSPORT_EXCEPTIONS: &[Exception] = &[
    // A catalog version is signed and stored as the protobuf bytes of
    // `v1::SignedCatalogVersion`: those exact bytes are what the signature covers, so the
    // wire type is the domain's own payload here.
    Exception {
        file: "catalog_version.rs",
        why: "signs and stores the protobuf bytes of v1::SignedCatalogVersion",
    },
];

/// The node crate's source directory, relative to the workspace root.
const DEFAULT_SOURCE_DIR: &str = "node/src";

const USAGE: &str = "\
usage: check-layering [SRC_DIR]

Checks the node crate's layering:
  - only grpc/ (the gRPC edge) names tonic or sitesync_proto::v1, apart from the
    exceptions listed in tools/layering/src/main.rs;
  - no file imports another in a circle.

SRC_DIR  the node crate's source directory (default: node/src under the workspace
         root, found from CARGO_MANIFEST_DIR or the current directory)

Exit status: 0 clean, 1 violations found, 2 usage error.";

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let source_dir = match parse_args(&args) {
        Ok(Some(dir)) => dir,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("check-layering: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    if !source_dir.join("lib.rs").is_file() && !source_dir.join("main.rs").is_file() {
        eprintln!(
            "check-layering: {} is not a crate's source directory (no lib.rs or main.rs)",
            source_dir.display()
        );
        return ExitCode::from(2);
    }
    match Report::check(&source_dir, TRANSPORT_EXCEPTIONS) {
        Ok(report) => {
            // A closed pipe (`| head`) is no reason to panic; the exit status still counts.
            let text = report.render(&source_dir.display().to_string());
            let _ = io::stdout().write_all(text.as_bytes());
            if report.is_clean() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(error) => {
            eprintln!(
                "check-layering: cannot read {}: {error}",
                source_dir.display()
            );
            ExitCode::from(2)
        }
    }
}

/// The source directory to check, or None for `--help`.
fn parse_args(args: &[String]) -> Result<Option<PathBuf>, String> {
    let mut positional = Vec::new();
    for arg in args {
        match arg.as_str() {
            "-h" | "--help" => return Ok(None),
            flag if flag.starts_with('-') => return Err(format!("unknown option {flag}")),
            path => positional.push(PathBuf::from(path)),
        }
    }
    match positional.as_slice() {
        [] => {
            let root = workspace_root().ok_or(
                "no workspace root (a Cargo.toml with [workspace]) above CARGO_MANIFEST_DIR \
                 or the current directory; give SRC_DIR",
            )?;
            Ok(Some(relative_if_below(
                &root.join(DEFAULT_SOURCE_DIR),
                &env::current_dir().unwrap_or_default(),
            )))
        }
        [dir] => Ok(Some(dir.clone())),
        _ => Err("at most one SRC_DIR".to_owned()),
    }
}

/// The nearest directory at or above CARGO_MANIFEST_DIR (set by `cargo run`), else the
/// current directory, whose Cargo.toml declares a workspace.
fn workspace_root() -> Option<PathBuf> {
    let start = env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .or_else(|| env::current_dir().ok())?;
    start
        .ancestors()
        .find(|dir| {
            fs::read_to_string(dir.join("Cargo.toml"))
                .is_ok_and(|manifest| manifest.lines().any(|l| l.trim() == "[workspace]"))
        })
        .map(Path::to_path_buf)
}

/// Shorter paths in the report when run from the workspace root.
fn relative_if_below(path: &Path, base: &Path) -> PathBuf {
    path.strip_prefix(base)
        .map_or_else(|_| path.to_path_buf(), Path::to_path_buf)
}

/// Both checks' findings on one source directory.
#[derive(Debug)]
struct Report {
    files: Vec<SourceFile>,
    warnings: Vec<String>,
    transport: TransportReport,
    cycles: Vec<Cycle>,
}

impl Report {
    fn check(source_dir: &Path, exceptions: &'static [Exception]) -> std::io::Result<Report> {
        let files = tree::load(source_dir)?;
        let tree = Tree::build(&files);
        let resolver = Resolver::new(&files, &tree);
        let transport = transport::check(&files, &tree, &resolver, exceptions);
        let edges = cycles::edges(&files, &tree, &resolver);
        let cycles = cycles::cycles(&files, &edges);
        Ok(Report {
            warnings: tree.warnings,
            files,
            transport,
            cycles,
        })
    }

    fn is_clean(&self) -> bool {
        self.transport.violations.is_empty() && self.cycles.is_empty()
    }

    fn rel(&self, file: usize) -> &str {
        &self.files[file].rel
    }

    fn render(&self, source_dir: &str) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "check-layering: {source_dir} ({} files)",
            self.files.len()
        );
        for warning in &self.warnings {
            let _ = writeln!(out, "warning: {warning}");
        }
        self.render_transport(&mut out);
        self.render_cycles(&mut out);
        let _ = writeln!(out);
        if self.is_clean() {
            let _ = writeln!(
                out,
                "OK: only grpc/ names tonic or the wire types, and no file imports in a circle."
            );
        } else {
            let mut failures = Vec::new();
            let naming = self.transport.violations.len();
            if naming > 0 {
                failures.push(format!(
                    "{} outside grpc/ {} tonic or the wire types",
                    count(naming, "file"),
                    if naming == 1 { "names" } else { "name" }
                ));
            }
            if !self.cycles.is_empty() {
                failures.push(count(self.cycles.len(), "import cycle"));
            }
            let _ = writeln!(out, "FAILED: {}.", failures.join("; "));
        }
        out
    }

    fn render_transport(&self, out: &mut String) {
        let report = &self.transport;
        let _ = writeln!(out);
        if report.violations.is_empty() {
            let _ = writeln!(
                out,
                "Transport at the edge: no file outside grpc/ names tonic or sitesync_proto::v1."
            );
        } else {
            let _ = writeln!(
                out,
                "Transport outside the edge: {} outside grpc/ {} tonic or sitesync_proto::v1.",
                count(report.violations.len(), "file"),
                if report.violations.len() == 1 {
                    "names"
                } else {
                    "name"
                },
            );
            for naming in &report.violations {
                self.render_naming(out, naming);
            }
        }
        if !report.excepted.is_empty() {
            let _ = writeln!(out, "  Allowed by exception (TRANSPORT_EXCEPTIONS):");
            for (naming, exception) in &report.excepted {
                let _ = writeln!(
                    out,
                    "    {}: {} — {}",
                    self.rel(naming.file),
                    count(naming.lines.len() + naming.using_lines, "line"),
                    exception.why
                );
            }
        }
        for exception in &report.stale {
            let _ = writeln!(
                out,
                "warning: the exception for {} is stale: it does not name the transport (or \
                 does not exist); remove it from TRANSPORT_EXCEPTIONS",
                exception.file
            );
        }
    }

    fn render_naming(&self, out: &mut String, naming: &Naming) {
        let rel = self.rel(naming.file);
        let mut summary = format!("{} {} it in", count(naming.lines.len(), "line"), {
            if naming.lines.len() == 1 {
                "brings"
            } else {
                "bring"
            }
        });
        if naming.using_lines > 0 {
            let _ = write!(
                summary,
                ", {} more use{} what they bring",
                naming.using_lines,
                if naming.using_lines == 1 { "s" } else { "" }
            );
        }
        let _ = writeln!(out, "  {rel} ({summary}):");
        for (line, text) in &naming.lines {
            let _ = writeln!(out, "    {rel}:{line}: {}", shorten(text, 110));
        }
    }

    fn render_cycles(&self, out: &mut String) {
        let _ = writeln!(out);
        if self.cycles.is_empty() {
            let _ = writeln!(out, "Import cycles: none.");
            return;
        }
        let _ = writeln!(
            out,
            "Import cycles: {} {} of files import each other in a circle.",
            self.cycles.len(),
            if self.cycles.len() == 1 {
                "group"
            } else {
                "groups"
            },
        );
        for (n, cycle) in self.cycles.iter().enumerate() {
            let names: Vec<&str> = cycle.files.iter().map(|&f| self.rel(f)).collect();
            let _ = writeln!(
                out,
                "  {}. {} files: {}",
                n + 1,
                cycle.files.len(),
                names.join(", ")
            );
            let _ = writeln!(out, "     a chain through all of them:");
            for edge in &cycle.chain {
                let mut through = String::new();
                if !edge.via.is_empty() {
                    let via: Vec<&str> = edge.via.iter().map(|&f| self.rel(f)).collect();
                    through = format!(", through {}", via.join(", "));
                }
                let _ = writeln!(
                    out,
                    "       {}:{} → {} ({}{through})",
                    self.rel(edge.from),
                    edge.line,
                    self.rel(edge.to),
                    edge.path
                );
            }
            let _ = writeln!(
                out,
                "     every import inside the group (file → file: lines):"
            );
            for ((from, to), lines) in &cycle.edges {
                let lines: Vec<String> = lines.iter().map(ToString::to_string).collect();
                let _ = writeln!(
                    out,
                    "       {} → {}: {}",
                    self.rel(*from),
                    self.rel(*to),
                    lines.join(", ")
                );
            }
        }
    }
}

fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let cut: String = text.chars().take(max - 1).collect();
    format!("{cut}…")
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{SystemTime, UNIX_EPOCH};
    use std::{fs, process};

    use super::*;

    /// A source tree under the system's temporary directory, removed when dropped.
    struct TempTree {
        root: PathBuf,
    }

    impl TempTree {
        fn new(files: &[(&str, &str)]) -> TempTree {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            let root = env::temp_dir().join(format!(
                "check-layering-{}-{}-{nanos}",
                process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            for (rel, text) in files {
                let path = root.join(rel);
                fs::create_dir_all(path.parent().unwrap()).unwrap();
                fs::write(path, text).unwrap();
            }
            TempTree { root }
        }

        fn check(&self, exceptions: &'static [Exception]) -> Report {
            Report::check(&self.root, exceptions).unwrap()
        }
    }

    impl Drop for TempTree {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.root);
        }
    }

    fn flagged(report: &Report) -> Vec<String> {
        report
            .transport
            .violations
            .iter()
            .flat_map(|n| {
                n.lines
                    .keys()
                    .map(move |line| format!("{}:{line}", report.rel(n.file)))
            })
            .collect()
    }

    fn cycle_files(report: &Report) -> Vec<Vec<&str>> {
        report
            .cycles
            .iter()
            .map(|c| c.files.iter().map(|&f| report.rel(f)).collect())
            .collect()
    }

    #[test]
    fn tonic_and_wire_types_outside_the_edge_are_caught() {
        let tree = TempTree::new(&[
            ("lib.rs", "pub mod domain;\npub mod grpc;\npub mod other;\n"),
            (
                "domain.rs",
                "use tonic::Status;\n\
                 use sitesync_proto::{ConversionError, v1};\n\
                 fn f() -> v1::Anchor { todo!() }\n\
                 fn g() { let _ = sitesync_proto::v1::Anchor::default(); }\n\
                 #[tonic_reflection::something]\n\
                 fn h() {}\n",
            ),
            (
                "other.rs",
                "use sitesync_proto as proto;\nfn f(_: proto::v1::Anchor) {}\n",
            ),
            (
                "grpc/mod.rs",
                "use tonic::Status;\nuse sitesync_proto::v1;\npub mod server;\n",
            ),
            (
                "grpc/server.rs",
                "use tonic_health::server::health_reporter;\n",
            ),
        ]);
        let report = tree.check(&[]);
        assert_eq!(
            flagged(&report),
            [
                "domain.rs:1",
                "domain.rs:2",
                "domain.rs:4",
                "domain.rs:5",
                "other.rs:2"
            ]
        );
        assert_eq!(report.transport.violations[0].using_lines, 1);
        assert!(!report.is_clean());
        let text = report.render("src");
        assert!(text.contains("domain.rs:2: use sitesync_proto::{ConversionError, v1};"));
        assert!(text.contains("FAILED: 2 files outside grpc/ name tonic"));
    }

    #[test]
    fn wire_types_reexported_by_the_edge_are_caught_where_they_are_used() {
        let tree = TempTree::new(&[
            ("lib.rs", "pub mod grpc;\npub mod domain;\n"),
            (
                "grpc/mod.rs",
                "pub use sitesync_proto::v1 as wire;\npub use tonic::Status;\npub fn f() {}\n",
            ),
            (
                "domain.rs",
                "use crate::grpc::wire;\nfn f(_: wire::Anchor) {}\nfn g() { crate::grpc::f(); }\n\
                 fn h() -> crate::grpc::Status { todo!() }\n",
            ),
        ]);
        let report = tree.check(&[]);
        assert_eq!(flagged(&report), ["domain.rs:1", "domain.rs:4"]);
        let text = report.render("src");
        assert!(
            text.contains(
                "domain.rs:1: use crate::grpc::wire;  [names sitesync_proto::v1 through grpc/mod.rs]"
            ),
            "{text}"
        );
    }

    #[test]
    fn tonic_in_comments_strings_and_tests_is_not_caught() {
        let tree = TempTree::new(&[
            ("lib.rs", "pub mod domain;\n#[cfg(test)]\nmod more_tests;\n"),
            (
                "domain.rs",
                "//! Speaks of tonic::Status and sitesync_proto::v1 in its header.\n\
                 /// Returns what tonic::Status would.\n\
                 fn f() -> &'static str { \"tonic::Status, sitesync_proto::v1::Anchor\" }\n\
                 /* use tonic::Status; */\n\
                 #[cfg(test)]\n\
                 mod tests {\n\
                     use sitesync_proto::v1;\n\
                     #[test]\n\
                     fn t() { let _ = tonic::Status::ok(\"\"); }\n\
                 }\n",
            ),
            ("more_tests.rs", "use tonic::Status;\n"),
        ]);
        let report = tree.check(&[]);
        assert!(report.is_clean(), "{}", report.render("src"));
        assert!(
            report
                .render("src")
                .ends_with("no file imports in a circle.\n")
        );
    }

    #[test]
    fn an_exception_allows_its_file_and_a_stale_one_is_reported() {
        static EXCEPTIONS: &[Exception] = &[
            Exception {
                file: "signed.rs",
                why: "signs wire bytes",
            },
            Exception {
                file: "gone.rs",
                why: "moved away",
            },
        ];
        let tree = TempTree::new(&[
            ("lib.rs", "pub mod signed;\n"),
            ("signed.rs", "use sitesync_proto::v1::SignedThing;\n"),
        ]);
        let report = tree.check(EXCEPTIONS);
        assert!(report.is_clean());
        assert_eq!(report.transport.excepted.len(), 1);
        assert_eq!(report.transport.stale.len(), 1);
        assert!(
            report
                .render("src")
                .contains("exception for gone.rs is stale")
        );
    }

    #[test]
    fn a_cycle_is_found_with_its_lines() {
        let tree = TempTree::new(&[
            (
                "lib.rs",
                "pub mod a;\npub mod b;\npub mod c;\npub mod leaf;\n",
            ),
            (
                "a.rs",
                "use crate::b::B;\nuse crate::leaf::L;\npub struct A;\n",
            ),
            ("b.rs", "pub struct B;\nfn f() { crate::c::g(); }\n"),
            ("c.rs", "\n\nuse super::a::{A};\npub fn g() {}\n"),
            ("leaf.rs", "pub struct L;\n"),
        ]);
        let report = tree.check(&[]);
        assert_eq!(cycle_files(&report), [["a.rs", "b.rs", "c.rs"]]);
        let chain: Vec<String> = report.cycles[0]
            .chain
            .iter()
            .map(|e| format!("{}:{} → {}", report.rel(e.from), e.line, report.rel(e.to)))
            .collect();
        assert_eq!(chain, ["a.rs:1 → b.rs", "b.rs:2 → c.rs", "c.rs:3 → a.rs"]);
        let text = report.render("src");
        assert!(text.contains("b.rs:2 → c.rs (crate::c::g)"), "{text}");
        assert!(text.contains("FAILED: 1 import cycle.\n"), "{text}");
    }

    #[test]
    fn a_reexport_in_mod_rs_makes_no_false_cycle() {
        let tree = TempTree::new(&[
            ("lib.rs", "pub mod store;\npub mod user;\n"),
            (
                "store/mod.rs",
                "mod catalog;\npub mod keys;\nmod index;\n\
                 pub use catalog::{Catalog, StoreError};\npub use keys::*;\n\
                 pub struct State;\n",
            ),
            (
                "store/catalog.rs",
                "use super::State;\nuse super::index::Index;\npub struct Catalog;\npub struct StoreError;\n",
            ),
            // Names its sibling's error through the parent's re-export and the keys
            // through a glob re-export: neither is an import of store/mod.rs.
            (
                "store/index.rs",
                "use crate::store::StoreError;\nuse super::KEY;\npub struct Index;\n",
            ),
            ("store/keys.rs", "pub const KEY: u8 = 1;\n"),
            ("user.rs", "use crate::store::{Catalog, State};\n"),
        ]);
        let report = tree.check(&[]);
        // index → catalog through the re-export, catalog → index: the one real cycle.
        assert_eq!(
            cycle_files(&report),
            [["store/catalog.rs", "store/index.rs"]]
        );
        let text = report.render("src");
        assert!(
            text.contains(
                "store/index.rs:1 → store/catalog.rs (crate::store::StoreError, through store/mod.rs)"
            ),
            "{text}"
        );
        assert!(
            text.contains("store/catalog.rs → store/index.rs: 2"),
            "{text}"
        );
        assert!(!text.contains("store/index.rs → store/mod.rs"), "{text}");
        assert!(!text.contains("store/index.rs → store/keys.rs"), "{text}");
    }

    #[test]
    fn nested_groups_resolve_each_leaf_to_its_file() {
        let tree = TempTree::new(&[
            ("lib.rs", "pub mod a;\npub mod x;\n"),
            ("a/mod.rs", "pub mod b;\npub mod c;\n"),
            ("a/b.rs", "pub fn f() {}\n"),
            ("a/c/mod.rs", "pub mod d;\npub mod e;\n"),
            ("a/c/d.rs", "pub struct D;\nuse crate::x::X;\n"),
            ("a/c/e.rs", "pub struct E;\nuse crate::x as renamed;\n"),
            (
                "x.rs",
                "pub struct X;\npub(crate) use crate::{\n    a::b,\n    a::c::{d::D, e::{self as ee}},\n};\n",
            ),
        ]);
        let report = tree.check(&[]);
        assert_eq!(cycle_files(&report), [["a/c/d.rs", "a/c/e.rs", "x.rs"]]);
        let text = report.render("src");
        assert!(text.contains("x.rs → a/c/d.rs: 4"), "{text}");
        assert!(
            text.contains("x.rs:4 → a/c/e.rs (crate::a::c::e)"),
            "{text}"
        );
        // `a::b` (line 3) is an import too, though b.rs is in no cycle.
        let files = tree::load(&tree.root).unwrap();
        let built = Tree::build(&files);
        let edges = cycles::edges(&files, &built, &Resolver::new(&files, &built));
        assert!(
            edges
                .iter()
                .any(|e| files[e.to].rel == "a/b.rs" && e.line == 3)
        );
    }

    #[test]
    fn arguments_are_checked() {
        assert_eq!(parse_args(&["--help".to_owned()]), Ok(None));
        assert_eq!(
            parse_args(&["some/src".to_owned()]),
            Ok(Some(PathBuf::from("some/src")))
        );
        assert!(parse_args(&["--frobnicate".to_owned()]).is_err());
        assert!(parse_args(&["a".to_owned(), "b".to_owned()]).is_err());
    }
}
