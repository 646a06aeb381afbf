//! The `kvpush` binary: parse flags, run, turn the outcome into an exit status.

use std::process::ExitCode;

fn main() -> ExitCode {
    bound_allocator_memory();
    kvpush::cli::main()
}

/// glibc raises its mmap threshold each time a large block is freed, after
/// which freed 256 KiB buffers stay in per-thread arenas: a 1 GiB push then
/// peaked near 60 MiB of RSS for under 30 MiB in use. A fixed threshold
/// gives large buffers back to the system as soon as they are freed
/// (measured: 35 MiB peak, +0.25 s of system time on the bench's cold push).
fn bound_allocator_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator tunable; called before any
    // other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}
