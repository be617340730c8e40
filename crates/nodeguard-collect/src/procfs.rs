//! The files of `/proc/PID` as text: pure parsers of `stat`, `status`, `cmdline` and the
//! namespace links, and what the capability masks in `status` mean. No I/O here: reading
//! goes through [`crate::process`].

use nodeguard_model::{
    decode_capabilities, Capabilities, CapabilityMasks, CapabilitySet, Ids, Namespaces, SeccompMode,
};
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

/// `PF_KTHREAD` in the flags field of `/proc/PID/stat`.
pub const PF_KTHREAD: u64 = 0x0020_0000;

/// Longest command line kept, in bytes.
pub const CMDLINE_MAX: usize = 4096;

/// The fields of `/proc/PID/stat` the collector needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatFields {
    pub pid: i32,
    /// `comm`, control characters and invalid UTF-8 escaped.
    pub comm: String,
    pub state: char,
    pub ppid: i32,
    pub flags: u64,
    /// `starttime` (field 22): clock ticks after boot at which the process started. `None`
    /// when the line is cut short or the field is not a number.
    pub start_ticks: Option<u64>,
    /// Addresses of the program image the process runs: `startcode`, `endcode`,
    /// `startstack` (fields 26-28), `arg_start`, `arg_end` (fields 48-49); 0 where the
    /// kernel hides them (a reader without ptrace access to the process) or the line is cut
    /// short. `execve` builds a new address space, so with address-space randomisation these
    /// change even when the same file is executed again with the same pid and start time.
    pub image_marks: [u64; 5],
}

/// Parses `/proc/PID/stat`: `pid (comm) state ppid pgrp session tty_nr tpgid flags ...`.
/// `comm` may hold spaces and parentheses, so it ends at the last `)`.
pub fn parse_stat(bytes: &[u8]) -> Result<StatFields, String> {
    let open = bytes
        .iter()
        .position(|b| *b == b'(')
        .ok_or("no '(' before comm")?;
    let close = bytes
        .iter()
        .rposition(|b| *b == b')')
        .filter(|c| *c > open)
        .ok_or("no ')' after comm")?;
    let pid = std::str::from_utf8(&bytes[..open])
        .ok()
        .and_then(|p| p.trim().parse::<i32>().ok())
        .ok_or("bad pid")?;
    let rest = std::str::from_utf8(&bytes[close + 1..]).map_err(|_| "fields are not text")?;
    let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
    if fields.len() < 7 {
        return Err(format!(
            "{} fields after comm, want at least 7",
            fields.len()
        ));
    }
    let state = fields[0].chars().next().ok_or("empty state")?;
    let ppid = fields[1].parse::<i32>().map_err(|_| "bad ppid")?;
    let flags = fields[6].parse::<u64>().map_err(|_| "bad flags")?;
    // Field 22 overall; `fields` starts at field 3 (state).
    let start_ticks = fields.get(19).and_then(|t| t.parse::<u64>().ok());
    let field = |n: usize| {
        fields
            .get(n - 3)
            .and_then(|t| t.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let image_marks = [field(26), field(27), field(28), field(48), field(49)];
    Ok(StatFields {
        pid,
        comm: display_text(&bytes[open + 1..close]),
        state,
        ppid,
        flags,
        start_ticks,
        image_marks,
    })
}

/// The fields of `/proc/PID/status` the collector needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusFields {
    pub uids: Ids,
    pub gids: Ids,
    pub cap_inh: u64,
    pub cap_prm: u64,
    pub cap_eff: u64,
    /// Absent on very old kernels.
    pub cap_bnd: Option<u64>,
    /// Absent before Linux 4.3.
    pub cap_amb: Option<u64>,
    /// Absent before Linux 4.10.
    pub no_new_privs: Option<bool>,
    pub seccomp: Option<SeccompMode>,
    /// `PPid`; `None` when the line is missing (the parent comes from `stat` then).
    pub ppid: Option<i32>,
    /// A zombie or dead process (`State:` `Z`, `X`): no executable or memory any more.
    /// `false` when there is no `State` line (`stat` says then).
    pub zombie: bool,
}

/// The raw value of the `Name:` line of `/proc/PID/status` (`comm`, escaped by the kernel).
pub fn status_name(bytes: &[u8]) -> Option<&[u8]> {
    let rest = bytes.strip_prefix(b"Name:")?;
    let end = rest.iter().position(|b| *b == b'\n').unwrap_or(rest.len());
    Some(&rest[..end])
}

fn ids(value: &str) -> Option<Ids> {
    let mut it = value
        .split_ascii_whitespace()
        .map(|v| v.parse::<u32>().ok());
    let ids = Ids {
        real: it.next()??,
        effective: it.next()??,
        saved: it.next()??,
        filesystem: it.next()??,
    };
    Some(ids)
}

fn mask(value: &str) -> Option<u64> {
    let v = value.trim();
    if v.is_empty() || v.len() > 16 {
        return None;
    }
    u64::from_str_radix(v, 16).ok()
}

/// Parses `/proc/PID/status`. `Uid`, `Gid`, `CapInh`, `CapPrm` and `CapEff` are required (a
/// status without them is truncated); the others are optional, but present and garbled is
/// an error too.
pub fn parse_status(bytes: &[u8]) -> Result<StatusFields, String> {
    let (mut uids, mut gids, mut inh, mut prm, mut eff) = (None, None, None, None, None);
    let (mut bnd, mut amb, mut nnp, mut seccomp) = (None, None, None, None);
    let (mut ppid, mut zombie) = (None, false);
    // Only the keys below are looked at, and their values are ASCII when well formed: lines
    // are split as bytes, and a value is text only when it is read (`Name`, which may hold
    // any byte, is read by `status_name`).
    let mut wanted = 11;
    for line in bytes.split(|b| *b == b'\n') {
        // Most lines are of no interest (`Vm*`, `Rss*`, `Threads`, `Cpus_allowed`, ...): the
        // first letter rules them out before the colon is looked for. All eleven found, the rest
        // of the file (a third of it) is not looked at.
        if wanted == 0 {
            break;
        }
        if !matches!(line.first(), Some(b'U' | b'G' | b'P' | b'C' | b'N' | b'S')) {
            continue;
        }
        let Some(colon) = line.iter().take(12).position(|b| *b == b':') else {
            continue;
        };
        let (key, value) = (&line[..colon], &line[colon + 1..]);
        if !matches!(
            key,
            b"Uid"
                | b"Gid"
                | b"PPid"
                | b"CapInh"
                | b"CapPrm"
                | b"CapEff"
                | b"CapBnd"
                | b"CapAmb"
                | b"NoNewPrivs"
                | b"Seccomp"
                | b"State"
        ) {
            continue;
        }
        wanted -= 1;
        let value = String::from_utf8_lossy(value);
        let value = value.as_ref();
        let bad = |what: &str| format!("bad {what} value {:?}", value.trim());
        match key {
            b"Uid" => uids = Some(ids(value).ok_or_else(|| bad("Uid"))?),
            b"Gid" => gids = Some(ids(value).ok_or_else(|| bad("Gid"))?),
            b"PPid" => ppid = Some(value.trim().parse::<i32>().map_err(|_| bad("PPid"))?),
            b"CapInh" => inh = Some(mask(value).ok_or_else(|| bad("CapInh"))?),
            b"CapPrm" => prm = Some(mask(value).ok_or_else(|| bad("CapPrm"))?),
            b"CapEff" => eff = Some(mask(value).ok_or_else(|| bad("CapEff"))?),
            b"CapBnd" => bnd = Some(mask(value).ok_or_else(|| bad("CapBnd"))?),
            b"CapAmb" => amb = Some(mask(value).ok_or_else(|| bad("CapAmb"))?),
            b"NoNewPrivs" => {
                nnp = Some(match value.trim() {
                    "0" => false,
                    "1" => true,
                    _ => return Err(bad("NoNewPrivs")),
                })
            }
            b"State" => {
                zombie = matches!(
                    value.trim_start().as_bytes().first(),
                    Some(b'Z' | b'X' | b'x')
                );
            }
            b"Seccomp" => {
                seccomp = Some(match value.trim() {
                    "0" => SeccompMode::Disabled,
                    "1" => SeccompMode::Strict,
                    "2" => SeccompMode::Filter,
                    _ => return Err(bad("Seccomp")),
                })
            }
            _ => {}
        }
    }
    let missing = |what: &str| format!("no {what} line (truncated?)");
    Ok(StatusFields {
        uids: uids.ok_or_else(|| missing("Uid"))?,
        gids: gids.ok_or_else(|| missing("Gid"))?,
        cap_inh: inh.ok_or_else(|| missing("CapInh"))?,
        cap_prm: prm.ok_or_else(|| missing("CapPrm"))?,
        cap_eff: eff.ok_or_else(|| missing("CapEff"))?,
        cap_bnd: bnd,
        cap_amb: amb,
        no_new_privs: nnp,
        seccomp,
        ppid,
        zombie,
    })
}

/// Text for display: valid UTF-8 as it is, control characters, bidi/invisible characters
/// (`nodeguard_model::is_bidi_or_invisible`) and bytes that are not UTF-8 as `\xNN`. Unlike
/// [`escape_path`] a backslash stays single, so ordinary text reads as it is.
pub fn display_text(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for ch in chunk.valid().chars() {
            if ch.is_control() || nodeguard_model::is_bidi_or_invisible(ch) {
                let mut buf = [0u8; 4];
                for b in ch.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!("\\x{b:02x}"));
                }
            } else {
                out.push(ch);
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// `/proc/PID/cmdline` as one line: arguments joined by spaces, escaped like
/// [`display_text`], at most [`CMDLINE_MAX`] bytes (cut on a character boundary).
pub fn cmdline_text(bytes: &[u8]) -> String {
    let mut end = bytes.len();
    while end > 0 && bytes[end - 1] == 0 {
        end -= 1;
    }
    let joined: Vec<u8> = bytes[..end]
        .iter()
        .map(|b| if *b == 0 { b' ' } else { *b })
        .collect();
    let mut text = display_text(&joined);
    let keep = nodeguard_model::text::cut(&text, CMDLINE_MAX).len();
    text.truncate(keep);
    text
}

/// The inode number in a namespace link target such as `net:[4026531840]`.
pub fn parse_ns_link(target: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(target).ok()?;
    let inner = text.split_once(":[")?.1.strip_suffix(']')?;
    inner.parse().ok()
}

/// Splits a trailing ` (deleted)` off an `exe` link target.
pub fn strip_deleted(target: &[u8]) -> (&[u8], bool) {
    match target.strip_suffix(b" (deleted)") {
        Some(path) => (path, true),
        None => (target, false),
    }
}

/// A kernel thread: `PF_KTHREAD`, or kthreadd (pid 2) and its children.
pub fn is_kernel_thread(pid: i32, ppid: i32, flags: u64) -> bool {
    flags & PF_KTHREAD != 0 || pid == 2 || ppid == 2
}

/// The capability masks as `/proc/PID/status` prints them.
pub fn capability_masks(s: &StatusFields) -> CapabilityMasks {
    let hex = |m: u64| Arc::<str>::from(format!("{m:016x}"));
    CapabilityMasks {
        effective: hex(s.cap_eff),
        permitted: hex(s.cap_prm),
        inheritable: hex(s.cap_inh),
        bounding: s.cap_bnd.map(hex),
        ambient: s.cap_amb.map(hex),
    }
}

/// The capability sets by name.
pub fn capabilities(s: &StatusFields) -> Capabilities {
    let set = |mask: u64| CapabilitySet::from(decode_capabilities(mask));
    Capabilities {
        effective: set(s.cap_eff),
        permitted: set(s.cap_prm),
        inheritable: set(s.cap_inh),
        bounding: s.cap_bnd.map(set).unwrap_or_default(),
        ambient: s.cap_amb.map(set).unwrap_or_default(),
    }
}

/// [`capabilities`] and [`capability_masks`] of `s`, shared with the processes this thread
/// read before with the same five sets: a node runs a few dozen distinct sets over a thousand
/// processes, so each set is decoded and written once and every process holds references.
/// At most [`SHARED_CAPABILITIES_MAX`] are remembered per thread (then it starts over).
pub fn shared_capabilities(s: &StatusFields) -> (Capabilities, CapabilityMasks) {
    type Raw = (u64, u64, u64, Option<u64>, Option<u64>);
    thread_local! {
        static SEEN: std::cell::RefCell<HashMap<Raw, (Capabilities, CapabilityMasks)>> =
            std::cell::RefCell::new(HashMap::new());
    }
    let raw = (s.cap_eff, s.cap_prm, s.cap_inh, s.cap_bnd, s.cap_amb);
    SEEN.with(|seen| {
        // Only this function borrows it, and it does not call itself: never borrowed twice.
        let mut seen = seen.borrow_mut();
        if let Some(known) = seen.get(&raw) {
            return known.clone();
        }
        if seen.len() >= SHARED_CAPABILITIES_MAX {
            seen.clear();
        }
        let made = (capabilities(s), capability_masks(s));
        seen.insert(raw, made.clone());
        made
    })
}

/// The most distinct capability readings [`shared_capabilities`] keeps per thread.
pub const SHARED_CAPABILITIES_MAX: usize = 256;

/// Names of the namespaces `ns` shares with `host` (both known and equal).
pub fn shared_with_host(ns: &Namespaces, host: &Namespaces) -> Vec<Cow<'static, str>> {
    let pairs = [
        ("pid", ns.pid, host.pid),
        ("net", ns.net, host.net),
        ("ipc", ns.ipc, host.ipc),
        ("uts", ns.uts, host.uts),
        ("mnt", ns.mnt, host.mnt),
        ("user", ns.user, host.user),
        ("cgroup", ns.cgroup, host.cgroup),
    ];
    pairs
        .iter()
        .filter(|(_, a, b)| a.is_some() && a == b)
        .map(|(n, _, _)| Cow::Borrowed(*n))
        .collect()
}
