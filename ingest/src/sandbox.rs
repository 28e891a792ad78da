//! Reading untrusted files in a child process with limits: the conversion sandbox.
//!
//! A file someone uploaded may be crafted to make a reader recurse until the stack
//! overflows, allocate without end, or run for ever; `catch_unwind` stops none of them,
//! and an abort takes the whole process down. So a worker never parses such bytes
//! itself: [`Sandbox::read`] runs the converter (`cauce convert <format>`, which calls
//! [`crate::convert_stdin`]) as a short-lived child, one per file, writes the file to
//! its standard input and reads the extracted text as JSON from its standard output.
//! The child gets:
//! - an address-space limit (`RLIMIT_AS`), so an allocation past it fails and the
//!   child aborts;
//! - a CPU-time limit (`RLIMIT_CPU`) and a wall-clock limit that the parent enforces
//!   with SIGKILL, both a base plus an allowance per MiB of input, so long documents
//!   are not cut by the limit meant for small crafted ones;
//! - a cap on its output, past which the parent kills it;
//! - a stack limit for its main thread, where the readers run; no files of its own
//!   (`RLIMIT_FSIZE` 0) and no core dumps;
//! - a parent-death signal, so it never outlives the worker.
//!
//! Whatever happens to the child is one failed conversion with a reason a teacher can
//! act on ([`Refusal::Failed`]): "the PDF reader crashed on this file", "converting it
//! took longer than 40 s", "its text would expand past 64 MiB". The worker goes on.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use nix::sys::resource::{Resource, setrlimit};
use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};

use crate::extract::{Extracted, Refusal};
use crate::source::Format;

/// How much of the converter's standard error is kept, to tell why it failed.
const STDERR_KEPT: usize = 16 << 10;

/// The limits of one conversion.
#[derive(Clone, Debug, PartialEq)]
pub struct Limits {
    /// Address space of the converter, in bytes.
    pub memory_bytes: u64,
    /// Time for any file, wall-clock and CPU...
    pub time_base: Duration,
    /// ...plus this much per MiB of input.
    pub time_per_mib: Duration,
    /// Largest output (the extracted text as JSON), in bytes.
    pub output_bytes: u64,
    /// Stack of the converter's main thread, in bytes.
    pub stack_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_bytes: 2 << 30,
            time_base: Duration::from_secs(30),
            time_per_mib: Duration::from_secs(10),
            output_bytes: 64 << 20,
            stack_bytes: 64 << 20,
        }
    }
}

impl Limits {
    /// The time a file of `size` bytes may take.
    pub fn time_for(&self, size: usize) -> Duration {
        let mib = size.div_ceil(1 << 20) as u32;
        self.time_base + self.time_per_mib * mib
    }
}

/// The converter program and its limits.
#[derive(Clone, Debug)]
pub struct Sandbox {
    pub program: PathBuf,
    /// Arguments before the format (`["convert"]` for the `cauce` binary).
    pub args: Vec<OsString>,
    pub limits: Limits,
}

/// Where a reader runs.
#[derive(Clone, Debug, Default)]
pub enum Reader {
    /// In this process: for trusted files and for the converter itself.
    #[default]
    InProcess,
    /// In a sandboxed child process, one per file.
    Sandboxed(Sandbox),
}

impl Reader {
    /// What the reader of `format` finds in `raw`. Blocking.
    pub fn read(&self, format: Format, raw: &[u8]) -> Result<Extracted, Refusal> {
        match self {
            Reader::InProcess => crate::document::read(format, raw),
            Reader::Sandboxed(sandbox) => sandbox.read(format, raw),
        }
    }
}

/// What the converter writes to its standard output.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Converted {
    Extracted(Extracted),
    Refused(Refusal),
}

/// How a child's run ended, as the parent saw it.
#[derive(Debug)]
enum Ending {
    Exited(ExitStatus),
    /// Killed by the parent at the wall-clock limit.
    TimedOut,
    /// Killed by the parent when its output passed the cap.
    OutputTooLarge,
}

impl Sandbox {
    /// Converts `raw` in a child process. Blocking.
    pub fn read(&self, format: Format, raw: &[u8]) -> Result<Extracted, Refusal> {
        let time = self.limits.time_for(raw.len());
        let mut child = self
            .command(format, time)
            .spawn()
            .map_err(|err| Refusal::Failed(format!("the converter could not start: {err}")))?;
        let mut stdin = child.stdin.take().expect("piped");
        let mut stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        let input = raw.to_vec();
        // a child that stops reading (it crashed) breaks the pipe: nothing to report
        let writer = std::thread::spawn(move || drop(stdin.write_all(&input)));
        let cap = self.limits.output_bytes;
        // set by the reader past the cap; the owner of the child kills it, so that no
        // signal ever reaches a pid already reaped (and maybe reused)
        let too_much = Arc::new(AtomicBool::new(false));
        let over = too_much.clone();
        let reader = std::thread::spawn(move || {
            let mut out = Vec::new();
            let _ = (&mut stdout).take(cap + 1).read_to_end(&mut out);
            if out.len() as u64 > cap {
                over.store(true, Ordering::SeqCst);
            }
            out
        });
        let errors = std::thread::spawn(move || last_bytes(stderr, STDERR_KEPT));
        let deadline = Instant::now() + time;
        let ended = loop {
            match child.try_wait() {
                Ok(Some(status)) => break Ending::Exited(status),
                Ok(None) if too_much.load(Ordering::SeqCst) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break Ending::OutputTooLarge;
                }
                Ok(None) if Instant::now() >= deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break Ending::TimedOut;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                Err(err) => {
                    return Err(Refusal::Failed(format!("waiting for the converter: {err}")));
                }
            }
        };
        let out = reader.join().unwrap_or_default();
        let errors = errors.join().unwrap_or_default();
        let _ = writer.join();
        let ended = match ended {
            Ending::Exited(_) if out.len() as u64 > cap => Ending::OutputTooLarge,
            other => other,
        };
        judge(format, ended, &out, &errors, &self.limits, time)
    }

    fn command(&self, format: Format, time: Duration) -> Command {
        let mut command = Command::new(&self.program);
        command
            .args(&self.args)
            .arg(format.as_str())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // nothing of the worker's environment (its NATS login, API keys) reaches
            // the code that parses an untrusted file
            .env_clear()
            .env("RUST_BACKTRACE", "0");
        let limits = self.limits.clone();
        // the CPU limit is a second guard: the wall-clock one usually comes first
        let cpu = time.as_secs() + 1;
        let parent = nix::unistd::getpid();
        #[allow(unsafe_code)]
        // SAFETY: between fork and exec the closure makes only async-signal-safe system
        // calls (setrlimit, prctl, getppid) and allocates nothing.
        unsafe {
            command.pre_exec(move || {
                setrlimit(
                    Resource::RLIMIT_AS,
                    limits.memory_bytes,
                    limits.memory_bytes,
                )?;
                setrlimit(Resource::RLIMIT_CPU, cpu, cpu + 1)?;
                setrlimit(
                    Resource::RLIMIT_STACK,
                    limits.stack_bytes,
                    limits.stack_bytes,
                )?;
                setrlimit(Resource::RLIMIT_FSIZE, 0, 0)?;
                setrlimit(Resource::RLIMIT_CORE, 0, 0)?;
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
                // the worker exited before the signal was armed (no allocation here)
                if nix::unistd::getppid() != parent {
                    return Err(std::io::Error::from_raw_os_error(nix::libc::ESRCH));
                }
                Ok(())
            });
        }
        command
    }
}

/// The last `keep` bytes `from` writes, read to its end (the reason a process died is
/// at the end of what it wrote).
fn last_bytes(mut from: impl Read, keep: usize) -> String {
    let mut kept: Vec<u8> = Vec::new();
    let mut buffer = [0u8; 8192];
    while let Ok(n) = from.read(&mut buffer) {
        if n == 0 {
            break;
        }
        kept.extend_from_slice(&buffer[..n]);
        if kept.len() > 2 * keep {
            kept.drain(..kept.len() - keep);
        }
    }
    let start = kept.len().saturating_sub(keep);
    String::from_utf8_lossy(&kept[start..]).into_owned()
}

/// The conversion's result, or a refusal that says what happened to the child.
fn judge(
    format: Format,
    ended: Ending,
    out: &[u8],
    errors: &str,
    limits: &Limits,
    time: Duration,
) -> Result<Extracted, Refusal> {
    let mib = |bytes: u64| bytes >> 20;
    let reader = format.reader_name();
    let failed = |text: String| Err(Refusal::Failed(text));
    let status = match ended {
        Ending::TimedOut => {
            return failed(format!(
                "converting it took longer than {} s, the limit for a file of its size: \
                 split it into smaller files",
                time.as_secs()
            ));
        }
        Ending::OutputTooLarge => {
            return failed(format!(
                "its text would expand past {} MiB: split it into smaller files",
                mib(limits.output_bytes)
            ));
        }
        Ending::Exited(status) => status,
    };
    if status.success() {
        return match serde_json::from_slice::<Converted>(out) {
            Ok(Converted::Extracted(extracted)) => Ok(extracted),
            Ok(Converted::Refused(refusal)) => Err(refusal),
            Err(err) => failed(format!("the converter's output could not be read: {err}")),
        };
    }
    if errors.contains("memory allocation of") || errors.contains("capacity overflow") {
        return failed(format!(
            "reading it needed more than {} MiB of memory",
            mib(limits.memory_bytes)
        ));
    }
    if errors.contains("overflowed its stack") {
        return failed(format!(
            "the {reader} reader crashed on this file: it nests too deep"
        ));
    }
    if status.signal() == Some(Signal::SIGXCPU as i32) {
        return failed(format!(
            "converting it took longer than {} s, the limit for a file of its size: \
             split it into smaller files",
            time.as_secs()
        ));
    }
    if let Some(signal) = status.signal() {
        let name = Signal::try_from(signal).map_or("a signal", |s| s.as_str());
        return failed(format!("the {reader} reader crashed on this file ({name})"));
    }
    let last = errors
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    failed(format!("the {reader} reader failed on this file: {last}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn judged(ended: Ending, errors: &str) -> String {
        let limits = Limits::default();
        match judge(
            Format::Pdf,
            ended,
            b"",
            errors,
            &limits,
            Duration::from_secs(40),
        ) {
            Err(refusal) => refusal.to_string(),
            Ok(_) => panic!("judged a success"),
        }
    }

    #[test]
    fn each_way_a_conversion_dies_has_its_own_reason() {
        assert!(judged(Ending::TimedOut, "").contains("longer than 40 s"));
        assert!(judged(Ending::OutputTooLarge, "").contains("expand past 64 MiB"));
        let abort = ExitStatus::from_raw(Signal::SIGABRT as i32);
        assert!(
            judged(
                Ending::Exited(abort),
                "memory allocation of 99 bytes failed"
            )
            .contains("more than 2048 MiB of memory")
        );
        let overflow = "thread 'main' has overflowed its stack\nfatal runtime error";
        assert!(judged(Ending::Exited(abort), overflow).contains("PDF reader crashed"));
        assert!(judged(Ending::Exited(abort), "").contains("(SIGABRT)"));
        let xcpu = ExitStatus::from_raw(Signal::SIGXCPU as i32);
        assert!(judged(Ending::Exited(xcpu), "").contains("longer than"));
        let failed = ExitStatus::from_raw(1 << 8);
        assert!(judged(Ending::Exited(failed), "error: stdin closed\n").ends_with("stdin closed"));
    }

    #[test]
    fn time_grows_with_the_file() {
        let limits = Limits::default();
        assert_eq!(limits.time_for(10), Duration::from_secs(40));
        assert_eq!(limits.time_for(3 << 20), Duration::from_secs(60));
    }
}
