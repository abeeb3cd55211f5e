//! Whether a package manager is working on a dpkg (or rpm) database right now.
//!
//! In: a dpkg admin directory, or an rpm database's lock file. Out: the pid holding its
//! lock, if any. No state.
//!
//! dpkg takes an fcntl write lock on `<admindir>/lock` for its whole run, and apt-style front
//! ends hold `<admindir>/lock-frontend` across the several dpkg runs of one transaction. When
//! neither is held, every dpkg run that wrote to the log has ended, which is the moment an
//! install still short of `installed` has failed rather than being merely in progress. Asking
//! with `F_GETLK` takes no lock, so the sensor can never block a package manager.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

use nix::libc;

/// The lock files checked, front end first.
const LOCK_FILES: [&str; 2] = ["lock-frontend", "lock"];

/// Who holds a dpkg database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockState {
    /// No package manager holds the database.
    Free,
    /// A process holds it; the pid is absent for open-file-description locks.
    Held { pid: Option<u32> },
}

/// Reports whether a package manager holds the dpkg database in `admin_dir`.
///
/// # Errors
/// Fails when a lock file exists but cannot be opened or queried; a missing lock file means no
/// package manager ever ran there, which is [`LockState::Free`].
pub fn dpkg_lock_state(admin_dir: &Path) -> io::Result<LockState> {
    for name in LOCK_FILES {
        let file = match File::open(admin_dir.join(name)) {
            Ok(file) => file,
            Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
            Err(err) => return Err(err),
        };
        if let state @ LockState::Held { .. } = query_write_lock(&file)? {
            return Ok(state);
        }
    }
    Ok(LockState::Free)
}

/// Reports who holds dpkg's own lock (`<admindir>/lock`), which only a running dpkg takes:
/// front ends hold `lock-frontend` instead while dpkg runs.
///
/// # Errors
/// As [`dpkg_lock_state`].
pub fn dpkg_lock_holder(admin_dir: &Path) -> io::Result<LockState> {
    match File::open(admin_dir.join("lock")) {
        Ok(file) => query_write_lock(&file),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(LockState::Free),
        Err(err) => Err(err),
    }
}

/// Reports who holds an fcntl lock on any of `files`, the first holder found; files that do
/// not exist are skipped. rpm locks `<dbpath>/.rpm.lock` this way for a whole transaction.
///
/// # Errors
/// As [`dpkg_lock_state`].
pub fn lock_holder(files: &[std::path::PathBuf]) -> io::Result<LockState> {
    for path in files {
        let file = match File::open(path) {
            Ok(file) => file,
            Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
            Err(err) => return Err(err),
        };
        if let state @ LockState::Held { .. } = query_write_lock(&file)? {
            return Ok(state);
        }
    }
    Ok(LockState::Free)
}

/// Asks the kernel whether a write lock on the whole file would conflict with another holder.
fn query_write_lock(file: &File) -> io::Result<LockState> {
    // SAFETY: `flock` is a plain C struct for which all-zero bytes are a valid value.
    let mut request: libc::flock = unsafe { std::mem::zeroed() };
    request.l_type = libc::F_WRLCK as libc::c_short;
    request.l_whence = libc::SEEK_SET as libc::c_short;

    // SAFETY: the descriptor is open for the duration of the call and `request` is a valid,
    // exclusively borrowed `flock` the kernel writes into.
    let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETLK, &raw mut request) };
    if rc == -1 {
        return Err(io::Error::last_os_error());
    }
    if i32::from(request.l_type) == libc::F_UNLCK {
        return Ok(LockState::Free);
    }
    Ok(LockState::Held {
        pid: u32::try_from(request.l_pid).ok().filter(|&pid| pid > 0),
    })
}

#[cfg(test)]
mod tests {
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    use super::*;

    #[test]
    fn missing_lock_files_mean_free() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        assert_eq!(dpkg_lock_state(dir.path())?, LockState::Free);
        std::fs::write(dir.path().join("lock"), b"")?;
        assert_eq!(dpkg_lock_state(dir.path())?, LockState::Free);
        Ok(())
    }

    #[test]
    fn a_held_lock_names_its_holder() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let lock = dir.path().join("lock");
        std::fs::write(&lock, b"")?;
        let ready = dir.path().join("ready");

        // Another process takes the lock the way dpkg does: an fcntl write lock on the file.
        let script = "import fcntl, sys, time\n\
                      f = open(sys.argv[1], 'r+')\n\
                      fcntl.lockf(f, fcntl.LOCK_EX)\n\
                      open(sys.argv[2], 'w').close()\n\
                      time.sleep(30)\n";
        let mut holder = Command::new("python3")
            .args(["-c", script])
            .arg(&lock)
            .arg(&ready)
            .stdout(Stdio::null())
            .spawn()?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while !ready.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }

        let state = dpkg_lock_state(dir.path());
        holder.kill()?;
        holder.wait()?;
        assert_eq!(
            state?,
            LockState::Held {
                pid: Some(holder.id())
            }
        );
        assert_eq!(dpkg_lock_state(dir.path())?, LockState::Free);
        Ok(())
    }
}
