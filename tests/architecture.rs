//! Rules about the shape of the source tree, checked by reading `src/` as text.
//!
//! - **No import cycle** between the library's top-level modules (`backend`,
//!   `nn`, `model_file`, …), nor between the CLI's subcommand modules: data
//!   flows one way, so a module can be read (and changed) knowing only the
//!   modules below it.
//! - **No function over [`MAX_FN_LINES`] lines**: a function fits on a screen.
//!
//! The scan is textual (comments and string literals blanked out first), not a
//! compiler: see [`module_graph`] for what counts as a dependency.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Longest function allowed in `src/`, from its `fn` line to its closing brace.
const MAX_FN_LINES: usize = 120;

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file under `dir`, sorted.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let p = entry.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|e| e == "rs") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// The source with comments, string literals and char literals replaced by
/// spaces (newlines kept, so line numbers and byte offsets stay the same).
fn blank_comments_and_strings(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = b.to_vec();
    let blank = |out: &mut Vec<u8>, from: usize, to: usize| {
        for c in &mut out[from..to] {
            if *c != b'\n' {
                *c = b' ';
            }
        }
    };
    let mut i = 0;
    while i < b.len() {
        let rest = &b[i..];
        if rest.starts_with(b"//") {
            let end = rest
                .iter()
                .position(|&c| c == b'\n')
                .map_or(b.len(), |e| i + e);
            blank(&mut out, i, end);
            i = end;
        } else if rest.starts_with(b"/*") {
            // Block comments nest in Rust.
            let (mut depth, mut j) = (0usize, i);
            while j < b.len() {
                if b[j..].starts_with(b"/*") {
                    depth += 1;
                    j += 2;
                } else if b[j..].starts_with(b"*/") {
                    depth -= 1;
                    j += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    j += 1;
                }
            }
            blank(&mut out, i, j);
            i = j;
        } else if let Some(end) = raw_string_end(b, i) {
            blank(&mut out, i, end);
            i = end;
        } else if b[i] == b'"' {
            let mut j = i + 1;
            while j < b.len() && b[j] != b'"' {
                j += if b[j] == b'\\' { 2 } else { 1 };
            }
            blank(&mut out, i, (j + 1).min(b.len()));
            i = j + 1;
        } else if b[i] == b'\'' {
            // A char literal ('x', '\n', '\u{1F600}', 'é') or a lifetime ('a).
            let end = if b.get(i + 1) == Some(&b'\\') {
                rest.iter()
                    .skip(2)
                    .position(|&c| c == b'\'')
                    .map(|e| i + e + 3)
            } else {
                let ch = src[i + 1..].chars().next().map_or(1, char::len_utf8);
                (b.get(i + 1 + ch) == Some(&b'\'')).then_some(i + ch + 2)
            };
            match end {
                Some(end) => {
                    blank(&mut out, i, end);
                    i = end;
                }
                None => i += 1,
            }
        } else {
            i += 1;
        }
    }
    String::from_utf8(out).expect("blanking keeps UTF-8 (only ASCII spaces replace bytes)")
}

/// If a raw string (`r"…"`, `r#"…"#`, `br"…"`) starts at `i`, where it ends.
fn raw_string_end(b: &[u8], i: usize) -> Option<usize> {
    if i > 0 && is_ident(b[i - 1]) {
        return None;
    }
    let mut j = i;
    if b.get(j) == Some(&b'b') {
        j += 1;
    }
    if b.get(j) != Some(&b'r') {
        return None;
    }
    j += 1;
    let hashes = b[j..].iter().take_while(|&&c| c == b'#').count();
    j += hashes;
    if b.get(j) != Some(&b'"') {
        return None;
    }
    let close: Vec<u8> = std::iter::once(b'"')
        .chain(std::iter::repeat_n(b'#', hashes))
        .collect();
    let end = b[j + 1..].windows(close.len()).position(|w| w == close)?;
    Some(j + 1 + end + close.len())
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

fn ident_at(s: &str, i: usize) -> &str {
    let len = s.as_bytes()[i..]
        .iter()
        .take_while(|&&c| is_ident(c))
        .count();
    &s[i..i + len]
}

fn skip_ws(s: &str, mut i: usize) -> usize {
    while i < s.len() && s.as_bytes()[i].is_ascii_whitespace() {
        i += 1;
    }
    i
}

/// A source file's module path: `src/nn/unet.rs` → `["nn", "unet"]`,
/// `src/nn/mod.rs` → `["nn"]`, `src/lib.rs` → `[]`.
fn module_path(file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src_dir()).unwrap();
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().unwrap();
    let stem = last.trim_end_matches(".rs");
    if !matches!(stem, "mod" | "lib" | "main") {
        parts.push(stem.to_string());
    }
    parts
}

/// The absolute module paths (as written, up to a `{` group or a non-path
/// token) that the code refers to, with the current module path at each one.
/// `crate::a::b`, `crate::{a::b, c}`, `self::…` and `super::…` (resolved
/// against the file's module and the inline `mod x { … }` blocks around it).
fn references(code: &str, file_module: &[String]) -> Vec<Vec<String>> {
    let b = code.as_bytes();
    let mut refs = Vec::new();
    // Inline modules open around the current position: (name, brace depth inside).
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    while i < b.len() {
        let word_start = is_ident(b[i]) && (i == 0 || !is_ident(b[i - 1]) && b[i - 1] != b'$');
        if b[i] == b'{' {
            depth += 1;
            i += 1;
        } else if b[i] == b'}' {
            if inline.last().is_some_and(|(_, d)| *d == depth) {
                inline.pop();
            }
            depth = depth.saturating_sub(1);
            i += 1;
        } else if word_start && ident_at(code, i) == "mod" {
            let n = skip_ws(code, i + 3);
            let name = ident_at(code, n).to_string();
            let after = skip_ws(code, n + name.len());
            if !name.is_empty() && b.get(after) == Some(&b'{') {
                inline.push((name, depth + 1));
            }
            i = n.max(i + 3);
        } else if word_start && matches!(ident_at(code, i), "crate" | "self" | "super") {
            let mut here: Vec<String> = file_module.to_vec();
            here.extend(inline.iter().map(|(n, _)| n.clone()));
            let (base, next) = path_base(code, i, &here);
            if let Some(base) = base {
                collect_paths(code, next, base, &mut refs);
            }
            i = next.max(i + 1);
        } else {
            i += 1;
        }
    }
    refs
}

/// Resolves the `crate::` / `self::` / `super::super::` prefix at `i` against
/// the module `here`; returns the base path and where the rest of the path starts.
fn path_base(code: &str, i: usize, here: &[String]) -> (Option<Vec<String>>, usize) {
    let first = ident_at(code, i);
    let mut j = i + first.len();
    if !code[j..].starts_with("::") {
        return (None, j); // `pub(crate)`, `&self`, …
    }
    j += 2;
    let mut base = here.to_vec();
    let up = |base: &mut Vec<String>| {
        if base.pop().is_none() {
            panic!("`super::` above the crate root in {here:?}");
        }
    };
    match first {
        "crate" => base.clear(),
        "super" => up(&mut base),
        _ => {} // self
    }
    while ident_at(code, j) == "super" && code[j + 5..].starts_with("::") {
        up(&mut base);
        j += 7;
    }
    (Some(base), j)
}

/// Appends the paths starting at `i` under `base`: a plain path or a `{ … }` group.
fn collect_paths(code: &str, i: usize, base: Vec<String>, refs: &mut Vec<Vec<String>>) {
    let b = code.as_bytes();
    if b.get(i) == Some(&b'{') {
        // Split the group at its top-level commas; each part is a path under `base`.
        let (mut depth, mut start, mut j) = (0usize, i + 1, i);
        while j < b.len() {
            match b[j] {
                b'{' => depth += 1,
                b'}' => {
                    depth -= 1;
                    if depth == 0 {
                        collect_paths(code, skip_ws(code, start), base.clone(), refs);
                        return;
                    }
                }
                b',' if depth == 1 => {
                    collect_paths(code, skip_ws(code, start), base.clone(), refs);
                    start = j + 1;
                }
                _ => {}
            }
            j += 1;
        }
        return;
    }
    let mut path = base;
    let mut j = i;
    loop {
        let word = ident_at(code, j);
        if word.is_empty() {
            break;
        }
        path.push(word.to_string());
        j += word.len();
        if !code[j..].starts_with("::") {
            break;
        }
        j += 2;
        if b.get(j) == Some(&b'{') {
            collect_paths(code, j, path, refs);
            return;
        }
    }
    if !path.is_empty() {
        refs.push(path);
    }
}

/// Items the crate root re-exports (`pub use backend::{Backend, …};` in
/// lib.rs) and macros exported at the root (`#[macro_export]`), each with
/// the top-level module that defines it.
fn root_items(files: &[(PathBuf, String)], root: &str) -> BTreeMap<String, String> {
    let mut items = BTreeMap::new();
    for line in root.lines() {
        let Some(rest) = line.trim().strip_prefix("pub use ") else {
            continue;
        };
        let rest = rest.trim_end_matches(';');
        let (module, names) = rest.split_once("::").expect("a `pub use module::…` line");
        for name in names.trim_matches(|c| c == '{' || c == '}').split(',') {
            let name = name.trim().rsplit("::").next().unwrap().to_string();
            items.insert(name, module.to_string());
        }
    }
    for (file, code) in files {
        let mut rest = code.as_str();
        while let Some(at) = rest.find("#[macro_export]") {
            rest = &rest[at..];
            let m = rest
                .find("macro_rules!")
                .expect("macro_rules! after #[macro_export]");
            let name = ident_at(rest, skip_ws(rest, m + "macro_rules!".len()));
            items.insert(name.to_string(), module_path(file)[0].clone());
            rest = &rest[m..];
        }
    }
    items
}

/// The dependency graph between the children of module `level` (`[]` for the
/// library's top-level modules, `["cli"]` for the CLI's subcommands): an edge
/// A → B for each path in A's files that names B or something in B, through
/// `crate::`, `self::` or `super::`. `#[cfg(test)]` code inside src/ counts
/// like any other. Files directly in `level` (its `mod.rs`) are the node
/// `level` itself: a child may use its parent's helpers, which form a node
/// that the children then sit on. Not seen: relative paths starting with a
/// child module's name (`use unet::X` inside `nn`), which Rust allows only in
/// the parent, where they are downward edges.
fn module_graph(files: &[PathBuf], level: &[&str]) -> BTreeMap<String, BTreeSet<String>> {
    let sources: Vec<(PathBuf, String)> = files
        .iter()
        .map(|f| {
            let text = std::fs::read_to_string(f).unwrap();
            (f.clone(), blank_comments_and_strings(&text))
        })
        .collect();
    let lib = std::fs::read_to_string(src_dir().join("lib.rs")).unwrap();
    let roots = root_items(&sources, &blank_comments_and_strings(&lib));
    let node_of = |path: &[String]| -> Option<String> {
        if path.len() < level.len() || path.iter().zip(level).any(|(a, b)| a != b) {
            return None;
        }
        Some(
            path.get(level.len())
                .cloned()
                .unwrap_or_else(|| level.join("::")),
        )
    };
    let children: BTreeSet<String> = files
        .iter()
        .filter_map(|f| node_of(&module_path(f)))
        .collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (file, code) in &sources {
        let Some(from) = node_of(&module_path(file)) else {
            continue;
        };
        let edges = graph.entry(from.clone()).or_default();
        for mut path in references(code, &module_path(file)) {
            if level.is_empty() && path.len() == 1 && !children.contains(&path[0]) {
                // `crate::Error`, `crate::with_backend!`: the module behind the root item.
                let module = roots.get(&path[0]).unwrap_or_else(|| {
                    panic!(
                        "{}: `crate::{}` is neither a module nor a root re-export",
                        file.display(),
                        path[0]
                    )
                });
                path = vec![module.clone()];
            }
            if let Some(to) = node_of(&path) {
                if to != from && children.contains(&to) {
                    edges.insert(to);
                }
            }
        }
    }
    graph
}

/// A cycle in `graph` (as the list of nodes around it), if there is one.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    // Depth-first search; a back edge to a node on the stack closes a cycle.
    fn visit(
        n: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = stack.iter().position(|s| s == n) {
            let mut cycle = stack[at..].to_vec();
            cycle.push(n.to_string());
            return Some(cycle);
        }
        if done.contains(n) {
            return None;
        }
        stack.push(n.to_string());
        for m in graph.get(n).into_iter().flatten() {
            if let Some(c) = visit(m, graph, stack, done) {
                return Some(c);
            }
        }
        stack.pop();
        done.insert(n.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|n| visit(n, graph, &mut Vec::new(), &mut done))
}

fn describe(graph: &BTreeMap<String, BTreeSet<String>>) -> String {
    graph
        .iter()
        .map(|(n, to)| {
            format!(
                "  {n} → {}",
                to.iter().cloned().collect::<Vec<_>>().join(", ")
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The library's top-level modules (every file under src/ but the binary's
/// `main.rs` and `cli/`) form no cycle. `lib.rs` is the crate root, not a
/// node: it only declares the modules and re-exports items, and those
/// re-exports are followed, so `crate::Error` is an edge to `error`, and an
/// exported macro (`crate::with_backend!`) an edge to the module defining it.
/// `error` is an ordinary node (it happens to depend on nothing).
#[test]
fn library_modules_form_no_cycle() {
    let files: Vec<PathBuf> = rust_files(&src_dir())
        .into_iter()
        .filter(|f| {
            let p = module_path(f);
            !(p.is_empty() || p[0] == "cli")
        })
        .collect();
    let graph = module_graph(&files, &[]);
    assert!(
        graph.len() > 10,
        "too few modules found:\n{}",
        describe(&graph)
    );
    if let Some(cycle) = find_cycle(&graph) {
        panic!(
            "import cycle between src/ modules: {}\nthe graph:\n{}",
            cycle.join(" → "),
            describe(&graph)
        );
    }
}

/// The CLI's subcommand modules (src/cli/, in the `scoredd` binary, whose
/// `crate::` is `main.rs`) form no cycle either; `cli` is its `mod.rs`.
#[test]
fn cli_modules_form_no_cycle() {
    let files: Vec<PathBuf> = rust_files(&src_dir().join("cli"));
    let graph = module_graph(&files, &["cli"]);
    assert!(
        graph.len() > 3,
        "too few modules found:\n{}",
        describe(&graph)
    );
    if let Some(cycle) = find_cycle(&graph) {
        panic!(
            "import cycle between src/cli/ modules: {}\nthe graph:\n{}",
            cycle.join(" → "),
            describe(&graph)
        );
    }
}

/// The scan itself: a cycle is found, and paths in groups, `super::` and
/// inline modules resolve where Rust resolves them.
#[test]
fn the_scan_sees_cycles_and_resolves_paths() {
    let g = |edges: &[(&str, &str)]| {
        let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (a, b) in edges {
            g.entry(a.to_string()).or_default().insert(b.to_string());
            g.entry(b.to_string()).or_default();
        }
        g
    };
    assert_eq!(find_cycle(&g(&[("a", "b"), ("b", "c"), ("a", "c")])), None);
    assert_eq!(
        find_cycle(&g(&[("a", "b"), ("b", "c"), ("c", "a")])).map(|c| c.len()),
        Some(4)
    );
    let code = blank_comments_and_strings(
        "use crate::{a::X, b::{c::Y, Z}};\n// crate::nope\nlet s = \"crate::nope\";\n\
         fn f() { super::d::g(); }\nmod tests { use super::*; use super::super::e; }\n",
    );
    let refs = references(&code, &["m".to_string(), "n".to_string()]);
    let flat: Vec<String> = refs.iter().map(|r| r.join("::")).collect();
    assert_eq!(flat, ["a::X", "b::c::Y", "b::Z", "m::d::g", "m::n", "m::e"]);
}

/// Every `fn` with a body in `text` (already blanked): (name, first line, line count).
fn functions(text: &str) -> Vec<(String, usize, usize)> {
    let b = text.as_bytes();
    let line_of = |at: usize| text[..at].matches('\n').count() + 1;
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(at) = text[i..].find("fn") {
        let at = i + at;
        i = at + 2;
        let starts_word = at == 0 || !is_ident(b[at - 1]);
        let name_at = skip_ws(text, at + 2);
        if !starts_word
            || name_at == at + 2
            || !b[name_at].is_ascii_alphabetic() && b[name_at] != b'_'
        {
            continue; // `fn(…)` pointer types, `Fn`, `define_fn`, …
        }
        let name = ident_at(text, name_at).to_string();
        // The body starts at the first `{` outside ()/[]/<>; a `;` there first
        // means a declaration without a body (a trait method).
        let mut depth = 0i32;
        let mut j = name_at + name.len();
        let open = loop {
            match b.get(j) {
                None => break None,
                Some(b'(' | b'[') => depth += 1,
                Some(b')' | b']') => depth -= 1,
                Some(b'{') if depth == 0 => break Some(j),
                Some(b';') if depth == 0 => break None,
                _ => {}
            }
            j += 1;
        };
        let Some(open) = open else { continue };
        let mut braces = 0i32;
        let mut k = open;
        while k < b.len() {
            match b[k] {
                b'{' => braces += 1,
                b'}' => {
                    braces -= 1;
                    if braces == 0 {
                        break;
                    }
                }
                _ => {}
            }
            k += 1;
        }
        let first = line_of(at);
        out.push((name, first, line_of(k.min(b.len() - 1)) - first + 1));
    }
    out
}

#[test]
fn no_function_is_longer_than_a_screen() {
    let (mut long, mut seen) = (Vec::new(), 0);
    for file in rust_files(&src_dir()) {
        let text = blank_comments_and_strings(&std::fs::read_to_string(&file).unwrap());
        for (name, line, lines) in functions(&text) {
            seen += 1;
            if lines > MAX_FN_LINES {
                let rel = file.strip_prefix(src_dir().parent().unwrap()).unwrap();
                long.push(format!("{}:{line} fn {name}: {lines} lines", rel.display()));
            }
        }
    }
    assert!(
        seen > 500,
        "only {seen} functions found: is the scan broken?"
    );
    assert!(
        long.is_empty(),
        "functions longer than {MAX_FN_LINES} lines (split them into named steps):\n  {}",
        long.join("\n  ")
    );
}

#[test]
fn the_function_scan_measures_bodies() {
    let code = blank_comments_and_strings(
        "trait T { fn decl(&self) -> [u8; 4]; }\nfn a(x: fn(u8) -> u8) -> [u8; 2] {\n  let s = \"}\";\n  '}';\n}\n",
    );
    let f = functions(&code);
    assert_eq!(f, [("a".to_string(), 2, 4)]);
}
