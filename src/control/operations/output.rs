//! Where a command's report goes: printed as it is made (the local CLI), or collected for the admin
//! API and web pages.

use std::sync::{Arc, Mutex};

/// One line of a command's report.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", content = "text", rename_all = "lowercase")]
pub enum OutputLine {
    /// What the user asked for (stdout).
    Info(String),
    /// A warning or note beside it (stderr).
    Warning(String),
}

/// Where a command's report goes: printed as it is made (the local CLI), or collected for the admin
/// API and web pages, so that all three ways in say the same words.
#[derive(Debug, Clone, Default)]
pub struct Output {
    collected: Option<Arc<Mutex<Vec<OutputLine>>>>,
}

impl Output {
    /// Prints info lines on stdout and warnings on stderr.
    pub fn print() -> Output {
        Output { collected: None }
    }

    /// Keeps the lines for [`Output::take`].
    pub fn collect() -> Output {
        Output {
            collected: Some(Arc::new(Mutex::new(Vec::new()))),
        }
    }

    /// Reports a line.
    pub fn info(&self, line: String) {
        match &self.collected {
            Some(lines) => lock(lines).push(OutputLine::Info(line)),
            None => print_line(&mut std::io::stdout(), &line),
        }
    }

    /// Reports a warning or note.
    pub fn warning(&self, line: String) {
        match &self.collected {
            Some(lines) => lock(lines).push(OutputLine::Warning(line)),
            None => print_line(&mut std::io::stderr(), &line),
        }
    }

    /// The collected lines so far (empty when printing).
    pub fn take(&self) -> Vec<OutputLine> {
        self.collected
            .as_ref()
            .map(|lines| std::mem::take(&mut *lock(lines)))
            .unwrap_or_default()
    }
}

/// Writes one line, ignoring a closed pipe (`pgssl … | head` must not panic; the command's work is
/// done either way).
pub fn print_line(to: &mut dyn std::io::Write, line: &str) {
    let _ = writeln!(to, "{line}");
}

fn lock(lines: &Mutex<Vec<OutputLine>>) -> std::sync::MutexGuard<'_, Vec<OutputLine>> {
    // A panic while holding the lock leaves only a partial report behind: keep using it.
    lines
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
