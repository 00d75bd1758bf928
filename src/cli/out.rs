//! Standard output for the commands: a closed pipe (`provisiond demo | head -5`) ends the
//! output quietly instead of panicking as `println!` does. The first failed write marks stdout
//! closed; later writes are dropped, and long commands (the demo) check [`closed`] to stop
//! early. The exit code stays the command's own: the reader chose to stop reading.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

/// Set once a write to stdout failed (the reader went away).
static CLOSED: AtomicBool = AtomicBool::new(false);

/// Whether stdout was found closed.
pub(crate) fn closed() -> bool {
    CLOSED.load(Ordering::Relaxed)
}

/// Write formatted text to stdout; a failure marks it closed and is otherwise ignored.
pub(crate) fn print(args: std::fmt::Arguments<'_>) {
    if closed() {
        return;
    }
    let mut stdout = std::io::stdout().lock();
    if stdout
        .write_fmt(args)
        .and_then(|()| stdout.flush())
        .is_err()
    {
        CLOSED.store(true, Ordering::Relaxed);
    }
}

/// Write bytes to stdout (a generated script or page); the exit code: 0, also when the
/// reader stopped early.
pub(crate) fn write_all(bytes: &[u8]) -> i32 {
    let mut stdout = std::io::stdout().lock();
    if stdout
        .write_all(bytes)
        .and_then(|()| stdout.flush())
        .is_err()
    {
        CLOSED.store(true, Ordering::Relaxed);
    }
    super::exit::OK
}

/// `println!` that survives a closed stdout.
macro_rules! outln {
    () => {
        $crate::cli::out::print(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::cli::out::print(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `print!` that survives a closed stdout.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cli::out::print(format_args!($($arg)*))
    };
}

pub(crate) use {out, outln};
