//! The layering of `src/`, kept true by a check rather than by memory: reads
//! the "Who may import whom" list in ARCHITECTURE.md and every `src/**/*.rs`
//! of the library, and fails when
//! - a top-level module refers to another (`use crate::x…`, a `crate::x…`
//!   path, or `super::` reaching out of it) that its line does not allow;
//! - a top-level module has no line (a new module must take its place);
//! - the list itself allows a cycle;
//! - two sibling modules anywhere import each other, directly or round a
//!   longer cycle (`socketio::engine::polling` ↔ `request` was one).
//!
//! Code only: comments, strings and `#[cfg(test)]` modules are left out (a
//! unit test may build a fixture from a higher layer). The binary's own
//! modules (`main.rs` and the `mod`s it declares) use the library through
//! `roomcast::` and are not checked.
//!
//! Plain std, no crate of ours: it can be compiled on its own against another
//! tree (`CARGO_MANIFEST_DIR=<tree> rustc --edition 2024 --test
//! tests/import_rules.rs`), which is how it was shown to fail before the
//! cycles were broken.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

type Module = Vec<String>;

/// The rules: top-level module → the modules it may import; `None` for
/// "anything" (the wiring at the top).
type Rules = BTreeMap<String, Option<BTreeSet<String>>>;

const SECTION: &str = "## Who may import whom";

#[test]
fn modules_import_only_what_architecture_md_allows() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let architecture = fs::read_to_string(root.join("ARCHITECTURE.md")).expect("ARCHITECTURE.md");
    let rules = parse_rules(&architecture);
    assert!(rules.len() > 5, "no rules found under {SECTION:?}");
    let files = library_files(&root.join("src"));
    assert!(files.len() > 20, "no sources found");
    let problems = check(&rules, &files);
    assert!(
        problems.is_empty(),
        "imports against ARCHITECTURE.md's {SECTION:?}:\n  {}",
        problems.join("\n  ")
    );
}

/// The checker catches what it is for (so a pass above means something).
#[test]
fn the_checker_finds_a_forbidden_import_and_a_sibling_cycle() {
    let rules = parse_rules(
        "## Who may import whom\n\n\
         - `http`: `transports`\n\
         - `transports`: nothing\n\
         - `server`: anything\n\n## Next\n- `x`: `y`\n",
    );
    assert_eq!(rules.len(), 3, "the list ends at the next heading");
    let file = |path: &str, text: &str| (PathBuf::from(path), text.to_owned());
    let files = vec![
        file("transports/ws.rs", "use crate::http::{self, Refusal};\n"),
        file(
            "transports/a/one.rs",
            "use super::{two::X, Y};\n// crate::http in a comment\n",
        ),
        file(
            "transports/a/two.rs",
            "fn f() { super::one::g(\"crate::http\") }",
        ),
        file(
            "http/mod.rs",
            "use crate::transports::ws;\n#[cfg(test)]\nmod tests { use crate::server; }\n",
        ),
        file("server.rs", "use crate::{http, transports::ws};"),
    ];
    let problems = check(&rules, &files);
    assert_eq!(
        problems,
        [
            "`transports` imports `http` (src/transports/ws.rs): not in its line",
            "sibling modules import each other: transports::a::one -> transports::a::two -> transports::a::one",
        ]
    );
    let cyclic = parse_rules("## Who may import whom\n- `a`: `b`\n- `b`: `a`\n");
    assert_eq!(
        check(&cyclic, &[]),
        ["the list allows a cycle: a -> b -> a"]
    );
}

/// Reads the lines "- `a`, `b`: `c`, `d`" (or `nothing`, `anything`) of the
/// section, up to the next heading.
fn parse_rules(architecture: &str) -> Rules {
    let mut rules = Rules::new();
    let Some(start) = architecture.find(SECTION) else {
        return rules;
    };
    let section = &architecture[start + SECTION.len()..];
    let section = &section[..section.find("\n#").unwrap_or(section.len())];
    for line in section.lines() {
        let Some(line) = line.strip_prefix("- ") else {
            continue;
        };
        let Some((modules, allowed)) = line.split_once(':') else {
            continue;
        };
        let allowed = if allowed.trim_start().starts_with("anything") {
            None
        } else {
            Some(ticked(allowed).collect::<BTreeSet<_>>())
        };
        for module in ticked(modules) {
            rules.insert(module, allowed.clone());
        }
    }
    rules
}

/// The `names` in backticks of a list.
fn ticked(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split('`').skip(1).step_by(2).map(str::to_owned)
}

/// Every library source under `src`, as (path under `src`, text), without
/// the binary's files.
fn library_files(src: &Path) -> Vec<(PathBuf, String)> {
    let main = fs::read_to_string(src.join("main.rs")).unwrap_or_default();
    let binary: BTreeSet<String> = main
        .lines()
        .filter_map(|line| line.trim().strip_prefix("mod "))
        .map(|name| name.trim_end_matches(';').trim().to_owned())
        .collect();
    let mut paths = Vec::new();
    walk(src, &mut paths);
    let mut files = Vec::new();
    for path in paths {
        let relative = path.strip_prefix(src).expect("under src");
        let module = module_of(relative);
        let is_binary = relative == Path::new("main.rs")
            || module.first().is_some_and(|top| binary.contains(top));
        if module.is_empty() || is_binary {
            continue;
        }
        let text = fs::read_to_string(&path).expect("readable source");
        files.push((relative.to_owned(), text));
    }
    files
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .expect("readable dir")
        .map(|entry| entry.expect("dir entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            walk(&path, out);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            out.push(path);
        }
    }
}

/// `transports/ws/mod.rs` → `transports::ws`; `lib.rs` → the crate root.
fn module_of(relative: &Path) -> Module {
    let mut module: Module = relative
        .with_extension("")
        .iter()
        .map(|part| part.to_string_lossy().into_owned())
        .collect();
    if matches!(
        module.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        module.pop();
    }
    module
}

fn check(rules: &Rules, files: &[(PathBuf, String)]) -> Vec<String> {
    let mut problems = Vec::new();
    for cycle in cycles(&allowed_graph(rules)) {
        problems.push(format!("the list allows a cycle: {}", cycle.join(" -> ")));
    }
    // Sibling edges, keyed by their parent; and the top-level imports seen.
    let mut siblings: BTreeMap<Module, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    let mut reported = BTreeSet::new();
    for (file, text) in files {
        let module = &module_of(file);
        let Some(top) = module.first() else {
            continue; // the crate root only declares the modules
        };
        if !rules.contains_key(top) && reported.insert(top.clone()) {
            problems.push(format!("`{top}` has no line in the list"));
        }
        for path in references(module, text) {
            let common = module.iter().zip(&path).take_while(|(a, b)| a == b).count();
            if common == module.len() || common == path.len() {
                continue; // itself, an ancestor or a descendant
            }
            if common == 0 {
                let allowed = match rules.get(top) {
                    Some(Some(allowed)) => allowed.contains(&path[0]),
                    _ => true, // "anything", or reported above
                };
                if !allowed && reported.insert(format!("{top}->{}", path[0])) {
                    problems.push(format!(
                        "`{top}` imports `{}` (src/{}): not in its line",
                        path[0],
                        file.display()
                    ));
                }
            }
            siblings
                .entry(module[..common].to_vec())
                .or_default()
                .entry(module[common].clone())
                .or_default()
                .insert(path[common].clone());
        }
    }
    for (parent, graph) in &siblings {
        if parent.is_empty() {
            continue; // the top level: the rules above
        }
        let parent = parent.join("::");
        for cycle in cycles(graph) {
            let named: Vec<String> = cycle
                .iter()
                .map(|name| format!("{parent}::{name}"))
                .collect();
            problems.push(format!(
                "sibling modules import each other: {}",
                named.join(" -> ")
            ));
        }
    }
    problems
}

fn allowed_graph(rules: &Rules) -> BTreeMap<String, BTreeSet<String>> {
    rules
        .iter()
        .filter_map(|(module, allowed)| Some((module.clone(), allowed.clone()?)))
        .collect()
}

/// Each cycle of `graph` once, from its smallest name back to it: `[a, b, a]`.
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    let mut found = BTreeSet::new();
    for start in graph.keys() {
        // Depth-first from `start`, through names after it only, back to it.
        let mut stack = vec![(start.clone(), vec![start.clone()])];
        while let Some((node, path)) = stack.pop() {
            for next in graph.get(&node).into_iter().flatten() {
                if next == start {
                    let mut cycle = path.clone();
                    cycle.push(start.clone());
                    found.insert(cycle);
                } else if next > start && !path.contains(next) {
                    let mut longer = path.clone();
                    longer.push(next.clone());
                    stack.push((next.clone(), longer));
                }
            }
        }
    }
    found.into_iter().collect()
}

/// Every module path `text` (the source of `module`) refers to through
/// `crate::`, `super::` or `self::`, with use-groups expanded.
fn references(module: &Module, text: &str) -> Vec<Module> {
    let code = without_tests(&code_only(text));
    let bytes = code.as_bytes();
    let mut found = Vec::new();
    let mut at = 0;
    while at < code.len() {
        let rest = &code[at..];
        let starts_word =
            at == 0 || !is_ident(bytes[at - 1]) && bytes[at - 1] != b'$' && bytes[at - 1] != b':';
        let base: Option<Module> = if !starts_word {
            None
        } else if rest.starts_with("crate::") {
            Some(Vec::new())
        } else if rest.starts_with("super::") || rest.starts_with("self::") {
            Some(module.clone())
        } else {
            None
        };
        let Some(mut base) = base else {
            at += 1;
            continue;
        };
        // Leading `super::`s go up; `self::` stays.
        let mut cursor = at;
        if code[cursor..].starts_with("crate::") {
            cursor += "crate::".len();
        } else if code[cursor..].starts_with("self::") {
            cursor += "self::".len();
        }
        while code[cursor..].starts_with("super::") {
            base.pop();
            cursor += "super::".len();
        }
        let (paths, end) = use_tree(&code, cursor);
        for path in paths {
            let mut full = base.clone();
            full.extend(path);
            found.push(full);
        }
        at = end.max(at + 1);
    }
    found
}

/// Parses a use tree at `at` (`a::b`, `a::{b, c::d}`, `*`): its paths and
/// where it ends.
fn use_tree(code: &str, mut at: usize) -> (Vec<Module>, usize) {
    let bytes = code.as_bytes();
    let mut prefix = Module::new();
    loop {
        skip_space(bytes, &mut at);
        if at < bytes.len() && bytes[at] == b'{' {
            at += 1;
            let mut paths = Vec::new();
            loop {
                skip_space(bytes, &mut at);
                if at >= bytes.len() || bytes[at] == b'}' {
                    break;
                }
                let (inner, end) = use_tree(code, at);
                for path in inner {
                    let mut full = prefix.clone();
                    full.extend(path.into_iter().filter(|part| part != "self"));
                    paths.push(full);
                }
                at = end;
                skip_space(bytes, &mut at);
                if at < bytes.len() && bytes[at] == b',' {
                    at += 1;
                } else {
                    // `as name`, or something that is no use tree: skip to the
                    // next item or the group's end.
                    while at < bytes.len() && !matches!(bytes[at], b',' | b'}') {
                        at += 1;
                    }
                    if at < bytes.len() && bytes[at] == b',' {
                        at += 1;
                    }
                }
            }
            return (paths, (at + 1).min(bytes.len()));
        }
        let start = at;
        while at < bytes.len() && is_ident(bytes[at]) {
            at += 1;
        }
        if at == start {
            return (vec![prefix], at); // `*` or the end of the path
        }
        prefix.push(code[start..at].to_owned());
        if code[at..].starts_with("::") {
            at += 2;
        } else {
            return (vec![prefix], at);
        }
    }
}

fn skip_space(bytes: &[u8], at: &mut usize) {
    while *at < bytes.len() && bytes[*at].is_ascii_whitespace() {
        *at += 1;
    }
}

fn is_ident(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'_'
}

/// The source without comments, string and char literals (each replaced by
/// a space, so nothing inside them looks like a path or a brace).
fn code_only(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            out.push(' ');
        } else if c == 'r'
            && (next == Some('"') || next == Some('#'))
            && (i == 0 || !(chars[i - 1].is_alphanumeric() || chars[i - 1] == '_'))
        {
            // Raw string r"…" / r#"…"#.
            let mut hashes = 0;
            let mut j = i + 1;
            while chars.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if chars.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            j += 1;
            let closing: Vec<char> = std::iter::once('"')
                .chain(std::iter::repeat_n('#', hashes))
                .collect();
            while j < chars.len() && !chars[j..].starts_with(&closing) {
                j += 1;
            }
            i = (j + closing.len()).min(chars.len());
            out.push(' ');
        } else if c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            out.push(' ');
        } else if c == '\'' && (next == Some('\\') || chars.get(i + 2) == Some(&'\'')) {
            // A char literal ('x', '\n', '\u{…}'); a lifetime has no closing quote.
            let mut j = i + 2;
            while j < chars.len() && chars[j] != '\'' {
                j += 1;
            }
            i = j + 1;
            out.push(' ');
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// The code without `#[cfg(test)]` items (test modules, test-only functions).
fn without_tests(code: &str) -> String {
    let mut out = String::with_capacity(code.len());
    let mut rest = code;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let item = &rest[at..];
        // The item ends at its `;` or at the `}` closing its first `{`.
        let mut depth = 0usize;
        let mut end = item.len();
        for (i, byte) in item.bytes().enumerate() {
            match byte {
                b';' if depth == 0 => {
                    end = i + 1;
                    break;
                }
                b'{' => depth += 1,
                b'}' => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        end = i + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        rest = &item[end..];
    }
    out.push_str(rest);
    out
}
