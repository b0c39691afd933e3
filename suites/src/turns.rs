//! Turns counted across processes: at most `n` holders at once of a named
//! kind of thing (private meshes), on this machine, whatever process holds
//! them. Tests that run a process each (`--isolation process`, nextest)
//! each had a cap of their own; a turn is now one of `n` lock files in a
//! directory of the temporary directory, held locked while the turn lasts.
//! The lock is the operating system's (`flock`): a process that ends, even
//! killed, gives its turns back.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::PathBuf;
use std::time::Duration;

/// One turn, given back when dropped.
#[derive(Debug)]
pub struct Turn {
    _lock: File,
}

/// How often a process waiting for a turn looks again.
const LOOK_AGAIN: Duration = Duration::from_millis(50);

/// The directory of `kind`'s turns.
pub fn dir(kind: &str) -> PathBuf {
    std::env::temp_dir().join(format!("service-test-turns-{kind}"))
}

/// Waits for one of `kind`'s `n` turns (counted by every process on this
/// machine) and takes it. An error when the turns' directory cannot be
/// used (then the caller goes on without one, and says so).
pub async fn take(kind: &str, n: usize) -> std::io::Result<Turn> {
    let dir = dir(kind);
    std::fs::create_dir_all(&dir)?;
    loop {
        for i in 0..n.max(1) {
            let lock = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(dir.join(format!("{i}.lock")))?;
            match lock.try_lock() {
                Ok(()) => return Ok(Turn { _lock: lock }),
                Err(TryLockError::WouldBlock) => {}
                Err(TryLockError::Error(e)) => return Err(e),
            }
        }
        tokio::time::sleep(LOOK_AGAIN).await;
    }
}
