//! The docs book (`docs/src`, mdBook layout) and the README cannot rot silently: every page is
//! in SUMMARY.md and every SUMMARY entry exists; every relative link in the README, the book and
//! docs/architecture.md points at a file that exists and, with `#anchor`, at a heading of that
//! page under mdBook's id rule (lowercase; letters, digits, `-` and `_` kept; spaces to `-`;
//! the rest dropped; a repeated heading gets `-1`, `-2`, …). The book builds with mdBook, and
//! every block marked ```` ```console,runnable ```` runs and shows what the page says.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use clockpath_tests::workspace;
use pulldown_cmark::{Event, HeadingLevel, Options, Parser, Tag, TagEnd};

/// mdBook's heading id.
fn heading_id(text: &str) -> String {
    text.chars()
        .filter_map(|c| {
            if c.is_alphanumeric() || c == '_' || c == '-' {
                Some(c.to_ascii_lowercase())
            } else if c.is_whitespace() {
                Some('-')
            } else {
                None
            }
        })
        .collect()
}

struct Page {
    links: Vec<String>,
    ids: BTreeSet<String>,
}

fn parse(path: &Path) -> Page {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let (mut links, mut ids, mut seen) = (Vec::new(), BTreeSet::new(), BTreeMap::<String, usize>::new());
    let mut heading: Option<String> = None;
    for ev in Parser::new_ext(&text, Options::ENABLE_TABLES | Options::ENABLE_FOOTNOTES) {
        match ev {
            Event::Start(Tag::Heading { level, .. }) if level != HeadingLevel::H6 => heading = Some(String::new()),
            Event::End(TagEnd::Heading(_)) => {
                if let Some(h) = heading.take() {
                    let id = heading_id(&h);
                    let n = seen.entry(id.clone()).or_default();
                    ids.insert(if *n == 0 { id.clone() } else { format!("{id}-{n}") });
                    *n += 1;
                }
            }
            Event::Text(t) | Event::Code(t) => {
                if let Some(h) = heading.as_mut() {
                    h.push_str(&t);
                }
            }
            Event::Start(Tag::Link { dest_url, .. }) | Event::Start(Tag::Image { dest_url, .. }) => {
                links.push(dest_url.to_string())
            }
            _ => {}
        }
    }
    Page { links, ids }
}

/// URL prefixes of the repository's files, as the book links them (Cargo.toml's `repository`).
const REPOSITORY_URLS: [&str; 2] =
    ["https://github.com/clockpath/clockpath/blob/main/", "https://github.com/clockpath/clockpath/tree/main/"];

/// Broken relative links of `file`, as "file: link (why)".
fn broken_links(file: &Path, pages: &mut BTreeMap<PathBuf, Page>) -> Vec<String> {
    let page = pages.entry(file.to_path_buf()).or_insert_with(|| parse(file));
    let links = page.links.clone();
    let dir = file.parent().expect("a file's directory");
    let mut broken = Vec::new();
    let root = workspace();
    let book = root.join("docs/src");
    let book = book.canonicalize().unwrap_or(book);
    let in_book = file.canonicalize().is_ok_and(|f| f.starts_with(&book));
    for link in links {
        // The repository's own files by URL (how the book reaches outside itself): they exist.
        if let Some(rest) = REPOSITORY_URLS.iter().find_map(|u| link.strip_prefix(u)) {
            let path = rest.split('#').next().unwrap_or_default();
            if !root.join(path).exists() {
                broken.push(format!("{}: {link} (no {path} in the repository)", file.display()));
            }
            continue;
        }
        if link.contains("://") || link.starts_with("mailto:") {
            continue;
        }
        let (target, anchor) = match link.split_once('#') {
            Some((t, a)) => (t, Some(a)),
            None => (link.as_str(), None),
        };
        let target = if target.is_empty() { file.to_path_buf() } else { dir.join(target) };
        let Ok(target) = target.canonicalize() else {
            broken.push(format!("{}: {link} (no such file)", file.display()));
            continue;
        };
        // A relative link out of the book works in the repository but not in the built HTML.
        if in_book && !target.starts_with(&book) {
            broken.push(format!("{}: {link} (leaves the book: link {}… instead)", file.display(), REPOSITORY_URLS[0]));
        }
        if let Some(a) = anchor
            && target.extension().is_some_and(|e| e == "md")
        {
            let ids = &pages.entry(target.clone()).or_insert_with(|| parse(&target)).ids;
            if !ids.contains(a) {
                broken.push(format!("{}: {link} (no heading #{a} in {})", file.display(), target.display()));
            }
        }
    }
    broken
}

#[test]
fn the_book_and_the_readme_have_no_broken_links_and_every_page_is_in_the_summary() {
    let root = workspace();
    let src = root.join("docs/src");
    let summary = src.join("SUMMARY.md");
    let listed: BTreeSet<PathBuf> = parse(&summary)
        .links
        .iter()
        .map(|l| src.join(l).canonicalize().unwrap_or_else(|e| panic!("SUMMARY.md lists {l}: {e}")))
        .collect();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&src)
        .expect("docs/src")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .map(|p| p.canonicalize().expect("canonical"))
        .collect();
    files.sort();
    let unlisted: Vec<_> = files.iter().filter(|f| !listed.contains(*f) && !f.ends_with("SUMMARY.md")).collect();
    assert!(unlisted.is_empty(), "pages not in SUMMARY.md (mdBook would not build them): {unlisted:?}");
    assert!(files.len() >= 10, "the book has {} pages", files.len());

    let mut pages = BTreeMap::new();
    let mut broken = Vec::new();
    for f in files.iter().chain([&root.join("README.md"), &root.join("docs/architecture.md")]) {
        broken.extend(broken_links(f, &mut pages));
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
    // The check can fail: a link to a missing heading is caught.
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.md");
    std::fs::write(&bad, "# Title\n\n[x](bad.md#title) [y](bad.md#nope) [z](missing.md)\n").expect("write");
    let found = broken_links(&bad, &mut BTreeMap::new());
    assert_eq!(found.len(), 2, "{found:?}");
}

#[test]
fn the_readme_is_a_front_door() {
    let readme = std::fs::read_to_string(workspace().join("README.md")).expect("README.md");
    let lines = readme.lines().count();
    assert!(lines <= 300, "README.md has {lines} lines: detail belongs in the book (docs/src)");
    for word in ["development VM", "issue ", "the investigation"] {
        assert!(!readme.contains(word), "README.md uses the project-internal words `{word}`");
    }
    for f in ["LICENSE-MIT", "LICENSE-APACHE"] {
        assert!(workspace().join(f).exists(), "{f} is missing");
    }
}

/// The book builds with mdBook (the version `scripts/setup.sh` pins), with no warning or error,
/// into one HTML page per page of SUMMARY.md.
#[test]
fn the_book_builds_with_mdbook() {
    let mdbook = clockpath_tests::which("mdbook").unwrap_or_else(|| {
        panic!("`mdbook` not found: scripts/setup.sh installs it (cargo install mdbook --no-default-features)")
    });
    let out_dir = tempfile::tempdir().expect("tempdir");
    let o = std::process::Command::new(&mdbook)
        .arg("build")
        .arg(workspace().join("docs"))
        .arg("--dest-dir")
        .arg(out_dir.path())
        .output()
        .expect("run mdbook");
    let log = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "mdbook build failed:\n{log}");
    assert!(!log.contains("WARN") && !log.contains("ERROR"), "mdbook build warned:\n{log}");
    let src = workspace().join("docs/src");
    for l in parse(&src.join("SUMMARY.md")).links {
        let html = out_dir.path().join(l.replace(".md", ".html"));
        assert!(html.is_file(), "{l} was not built ({})", html.display());
    }
}

/// A block of a page, marked to be run: its commands (`$ ` lines) and, after each, the lines
/// its output must contain in order (a line ending in `…` matches by prefix, `…` alone skips).
#[derive(Debug)]
struct Runnable {
    at: String,
    steps: Vec<(String, Vec<String>)>,
}

/// The ```` ```console,runnable ```` blocks of a Markdown file.
fn runnable_blocks(path: &Path) -> Vec<Runnable> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut blocks = Vec::new();
    let mut current: Option<Runnable> = None;
    for (i, line) in text.lines().enumerate() {
        match current.as_mut() {
            None if line.trim_start().starts_with("```") && line.contains("runnable") => {
                assert!(line.contains("console"), "{}:{}: runnable blocks are `console`", path.display(), i + 1);
                current = Some(Runnable { at: format!("{}:{}", path.display(), i + 1), steps: Vec::new() });
            }
            None => {}
            Some(_) if line.trim_start().starts_with("```") => blocks.extend(current.take()),
            Some(b) => match line.strip_prefix("$ ") {
                Some(cmd) => b.steps.push((cmd.to_string(), Vec::new())),
                None => match b.steps.last_mut() {
                    Some((_, expect)) => expect.push(line.to_string()),
                    None => panic!("{}: output before the first `$ ` command", b.at),
                },
            },
        }
    }
    assert!(current.is_none(), "{}: an unclosed runnable block", path.display());
    blocks
}

/// Why `output` does not show `expect` in order, if it does not.
fn missing_output(output: &str, expect: &[String]) -> Option<String> {
    let mut lines = output.lines();
    for want in expect.iter().filter(|w| w.trim() != "…") {
        let found = match want.strip_suffix('…') {
            Some(prefix) => lines.any(|l| l.starts_with(prefix.trim_end())),
            None => lines.any(|l| l == want),
        };
        if !found {
            return Some(format!("expected, in order: `{want}`"));
        }
    }
    None
}

/// Every ```` ```console,runnable ```` block of the book and the README runs against the real
/// binary and prints what the page shows: each page's blocks in order in one scratch directory
/// (a later block may read what an earlier one wrote), with `clockpath` on PATH. Root (a block
/// may read this machine's kernel, as a reader would with sudo).
#[test]
fn every_runnable_block_of_the_book_and_the_readme_runs_and_shows_its_output() {
    clockpath_tests::require_root();
    let bin = clockpath_tests::clockpath_bin();
    let bin_dir = bin.parent().expect("the binary's directory").to_path_buf();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    let root = workspace();
    let mut files: Vec<PathBuf> = std::fs::read_dir(root.join("docs/src"))
        .expect("docs/src")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    files.sort();
    files.push(root.join("README.md"));
    let (mut ran, mut failures) = (0, Vec::new());
    for f in &files {
        let blocks = runnable_blocks(f);
        if blocks.is_empty() {
            continue;
        }
        let scratch = tempfile::tempdir().expect("tempdir");
        'blocks: for b in &blocks {
            for (cmd, expect) in &b.steps {
                let o = std::process::Command::new("bash")
                    .args(["-c", cmd])
                    .current_dir(scratch.path())
                    .env("PATH", &path)
                    .output()
                    .expect("run bash");
                ran += 1;
                let stdout = String::from_utf8_lossy(&o.stdout);
                let problem = if !o.status.success() {
                    Some(format!("{}: {}", o.status, String::from_utf8_lossy(&o.stderr)))
                } else {
                    missing_output(&stdout, expect)
                };
                if let Some(p) = problem {
                    failures.push(format!("{}: `$ {cmd}`: {p}\n--- output:\n{stdout}", b.at));
                    continue 'blocks;
                }
            }
        }
    }
    assert!(failures.is_empty(), "runnable blocks failed:\n{}", failures.join("\n"));
    assert!(ran >= 5, "only {ran} runnable commands in the book and the README");
    // The check can fail: a block whose output differs is caught, a prefix line matches.
    let shown = ["a".to_string(), "b…".to_string(), "…".to_string()];
    assert!(missing_output("a\nbcd\n", &shown).is_none());
    assert!(missing_output("bcd\na\n", &shown).is_some());
}
