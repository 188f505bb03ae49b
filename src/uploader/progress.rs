//! What the person running the uploader sees on standard error: a bar per file on a
//! terminal (indicatif: bytes, rate, time left), plain lines every second when standard
//! error is a file or a pipe (no control characters), nothing with `--quiet`.

use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Bar,
    Lines,
    Quiet,
}

impl Mode {
    /// Bars on a terminal, lines elsewhere, nothing when quiet.
    pub fn detect(quiet: bool) -> Mode {
        if quiet {
            Mode::Quiet
        } else if std::io::stderr().is_terminal() {
            Mode::Bar
        } else {
            Mode::Lines
        }
    }
}

/// The whole run's output: the bars (one per file in flight) and the lines between them.
#[derive(Clone)]
pub struct Progress {
    mode: Mode,
    multi: MultiProgress,
    interval: Duration,
}

impl Progress {
    pub fn new(mode: Mode) -> Progress {
        let target = if mode == Mode::Bar { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() };
        Progress { mode, multi: MultiProgress::with_draw_target(target), interval: Duration::from_secs(1) }
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// A line on standard output (a result), put above the bars.
    pub fn println(&self, line: &str) {
        self.multi.suspend(|| println!("{line}"));
    }

    /// A line on standard error (a retry, a warning), above the bars; not when quiet.
    pub fn note(&self, line: &str) {
        match self.mode {
            Mode::Quiet => {}
            Mode::Bar => {
                let _ = self.multi.println(line);
            }
            Mode::Lines => eprintln!("{line}"),
        }
    }

    /// An error: shown even when quiet.
    pub fn error(&self, line: &str) {
        self.multi.suspend(|| eprintln!("{line}"));
    }

    /// The progress of one file of `size` bytes, shown as `name`.
    pub fn file(&self, name: &str, size: u64) -> FileProgress {
        let bar = match self.mode {
            Mode::Bar => {
                let bar = self.multi.add(ProgressBar::new(size));
                bar.set_style(
                    ProgressStyle::with_template(
                        "{prefix:.bold} {msg:9} [{bar:30.cyan/blue}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} ETA {eta}",
                    )
                    .expect("the bar's template is valid")
                    .progress_chars("=> "),
                );
                bar.set_prefix(name.to_string());
                bar.enable_steady_tick(Duration::from_millis(250));
                Some(bar)
            }
            _ => None,
        };
        FileProgress {
            inner: Arc::new(Inner {
                name: name.to_string(),
                size,
                mode: self.mode,
                bar,
                interval: self.interval,
                lines: Mutex::new(Lines { phase: String::new(), since: Instant::now(), from: 0, last: None, pos: 0 }),
            }),
        }
    }
}

/// One file's progress; cheap to clone, shared by the tasks that send its bytes.
#[derive(Clone)]
pub struct FileProgress {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    size: u64,
    mode: Mode,
    bar: Option<ProgressBar>,
    interval: Duration,
    lines: Mutex<Lines>,
}

struct Lines {
    phase: String,
    /// When the phase began and the position it began at (for the rate).
    since: Instant,
    from: u64,
    /// When the last line was printed.
    last: Option<Instant>,
    pos: u64,
}

impl FileProgress {
    /// A new phase (`hashing`, `sending`, `waiting`) starting at `pos`.
    pub fn phase(&self, phase: &str, pos: u64) {
        if let Some(bar) = &self.inner.bar {
            bar.set_message(phase.to_string());
            bar.reset_eta();
            bar.set_position(pos);
        }
        if self.inner.mode == Mode::Lines {
            let mut l = self.inner.lines.lock().unwrap();
            *l = Lines { phase: phase.to_string(), since: Instant::now(), from: pos, last: Some(Instant::now()), pos };
            eprintln!("{}: {phase} ({})", self.inner.name, position(pos, self.inner.size));
        }
    }

    /// The bytes done so far in this phase (sent, or hashed).
    pub fn set(&self, pos: u64) {
        if let Some(bar) = &self.inner.bar {
            bar.set_position(pos);
        }
        if self.inner.mode == Mode::Lines {
            let mut l = self.inner.lines.lock().unwrap();
            l.pos = pos;
            let now = Instant::now();
            if l.last.is_none_or(|t| now.duration_since(t) >= self.inner.interval) {
                l.last = Some(now);
                let elapsed = now.duration_since(l.since);
                let rate = rate(pos.saturating_sub(l.from), elapsed);
                eprintln!("{}", line(&self.inner.name, &l.phase, pos, self.inner.size, rate));
            }
        }
    }

    /// Moves back (bytes the gateway did not keep will be sent again).
    pub fn rewind(&self, pos: u64) {
        if let Some(bar) = &self.inner.bar {
            bar.set_position(pos);
        }
        if self.inner.mode == Mode::Lines {
            let mut l = self.inner.lines.lock().unwrap();
            l.pos = pos;
            l.from = l.from.min(pos);
        }
    }

    /// The file is done (well or not); the bar stays on screen with `msg`. As a plain
    /// line, after sending: what was sent, in how long, how fast.
    pub fn finish(&self, msg: &str) {
        if let Some(bar) = &self.inner.bar {
            bar.disable_steady_tick();
            bar.set_message(msg.to_string());
            bar.abandon();
        }
        if self.inner.mode == Mode::Lines {
            let l = self.inner.lines.lock().unwrap();
            if l.phase != "sending" {
                eprintln!("{}: {msg}", self.inner.name);
                return;
            }
            let elapsed = l.since.elapsed();
            eprintln!(
                "{}: {msg} ({} in {}, {})",
                self.inner.name,
                bytes(l.pos.saturating_sub(l.from)),
                duration(elapsed),
                rate_text(rate(l.pos.saturating_sub(l.from), elapsed))
            );
        }
    }
}

/// Bytes per second over `elapsed` (0 before any time has passed).
pub fn rate(bytes: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs <= 0.0 {
        0.0
    } else {
        bytes as f64 / secs
    }
}

/// A size in binary units: `512 B`, `1.5 KiB`, `200.0 MiB`, `1.00 GiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit >= 1 {
        format!("{v:.2} {}", UNITS[unit])
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

pub fn rate_text(bytes_per_sec: f64) -> String {
    format!("{}/s", bytes(bytes_per_sec as u64))
}

/// A duration for people: `850 ms`, `12 s`, `3 min 05 s`, `2 h 07 min`.
pub fn duration(d: Duration) -> String {
    let s = d.as_secs();
    if s == 0 {
        format!("{} ms", d.as_millis())
    } else if s < 60 {
        format!("{s} s")
    } else if s < 3600 {
        format!("{} min {:02} s", s / 60, s % 60)
    } else {
        format!("{} h {:02} min", s / 3600, (s % 3600) / 60)
    }
}

fn position(pos: u64, size: u64) -> String {
    let pct = if size == 0 { 100.0 } else { pos as f64 * 100.0 / size as f64 };
    format!("{} of {}, {pct:.0}%", bytes(pos), bytes(size))
}

/// One plain progress line: `name: sending 50.00 MiB of 200.00 MiB, 25%, 10.0 MiB/s, 15 s left`.
pub fn line(name: &str, phase: &str, pos: u64, size: u64, rate: f64) -> String {
    let left = if rate > 0.0 && size >= pos {
        duration(Duration::from_secs_f64((size - pos) as f64 / rate))
    } else {
        "unknown".to_string()
    };
    format!("{name}: {phase} {}, {}, {left} left", position(pos, size), rate_text(rate))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_in_binary_units() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(200 << 20), "200.00 MiB");
        assert_eq!(bytes(1 << 30), "1.00 GiB");
    }

    #[test]
    fn durations_for_people() {
        assert_eq!(duration(Duration::from_millis(850)), "850 ms");
        assert_eq!(duration(Duration::from_secs(12)), "12 s");
        assert_eq!(duration(Duration::from_secs(185)), "3 min 05 s");
        assert_eq!(duration(Duration::from_secs(7620)), "2 h 07 min");
    }

    #[test]
    fn a_plain_line_has_bytes_rate_and_time_left_and_no_control_characters() {
        let l = line("big.tar.gz", "sending", 50 << 20, 200 << 20, (10 << 20) as f64);
        assert_eq!(l, "big.tar.gz: sending 50.00 MiB of 200.00 MiB, 25%, 10.00 MiB/s, 15 s left");
        assert!(!l.chars().any(|c| c.is_control()));
        let unknown = line("f", "sending", 0, 10, 0.0);
        assert_eq!(unknown, "f: sending 0 B of 10 B, 0%, 0 B/s, unknown left");
        // An empty file is all done.
        assert!(line("f", "sending", 0, 0, 0.0).contains("100%"));
    }

    #[test]
    fn rate_over_no_time_is_zero() {
        assert_eq!(rate(100, Duration::ZERO), 0.0);
        assert_eq!(rate(100, Duration::from_secs(2)), 50.0);
    }
}
