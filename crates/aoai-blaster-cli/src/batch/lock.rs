//! One run at a time per output file: an advisory lock on `OUT.lock` beside the output.
//!
//! [`OutputLock::acquire`] takes an exclusive `flock` on the lock file (created if needed) and
//! writes the process id into it; the lock lasts as long as the [`OutputLock`] value, and the
//! kernel releases it when the process ends in any way (SIGKILL included), so no stale lock is
//! ever left. The lock file itself stays: removing it would let two processes lock two
//! different files of the same name. A second run on the same output fails at once with
//! [`LockError::Held`], naming the pid that holds it.

use std::fmt;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The exclusive right to write one output file; released when dropped.
#[derive(Debug)]
pub(crate) struct OutputLock {
    _file: File,
    path: PathBuf,
}

/// Why the output could not be locked.
#[derive(Debug)]
pub(crate) enum LockError {
    /// Another process holds the lock (its pid, when it has written it yet).
    Held {
        /// The pid read from the lock file.
        pid: Option<u32>,
    },
    /// The lock file (this path) could not be opened, locked or written.
    Io(PathBuf, io::Error),
}

impl fmt::Display for LockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LockError::Held { pid: Some(pid) } => {
                write!(f, "another aoai-blaster run (pid {pid}) is writing")
            }
            LockError::Held { pid: None } => f.write_str("another aoai-blaster run is writing"),
            LockError::Io(path, error) => write!(f, "cannot lock {}: {error}", path.display()),
        }
    }
}

/// The lock file of `output`: `OUT.lock` in the same directory.
pub(crate) fn lock_path(output: &Path) -> PathBuf {
    let mut name = output.file_name().unwrap_or_default().to_owned();
    name.push(".lock");
    output.with_file_name(name)
}

impl OutputLock {
    /// Locks `output` for this process, or says who holds it. Never waits.
    pub(crate) fn acquire(output: &Path) -> Result<OutputLock, LockError> {
        let path = lock_path(output);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|error| LockError::Io(path.clone(), error))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                return Err(LockError::Held {
                    pid: text.trim().parse().ok(),
                });
            }
            Err(TryLockError::Error(error)) => return Err(LockError::Io(path, error)),
        }
        let written = file
            .set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .and_then(|_| writeln!(file, "{}", std::process::id()))
            .and_then(|()| file.flush());
        written.map_err(|error| LockError::Io(path.clone(), error))?;
        Ok(OutputLock { _file: file, path })
    }

    /// The lock file's path.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lock_sits_beside_the_output() {
        assert_eq!(
            lock_path(Path::new("dir/out.jsonl")),
            PathBuf::from("dir/out.jsonl.lock")
        );
        assert_eq!(
            lock_path(Path::new("out.jsonl")),
            PathBuf::from("out.jsonl.lock")
        );
    }

    #[test]
    fn a_second_lock_is_refused_with_the_holders_pid_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let output = dir.path().join("out.jsonl");
        let first = OutputLock::acquire(&output).unwrap();
        assert_eq!(
            std::fs::read_to_string(first.path()).unwrap().trim(),
            std::process::id().to_string()
        );
        // flock locks belong to the open file, so a second open in the same process conflicts.
        let error = OutputLock::acquire(&output).unwrap_err();
        assert!(
            matches!(error, LockError::Held { pid: Some(pid) } if pid == std::process::id()),
            "{error:?}"
        );
        assert_eq!(
            error.to_string(),
            format!(
                "another aoai-blaster run (pid {}) is writing",
                std::process::id()
            )
        );
        drop(first);
        let again = OutputLock::acquire(&output).unwrap();
        assert!(again.path().exists());
    }
}
