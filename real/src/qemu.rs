//! The QEMU process and its serial console (stdio): killed on drop, read through a thread so
//! every wait has a deadline.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, ExitStatus};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// How many console lines are kept for error messages.
const LOG_LINES: usize = 400;

/// What the console delivered.
#[derive(Debug)]
pub(crate) enum Recv {
    /// One line, `\r` stripped.
    Line(String),
    /// Nothing before the deadline.
    Timeout,
    /// QEMU closed its stdout (it exited).
    Eof,
}

/// A running QEMU with its console.
#[derive(Debug)]
pub(crate) struct Qemu {
    child: Arc<Mutex<Child>>,
    pid: u32,
    stdin: Option<Sender<Vec<u8>>>,
    lines: Receiver<String>,
    stderr: Arc<Mutex<String>>,
    log: VecDeque<String>,
    stop_watchdog: Option<Sender<()>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Qemu {
    /// Take over a spawned QEMU (stdin, stdout and stderr piped). It is killed after
    /// `max_lifetime` whatever happens, and when this is dropped.
    pub(crate) fn new(mut child: Child, max_lifetime: Duration) -> Qemu {
        let pid = child.id();
        let stdin = child.stdin.take();
        let stdout = child.stdout.take();
        let stderr_pipe = child.stderr.take();
        let child = Arc::new(Mutex::new(child));

        let (line_tx, lines) = mpsc::channel();
        if let Some(out) = stdout {
            thread::spawn(move || {
                let mut r = BufReader::new(out);
                let mut buf = Vec::new();
                loop {
                    buf.clear();
                    match r.read_until(b'\n', &mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {
                            let s = String::from_utf8_lossy(&buf)
                                .trim_end_matches(['\n', '\r'])
                                .replace('\r', "");
                            if line_tx.send(s).is_err() {
                                break;
                            }
                        }
                    }
                }
            });
        }
        let stderr = Arc::new(Mutex::new(String::new()));
        if let Some(mut err) = stderr_pipe {
            let sink = Arc::clone(&stderr);
            thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = err.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    let mut s = lock(&sink);
                    s.push_str(&String::from_utf8_lossy(&buf[..n]));
                    if s.len() > 16384 {
                        let cut = s.len() - 8192;
                        let cut = (cut..s.len()).find(|&i| s.is_char_boundary(i)).unwrap_or(0);
                        s.drain(..cut);
                    }
                }
            });
        }
        let stdin = stdin.map(|mut w: ChildStdin| {
            let (tx, rx) = mpsc::channel::<Vec<u8>>();
            thread::spawn(move || {
                for bytes in rx {
                    if w.write_all(&bytes).and_then(|_| w.flush()).is_err() {
                        break;
                    }
                }
            });
            tx
        });
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let victim = Arc::clone(&child);
        thread::spawn(move || {
            if let Err(RecvTimeoutError::Timeout) = stop_rx.recv_timeout(max_lifetime) {
                let mut c = lock(&victim);
                let _ = c.kill();
                let _ = c.wait();
            }
        });
        Qemu {
            child,
            pid,
            stdin,
            lines,
            stderr,
            log: VecDeque::new(),
            stop_watchdog: Some(stop_tx),
        }
    }

    /// The process id.
    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    /// Queue bytes for QEMU's stdin (the guest's serial input). False if QEMU is gone.
    pub(crate) fn send(&self, bytes: Vec<u8>) -> bool {
        self.stdin.as_ref().is_some_and(|s| s.send(bytes).is_ok())
    }

    /// The next console line, waiting until `deadline`.
    pub(crate) fn recv(&mut self, deadline: Instant) -> Recv {
        let now = Instant::now();
        let wait = deadline.saturating_duration_since(now);
        match self.lines.recv_timeout(wait) {
            Ok(l) => Recv::Line(l),
            Err(RecvTimeoutError::Timeout) => Recv::Timeout,
            Err(RecvTimeoutError::Disconnected) => Recv::Eof,
        }
    }

    /// Remember a console line that is not a reply.
    pub(crate) fn log(&mut self, line: String) {
        if self.log.len() == LOG_LINES {
            self.log.pop_front();
        }
        self.log.push_back(line);
    }

    /// The console lines seen so far (the last [`LOG_LINES`]).
    pub(crate) fn log_lines(&self) -> &VecDeque<String> {
        &self.log
    }

    /// The last `n` console lines, joined for a one-line error.
    pub(crate) fn last_lines(&self, n: usize) -> String {
        crate::error::last_lines(self.log.iter(), n)
    }

    /// The exit status if QEMU exits within `wait`.
    pub(crate) fn wait_exit(&self, wait: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + wait;
        loop {
            if let Ok(Some(s)) = lock(&self.child).try_wait() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// "exit status: 1; stderr: ..." for errors (waits up to a second for the exit).
    pub(crate) fn exit_text(&self) -> String {
        let status = match self.wait_exit(Duration::from_secs(1)) {
            Some(s) => s.to_string(),
            None => "still running".to_string(),
        };
        let err = lock(&self.stderr);
        let tail: Vec<&str> = err
            .lines()
            .filter(|l| !l.trim().is_empty())
            .rev()
            .take(3)
            .collect();
        if tail.is_empty() {
            status
        } else {
            let mut t = tail;
            t.reverse();
            format!("{status}; stderr: {}", t.join(" | "))
        }
    }

    /// Kill QEMU (SIGKILL) and reap it.
    pub(crate) fn kill(&self) {
        let mut c = lock(&self.child);
        if let Ok(None) = c.try_wait() {
            let _ = c.kill();
        }
        let _ = c.wait();
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        self.stdin = None;
        self.kill();
        if let Some(s) = self.stop_watchdog.take() {
            let _ = s.send(());
        }
    }
}
