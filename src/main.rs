//! The `kvpush` binary: parse flags, run, turn the outcome into an exit status.

use std::process::ExitCode;

fn main() -> ExitCode {
    kvpush::cli::main()
}
