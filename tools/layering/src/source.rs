//! What one source file says about structure: its production tokens (test code removed),
//! its `mod` declarations and inline modules, the names it defines, every leaf of every `use`
//! tree, and every inline path such as `crate::a::b` or `tonic::Status`.

use std::collections::BTreeSet;

use crate::lex::{Tok, Token};

/// The production tokens of a file.
#[derive(Debug)]
pub struct Stripped {
    pub tokens: Vec<Token>,
    /// The file starts with `#![cfg(test)]`: all of it is test code.
    pub test_only: bool,
}

/// Removes every item, field or arm under `#[cfg(test)]` (or `#[cfg(all(test, …))]`).
/// `#[cfg(test)] mod name;` leaves a [`Tok::TestModDecl`] behind so the module's file can be
/// skipped too.
pub fn strip_tests(tokens: Vec<Token>) -> Stripped {
    let mut out = Vec::with_capacity(tokens.len());
    let mut depth = 0usize;
    let mut i = 0;
    while i < tokens.len() {
        if let Some((inner, close)) = attribute_at(&tokens, i) {
            let open = i + 1 + usize::from(inner);
            if is_cfg_test(&tokens[open + 1..close]) {
                if inner && depth == 0 {
                    return Stripped {
                        tokens: Vec::new(),
                        test_only: true,
                    };
                }
                if !inner {
                    let end = item_end(&tokens, close + 1);
                    if let Some(name) = out_of_line_mod(&tokens[close + 1..end]) {
                        out.push(Token {
                            tok: Tok::TestModDecl(name),
                            line: tokens[i].line,
                        });
                    }
                    i = end;
                    continue;
                }
            }
        }
        let token = &tokens[i];
        if token.is_punct('{') {
            depth += 1;
        } else if token.is_punct('}') {
            depth = depth.saturating_sub(1);
        }
        out.push(token.clone());
        i += 1;
    }
    Stripped {
        tokens: out,
        test_only: false,
    }
}

/// At `#[` or `#![`: whether it is an inner attribute and the index of its closing `]`.
fn attribute_at(tokens: &[Token], i: usize) -> Option<(bool, usize)> {
    if !tokens.get(i).is_some_and(|t| t.is_punct('#')) {
        return None;
    }
    let inner = tokens.get(i + 1).is_some_and(|t| t.is_punct('!'));
    let open = i + 1 + usize::from(inner);
    if !tokens.get(open).is_some_and(|t| t.is_punct('[')) {
        return None;
    }
    Some((inner, matching_close(tokens, open)?))
}

/// The index of the bracket closing the one at `open`, if it is closed.
fn matching_close(tokens: &[Token], open: usize) -> Option<usize> {
    let mut depth = 0usize;
    for (i, token) in tokens.iter().enumerate().skip(open) {
        match token.tok {
            Tok::Punct('(' | '[' | '{') => depth += 1,
            Tok::Punct(')' | ']' | '}') => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

/// `cfg(test)`, or `cfg(all(…, test, …))`: code that exists only in test builds.
/// `cfg(not(test))` and `cfg(any(test, …))` are production code.
fn is_cfg_test(attr: &[Token]) -> bool {
    attr.len() >= 3
        && attr[0].is_ident("cfg")
        && attr[1].is_punct('(')
        && attr[attr.len() - 1].is_punct(')')
        && test_only(&attr[2..attr.len() - 1])
}

fn test_only(predicate: &[Token]) -> bool {
    if predicate.len() == 1 {
        return predicate[0].is_ident("test");
    }
    if predicate.len() >= 3
        && predicate[0].is_ident("all")
        && predicate[1].is_punct('(')
        && predicate[predicate.len() - 1].is_punct(')')
    {
        return split_top_level(&predicate[2..predicate.len() - 1], ',')
            .into_iter()
            .any(test_only);
    }
    false
}

fn split_top_level(tokens: &[Token], separator: char) -> Vec<&[Token]> {
    let mut parts = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, token) in tokens.iter().enumerate() {
        match token.tok {
            Tok::Punct('(' | '[' | '{') => depth += 1,
            Tok::Punct(')' | ']' | '}') => depth = depth.saturating_sub(1),
            Tok::Punct(c) if c == separator && depth == 0 => {
                parts.push(&tokens[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&tokens[start..]);
    parts
}

const ITEM_KEYWORDS: &[&str] = &[
    "fn",
    "struct",
    "enum",
    "union",
    "trait",
    "impl",
    "mod",
    "use",
    "type",
    "const",
    "static",
    "extern",
    "macro_rules",
    "let",
];

/// The index just past the item (or field, variant or match arm) starting at `start`.
fn item_end(tokens: &[Token], start: usize) -> usize {
    let mut j = start;
    while let Some((_, close)) = attribute_at(tokens, j) {
        j = close + 1;
    }
    let mut k = skip_visibility(tokens, j);
    while tokens
        .get(k)
        .is_some_and(|t| t.is_ident("unsafe") || t.is_ident("async") || t.is_ident("default"))
    {
        k += 1;
    }
    // An item ends at `;` or its closing brace; a field, variant or arm may also end at `,`.
    let item = tokens.get(k).is_some_and(|t| {
        ITEM_KEYWORDS.iter().any(|kw| t.is_ident(kw))
            || (t.ident().is_some() && tokens.get(k + 1).is_some_and(|n| n.is_punct('!')))
    });
    let mut depth = 0usize;
    let mut i = j;
    while i < tokens.len() {
        match tokens[i].tok {
            Tok::Punct('(' | '[' | '{') => depth += 1,
            Tok::Punct(c @ (')' | ']' | '}')) => {
                if depth == 0 {
                    return i;
                }
                depth -= 1;
                if depth == 0 && c == '}' {
                    let after = i + 1;
                    let separator = if item { ';' } else { ',' };
                    let trailing = tokens.get(after).is_some_and(|t| t.is_punct(separator));
                    return after + usize::from(trailing);
                }
            }
            Tok::Punct(';') if depth == 0 => return i + 1,
            Tok::Punct(',') if depth == 0 && !item => return i + 1,
            _ => {}
        }
        i += 1;
    }
    tokens.len()
}

/// Past `pub`, `pub(crate)`, `pub(super)`, `pub(in path)`.
fn skip_visibility(tokens: &[Token], i: usize) -> usize {
    if !tokens.get(i).is_some_and(|t| t.is_ident("pub")) {
        return i;
    }
    if tokens.get(i + 1).is_some_and(|t| t.is_punct('(')) {
        return matching_close(tokens, i + 1).map_or(tokens.len(), |close| close + 1);
    }
    i + 1
}

/// `mod name;` (after any attributes and visibility): the name.
fn out_of_line_mod(item: &[Token]) -> Option<String> {
    let mut j = 0;
    while let Some((_, close)) = attribute_at(item, j) {
        j = close + 1;
    }
    let j = skip_visibility(item, j);
    match item.get(j..j + 3)? {
        [m, name, semi] if m.is_ident("mod") && semi.is_punct(';') => {
            name.ident().map(str::to_owned)
        }
        _ => None,
    }
}

/// A file's structure, from its production tokens.
#[derive(Debug, Default)]
pub struct Parsed {
    /// Index 0 is the file's own module; the rest are inline `mod name { … }` blocks.
    pub modules: Vec<ModuleItems>,
    pub uses: Vec<UseLeaf>,
    pub paths: Vec<InlinePath>,
}

/// One module's declarations, as far as this file holds them.
#[derive(Debug, Default)]
pub struct ModuleItems {
    /// Empty for the file's own module.
    pub name: String,
    /// The enclosing module in this file (None for the file's own module).
    pub parent: Option<usize>,
    /// `mod name;`: a child module in its own file.
    pub mod_decls: Vec<String>,
    /// `#[cfg(test)] mod name;`: a child module that is test code.
    pub test_mod_decls: Vec<String>,
    /// Names of items defined at this module's level (functions, types, constants, …).
    pub defined: BTreeSet<String>,
}

/// One leaf of a `use` tree: `use a::{b, c::d as e}` has the leaves `a::b` and `a::c::d`.
#[derive(Debug, Clone)]
pub struct UseLeaf {
    /// The module (index into [`Parsed::modules`]) the `use` is written in.
    pub module: usize,
    /// The full path; a leading `::` is the segment `"::"`; `{self}` is dropped.
    pub segments: Vec<String>,
    /// `use a::*`.
    pub glob: bool,
    /// The name the leaf brings into scope (None for globs and `as _`).
    pub local: Option<String>,
    /// Written with a visibility (`pub use`, `pub(crate) use`): a re-export.
    pub reexport: bool,
    /// At the module's own level (not inside a function body), so it names something for
    /// paths through this module.
    pub module_level: bool,
    /// The line of the leaf's last segment.
    pub line: usize,
    /// The lines the whole `use` statement spans.
    pub stmt_lines: (usize, usize),
}

/// A path written in code (not in a `use`), at least two segments long.
#[derive(Debug, Clone)]
pub struct InlinePath {
    pub module: usize,
    pub segments: Vec<String>,
    pub line: usize,
}

/// Reads a file's structure from its production tokens.
pub fn parse(tokens: &[Token]) -> Parsed {
    let mut parsed = Parsed {
        modules: vec![ModuleItems::default()],
        ..Parsed::default()
    };
    // One frame per open brace: the inline module it opens, if any.
    let mut frames: Vec<Option<usize>> = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        let module = frames.iter().rev().find_map(|f| *f).unwrap_or(0);
        let module_level = frames.last().is_none_or(Option::is_some);
        let token = &tokens[i];
        match &token.tok {
            Tok::TestModDecl(name) => parsed.modules[module].test_mod_decls.push(name.clone()),
            Tok::Punct('{') => frames.push(None),
            Tok::Punct('}') => {
                frames.pop();
            }
            Tok::Ident(word) if word == "use" && !follows_path_sep(tokens, i) => {
                i = parse_use(tokens, i, module, module_level, &mut parsed.uses);
                continue;
            }
            Tok::Ident(word) if word == "mod" => {
                let name = tokens.get(i + 1).and_then(Token::ident);
                let after = tokens.get(i + 2);
                match (name, after) {
                    (Some(name), Some(t)) if t.is_punct(';') => {
                        parsed.modules[module].mod_decls.push(name.to_owned());
                        i += 3;
                        continue;
                    }
                    (Some(name), Some(t)) if t.is_punct('{') => {
                        parsed.modules[module].defined.insert(name.to_owned());
                        parsed.modules.push(ModuleItems {
                            name: name.to_owned(),
                            parent: Some(module),
                            ..ModuleItems::default()
                        });
                        frames.push(Some(parsed.modules.len() - 1));
                        i += 3;
                        continue;
                    }
                    _ => {}
                }
            }
            Tok::Ident(word) => {
                if module_level && let Some(name) = defined_name(tokens, i, word) {
                    parsed.modules[module].defined.insert(name);
                }
                if let Some((segments, end)) = path_at(tokens, i) {
                    parsed.paths.push(InlinePath {
                        module,
                        segments,
                        line: token.line,
                    });
                    i = end;
                    continue;
                }
            }
            _ => {}
        }
        i += 1;
    }
    parsed
}

fn follows_path_sep(tokens: &[Token], i: usize) -> bool {
    i > 0 && tokens[i - 1].tok == Tok::PathSep
}

/// At an item keyword at module level: the name the item defines.
fn defined_name(tokens: &[Token], i: usize, word: &str) -> Option<String> {
    let next = |k: usize| tokens.get(i + k).and_then(Token::ident);
    let name = match word {
        "fn" | "struct" | "enum" | "trait" | "type" => next(1)?,
        "union"
            if tokens
                .get(i + 2)
                .is_some_and(|t| t.is_punct('{') || t.is_punct('<')) =>
        {
            next(1)?
        }
        "static" => match next(1)? {
            "mut" => next(2)?,
            name => name,
        },
        "const" => match next(1)? {
            "fn" | "unsafe" | "async" | "extern" | "_" => return None,
            name => name,
        },
        "macro_rules" if tokens.get(i + 1).is_some_and(|t| t.is_punct('!')) => next(2)?,
        _ => return None,
    };
    Some(name.to_owned())
}

/// A path starting at `i` (`a::b::c`, or `::a::b` from its leading `::`): its segments and
/// the index past it. Not a path: one segment (`foo::<T>`), the middle of a longer path, or
/// the path of `pub(in path)`.
fn path_at(tokens: &[Token], i: usize) -> Option<(Vec<String>, usize)> {
    let first = tokens[i].ident()?;
    if tokens.get(i + 1)?.tok != Tok::PathSep {
        return None;
    }
    let mut segments = Vec::new();
    if follows_path_sep(tokens, i) {
        let leading = i < 2 || !(tokens[i - 2].ident().is_some() || tokens[i - 2].is_punct('>'));
        if !leading {
            return None;
        }
        segments.push("::".to_owned());
    }
    if i >= 2 && tokens[i - 1].is_ident("in") && tokens[i - 2].is_punct('(') {
        return None;
    }
    segments.push(first.to_owned());
    let mut j = i + 1;
    while tokens.get(j).is_some_and(|t| t.tok == Tok::PathSep) {
        match tokens.get(j + 1).and_then(Token::ident) {
            Some(segment) => {
                segments.push(segment.to_owned());
                j += 2;
            }
            None => break,
        }
    }
    let named = segments.iter().filter(|s| *s != "::").count();
    (named >= 2).then_some((segments, j))
}

/// Parses `use …;` starting at the `use` keyword; returns the index past the statement.
fn parse_use(
    tokens: &[Token],
    at: usize,
    module: usize,
    module_level: bool,
    leaves: &mut Vec<UseLeaf>,
) -> usize {
    let reexport = at > 0
        && (tokens[at - 1].is_ident("pub")
            || (tokens[at - 1].is_punct(')') && {
                let open = (0..at - 1).rev().find(|&k| tokens[k].is_punct('('));
                open.is_some_and(|k| k > 0 && tokens[k - 1].is_ident("pub"))
            }));
    // The statement ends at the first `;` outside braces (or a stray closing brace).
    let mut depth = 0usize;
    let mut end = at + 1;
    while end < tokens.len() {
        match tokens[end].tok {
            Tok::Punct('{') => depth += 1,
            Tok::Punct('}') if depth == 0 => break,
            Tok::Punct('}') => depth -= 1,
            Tok::Punct(';') if depth == 0 => break,
            _ => {}
        }
        end += 1;
    }
    let body = &tokens[at + 1..end];
    let last_line = body.last().map_or(tokens[at].line, |t| t.line);
    let mut found = Vec::new();
    use_tree(body, 0, &[], &mut found);
    for (segments, glob, alias, line) in found {
        let mut segments = segments;
        let mut alias = alias;
        if !glob && segments.last().is_some_and(|s| s == "self") {
            segments.pop();
        }
        let local = if glob {
            None
        } else {
            match alias.take() {
                Some(name) if name == "_" => None,
                Some(name) => Some(name),
                None => segments.last().cloned(),
            }
        };
        if segments.is_empty() {
            continue;
        }
        leaves.push(UseLeaf {
            module,
            segments,
            glob,
            local,
            reexport,
            module_level,
            line,
            stmt_lines: (tokens[at].line, last_line),
        });
    }
    end + 1
}

type RawLeaf = (Vec<String>, bool, Option<String>, usize);

/// One use tree from `pos`; returns the index past it.
fn use_tree(toks: &[Token], mut pos: usize, prefix: &[String], out: &mut Vec<RawLeaf>) -> usize {
    let mut path = prefix.to_vec();
    if path.is_empty() && toks.get(pos).is_some_and(|t| t.tok == Tok::PathSep) {
        path.push("::".to_owned());
        pos += 1;
    }
    loop {
        let Some(token) = toks.get(pos) else {
            return pos;
        };
        match &token.tok {
            Tok::Ident(segment) => {
                path.push(segment.clone());
                pos += 1;
                match toks.get(pos) {
                    Some(t) if t.tok == Tok::PathSep => pos += 1,
                    Some(t) if t.is_ident("as") => {
                        let alias = toks.get(pos + 1).and_then(Token::ident).map(str::to_owned);
                        out.push((path, false, alias, token.line));
                        return pos + 2;
                    }
                    _ => {
                        out.push((path, false, None, token.line));
                        return pos;
                    }
                }
            }
            Tok::Punct('*') => {
                out.push((path, true, None, token.line));
                return pos + 1;
            }
            Tok::Punct('{') => {
                pos += 1;
                loop {
                    match toks.get(pos) {
                        None => return pos,
                        Some(t) if t.is_punct('}') => return pos + 1,
                        Some(t) if t.is_punct(',') => pos += 1,
                        Some(_) => {
                            let next = use_tree(toks, pos, &path, out);
                            // Always move on, even over a token the grammar does not allow.
                            pos = next.max(pos + 1);
                        }
                    }
                }
            }
            _ => return pos + 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lex::lex;

    fn parsed(src: &str) -> Parsed {
        parse(&strip_tests(lex(src)).tokens)
    }

    fn leaves(src: &str) -> Vec<String> {
        parsed(src)
            .uses
            .iter()
            .map(|u| {
                let mut text = u.segments.join("::");
                if u.glob {
                    text.push_str("::*");
                }
                if !u.glob && u.local.as_deref() != u.segments.last().map(String::as_str) {
                    text.push_str(&format!(" as {}", u.local.as_deref().unwrap_or("_")));
                }
                text
            })
            .collect()
    }

    #[test]
    fn nested_groups_renames_and_self_become_leaves() {
        let found = leaves(
            "pub(crate) use crate::{a::b, c::{self, d as e, f::*}};\nuse ::ext::x;\nuse super::g as _;",
        );
        assert_eq!(
            found,
            [
                "crate::a::b",
                "crate::c",
                "crate::c::d as e",
                "crate::c::f::*",
                "::::ext::x",
                "super::g as _",
            ]
        );
        let parsed = parsed("pub(crate) use crate::a::b;\nuse crate::c;");
        assert!(parsed.uses[0].reexport);
        assert!(!parsed.uses[1].reexport);
    }

    #[test]
    fn test_code_is_removed_and_test_module_files_are_named() {
        let src = "
            use crate::kept;
            #[cfg(test)]
            mod tests { use crate::gone; }
            #[cfg(all(test, feature = \"x\"))]
            fn helper() -> [u8; 2] { crate::gone::f() }
            #[cfg(not(test))]
            fn real() { crate::also_kept::f() }
            #[cfg(test)]
            #[path = \"t.rs\"]
            mod more_tests;
        ";
        let parsed = parsed(src);
        let uses: Vec<_> = parsed.uses.iter().map(|u| u.segments.join("::")).collect();
        assert_eq!(uses, ["crate::kept"]);
        let paths: Vec<_> = parsed.paths.iter().map(|p| p.segments.join("::")).collect();
        assert_eq!(paths, ["crate::also_kept::f"]);
        assert_eq!(parsed.modules[0].test_mod_decls, ["more_tests"]);
        assert!(strip_tests(lex("#![cfg(test)]\nuse tonic;")).test_only);
    }

    #[test]
    fn unfinished_source_never_panics() {
        let src = "#![allow(x)]\n#[cfg(test)] mod t;\npub(in crate::a) use crate::{b::{self, c as d}, e::*};\n\
                   mod m { #[cfg(test)] fn f<'a>(x: &'a [u8; 2]) -> char { '\\'' } }\n\
                   const S: &str = r#\"a\"#; fn g() { ::std::mem::drop(b'x'); }\n#[cfg(test)]";
        for (end, _) in src.char_indices() {
            let stripped = strip_tests(lex(&src[..end]));
            let _ = parse(&stripped.tokens);
        }
    }

    #[test]
    fn inline_modules_mod_declarations_and_defined_names() {
        let parsed = parsed(
            "pub mod a;\nmod b { pub fn inner() {} }\npub struct S;\nimpl S { fn method() {} }\nconst fn c() {}\nstatic mut M: u8 = 0;",
        );
        assert_eq!(parsed.modules[0].mod_decls, ["a"]);
        assert_eq!(parsed.modules[1].name, "b");
        assert!(parsed.modules[1].defined.contains("inner"));
        let top: Vec<_> = parsed.modules[0].defined.iter().cloned().collect();
        assert_eq!(top, ["M", "S", "b", "c"]);
    }
}
