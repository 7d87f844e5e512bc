//! Typed errors where callers branch on the kind: configuration errors exit with code 2,
//! everything else with 1.

use std::path::{Path, PathBuf};

/// One or more problems in an experiment file (or another user-supplied specification).
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub errors: Vec<String>,
}

impl ConfigError {
    pub fn new(file: &Path, errors: Vec<String>) -> Self {
        ConfigError {
            file: file.to_path_buf(),
            errors,
        }
    }
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.errors.len();
        write!(
            f,
            "{} has {} problem{}:",
            self.file.display(),
            n,
            if n == 1 { "" } else { "s" }
        )?;
        for e in &self.errors {
            write!(f, "\n  {}: {}", self.file.display(), e)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Exit code for an error chain: 2 for configuration errors, 1 otherwise.
pub fn exit_code(e: &anyhow::Error) -> i32 {
    if e.chain().any(|c| c.downcast_ref::<ConfigError>().is_some()) {
        2
    } else {
        1
    }
}
