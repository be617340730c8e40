//! Where the CLI's text goes: the width of a line and writing that survives a closed pipe.
//! The tables themselves come from `nodeguard_table` (one renderer for `scan` and `query`).

use nodeguard_table::DEFAULT_WIDTH;
use std::io::{self, IsTerminal, Write};

/// The width lines are cut at: `COLUMNS`, else the terminal's width when stdout is one, else
/// [`DEFAULT_WIDTH`].
pub fn width() -> usize {
    if let Some(columns) = std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.trim().parse::<usize>().ok())
        .filter(|c| *c >= 20)
    {
        return columns;
    }
    if io::stdout().is_terminal() {
        if let Some(columns) = terminal_columns() {
            return columns;
        }
    }
    DEFAULT_WIDTH
}

fn terminal_columns() -> Option<usize> {
    let mut size = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one `winsize` into the struct we own; fd 1 is only queried.
    let rc = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut size) };
    (rc == 0 && size.ws_col >= 20).then_some(usize::from(size.ws_col))
}

/// Writes `text` to stdout. A reader that went away (`nodeguard scan | head`) is not an
/// error: the output simply ends, as it does for other Unix tools.
pub fn print(text: &str) -> io::Result<()> {
    let stdout = io::stdout();
    let mut out = stdout.lock();
    quiet_pipe(out.write_all(text.as_bytes()).and_then(|()| out.flush()))
}

/// `Ok` for a broken pipe, the error otherwise.
pub fn quiet_pipe(result: io::Result<()>) -> io::Result<()> {
    match result {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closed_pipe_is_not_an_error() {
        assert!(quiet_pipe(Err(io::Error::from(io::ErrorKind::BrokenPipe))).is_ok());
        assert!(quiet_pipe(Err(io::Error::from(io::ErrorKind::PermissionDenied))).is_err());
    }
}
