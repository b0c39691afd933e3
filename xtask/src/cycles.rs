//! `cargo xtask cycles`: import circles between the top-level modules of
//! each workspace crate (issue 25).
//!
//! For every library and binary target of every workspace member, the
//! module tree is read from its root file (`mod x;` → `x.rs` or
//! `x/mod.rs`, inline `mod x { … }` followed), and every `crate::` and
//! `super::` path in a module (comments and string literals stripped) is an
//! edge from the top-level module it is written in to the top-level module
//! it names. A name the crate root re-exports (`pub use execute::Outcome`)
//! counts as the module it comes from. Items of the root file itself
//! (`lib.rs`) are nobody's module and make no edge; `$crate::` (macros) is
//! skipped.
//!
//! Strongly connected components of more than one module are the circles:
//! each is printed with its members, the shortest circle through each
//! member, and the edges inside it, each with the first place it is written. The exit code
//! is 1 when a crate that is checked has a circle; `--crate NAME` checks only
//! the named crates (by package name, its short name in the workspace, or its
//! folder) and prints the others without failing on them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// `cargo xtask cycles`'s options.
#[derive(clap::Args)]
pub struct Options {
    /// Fail only on circles in these crates (package name, short name or
    /// folder); the others are printed. Repeatable. Without it, every crate
    /// is checked.
    #[arg(long = "crate", value_name = "NAME")]
    crates: Vec<String>,
}

/// Runs the check; `Err` (exit 1) when a checked crate has a circle.
pub fn run(options: &Options) -> Result<()> {
    let targets = workspace_targets()?;
    for wanted in &options.crates {
        if !targets.iter().any(|t| t.matches(wanted)) {
            bail!("no workspace crate is called {wanted:?}");
        }
    }
    let mut failing = Vec::new();
    for target in &targets {
        let checked = options.crates.is_empty() || options.crates.iter().any(|c| target.matches(c));
        let graph = Graph::of(&target.root)
            .with_context(|| format!("reading {}", target.root.display()))?;
        let circles = graph.circles();
        let label = format!("{} ({})", target.package, target.kind);
        if circles.is_empty() {
            println!("{label}: {} modules, no circle", graph.modules.len());
            continue;
        }
        let verdict = if checked { "" } else { " (not checked)" };
        println!(
            "{label}: {} modules, {} circle(s){verdict}",
            graph.modules.len(),
            circles.len()
        );
        for circle in &circles {
            println!(
                "  {} modules in one circle: {}",
                circle.len(),
                circle.join(", ")
            );
            for short in graph.shortest_circles(circle) {
                println!("    {} → {}", short.join(" → "), short[0]);
            }
            println!("   edges:");
            for from in circle {
                for (to, place) in graph.edges.get(from).into_iter().flatten() {
                    if circle.contains(to) {
                        println!("    {from} → {to}  ({place})");
                    }
                }
            }
        }
        if checked {
            failing.push(label);
        }
    }
    if failing.is_empty() {
        Ok(())
    } else {
        bail!("import circles in {}", failing.join(", "))
    }
}

/// One library or binary target of a workspace member.
struct Target {
    package: String,
    kind: String,
    /// The member's folder, relative to the workspace root.
    folder: String,
    root: PathBuf,
}

impl Target {
    fn matches(&self, name: &str) -> bool {
        let short = self
            .package
            .strip_prefix("service-test-")
            .unwrap_or(&self.package);
        self.package == name || short == name || self.folder == name
    }
}

fn workspace_targets() -> Result<Vec<Target>> {
    let root = crate::workspace_root();
    let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--offline",
        ])
        .current_dir(&root)
        .output()
        .context("running cargo metadata")?;
    if !out.status.success() {
        bail!("cargo metadata: {}", String::from_utf8_lossy(&out.stderr));
    }
    let meta: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("cargo metadata's JSON")?;
    let mut targets = Vec::new();
    for package in meta["packages"].as_array().into_iter().flatten() {
        let name = package["name"].as_str().unwrap_or_default().to_string();
        let manifest = PathBuf::from(package["manifest_path"].as_str().unwrap_or_default());
        let folder = manifest
            .parent()
            .and_then(|p| p.strip_prefix(&root).ok())
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        for target in package["targets"].as_array().into_iter().flatten() {
            let kinds: Vec<&str> = target["kind"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|k| k.as_str())
                .collect();
            let kind = if kinds
                .iter()
                .any(|k| k.ends_with("lib") || *k == "proc-macro")
            {
                "lib".to_string()
            } else if kinds.contains(&"bin") {
                format!("bin {}", target["name"].as_str().unwrap_or_default())
            } else {
                continue;
            };
            targets.push(Target {
                package: name.clone(),
                kind,
                folder: folder.clone(),
                root: PathBuf::from(target["src_path"].as_str().unwrap_or_default()),
            });
        }
    }
    targets.sort_by(|a, b| (&a.package, &a.kind).cmp(&(&b.package, &b.kind)));
    Ok(targets)
}

/// The top-level modules of one crate and the edges between them.
struct Graph {
    modules: BTreeSet<String>,
    /// from → (to → the first place the edge is written).
    edges: BTreeMap<String, BTreeMap<String, String>>,
}

/// A path as written: where, and its segments from the crate root.
struct Reference {
    place: String,
    /// The module it is written in, from the crate root (empty: the root).
    from: Vec<String>,
    /// The first segment it names below the crate root.
    to: String,
}

impl Graph {
    fn of(root: &Path) -> Result<Graph> {
        let dir = root.parent().map(Path::to_path_buf).unwrap_or_default();
        let mut modules = BTreeSet::new();
        let mut references = Vec::new();
        let mut reexports = BTreeMap::new();
        let mut pending = vec![(root.to_path_buf(), Vec::<String>::new())];
        while let Some((file, path)) = pending.pop() {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let tokens = tokenize(&text);
            let shown = file
                .strip_prefix(crate::workspace_root())
                .unwrap_or(&file)
                .display()
                .to_string();
            let scan = scan(&tokens, &path, &shown);
            for child in scan.files {
                let rel: PathBuf = child.iter().collect();
                let flat = dir.join(&rel).with_extension("rs");
                let nested = dir.join(&rel).join("mod.rs");
                let found = if flat.exists() { flat } else { nested };
                pending.push((found, child));
            }
            if path.is_empty() {
                modules.extend(scan.top_level);
                reexports = scan.reexports;
            }
            references.extend(scan.references);
        }
        let mut edges: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        for r in references {
            let Some(from) = r.from.first() else { continue };
            let to = if modules.contains(&r.to) {
                r.to
            } else if let Some(m) = reexports.get(&r.to) {
                m.clone()
            } else {
                continue;
            };
            if *from != to {
                edges
                    .entry(from.clone())
                    .or_default()
                    .entry(to)
                    .or_insert(r.place);
            }
        }
        Ok(Graph { modules, edges })
    }

    /// Strongly connected components of more than one module (Tarjan).
    fn circles(&self) -> Vec<Vec<String>> {
        struct State<'a> {
            g: &'a Graph,
            index: BTreeMap<&'a str, usize>,
            low: BTreeMap<&'a str, usize>,
            stack: Vec<&'a str>,
            on_stack: BTreeSet<&'a str>,
            out: Vec<Vec<String>>,
        }
        fn visit<'a>(s: &mut State<'a>, v: &'a str) {
            let n = s.index.len();
            s.index.insert(v, n);
            s.low.insert(v, n);
            s.stack.push(v);
            s.on_stack.insert(v);
            for w in s.g.edges.get(v).into_iter().flat_map(|e| e.keys()) {
                let w = w.as_str();
                if !s.index.contains_key(w) {
                    visit(s, w);
                    let lw = s.low[w];
                    let lv = s.low.get_mut(v).expect("visited");
                    *lv = (*lv).min(lw);
                } else if s.on_stack.contains(w) {
                    let iw = s.index[w];
                    let lv = s.low.get_mut(v).expect("visited");
                    *lv = (*lv).min(iw);
                }
            }
            if s.low[v] == s.index[v] {
                let mut component = Vec::new();
                while let Some(w) = s.stack.pop() {
                    s.on_stack.remove(w);
                    component.push(w.to_string());
                    if w == v {
                        break;
                    }
                }
                if component.len() > 1 {
                    component.sort();
                    s.out.push(component);
                }
            }
        }
        let mut s = State {
            g: self,
            index: BTreeMap::new(),
            low: BTreeMap::new(),
            stack: Vec::new(),
            on_stack: BTreeSet::new(),
            out: Vec::new(),
        };
        for m in &self.modules {
            if !s.index.contains_key(m.as_str()) {
                visit(&mut s, m);
            }
        }
        let mut out = s.out;
        out.sort();
        out
    }

    /// The shortest circle through each member, each once (written from
    /// its alphabetically first module).
    fn shortest_circles(&self, circle: &[String]) -> Vec<Vec<String>> {
        let mut found: BTreeSet<Vec<String>> = BTreeSet::new();
        for m in circle {
            let Some(mut path) = self.shortest(m, circle, |w| w == m) else {
                continue;
            };
            path.insert(0, m.clone());
            path.pop();
            let first = (0..path.len()).min_by_key(|i| &path[*i]).unwrap_or(0);
            path.rotate_left(first);
            found.insert(path);
        }
        found.into_iter().collect()
    }

    /// The shortest path (without `from`) inside `within` to a module `goal` accepts.
    fn shortest(
        &self,
        from: &str,
        within: &[String],
        goal: impl Fn(&String) -> bool,
    ) -> Option<Vec<String>> {
        let mut previous: BTreeMap<String, String> = BTreeMap::new();
        let mut queue = std::collections::VecDeque::from([from.to_string()]);
        let mut seen = BTreeSet::from([from.to_string()]);
        while let Some(v) = queue.pop_front() {
            for w in self.edges.get(&v).into_iter().flat_map(|e| e.keys()) {
                if !within.contains(w) {
                    continue;
                }
                if goal(w) {
                    let mut path = vec![w.clone()];
                    let mut at = v.clone();
                    while at != from {
                        path.push(at.clone());
                        at = previous[&at].clone();
                    }
                    path.reverse();
                    return Some(path);
                }
                if seen.insert(w.clone()) {
                    previous.insert(w.clone(), v.clone());
                    queue.push_back(w.clone());
                }
            }
        }
        None
    }
}

/// What one file declares and refers to.
struct Scan {
    /// Module paths declared here whose body is another file.
    files: Vec<Vec<String>>,
    /// For the root file: its modules (file or inline).
    top_level: Vec<String>,
    /// For the root file: names it re-exports → the module they come from.
    reexports: BTreeMap<String, String>,
    references: Vec<Reference>,
}

#[derive(Debug, PartialEq)]
enum Tok {
    Ident(String),
    /// `::`
    Path,
    Punct(char),
}

/// Rust source as identifiers, `::` and single punctuation, with line
/// numbers; comments, string and character literals dropped.
fn tokenize(text: &str) -> Vec<(Tok, usize)> {
    let b: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let (mut i, mut line) = (0, 1);
    let count_lines = |from: usize, to: usize| {
        b[from..to.min(b.len())]
            .iter()
            .filter(|c| **c == '\n')
            .count()
    };
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied();
        if c == '\n' {
            line += 1;
            i += 1;
        } else if c.is_whitespace() {
            i += 1;
        } else if c == '/' && next == Some('/') {
            while i < b.len() && b[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let (start, mut depth) = (i, 0usize);
            while i < b.len() {
                if b[i] == '/' && b.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if b[i] == '*' && b.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            line += count_lines(start, i);
        } else if c == '"' || ((c == 'r' || c == 'b' || c == 'c') && raw_or_byte_string(&b, i)) {
            let start = i;
            i = skip_string(&b, i);
            line += count_lines(start, i);
        } else if c == '\'' {
            // A character literal ('a', '\n', '\u{..}') or a lifetime ('a).
            if next == Some('\\') {
                i += 2;
                while i < b.len() && b[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if b.get(i + 2) == Some(&'\'') {
                i += 3;
            } else {
                i += 1;
                while i < b.len() && (b[i].is_alphanumeric() || b[i] == '_') {
                    i += 1;
                }
            }
        } else if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < b.len() && (b[i].is_alphanumeric() || b[i] == '_') {
                i += 1;
            }
            let word: String = b[start..i].iter().collect();
            // `r#ident`
            if word == "r" && b.get(i) == Some(&'#') {
                i += 1;
                continue;
            }
            out.push((Tok::Ident(word), line));
        } else if c.is_ascii_digit() {
            while i < b.len() && (b[i].is_alphanumeric() || b[i] == '_' || b[i] == '.') {
                i += 1;
            }
        } else if c == ':' && next == Some(':') {
            out.push((Tok::Path, line));
            i += 2;
        } else {
            out.push((Tok::Punct(c), line));
            i += 1;
        }
    }
    out
}

/// Does a raw, byte or C string literal start at `i` (`r"`, `r#"`, `b"`, `br"`, `c"`)?
fn raw_or_byte_string(b: &[char], i: usize) -> bool {
    if i > 0 && (b[i - 1].is_alphanumeric() || b[i - 1] == '_') {
        return false;
    }
    let mut j = i + 1;
    if (b[i] == 'b' || b[i] == 'c') && b.get(j) == Some(&'r') {
        j += 1;
    }
    while b.get(j) == Some(&'#') && (b[i] == 'r' || b.get(i + 1) == Some(&'r')) {
        j += 1;
    }
    b.get(j) == Some(&'"')
}

/// The index after the string literal starting at `i`.
fn skip_string(b: &[char], mut i: usize) -> usize {
    let mut raw = false;
    while b[i] != '"' && b[i] != '#' {
        raw |= b[i] == 'r';
        i += 1;
    }
    let mut hashes = 0;
    while b[i] == '#' {
        hashes += 1;
        i += 1;
    }
    raw |= hashes > 0;
    i += 1; // the opening quote
    while i < b.len() {
        if !raw && b[i] == '\\' {
            i += 2;
            continue;
        }
        if b[i] == '"' && (0..hashes).all(|k| b.get(i + 1 + k) == Some(&'#')) {
            return i + 1 + hashes;
        }
        i += 1;
    }
    i
}

fn scan(tokens: &[(Tok, usize)], path: &[String], shown: &str) -> Scan {
    let ident = |k: usize| match tokens.get(k) {
        Some((Tok::Ident(s), _)) => Some(s.as_str()),
        _ => None,
    };
    let is = |k: usize, t: &Tok| tokens.get(k).map(|(x, _)| x) == Some(t);
    let mut scan = Scan {
        files: Vec::new(),
        top_level: Vec::new(),
        reexports: BTreeMap::new(),
        references: Vec::new(),
    };
    // Inline modules open here: (name, brace depth inside it).
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0usize;
    let mut k = 0;
    while k < tokens.len() {
        let here: Vec<String> = path
            .iter()
            .cloned()
            .chain(inline.iter().map(|(n, _)| n.clone()))
            .collect();
        match &tokens[k].0 {
            Tok::Punct('{') => depth += 1,
            Tok::Punct('}') => {
                if inline.last().is_some_and(|(_, d)| *d == depth) {
                    inline.pop();
                }
                depth = depth.saturating_sub(1);
            }
            Tok::Ident(w) if w == "mod" => {
                if let Some(name) = ident(k + 1) {
                    let mut child = here.clone();
                    child.push(name.to_string());
                    if is(k + 2, &Tok::Punct(';')) {
                        scan.files.push(child);
                        if here.is_empty() {
                            scan.top_level.push(name.to_string());
                        }
                    } else if is(k + 2, &Tok::Punct('{')) {
                        if here.is_empty() {
                            scan.top_level.push(name.to_string());
                        }
                        inline.push((name.to_string(), depth + 1));
                        depth += 1;
                        k += 3;
                        continue;
                    }
                }
            }
            Tok::Ident(w) if w == "use" && here.is_empty() && depth == 0 => {
                // A root re-export: its leaves name the module it starts from.
                let mut j = k + 1;
                while matches!(ident(j), Some("crate" | "self")) && is(j + 1, &Tok::Path) {
                    j += 2;
                }
                if let (Some(module), true) = (ident(j), is(j + 1, &Tok::Path)) {
                    let module = module.to_string();
                    while j < tokens.len() && !is(j, &Tok::Punct(';')) {
                        let leaf = ident(j).filter(|_| {
                            matches!(
                                tokens.get(j + 1).map(|t| &t.0),
                                Some(Tok::Punct(',' | '}' | ';'))
                            )
                        });
                        if let Some(leaf) = leaf {
                            scan.reexports.insert(leaf.to_string(), module.clone());
                        }
                        j += 1;
                    }
                }
            }
            Tok::Ident(w) if (w == "crate" || w == "super") && is(k + 1, &Tok::Path) => {
                let after_dollar = k > 0 && is(k - 1, &Tok::Punct('$'));
                // The module the path starts from, and where its first segment is.
                let mut base: Vec<String> = if w == "crate" {
                    Vec::new()
                } else {
                    here.clone()
                };
                let mut j = k;
                while ident(j) == Some("super") && is(j + 1, &Tok::Path) {
                    base.pop();
                    j += 2;
                }
                if w == "crate" {
                    j += 2;
                }
                let line = tokens[k].1;
                let mut firsts = Vec::new();
                if let Some(first) = ident(j) {
                    firsts.push(first.to_string());
                } else if is(j, &Tok::Punct('{')) {
                    // A group: the first segment of each element.
                    let mut d = 0;
                    let mut element_start = true;
                    while j < tokens.len() {
                        match &tokens[j].0 {
                            Tok::Punct('{') => {
                                d += 1;
                                element_start = d == 1;
                            }
                            Tok::Punct('}') => {
                                d -= 1;
                                if d == 0 {
                                    break;
                                }
                            }
                            Tok::Punct(',') if d == 1 => element_start = true,
                            Tok::Ident(s) if element_start && d == 1 => {
                                firsts.push(s.clone());
                                element_start = false;
                            }
                            _ => {}
                        }
                        j += 1;
                    }
                }
                if !after_dollar {
                    for first in firsts {
                        let to = match base.first() {
                            // Below a top-level module: that module.
                            Some(top) => top.clone(),
                            None if first == "self" => continue,
                            None => first,
                        };
                        scan.references.push(Reference {
                            place: format!("{shown}:{line}"),
                            from: here.clone(),
                            to,
                        });
                    }
                }
            }
            _ => {}
        }
        k += 1;
    }
    scan
}
