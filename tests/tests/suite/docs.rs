//! The docs book (`docs/src`, mdBook layout) and the README cannot rot silently: every page is
//! in SUMMARY.md and every SUMMARY entry exists; every relative link in the README, the book and
//! docs/architecture.md points at a file that exists and, with `#anchor`, at a heading of that
//! page under mdBook's id rule (lowercase; letters, digits, `-` and `_` kept; spaces to `-`;
//! the rest dropped; a repeated heading gets `-1`, `-2`, …). Runs without root.

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

/// Broken relative links of `file`, as "file: link (why)".
fn broken_links(file: &Path, pages: &mut BTreeMap<PathBuf, Page>) -> Vec<String> {
    let page = pages.entry(file.to_path_buf()).or_insert_with(|| parse(file));
    let links = page.links.clone();
    let dir = file.parent().expect("a file's directory");
    let mut broken = Vec::new();
    for link in links {
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
