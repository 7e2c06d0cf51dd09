//! Man pages and shell completions, generated from the CLI definition (clap_mangen,
//! clap_complete), so they cannot say other than `--help` does.

use std::{path::Path, process::ExitCode};

use anyhow::Context as _;
use clap::CommandFactory as _;

use super::{Cli, CliError, config_error};

/// The pages: `clockpath.1`, then `clockpath-SUB.1` per subcommand, as (file name, roff).
pub(super) fn pages() -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let mut cli = Cli::command();
    // Built, so each subcommand carries the global options (--config, --log) it accepts.
    cli.build();
    let version = cli.get_version().map(str::to_string);
    let mut out = Vec::new();
    let mut render = |cmd: clap::Command, name: String| -> anyhow::Result<()> {
        let mut roff = Vec::new();
        clap_mangen::Man::new(cmd).render(&mut roff).with_context(|| format!("rendering {name}"))?;
        out.push((format!("{name}.1"), roff));
        Ok(())
    };
    render(cli.clone(), "clockpath".into())?;
    for sub in cli.get_subcommands().filter(|s| s.get_name() != "help") {
        let name = format!("clockpath-{}", sub.get_name());
        let mut page = sub.clone().name(name.clone()).display_name(name.clone()).bin_name(name.replace('-', " "));
        if let Some(v) = &version {
            page = page.version(v.clone());
        }
        render(page, name)?;
    }
    Ok(out)
}

pub(super) fn man_cmd(dir: &Path) -> Result<ExitCode, CliError> {
    clockpath_offline::outfile::ensure_dir(dir)
        .map_err(|e| config_error(anyhow::anyhow!("--out {}: {e}", dir.display())))?;
    let pages = pages()?;
    for (name, roff) in &pages {
        let path = dir.join(name);
        clockpath_offline::outfile::write(&path, roff).with_context(|| format!("writing {}", path.display()))?;
    }
    println!("{} man pages in {}", pages.len(), dir.display());
    Ok(ExitCode::SUCCESS)
}

pub(super) fn completions_cmd(shell: clap_complete::Shell) -> Result<ExitCode, CliError> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "clockpath", &mut script);
    use std::io::Write as _;
    std::io::stdout().write_all(&script).context("printing the completion script")?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    #[test]
    fn a_page_per_subcommand_with_its_options() {
        let pages = pages().expect("pages");
        let names: Vec<&str> = pages.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names[0], "clockpath.1");
        for sub in Cli::command().get_subcommands().filter(|s| s.get_name() != "help") {
            let file = format!("clockpath-{}.1", sub.get_name());
            let (_, roff) = pages.iter().find(|(n, _)| *n == file).unwrap_or_else(|| panic!("no {file}: {names:?}"));
            let text = String::from_utf8_lossy(roff);
            assert!(text.starts_with(".ie \\n(.g .ds Aq") || text.contains(".TH"), "{file} is roff");
            for arg in sub.get_arguments().filter(|a| !a.is_hide_set()).filter_map(|a| a.get_long()) {
                assert!(text.contains(&format!("\\-\\-{}", arg.replace('-', "\\-"))), "{file} lacks --{arg}");
            }
        }
        let run = &pages.iter().find(|(n, _)| n == "clockpath-run.1").expect("run page").1;
        assert!(String::from_utf8_lossy(run).contains("\\-\\-config"), "global options are on every page");
    }
}
