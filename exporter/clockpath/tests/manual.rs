//! Man pages and shell completions, through the CLI: one page per subcommand that groff
//! renders with the subcommand's options, and a bash completion script bash accepts.

mod common;

use std::process::Command;

use common::clockpath;

fn subcommands() -> Vec<String> {
    // The command list of `--help`: the lines between "Commands:" and the next blank one; a
    // command's first line (its wrapped description lines are indented further).
    let help = String::from_utf8(clockpath(&["--help"]).stdout).expect("utf-8");
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .filter(|c| c != "help")
        .collect()
}

/// grotty's output as text: overstrikes ("N\bN" for bold, "_\bx" for underline) and SGR
/// escapes removed, and its Unicode hyphens and minus signs as ASCII.
fn plain(s: &str) -> String {
    let mut out: Vec<char> = Vec::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\u{8}' => {
                out.pop();
            }
            '\u{1b}' => {
                for d in chars.by_ref() {
                    if d.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            '\u{2010}' | '\u{2011}' | '\u{2212}' => out.push('-'),
            c => out.push(c),
        }
    }
    out.into_iter().collect()
}

#[test]
fn man_pages_render_with_every_subcommands_options() {
    // The premise: groff (Debian's groff-base, which man-db uses) renders roff here.
    let groff = Command::new("groff").arg("--version").output();
    assert!(
        groff.is_ok_and(|o| o.status.success()),
        "groff is needed to render the pages (apt-get install groff-base)"
    );
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("man");
    let o = clockpath(&["man", "--out", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let subs = subcommands();
    assert!(subs.len() >= 10 && subs.iter().any(|s| s == "run"), "{subs:?}");
    let render = |page: &str| -> String {
        let r =
            Command::new("groff").args(["-man", "-Tutf8"]).arg(out.join(format!("{page}.1"))).output().expect("groff");
        assert!(r.status.success(), "{page}: {}", String::from_utf8_lossy(&r.stderr));
        plain(&String::from_utf8_lossy(&r.stdout))
    };
    for page in std::iter::once("clockpath".to_string()).chain(subs.iter().map(|s| format!("clockpath-{s}"))) {
        let text = render(&page);
        assert!(text.contains("NAME") && text.contains(&page), "{page}: {text}");
    }
    let text = render("clockpath-run");
    for option in ["--listen", "--duration", "--summary-json", "--config"] {
        assert!(text.contains(option), "clockpath-run(1) lacks {option}:\n{text}");
    }
    // A link planted under a page's name is replaced, never written through.
    let victim = d.path().join("victim");
    std::fs::write(&victim, "keep").unwrap();
    std::fs::remove_file(out.join("clockpath-run.1")).unwrap();
    std::os::unix::fs::symlink(&victim, out.join("clockpath-run.1")).unwrap();
    assert!(clockpath(&["man", "--out", out.to_str().unwrap()]).status.success());
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
}

#[test]
fn completion_scripts_know_every_subcommand_and_bash_accepts_its_own() {
    let subs = subcommands();
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let o = clockpath(&["completions", shell]);
        assert!(o.status.success(), "{shell}: {}", String::from_utf8_lossy(&o.stderr));
        let script = String::from_utf8_lossy(&o.stdout);
        for s in &subs {
            assert!(script.contains(s.as_str()), "{shell} completion lacks `{s}`");
        }
    }
    let d = tempfile::tempdir().unwrap();
    let file = d.path().join("clockpath.bash");
    std::fs::write(&file, clockpath(&["completions", "bash"]).stdout).unwrap();
    let check = Command::new("bash").arg("-n").arg(&file).output().expect("bash");
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
    // Sourced, it registers a completion for `clockpath`.
    let reg = Command::new("bash")
        .arg("-c")
        .arg(format!("source {} && complete -p clockpath", file.display()))
        .output()
        .expect("bash");
    assert!(String::from_utf8_lossy(&reg.stdout).contains("clockpath"), "{}", String::from_utf8_lossy(&reg.stderr));
    let o = clockpath(&["completions", "tcsh"]);
    assert_eq!(o.status.code(), Some(2), "an unknown shell is a usage error");
}
