//! `.lock`: one declab run per results folder at a time.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// Exclusive lock on a results folder; a lock left by a dead process is replaced.
pub struct DirLock {
    path: PathBuf,
}

impl DirLock {
    pub fn acquire(dir: &Path) -> Result<DirLock> {
        let path = dir.join(".lock");
        for _ in 0..2 {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut f) => {
                    use std::io::Write;
                    writeln!(f, "{}", std::process::id())?;
                    return Ok(DirLock { path });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let pid: Option<u32> = std::fs::read_to_string(&path)
                        .ok()
                        .and_then(|s| s.trim().parse().ok());
                    let alive = pid.is_some_and(|p| {
                        Path::new(&format!("/proc/{p}")).exists() && p != std::process::id()
                    });
                    if alive {
                        bail!(
                            "{} is in use by another declab run (pid {}); wait for it, or use another --out",
                            dir.display(),
                            pid.unwrap_or(0)
                        );
                    }
                    std::fs::remove_file(&path).ok();
                }
                Err(e) => {
                    return Err(e)
                        .with_context(|| format!("cannot create lock file {}", path.display()))
                }
            }
        }
        bail!("cannot take the lock {}", path.display())
    }
}

impl Drop for DirLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_holder_refuses_and_a_dead_one_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let lock_file = dir.path().join(".lock");
        {
            let _held = DirLock::acquire(dir.path()).unwrap();
            assert!(lock_file.is_file());
        }
        assert!(!lock_file.exists(), "the lock goes with its holder");

        // a lock left by this process (a crashed earlier run in the same pid) or by no process
        std::fs::write(&lock_file, format!("{}\n", std::process::id())).unwrap();
        drop(DirLock::acquire(dir.path()).unwrap());
        std::fs::write(&lock_file, "not a pid\n").unwrap();
        drop(DirLock::acquire(dir.path()).unwrap());

        // pid 1 is always alive
        if Path::new("/proc/1").exists() {
            std::fs::write(&lock_file, "1\n").unwrap();
            let err = DirLock::acquire(dir.path()).err().unwrap().to_string();
            assert!(
                err.contains("in use by another declab run (pid 1)"),
                "{err}"
            );
            assert!(lock_file.is_file(), "a live holder's lock is left alone");
        }
    }
}
