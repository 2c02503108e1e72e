//! The layering of `src/` (ARCHITECTURE.md, "Code map"), checked by parsing the
//! code with `syn`, not by grep: every `use` tree is expanded (`use crate::{a, b}`,
//! `use std::{fs, io}`, renames, `super::`/`self::` resolved against the module
//! the item sits in, inline `mod`s included), every path in items, types and
//! expressions is expanded through the file's imports (`Instant::now` after
//! `use std::time::Instant`), and macro bodies are scanned for `crate::x`
//! token sequences. Two rules:
//!
//! * each module may import only the crate modules its layer allows ([`RULES`]);
//! * `core` is pure: no I/O crates or modules, no clock, no randomness ([`IMPURE`]).
//!
//! `scripts/check-layers.sh` runs this test; the planted violations below show
//! that each form is caught.

use proc_macro2::{TokenStream, TokenTree};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use syn::visit::Visit;

/// Module prefix → the crate modules it may import (besides itself). The
/// longest matching prefix applies. This is the DAG drawn in ARCHITECTURE.md.
const RULES: &[(&str, &[&str])] = &[
    ("core", &[]),
    ("config", &["core"]),
    ("spool", &["core"]),
    ("shutdown", &[]),
    ("pipeline", &["core", "config", "spool", "shutdown"]),
    ("ops::metrics", &["core"]),
    (
        "ingest",
        &["core", "config", "spool", "shutdown", "ops::metrics"],
    ),
    ("ops", &["core", "config", "spool", "shutdown", "pipeline"]),
    (
        "app",
        &[
            "core", "config", "spool", "shutdown", "pipeline", "ingest", "ops",
        ],
    ),
    ("cli", &["core", "config", "app", "ops"]),
    (
        "",
        &[
            "core", "config", "spool", "shutdown", "pipeline", "ingest", "ops", "app", "cli",
        ],
    ),
];

/// Paths `core` must not reach (a prefix of the expanded path, or a suffix for
/// the clocks).
const IMPURE: &[&str] = &[
    "tokio",
    "nix",
    "libc",
    "notify",
    "russh",
    "rand",
    "std::fs",
    "std::process",
    "std::thread",
    "std::env",
    "std::net::TcpStream",
    "std::net::TcpListener",
    "std::net::UdpSocket",
    "std::net::ToSocketAddrs",
    "std::io::stdin",
    "std::io::stdout",
    "std::io::stderr",
];
const IMPURE_SUFFIX: &[&str] = &["SystemTime::now", "Instant::now"];

fn allowed_for(module: &str) -> (&'static str, &'static [&'static str]) {
    RULES
        .iter()
        .filter(|(p, _)| p.is_empty() || module == *p || module.starts_with(&format!("{p}::")))
        .max_by_key(|(p, _)| p.len())
        .map(|(p, a)| (*p, *a))
        .unwrap()
}

fn under(path: &str, prefix: &str) -> bool {
    path == prefix || path.starts_with(&format!("{prefix}::"))
}

/// A crate-internal path (without `crate::`) that `module` may not import, or
/// an impure path in `core`.
fn violation(module: &str, full: &str) -> Option<String> {
    if let Some(inner) = full.strip_prefix("crate::") {
        let (own, allowed) = allowed_for(module);
        let top = inner.split("::").next().unwrap_or("");
        if !own.is_empty() && under(inner, own) {
            return None;
        }
        if own.is_empty() && top == module.split("::").next().unwrap_or("") {
            return None;
        }
        if allowed.iter().any(|a| under(inner, a)) {
            return None;
        }
        return Some(format!("{module} may not import crate::{inner}"));
    }
    if under(module, "core") {
        let p = full.trim_start_matches("::");
        if IMPURE.iter().any(|i| under(p, i)) || IMPURE_SUFFIX.iter().any(|s| p.ends_with(s)) {
            return Some(format!("core must stay pure: {p}"));
        }
    }
    None
}

struct Checker {
    /// The module of the file, then inline `mod`s.
    stack: Vec<String>,
    /// Names brought in by `use` (per file: good enough for aliases), to full paths.
    aliases: BTreeMap<String, String>,
    /// (module, full path) of every path seen.
    seen: Vec<(String, String)>,
}

impl Checker {
    fn module(&self) -> String {
        self.stack
            .iter()
            .filter(|s| !s.is_empty())
            .cloned()
            .collect::<Vec<_>>()
            .join("::")
    }

    /// `segs` as a full path: `super`/`self` resolved, the first segment
    /// expanded through the imports.
    fn resolve(&self, segs: &[String]) -> String {
        let mut module: Vec<String> = self
            .stack
            .iter()
            .filter(|s| !s.is_empty())
            .cloned()
            .collect();
        let mut i = 0;
        let mut relative = false;
        while i < segs.len() && (segs[i] == "super" || segs[i] == "self") {
            if segs[i] == "super" {
                module.pop();
            }
            relative = true;
            i += 1;
        }
        let rest = &segs[i..];
        if relative {
            let mut v = vec!["crate".to_string()];
            v.extend(module);
            v.extend(rest.iter().cloned());
            return v.join("::");
        }
        if let Some(first) = rest.first() {
            if let Some(full) = self.aliases.get(first) {
                let mut v = vec![full.clone()];
                v.extend(rest[1..].iter().cloned());
                return v.join("::");
            }
        }
        rest.join("::")
    }

    fn record(&mut self, segs: &[String]) {
        if segs.is_empty() {
            return;
        }
        let full = self.resolve(segs);
        self.seen.push((self.module(), full));
    }

    /// Expand a use tree into (alias, full path) pairs and record each path.
    fn use_tree(&mut self, prefix: &mut Vec<String>, t: &syn::UseTree) {
        match t {
            syn::UseTree::Path(p) => {
                prefix.push(p.ident.to_string());
                self.use_tree(prefix, &p.tree);
                prefix.pop();
            }
            syn::UseTree::Name(n) => {
                let name = n.ident.to_string();
                let mut segs = prefix.clone();
                if name != "self" {
                    segs.push(name.clone());
                }
                let full = self.resolve(&segs);
                let alias = if name == "self" {
                    prefix.last().cloned().unwrap_or_default()
                } else {
                    name
                };
                self.seen.push((self.module(), full.clone()));
                self.aliases.insert(alias, full);
            }
            syn::UseTree::Rename(r) => {
                let mut segs = prefix.clone();
                if r.ident != "self" {
                    segs.push(r.ident.to_string());
                }
                let full = self.resolve(&segs);
                self.seen.push((self.module(), full.clone()));
                self.aliases.insert(r.rename.to_string(), full);
            }
            syn::UseTree::Glob(_) => {
                let full = self.resolve(prefix);
                self.seen.push((self.module(), full));
            }
            syn::UseTree::Group(g) => {
                for t in &g.items {
                    self.use_tree(prefix, t);
                }
            }
        }
    }

    /// `crate :: a :: b` (and `super ::`) sequences inside a macro's tokens.
    fn tokens(&mut self, ts: TokenStream) {
        let toks: Vec<TokenTree> = ts.into_iter().collect();
        let mut i = 0;
        while i < toks.len() {
            match &toks[i] {
                TokenTree::Group(g) => self.tokens(g.stream()),
                TokenTree::Ident(id)
                    if id == "crate" || id == "super" || id == "std" || id == "tokio" =>
                {
                    let mut segs = vec![id.to_string()];
                    let mut j = i + 1;
                    loop {
                        let colons = matches!((toks.get(j), toks.get(j + 1)),
                            (Some(TokenTree::Punct(a)), Some(TokenTree::Punct(b))) if a.as_char() == ':' && b.as_char() == ':');
                        match (colons, toks.get(j + 2)) {
                            (true, Some(TokenTree::Ident(n))) => {
                                segs.push(n.to_string());
                                j += 3;
                            }
                            _ => break,
                        }
                    }
                    if segs.len() > 1 {
                        self.record(&segs);
                    }
                    i = j;
                    continue;
                }
                _ => {}
            }
            i += 1;
        }
    }
}

impl<'a> Visit<'a> for Checker {
    fn visit_item_use(&mut self, u: &'a syn::ItemUse) {
        // (`use ::std::fs` is the same as `use std::fs` here)
        self.use_tree(&mut Vec::new(), &u.tree);
    }

    fn visit_item_mod(&mut self, m: &'a syn::ItemMod) {
        if m.content.is_some() {
            self.stack.push(m.ident.to_string());
            syn::visit::visit_item_mod(self, m);
            self.stack.pop();
        }
    }

    fn visit_path(&mut self, p: &'a syn::Path) {
        let segs: Vec<String> = p.segments.iter().map(|s| s.ident.to_string()).collect();
        if segs.len() > 1 || segs.first().is_some_and(|s| self.aliases.contains_key(s)) {
            self.record(&segs);
        }
        syn::visit::visit_path(self, p);
    }

    fn visit_macro(&mut self, m: &'a syn::Macro) {
        self.tokens(m.tokens.clone());
        syn::visit::visit_macro(self, m);
    }
}

/// The violations in one file whose module path is `module` ("" for lib.rs).
fn check_source(module: &str, src: &str) -> Result<Vec<String>, String> {
    let file = syn::parse_file(src).map_err(|e| format!("{module}: {e}"))?;
    let mut c = Checker {
        stack: module.split("::").map(str::to_string).collect(),
        aliases: BTreeMap::new(),
        seen: Vec::new(),
    };
    // imports first, so that a path used above its `use` still expands
    for item in &file.items {
        if let syn::Item::Use(u) = item {
            c.visit_item_use(u);
        }
    }
    c.seen.clear();
    c.visit_file(&file);
    let mut out: Vec<String> = c.seen.iter().filter_map(|(m, p)| violation(m, p)).collect();
    out.sort();
    out.dedup();
    Ok(out)
}

/// `src/a/b.rs` → `a::b`; `src/a/mod.rs` → `a`; `src/lib.rs` → "".
fn module_of(rel: &Path) -> String {
    let mut parts: Vec<String> = rel
        .with_extension("")
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts
        .last()
        .is_some_and(|l| l == "mod" || l == "lib" || l == "main")
    {
        parts.pop();
    }
    parts.join("::")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn the_tree_keeps_its_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    assert!(files.len() > 20, "found {} files", files.len());
    let mut bad = Vec::new();
    let mut edges: BTreeSet<(String, String)> = BTreeSet::new();
    for f in &files {
        let rel = f.strip_prefix(&src).unwrap();
        let module = module_of(rel);
        let text = std::fs::read_to_string(f).unwrap();
        match check_source(&module, &text) {
            Ok(v) => bad.extend(v.into_iter().map(|v| format!("{}: {v}", rel.display()))),
            Err(e) => bad.push(e),
        }
        // the top-level edges, for the picture in ARCHITECTURE.md
        let file = syn::parse_file(&text).unwrap();
        let mut c = Checker {
            stack: module.split("::").map(str::to_string).collect(),
            aliases: BTreeMap::new(),
            seen: vec![],
        };
        c.visit_file(&file);
        let from = module.split("::").next().unwrap_or("").to_string();
        for (_, p) in c.seen {
            if let Some(inner) = p.strip_prefix("crate::") {
                let mut to = inner.split("::").next().unwrap_or("").to_string();
                if inner.starts_with("ops::metrics") {
                    to = "ops::metrics".into();
                }
                if to != from && !to.is_empty() {
                    edges.insert((
                        if from.is_empty() {
                            "lib".into()
                        } else {
                            from.clone()
                        },
                        to,
                    ));
                }
            }
        }
    }
    eprintln!("module edges (from -> to):");
    for (a, b) in &edges {
        eprintln!("  {a} -> {b}");
    }
    assert!(
        bad.is_empty(),
        "layering violations (ARCHITECTURE.md):\n{}",
        bad.join("\n")
    );
}

/// Each form a grep would miss is caught.
#[test]
fn planted_violations_are_caught() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "core::naming",
            "use crate::{ingest, ops};",
            "core::naming may not import crate::ingest",
        ),
        (
            "core::naming",
            "use std::{fs, io};",
            "core must stay pure: std::fs",
        ),
        (
            "core::naming",
            "use std::time::Instant; fn f() { let _ = Instant::now(); }",
            "std::time::Instant::now",
        ),
        (
            "core::naming",
            "fn f() { let _ = ::std::fs::read(\"x\"); }",
            "std::fs::read",
        ),
        (
            "core::naming",
            "use std::fs as f; fn g() { f::read(\"x\"); }",
            "std::fs",
        ),
        (
            "core::naming",
            "fn f() { tokio::spawn(async {}); }",
            "tokio::spawn",
        ),
        (
            "core::naming",
            "fn f() { rand::random::<u8>(); }",
            "rand::random",
        ),
        (
            "pipeline::archive",
            "fn f() { crate::ingest::vfs::lookup(); }",
            "pipeline::archive may not import crate::ingest::vfs::lookup",
        ),
        (
            "pipeline::archive",
            "fn f() { tracing::info!(\"{}\", crate::ops::health::X); }",
            "crate::ops::health::X",
        ),
        (
            "pipeline::archive",
            "use super::super::ingest::writer;",
            "crate::ingest::writer",
        ),
        (
            "pipeline",
            "mod inner { use super::super::ops; }",
            "pipeline::inner may not import crate::ops",
        ),
        (
            "ingest::ssh::server",
            "use crate::ops::{metrics::Metrics, http};",
            "crate::ops::http",
        ),
        (
            "ingest::ssh::server",
            "use crate::ops;",
            "may not import crate::ops",
        ),
        (
            "spool",
            "use crate::pipeline::state;",
            "spool may not import crate::pipeline::state",
        ),
        (
            "ops::metrics",
            "use crate::spool::Spool;",
            "ops::metrics may not import crate::spool::Spool",
        ),
    ];
    for (module, src, want) in cases {
        let v = check_source(module, src).unwrap();
        assert!(
            v.iter().any(|l| l.contains(want)),
            "{module}: {src:?} must be refused ({want:?}); got {v:?}"
        );
    }
    // and what is allowed passes
    for (module, src) in [
        (
            "ingest::ssh::server",
            "use crate::ops::metrics::Metrics; use crate::spool::Spool;",
        ),
        (
            "core::sftp::session",
            "use super::ranges::Ranges; use crate::core::vpath;",
        ),
        (
            "core::naming",
            "use std::time::Duration; use std::collections::BTreeMap;",
        ),
        ("app", "use crate::{ingest, ops, pipeline};"),
    ] {
        assert_eq!(
            check_source(module, src).unwrap(),
            Vec::<String>::new(),
            "{module}: {src}"
        );
    }
}
