//! The in-guest agent: its build ([`build()`]) and the host's end of its serial protocol
//! ([`Agent`]).

mod build;

use std::time::{Duration, Instant};

use serde_json::{Map, Value};

pub use build::{AGENT_C, AgentBinary, CROSS_CC, CROSS_PACKAGES, KVM_COMPAT_H, build, source_hash};

use crate::error::{Error, ErrorKind, Result, Stage};
use crate::proto::{self, Failure, Hello, MAX_REQUEST_LINE, PROTOCOL_VERSION, Request};
use crate::qemu::{Qemu, Recv};
use crate::shm::SharedBuffer;
use crate::vm::RealVm;

/// The host's end of the agent's serial protocol, on a booted machine.
///
/// Requests are sent one at a time; each waits for its reply up to the command timeout (plus,
/// for KVM_RUN and benchmarks, the run's own timeout). A timeout or an undecodable reply makes
/// the agent unusable ([`ErrorKind::Poisoned`]): the machine must be booted again.
#[derive(Debug)]
pub struct Agent {
    qemu: Qemu,
    kernel: String,
    seq: u64,
    poisoned: bool,
    command_timeout: Duration,
    hello: Hello,
    requests: u64,
    shared: Option<SharedBuffer>,
}

fn is_panic(line: &str) -> bool {
    line.contains("Kernel panic - not syncing")
}

impl Agent {
    /// Wait for the agent's hello on a freshly started QEMU (boot stage errors).
    pub(crate) fn connect(
        mut qemu: Qemu,
        kernel: &str,
        boot_timeout: Duration,
        command_timeout: Duration,
    ) -> Result<Agent> {
        // On every error path `qemu` is dropped, which kills QEMU.
        let deadline = Instant::now() + boot_timeout;
        let boot_err = |kind| Error::new(Some(kernel), Stage::Boot, kind);
        loop {
            match qemu.recv(deadline) {
                Recv::Timeout => {
                    let e = boot_err(ErrorKind::Timeout {
                        what: "waiting for the agent's hello".into(),
                        after: boot_timeout,
                        last_lines: qemu.last_lines(8),
                    });
                    return Err(e);
                }
                Recv::Eof => {
                    let e = boot_err(ErrorKind::QemuExited {
                        status: qemu.exit_text(),
                        last_lines: qemu.last_lines(8),
                    });
                    return Err(e);
                }
                Recv::Line(l) => {
                    let p = proto::parse_line(&l);
                    if let Some(c) = p.console {
                        let panicked = is_panic(&c);
                        qemu.log(c);
                        if panicked {
                            let e = boot_err(panicked_kind(&mut qemu));
                            return Err(e);
                        }
                    }
                    let Some(reply) = p.reply else { continue };
                    let hello = reply.map_err(ErrorKind::Protocol).and_then(|r| {
                        if r.seq != 0 {
                            return Err(ErrorKind::Protocol(format!(
                                "expected the hello (seq 0), got seq {}",
                                r.seq
                            )));
                        }
                        let body = r.body.map_err(|f| ErrorKind::Protocol(f.error))?;
                        proto::body_as::<Hello>(&body).map_err(ErrorKind::Protocol)
                    });
                    let hello = match hello {
                        Ok(h) => h,
                        Err(kind) => return Err(boot_err(kind)),
                    };
                    if hello.proto != PROTOCOL_VERSION {
                        let e = boot_err(ErrorKind::Protocol(format!(
                            "the agent speaks protocol {}, this host {PROTOCOL_VERSION}",
                            hello.proto
                        )));
                        return Err(e);
                    }
                    return Ok(Agent {
                        qemu,
                        kernel: kernel.to_string(),
                        seq: 0,
                        poisoned: false,
                        command_timeout,
                        hello,
                        requests: 0,
                        shared: None,
                    });
                }
            }
        }
    }

    pub(crate) fn set_shared(&mut self, shared: SharedBuffer) {
        self.shared = Some(shared);
    }

    /// Whether guest memory moves through the shared buffer (else as hex over the serial line).
    pub fn has_shared_buffer(&self) -> bool {
        self.shared.is_some()
    }

    /// The shared buffer's capacity, if there is one.
    pub(crate) fn shared_capacity(&self) -> Option<usize> {
        self.shared.as_ref().map(SharedBuffer::capacity)
    }

    /// Put bytes at the start of the shared buffer.
    pub(crate) fn shared_write(&mut self, data: &[u8]) -> Result<()> {
        let r = match &self.shared {
            Some(s) => s.write(data),
            None => return Err(self.err(ErrorKind::Rejected("no shared buffer".into()))),
        };
        r.map_err(|source| {
            self.err(ErrorKind::Io {
                what: "writing the shared buffer".into(),
                source,
            })
        })
    }

    /// The first `len` bytes of the shared buffer.
    pub(crate) fn shared_read(&mut self, len: usize) -> Result<Vec<u8>> {
        let r = match &self.shared {
            Some(s) => s.read(len),
            None => return Err(self.err(ErrorKind::Rejected("no shared buffer".into()))),
        };
        r.map_err(|source| {
            self.err(ErrorKind::Io {
                what: "reading the shared buffer".into(),
                source,
            })
        })
    }

    /// The agent's greeting: kernel release, `/dev/kvm`, the kernel's KVM log lines.
    pub fn hello(&self) -> &Hello {
        &self.hello
    }

    /// The kernel as errors name it.
    pub fn kernel(&self) -> &str {
        &self.kernel
    }

    /// The console lines that were not replies (boot log, kernel messages), the last 400.
    pub fn console_log(&self) -> impl Iterator<Item = &String> {
        self.qemu.log_lines().iter()
    }

    /// Requests sent so far.
    pub fn requests(&self) -> u64 {
        self.requests
    }

    /// The QEMU process id.
    pub fn qemu_pid(&self) -> u32 {
        self.qemu.pid()
    }

    /// Whether an earlier error made the agent unusable.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    /// The command timeout (the round trip, not counting a run's own timeout).
    pub fn command_timeout(&self) -> Duration {
        self.command_timeout
    }

    /// Change the command timeout.
    pub fn set_command_timeout(&mut self, t: Duration) {
        self.command_timeout = t;
    }

    pub(crate) fn err(&self, kind: ErrorKind) -> Error {
        Error::new(Some(&self.kernel), Stage::Agent, kind)
    }

    fn poison(&mut self, kind: ErrorKind) -> Error {
        self.poisoned = true;
        self.err(kind)
    }

    /// Send one request and wait for its reply; the reply's members, or the agent's failure as
    /// [`ErrorKind::Kvm`] (an ioctl failed) or [`ErrorKind::Rejected`] (bad request).
    pub fn request(&mut self, req: &Request) -> Result<Map<String, Value>> {
        if self.poisoned {
            return Err(self.err(ErrorKind::Poisoned));
        }
        self.seq += 1;
        let seq = self.seq;
        self.send_request(req, seq)?;
        self.await_reply(req, seq)
    }

    /// Write request `seq` to the agent: through the request mailbox when there is one (two
    /// bytes on the serial line), else as a line on the console.
    fn send_request(&mut self, req: &Request, seq: u64) -> Result<()> {
        let mut line = req.encode(seq);
        if line.len() > MAX_REQUEST_LINE {
            return Err(self.err(ErrorKind::Rejected(format!(
                "{} request of {} bytes exceeds the agent's line limit",
                req.command(),
                line.len()
            ))));
        }
        self.requests += 1;
        let wire = match &self.shared {
            Some(s) if line.len() <= s.request_capacity() => match s.put_request(line.as_bytes()) {
                Ok(()) => proto::MAILBOX_REQUEST.as_bytes().to_vec(),
                Err(source) => {
                    return Err(self.poison(ErrorKind::Io {
                        what: "writing the request mailbox".into(),
                        source,
                    }));
                }
            },
            _ => {
                line.push('\n');
                line.into_bytes()
            }
        };
        if !self.qemu.send(wire) {
            let kind = ErrorKind::QemuExited {
                status: self.qemu.exit_text(),
                last_lines: self.qemu.last_lines(8),
            };
            return Err(self.poison(kind));
        }
        Ok(())
    }

    /// Wait for the reply to request `seq` (console lines on the way are logged; a kernel
    /// panic, QEMU's exit or the request's time limit poison the agent).
    fn await_reply(&mut self, req: &Request, seq: u64) -> Result<Map<String, Value>> {
        let limit = self.command_timeout + req.agent_time();
        let deadline = Instant::now() + limit;
        loop {
            match self.qemu.recv(deadline) {
                Recv::Timeout => {
                    let kind = ErrorKind::Timeout {
                        what: format!("'{}' request", req.command()),
                        after: limit,
                        last_lines: self.qemu.last_lines(8),
                    };
                    return Err(self.poison(kind));
                }
                Recv::Eof => {
                    let kind = ErrorKind::QemuExited {
                        status: self.qemu.exit_text(),
                        last_lines: self.qemu.last_lines(8),
                    };
                    return Err(self.poison(kind));
                }
                Recv::Line(l) => {
                    let p = proto::parse_line(&l);
                    if let Some(c) = p.console {
                        let panicked = is_panic(&c);
                        self.qemu.log(c);
                        if panicked {
                            let kind = panicked_kind(&mut self.qemu);
                            return Err(self.poison(kind));
                        }
                    }
                    let reply = if p.mailbox {
                        let from_box = match &self.shared {
                            Some(s) => s.take_reply().map_err(|e| e.to_string()),
                            None => Err("a mailbox reply without a shared buffer".to_string()),
                        };
                        match from_box {
                            Ok(bytes) => proto::decode_reply(&String::from_utf8_lossy(&bytes)),
                            Err(e) => Err(format!("reply mailbox: {e}")),
                        }
                    } else {
                        match p.reply {
                            Some(r) => r,
                            None => continue,
                        }
                    };
                    let reply = match reply {
                        Ok(r) => r,
                        Err(e) => return Err(self.poison(ErrorKind::Protocol(e))),
                    };
                    if reply.seq != seq as i64 {
                        let what = match reply.body {
                            Err(f) => f.error,
                            Ok(b) => Value::Object(b).to_string(),
                        };
                        return Err(self.poison(ErrorKind::Protocol(format!(
                            "reply to seq {} while waiting for {seq}: {what}",
                            reply.seq
                        ))));
                    }
                    return reply.body.map_err(|f| self.failure(f));
                }
            }
        }
    }

    fn failure(&self, f: Failure) -> Error {
        match f.op {
            Some(op) => self.err(ErrorKind::Kvm {
                op,
                errno: f.errno,
                message: if f.error == strerror_like(f.errno) {
                    String::new()
                } else {
                    f.error
                },
            }),
            None => self.err(ErrorKind::Rejected(f.error)),
        }
    }

    /// Decode a reply body, poisoning on a shape mismatch (a protocol error).
    pub(crate) fn decode<T: for<'de> serde::Deserialize<'de>>(
        &mut self,
        body: &Map<String, Value>,
    ) -> Result<T> {
        proto::body_as(body).map_err(|e| self.poison(ErrorKind::Protocol(e)))
    }

    /// One integer member of a reply.
    pub(crate) fn field_u64(&mut self, body: &Map<String, Value>, key: &str) -> Result<u64> {
        match body.get(key).and_then(Value::as_u64) {
            Some(v) => Ok(v),
            None => Err(self.poison(ErrorKind::Protocol(format!(
                "reply has no integer '{key}': {}",
                Value::Object(body.clone())
            )))),
        }
    }

    /// A round trip that does nothing.
    pub fn ping(&mut self) -> Result<()> {
        self.request(&Request::Ping).map(|_| ())
    }

    /// The greeting again, with the kernel's current KVM log lines.
    pub fn info(&mut self) -> Result<Hello> {
        let b = self.request(&Request::Hello)?;
        self.decode(&b)
    }

    /// KVM_CHECK_EXTENSION on `/dev/kvm`.
    pub fn check_extension(&mut self, cap: u32) -> Result<i32> {
        let b = self.request(&Request::CheckExtension(u64::from(cap)))?;
        Ok(self.field_u64(&b, "value")? as i32)
    }

    /// Kernel log lines (containing `matching`, without spaces), the last `max`.
    pub fn dmesg(&mut self, matching: Option<&str>, max: u32) -> Result<Vec<String>> {
        let b = self.request(&Request::Dmesg {
            matching: matching.map(str::to_string),
            max,
        })?;
        #[derive(serde::Deserialize)]
        struct Lines {
            lines: Vec<String>,
        }
        Ok(self.decode::<Lines>(&b)?.lines)
    }

    /// KVM_CREATE_VM. One VM at a time: the handle borrows the agent, and dropping it destroys
    /// the VM.
    pub fn create_vm(&mut self) -> Result<RealVm<'_>> {
        let b = self.request(&Request::CreateVm { vm_type: 0 })?;
        let id = self.field_u64(&b, "vm")?;
        Ok(RealVm::new(self, id))
    }

    /// Power the guest off (`sync(); reboot(RB_POWER_OFF)`) and wait for QEMU to exit.
    pub(crate) fn power_off(&mut self) -> Result<()> {
        self.request(&Request::PowerOff)?;
        self.poisoned = true;
        match self.qemu.wait_exit(Duration::from_secs(10)) {
            Some(_) => Ok(()),
            None => Err(self.err(ErrorKind::Timeout {
                what: "QEMU exit after power-off".into(),
                after: Duration::from_secs(10),
                last_lines: self.qemu.last_lines(4),
            })),
        }
    }

    /// Kill QEMU now.
    pub(crate) fn kill(&mut self) {
        self.poisoned = true;
        self.qemu.kill();
    }
}

/// After "Kernel panic", keep the lines that follow for up to a second; the panic line and the
/// last lines.
fn panicked_kind(qemu: &mut Qemu) -> ErrorKind {
    let deadline = Instant::now() + Duration::from_secs(1);
    while let Recv::Line(l) = qemu.recv(deadline) {
        qemu.log(l);
    }
    let message = qemu
        .log_lines()
        .iter()
        .rev()
        .find(|l| is_panic(l))
        .map(|l| match l.find("Kernel panic") {
            Some(i) => l[i..].trim().to_string(),
            None => l.trim().to_string(),
        })
        .unwrap_or_default();
    ErrorKind::Panicked {
        message,
        last_lines: qemu.last_lines(4),
    }
}

/// glibc's message for the errno values the agent reports, to drop redundant messages.
fn strerror_like(errno: i32) -> &'static str {
    match errno {
        1 => "Operation not permitted",
        2 => "No such file or directory",
        4 => "Interrupted system call",
        6 => "No such device or address",
        7 => "Argument list too long",
        8 => "Exec format error",
        9 => "Bad file descriptor",
        12 => "Cannot allocate memory",
        14 => "Bad address",
        16 => "Device or resource busy",
        17 => "File exists",
        19 => "No such device",
        22 => "Invalid argument",
        25 => "Inappropriate ioctl for device",
        95 => "Operation not supported",
        _ => "",
    }
}
