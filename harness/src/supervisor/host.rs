//! The host of session fixtures, from the supervisor's side (the host's
//! own side is `runner::host_role`; see [`crate::host`]).

use std::io::BufRead;

use crate::env::{HOST_ENV, HOSTED_FILE_ENV};

/// The host, from the supervisor's side: started with the run's arguments,
/// ready when it said so; dropping it closes its input (it tears down and
/// exits) and removes the handles file.
pub(crate) struct Host {
    child: std::process::Child,
    pub(crate) file: std::path::PathBuf,
}

impl Host {
    /// Starts the host and waits (at most two minutes) until it is ready.
    pub(crate) fn start(args: &[std::ffi::OsString], seed: u64) -> std::io::Result<Host> {
        use std::process::{Command, Stdio};
        // Made here, never reused: a file planted at the name fails this.
        let file = super::private_file("hosted")?;
        use std::os::unix::process::CommandExt;
        let mut child = Command::new(std::env::current_exe()?)
            .args(args)
            .process_group(0)
            .env(HOST_ENV, "1")
            .env(HOSTED_FILE_ENV, &file)
            .env(crate::env::SEED_ENV, seed.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdout = child.stdout.take();
        super::track(i32::try_from(child.id()).unwrap_or(0));
        let host = Host { child, file };
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            if let Some(out) = stdout {
                let _ = std::io::BufReader::new(out).read_line(&mut line);
            }
            let _ = tx.send(line);
        });
        match rx.recv_timeout(std::time::Duration::from_secs(120)) {
            Ok(line) if line.trim() == "ready" => Ok(host),
            Ok(_) => Err(std::io::Error::other(
                "the host process ended before it was ready",
            )),
            Err(_) => Err(std::io::Error::other(
                "the host process was not ready within 120 s",
            )),
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(70);
        while std::time::Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let _ = self.child.kill();
        super::untrack(i32::try_from(self.child.id()).unwrap_or(0));
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.file);
    }
}
