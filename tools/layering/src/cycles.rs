//! Import cycles among a crate's files: the file-level graph of every `use` and every path
//! in code that leads into the crate (`crate::…`, `super::…`, a child module, a name a `use`
//! brought in), each resolved to the file that defines what it names, and its strongly
//! connected components (Tarjan).
//!
//! A name reached through a re-export (`pub use child::Name` in a `mod.rs`) resolves to the
//! file that defines it, and a re-export of something below the module that writes it is
//! not an import of its own: a parent that gathers its children's names for the rest of
//! the crate does not depend on them in the sense that matters here, and counting it would
//! make every child that uses its parent's re-export look like a cycle.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::source::UseLeaf;
use crate::tree::{SourceFile, Tree};

/// Re-exports followed to their definition, at most this many deep (guards loops).
const MAX_DEPTH: usize = 24;

/// One import of one file by another.
#[derive(Debug, Clone)]
pub struct Edge {
    pub from: usize,
    pub to: usize,
    pub line: usize,
    /// The path as written: `crate::hierarchy::validate_address`.
    pub path: String,
    /// Files whose `use` the path went through to reach `to`.
    pub via: Vec<usize>,
}

/// Files that import each other in a circle.
#[derive(Debug)]
pub struct Cycle {
    /// Sorted by path.
    pub files: Vec<usize>,
    /// A closed chain of imports through every file of the cycle, starting at the first.
    pub chain: Vec<Edge>,
    /// Every import between two files of the cycle: (from, to) → lines.
    pub edges: BTreeMap<(usize, usize), BTreeSet<usize>>,
}

/// What a path names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    Module(usize),
    /// An item of this module.
    Item(usize),
    /// Something in another crate, by its full path (`sitesync_proto::v1::Anchor`), or a
    /// name the module does not hold (a generic parameter's `T::Item`).
    External(Vec<String>),
}

impl Found {
    fn module(&self) -> Option<usize> {
        match self {
            Found::Module(m) | Found::Item(m) => Some(*m),
            Found::External(_) => None,
        }
    }
}

#[derive(Debug)]
pub struct Resolved {
    pub found: Found,
    /// The files whose `use` declarations the path went through, in order.
    pub via: Vec<usize>,
}

/// Resolves paths written in the crate's modules.
#[derive(Debug)]
pub struct Resolver<'a> {
    files: &'a [SourceFile],
    tree: &'a Tree,
    /// Per module, the leaves of the `use`s at its own level: the names it holds.
    scope: Vec<Vec<&'a UseLeaf>>,
}

impl<'a> Resolver<'a> {
    pub fn new(files: &'a [SourceFile], tree: &'a Tree) -> Self {
        let mut scope = vec![Vec::new(); tree.modules.len()];
        for (file, ids) in tree.file_modules.iter().enumerate() {
            if ids.is_empty() {
                continue;
            }
            for leaf in &files[file].parsed.uses {
                if leaf.module_level {
                    scope[ids[leaf.module]].push(leaf);
                }
            }
        }
        Resolver { files, tree, scope }
    }

    /// Resolves a path written in `module`; None when it leads nowhere (`super` above the
    /// root, re-exports that loop).
    pub fn resolve(&self, module: usize, segments: &[String]) -> Option<Resolved> {
        self.resolve_at(module, segments, 0)
    }

    fn resolve_at(&self, module: usize, segments: &[String], depth: usize) -> Option<Resolved> {
        let first = segments.first()?;
        let external = |segments: &[String]| {
            Some(Resolved {
                found: Found::External(segments.to_vec()),
                via: Vec::new(),
            })
        };
        match first.as_str() {
            "::" => external(&segments[1..]),
            "crate" | "super" | "self" => self.walk(module, segments, false, depth),
            _ => self
                .walk(module, segments, true, depth)
                .or_else(|| external(segments)),
        }
    }

    /// Follows `segments` from `current`. `strict`: the first name must be one the module
    /// really holds (a path that starts with an unknown name belongs to another crate);
    /// otherwise an unknown name is taken as an item of the module reached so far.
    fn walk(
        &self,
        current: usize,
        segments: &[String],
        strict: bool,
        depth: usize,
    ) -> Option<Resolved> {
        if depth > MAX_DEPTH {
            return None;
        }
        let Some((name, rest)) = segments.split_first() else {
            return Some(Resolved {
                found: Found::Module(current),
                via: Vec::new(),
            });
        };
        let module = &self.tree.modules[current];
        match name.as_str() {
            "crate" => return self.walk(module.root, rest, false, depth),
            "super" => return self.walk(module.parent?, rest, false, depth),
            "self" => return self.walk(current, rest, false, depth),
            _ => {}
        }
        if let Some(&child) = module.children.get(name) {
            return self.walk(child, rest, false, depth);
        }
        let items = &self.files[module.file].parsed.modules[module.items];
        if items.defined.contains(name) {
            return Some(Resolved {
                found: Found::Item(current),
                via: Vec::new(),
            });
        }
        let scope = &self.scope[current];
        if let Some(leaf) = scope
            .iter()
            .find(|leaf| leaf.local.as_deref() == Some(name.as_str()))
        {
            // A name brought in by `use`: followed on, into this crate or another.
            let target = self.resolve_at(current, &leaf.segments, depth + 1)?;
            let mut resolved = match target.found {
                Found::Module(m) => {
                    let mut inner = self.walk(m, rest, false, depth + 1)?;
                    inner.via.splice(0..0, target.via);
                    inner
                }
                Found::Item(_) => target,
                Found::External(mut path) => {
                    path.extend_from_slice(rest);
                    Resolved {
                        found: Found::External(path),
                        via: target.via,
                    }
                }
            };
            resolved.via.insert(0, module.file);
            return Some(resolved);
        }
        for leaf in scope.iter().filter(|leaf| leaf.glob) {
            let Some(Resolved {
                found: Found::Module(glob),
                ..
            }) = self.resolve_at(current, &leaf.segments, depth + 1)
            else {
                continue;
            };
            if glob == current {
                continue;
            }
            if let Some(mut resolved) = self.walk(glob, segments, true, depth + 1) {
                resolved.via.insert(0, module.file);
                return Some(resolved);
            }
        }
        (!strict).then_some(Resolved {
            found: Found::Item(current),
            via: Vec::new(),
        })
    }
}

/// Every import between two different files of the crate.
pub fn edges(files: &[SourceFile], tree: &Tree, resolver: &Resolver<'_>) -> Vec<Edge> {
    let mut edges = Vec::new();
    for (file, ids) in tree.file_modules.iter().enumerate() {
        if ids.is_empty() || tree.test_files.contains(&file) {
            continue;
        }
        let parsed = &files[file].parsed;
        let mut add = |module: usize, segments: &[String], line: usize, reexport: bool| {
            let Some(resolved) = resolver.resolve(module, segments) else {
                return;
            };
            let Some(target) = resolved.found.module() else {
                return;
            };
            // A re-export of something below the module that writes it is its facade.
            if reexport && tree.is_descendant(target, module) {
                return;
            }
            let to = tree.modules[target].file;
            if to != file {
                let mut via = resolved.via;
                via.retain(|&v| v != file && v != to);
                via.dedup();
                edges.push(Edge {
                    from: file,
                    to,
                    line,
                    path: segments.join("::"),
                    via,
                });
            }
        };
        for leaf in &parsed.uses {
            add(ids[leaf.module], &leaf.segments, leaf.line, leaf.reexport);
        }
        for path in &parsed.paths {
            add(ids[path.module], &path.segments, path.line, false);
        }
    }
    edges.sort_by_key(|e| (e.from, e.to, e.line));
    edges
}

/// Every group of more than one file that imports each other in a circle.
pub fn cycles(files: &[SourceFile], edges: &[Edge]) -> Vec<Cycle> {
    let mut graph: BTreeMap<usize, BTreeMap<usize, Vec<&Edge>>> = BTreeMap::new();
    for edge in edges {
        graph
            .entry(edge.from)
            .or_default()
            .entry(edge.to)
            .or_default()
            .push(edge);
    }
    let nodes = files.len();
    let successors: Vec<Vec<usize>> = (0..nodes)
        .map(|n| {
            graph
                .get(&n)
                .map_or(Vec::new(), |t| t.keys().copied().collect())
        })
        .collect();
    let mut found: Vec<Cycle> = tarjan(&successors)
        .into_iter()
        .filter(|component| component.len() > 1)
        .map(|component| {
            let mut members = component;
            members.sort_by(|a, b| files[*a].rel.cmp(&files[*b].rel));
            let inside: BTreeSet<usize> = members.iter().copied().collect();
            let mut between = BTreeMap::new();
            for &from in &members {
                for (&to, list) in graph.get(&from).into_iter().flatten() {
                    if inside.contains(&to) {
                        between.insert((from, to), list.iter().map(|e| e.line).collect());
                    }
                }
            }
            let chain = chain_through(&members, &inside, &graph);
            Cycle {
                files: members,
                chain,
                edges: between,
            }
        })
        .collect();
    found.sort_by(|a, b| {
        b.files
            .len()
            .cmp(&a.files.len())
            .then_with(|| files[a.files[0]].rel.cmp(&files[b.files[0]].rel))
    });
    found
}

/// A closed chain of imports from the first file through every file of the cycle and
/// back: one that visits each file once when a short search finds it, else shortest hops to
/// the nearest file not yet visited. Each hop is the import on the lowest line.
fn chain_through(
    members: &[usize],
    inside: &BTreeSet<usize>,
    graph: &BTreeMap<usize, BTreeMap<usize, Vec<&Edge>>>,
) -> Vec<Edge> {
    let hops = visit_each_once(members, inside, graph)
        .unwrap_or_else(|| nearest_first(members, inside, graph));
    hops.into_iter()
        .filter_map(|(from, to)| graph[&from][&to].iter().min_by_key(|e| e.line).copied())
        .cloned()
        .collect()
}

/// Looks for a cycle through every member once, giving up after a bounded search.
fn visit_each_once(
    members: &[usize],
    inside: &BTreeSet<usize>,
    graph: &BTreeMap<usize, BTreeMap<usize, Vec<&Edge>>>,
) -> Option<Vec<(usize, usize)>> {
    struct Search<'g, 'e> {
        graph: &'g BTreeMap<usize, BTreeMap<usize, Vec<&'e Edge>>>,
        inside: &'g BTreeSet<usize>,
        path: Vec<usize>,
        budget: usize,
    }

    fn extend(search: &mut Search<'_, '_>) -> bool {
        let last = *search.path.last().unwrap_or(&0);
        let next: Vec<usize> = search
            .graph
            .get(&last)
            .into_iter()
            .flat_map(BTreeMap::keys)
            .copied()
            .filter(|n| search.inside.contains(n))
            .collect();
        if search.path.len() == search.inside.len() {
            return next.contains(&search.path[0]);
        }
        for n in next {
            if search.budget == 0 {
                return false;
            }
            search.budget -= 1;
            if search.path.contains(&n) {
                continue;
            }
            search.path.push(n);
            if extend(search) {
                return true;
            }
            search.path.pop();
        }
        false
    }

    let mut search = Search {
        graph,
        inside,
        path: vec![members[0]],
        budget: 20_000,
    };
    if !extend(&mut search) {
        return None;
    }
    let path = search.path;
    let mut hops: Vec<(usize, usize)> = path.windows(2).map(|w| (w[0], w[1])).collect();
    hops.push((path[path.len() - 1], path[0]));
    Some(hops)
}

/// Shortest hops to the nearest unvisited file, until all are visited, then back.
fn nearest_first(
    members: &[usize],
    inside: &BTreeSet<usize>,
    graph: &BTreeMap<usize, BTreeMap<usize, Vec<&Edge>>>,
) -> Vec<(usize, usize)> {
    let start = members[0];
    let mut unvisited: BTreeSet<usize> = members[1..].iter().copied().collect();
    let mut hops = Vec::new();
    let mut current = start;
    loop {
        let done = unvisited.is_empty();
        let goal = |n: usize| {
            if done {
                n == start
            } else {
                unvisited.contains(&n)
            }
        };
        let Some(path) = shortest_path(current, goal, inside, graph) else {
            break;
        };
        for (from, to) in path {
            hops.push((from, to));
            unvisited.remove(&to);
            current = to;
        }
        if done {
            break;
        }
    }
    hops
}

fn shortest_path(
    from: usize,
    goal: impl Fn(usize) -> bool,
    inside: &BTreeSet<usize>,
    graph: &BTreeMap<usize, BTreeMap<usize, Vec<&Edge>>>,
) -> Option<Vec<(usize, usize)>> {
    let mut previous: BTreeMap<usize, usize> = BTreeMap::new();
    let mut queue = VecDeque::from([from]);
    while let Some(node) = queue.pop_front() {
        for &next in graph.get(&node).into_iter().flat_map(BTreeMap::keys) {
            if !inside.contains(&next) || previous.contains_key(&next) {
                continue;
            }
            previous.insert(next, node);
            if goal(next) {
                let mut hops = vec![(node, next)];
                let mut at = node;
                while at != from {
                    let before = previous[&at];
                    hops.push((before, at));
                    at = before;
                }
                hops.reverse();
                return Some(hops);
            }
            queue.push_back(next);
        }
    }
    None
}

/// Tarjan's strongly connected components.
fn tarjan(successors: &[Vec<usize>]) -> Vec<Vec<usize>> {
    struct State<'a> {
        successors: &'a [Vec<usize>],
        index: Vec<Option<usize>>,
        low: Vec<usize>,
        on_stack: Vec<bool>,
        stack: Vec<usize>,
        next: usize,
        components: Vec<Vec<usize>>,
    }

    fn connect(s: &mut State<'_>, v: usize) {
        s.index[v] = Some(s.next);
        s.low[v] = s.next;
        s.next += 1;
        s.stack.push(v);
        s.on_stack[v] = true;
        for &w in &s.successors[v] {
            match s.index[w] {
                None => {
                    connect(s, w);
                    s.low[v] = s.low[v].min(s.low[w]);
                }
                Some(index) if s.on_stack[w] => s.low[v] = s.low[v].min(index),
                Some(_) => {}
            }
        }
        if Some(s.low[v]) == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack[w] = false;
                component.push(w);
                if w == v {
                    break;
                }
            }
            s.components.push(component);
        }
    }

    let n = successors.len();
    let mut state = State {
        successors,
        index: vec![None; n],
        low: vec![0; n],
        on_stack: vec![false; n],
        stack: Vec::new(),
        next: 0,
        components: Vec::new(),
    };
    for v in 0..n {
        if state.index[v].is_none() {
            connect(&mut state, v);
        }
    }
    state.components
}
