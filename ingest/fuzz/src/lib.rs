//! What every reader's fuzz target shares: the process set up for libFuzzer, and one
//! input through one reader.

use cauce_ingest::sandbox::Reader;
use cauce_ingest::source::Format;

/// Size of the alternate signal stack.
const SIGNAL_STACK: usize = 1 << 20;

/// Sets the fuzzing process up, once, before the first input:
/// - libfuzzer-sys aborts at any panic, even one the reader catches and refuses the file
///   for (pdf-extract panics on much malformed input); a panic that escapes the reader
///   still aborts, in `fuzz_target!`'s own `catch_unwind`;
/// - a stack overflow must be reported with its input: libFuzzer's own SIGSEGV handler
///   runs on the overflowed stack (and so dies unreported), and Rust's, with its
///   alternate stack, is never installed (libFuzzer's `main` is not Rust's). So a
///   handler of ours, on an alternate stack, turns SIGSEGV into an abort, which
///   libFuzzer reports, saving the input. Run with `-handle_segv=0`, so that libFuzzer
///   leaves it in place.
pub fn init() {
    std::panic::set_hook(Box::new(|_| {}));
    let stack: &'static mut [u8] = Box::leak(vec![0u8; SIGNAL_STACK].into_boxed_slice());
    let alternate = libc::stack_t {
        ss_sp: stack.as_mut_ptr().cast(),
        ss_flags: 0,
        ss_size: SIGNAL_STACK,
    };
    // SAFETY: the stack is leaked, so it lives as long as the process
    let set = unsafe { libc::sigaltstack(&alternate, std::ptr::null_mut()) };
    assert_eq!(set, 0, "sigaltstack failed");
    // SAFETY: a zeroed sigaction is a valid one to fill in
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = on_segv as *const () as usize;
    action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
    for signal in [libc::SIGSEGV, libc::SIGBUS] {
        // SAFETY: the handler only makes the async-signal-safe calls write and abort
        let set = unsafe { libc::sigaction(signal, &action, std::ptr::null_mut()) };
        assert_eq!(set, 0, "sigaction failed");
    }
}

extern "C" fn on_segv(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    const SAID: &[u8] = b"==cauce-fuzz== SIGSEGV (most likely a stack overflow): aborting\n";
    // SAFETY: write and abort are async-signal-safe
    unsafe {
        libc::write(2, SAID.as_ptr().cast(), SAID.len());
        libc::abort();
    }
}

/// One input through the reader of `format`: text or a refusal, either is fine.
pub fn read(format: Format, data: &[u8]) {
    let _ = Reader::InProcess.read(format, data);
}
