//! A live progress line on stderr when it is a terminal: done/total,
//! failures so far, elapsed, ETA. Nothing otherwise (CI logs stay plain).

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

pub(crate) struct Progress {
    enabled: bool,
    total: usize,
    done: usize,
    failed: usize,
    started: Instant,
    drawn: Option<Instant>,
}

impl Progress {
    pub(crate) fn new(total: usize) -> Self {
        let enabled =
            std::io::stderr().is_terminal() && std::env::var_os("TERM").is_none_or(|t| t != "dumb");
        Progress {
            enabled,
            total,
            done: 0,
            failed: 0,
            started: Instant::now(),
            drawn: None,
        }
    }

    /// Draws nothing (a worker process: its supervisor draws).
    pub(crate) fn disabled() -> Self {
        let mut p = Progress::new(0);
        p.enabled = false;
        p
    }

    pub(crate) fn finished(&mut self, failed: bool) {
        self.done += 1;
        self.failed += usize::from(failed);
        if !self.enabled
            || self
                .drawn
                .is_some_and(|d| d.elapsed() < Duration::from_millis(100))
                && self.done < self.total
        {
            return;
        }
        self.drawn = Some(Instant::now());
        let elapsed = self.started.elapsed().as_secs_f64();
        let eta = if self.done == 0 {
            0.0
        } else {
            elapsed / self.done as f64 * (self.total - self.done) as f64
        };
        // Ends with \r so the console's next line overwrites it.
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\x1b[2K[{}/{}] {} failed · {elapsed:.1}s elapsed · ETA {eta:.1}s\r",
            self.done, self.total, self.failed
        );
        let _ = err.flush();
    }

    pub(crate) fn clear(&self) {
        if self.enabled {
            let _ = write!(std::io::stderr(), "\x1b[2K\r");
        }
    }
}
