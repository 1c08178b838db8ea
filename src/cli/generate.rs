//! `pgssl generate-docs --out DIR` (hidden from help): the man pages and shell completions the
//! Debian package ships (packaging/build-deb.sh), generated from this CLI's own clap definition so
//! that they cannot drift from the grammar the binary parses.

use std::io;
use std::path::{Path, PathBuf};

use clap::CommandFactory;
use clap_complete::Shell;

/// Flags of `generate-docs`.
#[derive(Debug, clap::Args)]
pub struct GenerateDocs {
    /// Folder to write into (created if missing): man/ holds pgssl.1 and one page per subcommand,
    /// completions/ holds pgssl.bash, _pgssl (zsh) and pgssl.fish.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

/// Why the documents could not be written.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    /// A folder or file under `--out` could not be created or written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The folder or file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
}

/// The shells whose completions the package installs (Debian's bash-completion, zsh and fish
/// folders); elvish and PowerShell have no Debian location to go to.
const SHELLS: [Shell; 3] = [Shell::Bash, Shell::Zsh, Shell::Fish];

/// Writes the man pages and completions, printing one line per folder.
pub fn run(flags: &GenerateDocs) -> Result<(), GenerateError> {
    let written = generate(&flags.out)?;
    for line in written {
        println!("{line}");
    }
    Ok(())
}

/// Generates everything under `out`; returns what was written, for the caller to show.
pub fn generate(out: &Path) -> Result<Vec<String>, GenerateError> {
    let man_dir = out.join("man");
    let completions_dir = out.join("completions");
    for dir in [&man_dir, &completions_dir] {
        std::fs::create_dir_all(dir).map_err(write_err(dir))?;
    }
    // One page per visible command (pgssl.1, pgssl-serve.1, pgssl-security-repository-ssl-enable.1,
    // …); clap_mangen skips hidden ones, so this command documents everything but itself.
    clap_mangen::generate_to(crate::cli::Cli::command(), &man_dir).map_err(write_err(&man_dir))?;
    let mut written = vec![format!("man pages: {}", man_dir.display())];
    for shell in SHELLS {
        let mut cmd = visible_cli();
        let path = clap_complete::generate_to(shell, &mut cmd, "pgssl", &completions_dir)
            .map_err(write_err(&completions_dir))?;
        written.push(format!("{shell} completions: {}", path.display()));
    }
    Ok(written)
}

/// The CLI without its hidden subcommands (this one, at the top level). clap_complete offers every
/// subcommand, hidden or not, and clap cannot remove one, so the visible ones move to a fresh `pgssl`
/// command with the same version, description and arguments.
fn visible_cli() -> clap::Command {
    let full = crate::cli::Cli::command();
    let mut cmd = clap::Command::new("pgssl")
        // The derive's `version` is this same crate version.
        .version(env!("CARGO_PKG_VERSION"))
        .propagate_version(full.is_propagate_version_set())
        .args(full.get_arguments().cloned())
        .subcommands(full.get_subcommands().filter(|s| !s.is_hide_set()).cloned());
    if let Some(about) = full.get_about() {
        cmd = cmd.about(about.clone());
    }
    cmd
}

fn write_err(path: &Path) -> impl FnOnce(io::Error) -> GenerateError + '_ {
    move |source| GenerateError::Write {
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_man_page_per_visible_command_and_three_completions() {
        let dir = tempfile::tempdir().unwrap();
        let written = generate(dir.path()).unwrap();
        assert_eq!(written.len(), 4, "{written:?}");
        let man = dir.path().join("man");
        for page in [
            "pgssl.1",
            "pgssl-serve.1",
            "pgssl-security-repository-ssl-enable.1",
            "pgssl-pending-changes-apply.1",
        ] {
            let text = std::fs::read_to_string(man.join(page)).unwrap();
            assert!(text.starts_with(".ie \\n(.g .ds Aq"), "{page}: {text}");
        }
        // The hidden command documents everything but itself.
        assert!(!man.join("pgssl-generate-docs.1").exists());
        let top = std::fs::read_to_string(man.join("pgssl.1")).unwrap();
        assert!(!top.contains("generate\\-docs"), "{top}");
        let completions = dir.path().join("completions");
        for (file, needle) in [
            ("pgssl.bash", "complete -F _pgssl"),
            ("_pgssl", "#compdef pgssl"),
            ("pgssl.fish", "complete -c pgssl"),
        ] {
            let text = std::fs::read_to_string(completions.join(file)).unwrap();
            assert!(text.contains(needle), "{file}: {text}");
            assert!(text.contains("repository-ssl"), "{file}");
            assert!(text.contains("data-dir"), "{file}");
            assert!(!text.contains("generate-docs"), "{file}: {text}");
        }
    }
}
