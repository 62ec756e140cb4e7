//! The crate's source files and its module tree: which file defines which module, found the
//! way rustc finds them, from each crate root (`lib.rs`, `main.rs`, `bin/*.rs`) through its
//! `mod name;` declarations.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::io;
use std::path::Path;

use crate::lex::{Token, lex};
use crate::source::{Parsed, parse, strip_tests};

/// One `.rs` file under the source directory.
#[derive(Debug)]
pub struct SourceFile {
    /// Relative to the source directory, with `/` separators: `upstream/parent.rs`.
    pub rel: String,
    /// The file's text, line by line, to quote in reports.
    pub lines: Vec<String>,
    /// Production tokens only (see `source::strip_tests`).
    pub tokens: Vec<Token>,
    pub test_only: bool,
    pub parsed: Parsed,
}

impl SourceFile {
    pub fn from_text(rel: String, text: &str) -> SourceFile {
        let stripped = strip_tests(lex(text));
        let parsed = parse(&stripped.tokens);
        SourceFile {
            rel,
            lines: text.lines().map(str::to_owned).collect(),
            tokens: stripped.tokens,
            test_only: stripped.test_only,
            parsed,
        }
    }

    /// The 1-based line, trimmed.
    pub fn line(&self, line: usize) -> &str {
        self.lines
            .get(line.wrapping_sub(1))
            .map_or("", |l| l.trim())
    }

    /// Lines `first..=last` on one line, runs of whitespace made one space.
    pub fn joined(&self, first: usize, last: usize) -> String {
        let text: Vec<&str> = (first..=last).map(|n| self.line(n)).collect();
        text.join(" ")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .replace("{ ", "{")
            .replace(" }", "}")
            .replace(",}", "}")
    }
}

/// Every `.rs` file under `dir`, sorted by path.
pub fn load(dir: &Path) -> io::Result<Vec<SourceFile>> {
    let mut paths = Vec::new();
    collect(dir, "", &mut paths)?;
    paths.sort();
    paths
        .into_iter()
        .map(|rel| {
            let text = fs::read_to_string(dir.join(&rel))?;
            Ok(SourceFile::from_text(rel, &text))
        })
        .collect()
}

fn collect(dir: &Path, prefix: &str, out: &mut Vec<String>) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let rel = format!("{prefix}{name}");
        if entry.file_type()?.is_dir() {
            collect(&entry.path(), &format!("{rel}/"), out)?;
        } else if name.ends_with(".rs") {
            out.push(rel);
        }
    }
    Ok(())
}

/// One module of a crate.
#[derive(Debug)]
pub struct Module {
    pub parent: Option<usize>,
    /// The crate root this module belongs to.
    pub root: usize,
    /// The file that defines it (an inline module's is the file it is written in).
    pub file: usize,
    /// Its index in that file's `parsed.modules`.
    pub items: usize,
    pub children: BTreeMap<String, usize>,
    /// Where its `mod name;` children live, relative to the source directory ("" at the top).
    children_dir: String,
}

/// The module trees of every crate root in the source directory.
#[derive(Debug, Default)]
pub struct Tree {
    pub modules: Vec<Module>,
    /// For each file, the module ids of its `parsed.modules`; empty if no root reaches it.
    pub file_modules: Vec<Vec<usize>>,
    /// Files that are test code: `#![cfg(test)]`, or a `#[cfg(test)] mod name;` and below.
    pub test_files: BTreeSet<usize>,
    /// Module declarations whose file is missing, and the like.
    pub warnings: Vec<String>,
}

impl Tree {
    pub fn build(files: &[SourceFile]) -> Tree {
        let mut tree = Tree {
            file_modules: vec![Vec::new(); files.len()],
            ..Tree::default()
        };
        let by_path: HashMap<&str, usize> = files
            .iter()
            .enumerate()
            .map(|(i, f)| (f.rel.as_str(), i))
            .collect();
        for (i, file) in files.iter().enumerate() {
            if file.test_only {
                tree.test_files.insert(i);
            }
        }
        let is_root = |rel: &str| {
            rel == "lib.rs"
                || rel == "main.rs"
                || rel
                    .strip_prefix("bin/")
                    .is_some_and(|rest| !rest.contains('/') || rest.ends_with("/main.rs"))
        };
        for (i, file) in files.iter().enumerate() {
            if is_root(&file.rel) {
                let dir = parent_dir(&file.rel);
                tree.add_file(files, &by_path, i, None, "crate", dir);
            }
        }
        tree
    }

    pub fn is_descendant(&self, module: usize, ancestor: usize) -> bool {
        let mut current = Some(module);
        while let Some(m) = current {
            if m == ancestor {
                return true;
            }
            current = self.modules[m].parent;
        }
        false
    }

    fn add_file(
        &mut self,
        files: &[SourceFile],
        by_path: &HashMap<&str, usize>,
        file: usize,
        parent: Option<usize>,
        name: &str,
        children_dir: String,
    ) -> usize {
        if let Some(&existing) = self.file_modules[file].first() {
            self.warnings.push(format!(
                "{} is declared as a module more than once",
                files[file].rel
            ));
            return existing;
        }
        let items = &files[file].parsed.modules;
        let mut ids = Vec::with_capacity(items.len());
        for (k, item) in items.iter().enumerate() {
            let id = self.modules.len();
            let (module_parent, module_name, dir) = match item.parent {
                None => (parent, name, children_dir.clone()),
                Some(p) => {
                    let p: usize = ids[p];
                    let dir = join(&self.modules[p].children_dir, &item.name);
                    (Some(p), item.name.as_str(), dir)
                }
            };
            let root = module_parent.map_or(id, |p| self.modules[p].root);
            self.modules.push(Module {
                parent: module_parent,
                root,
                file,
                items: k,
                children: BTreeMap::new(),
                children_dir: dir,
            });
            if let (Some(p), Some(_)) = (module_parent, item.parent) {
                self.modules[p].children.insert(module_name.to_owned(), id);
            }
            ids.push(id);
        }
        self.file_modules[file] = ids.clone();
        for (k, item) in items.iter().enumerate() {
            let module = ids[k];
            let dir = self.modules[module].children_dir.clone();
            for decl in &item.mod_decls {
                let candidates = [
                    join(&dir, &format!("{decl}.rs")),
                    join(&dir, &format!("{decl}/mod.rs")),
                ];
                match candidates.iter().find_map(|c| by_path.get(c.as_str())) {
                    Some(&child_file) => {
                        let child = self.add_file(
                            files,
                            by_path,
                            child_file,
                            Some(module),
                            decl,
                            join(&dir, decl),
                        );
                        self.modules[module].children.insert(decl.clone(), child);
                    }
                    None => self.warnings.push(format!(
                        "{} declares `mod {decl};` but neither {} nor {} exists",
                        files[file].rel, candidates[0], candidates[1]
                    )),
                }
            }
            for decl in &item.test_mod_decls {
                let below = format!("{}/", join(&dir, decl));
                let own = join(&dir, &format!("{decl}.rs"));
                for (i, f) in files.iter().enumerate() {
                    if f.rel == own || f.rel.starts_with(&below) {
                        self.test_files.insert(i);
                    }
                }
            }
        }
        ids[0]
    }
}

fn parent_dir(rel: &str) -> String {
    rel.rsplit_once('/')
        .map_or(String::new(), |(dir, _)| dir.to_owned())
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_owned()
    } else {
        format!("{dir}/{name}")
    }
}
