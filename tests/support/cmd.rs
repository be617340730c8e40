//! Running commands so that a failure says exactly what ran and what it printed.

use std::ffi::OsStr;
use std::fmt;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long any one command may take before it is killed and the test fails.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(180);

/// What a finished command did.
#[derive(Debug, Clone)]
pub struct Output {
    /// The command line, shell-quoted, to paste into a terminal.
    pub command: String,
    /// Exit code; `None` when a signal ended it.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Output {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// Panics with the whole story unless the command exited 0.
    pub fn ok(self) -> Output {
        if !self.success() {
            panic!("command failed\n{self}");
        }
        self
    }
}

impl fmt::Display for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "  command: {}", self.command)?;
        writeln!(
            f,
            "  exit:    {} after {:.2?}",
            self.code
                .map_or_else(|| "killed by a signal".to_string(), |c| c.to_string()),
            self.elapsed
        )?;
        writeln!(f, "  stdout:  {}", excerpt(&self.stdout))?;
        write!(f, "  stderr:  {}", excerpt(&self.stderr))
    }
}

fn excerpt(text: &str) -> String {
    const MAX: usize = 4000;
    let text = text.trim_end();
    if text.is_empty() {
        return "(empty)".into();
    }
    let shown = if text.len() > MAX {
        let mut cut = MAX;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        format!(
            "{}\n    ... ({} more bytes)",
            &text[..cut],
            text.len() - cut
        )
    } else {
        text.to_string()
    };
    format!("\n    {}", shown.replace('\n', "\n    "))
}

/// Quotes one word for a POSIX shell, only when it needs it.
pub fn shell_quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,@%+".contains(&b));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// The shell form of a program and its arguments.
pub fn display<S: AsRef<OsStr>>(program: &str, args: &[S]) -> String {
    std::iter::once(shell_quote(program))
        .chain(
            args.iter()
                .map(|a| shell_quote(&a.as_ref().to_string_lossy())),
        )
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `program args...` with stdin from /dev/null, collecting both outputs, killing it after
/// [`DEFAULT_TIMEOUT`]. Never panics on a non-zero exit: see [`Output::ok`] and [`run_ok`].
pub fn run<S: AsRef<OsStr>>(program: &str, args: &[S]) -> Output {
    let mut command = Command::new(program);
    command.args(args);
    run_command(command, display(program, args), DEFAULT_TIMEOUT)
}

/// [`run`], panicking with the command, its exit and both outputs unless it exits 0.
pub fn run_ok<S: AsRef<OsStr>>(program: &str, args: &[S]) -> Output {
    run(program, args).ok()
}

/// Runs a prepared command; `shown` is how it is printed in failures.
pub fn run_command(mut command: Command, shown: String, timeout: Duration) -> Output {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start `{shown}`: {e}"));
    // Drain both pipes on threads so a chatty child cannot block on a full pipe.
    let mut out_pipe = child.stdout.take().expect("piped stdout");
    let mut err_pipe = child.stderr.take().expect("piped stderr");
    let out_thread = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = out_pipe.read_to_end(&mut buf);
        buf
    });
    let err_thread = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = err_pipe.read_to_end(&mut buf);
        buf
    });
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if start.elapsed() > timeout => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("`{shown}` did not finish within {timeout:?}; killed it");
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => panic!("waiting for `{shown}`: {e}"),
        }
    };
    let stdout = out_thread.join().unwrap_or_default();
    let stderr = err_thread.join().unwrap_or_default();
    Output {
        command: shown,
        code: status.code(),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
        elapsed: start.elapsed(),
    }
}
