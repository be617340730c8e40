//! Parsing of what the process-events connector delivers: one datagram holds one or more
//! netlink messages (`nlmsghdr`), each carrying a connector message (`cn_msg`) whose data is
//! a `proc_event`. Every length is checked against the bytes actually received; anything
//! that does not add up is counted as malformed and skipped, never trusted.
//!
//! Layouts (`include/uapi/linux/netlink.h`, `connector.h`, `cn_proc.h`), native endian:
//! - `nlmsghdr`: `u32 len, u16 type, u16 flags, u32 seq, u32 pid` (16 bytes), messages
//!   aligned to 4 bytes;
//! - `cn_msg`: `u32 idx, u32 val, u32 seq, u32 ack, u16 len, u16 flags` (20 bytes), then
//!   `len` bytes of data;
//! - `proc_event`: `u32 what, u32 cpu, u64 timestamp_ns` (16 bytes; `ktime_get_ns()`, the
//!   monotonic clock), then the event's data; for an exec `i32 process_pid, i32
//!   process_tgid`.

/// `CN_IDX_PROC` / `CN_VAL_PROC`: the connector id of process events.
pub const CN_IDX_PROC: u32 = 1;
pub const CN_VAL_PROC: u32 = 1;
/// `NLMSG_NOOP`, `NLMSG_ERROR`, `NLMSG_DONE`, `NLMSG_OVERRUN`.
const NLMSG_NOOP: u16 = 1;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLMSG_OVERRUN: u16 = 4;

pub const NLMSG_HDRLEN: usize = 16;
pub const CN_MSG_LEN: usize = 20;
const PROC_EVENT_HDRLEN: usize = 16;

/// `proc_event.what` values this crate looks at.
pub const PROC_EVENT_NONE: u32 = 0;
pub const PROC_EVENT_EXEC: u32 = 2;

/// What one netlink message said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Message {
    /// A process (thread group `tgid`) called execve; `pid` is the thread that did,
    /// `timestamp_ns` when (`CLOCK_MONOTONIC`, nanoseconds).
    Exec {
        pid: i32,
        tgid: i32,
        timestamp_ns: u64,
    },
    /// The kernel's answer to a (un)subscribe: `PROC_EVENT_NONE` with an error code.
    Ack { err: u32 },
    /// Another process event (fork, exit, uid, ...): not needed here.
    Other,
    /// `NLMSG_ERROR` from the kernel with this (negative errno) code.
    Error(i32),
    /// The kernel says messages were lost (`NLMSG_OVERRUN`).
    Overrun,
    /// Lengths or ids that do not add up; the rest of the datagram is skipped.
    Malformed,
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    let bytes = b.get(at..at.checked_add(2)?)?;
    Some(u16::from_ne_bytes([bytes[0], bytes[1]]))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    let bytes = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_ne_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    let bytes = b.get(at..at.checked_add(8)?)?;
    let mut word = [0u8; 8];
    word.copy_from_slice(bytes);
    Some(u64::from_ne_bytes(word))
}

fn i32_at(b: &[u8], at: usize) -> Option<i32> {
    u32_at(b, at).map(|v| v as i32)
}

/// Every message of one datagram, in order. A malformed message ends the walk (its length
/// cannot be trusted to find the next one) with one [`Message::Malformed`].
pub fn parse_datagram(datagram: &[u8]) -> Vec<Message> {
    let mut out = Vec::new();
    let mut rest = datagram;
    while !rest.is_empty() {
        let Some(len) = u32_at(rest, 0).map(|l| l as usize) else {
            out.push(Message::Malformed);
            break;
        };
        if len < NLMSG_HDRLEN || len > rest.len() {
            out.push(Message::Malformed);
            break;
        }
        out.push(parse_message(&rest[..len]));
        // Messages are 4-byte aligned; the last one may end without padding.
        let next = len.checked_add(3).map_or(usize::MAX, |l| l & !3);
        if next >= rest.len() {
            break;
        }
        rest = &rest[next..];
    }
    out
}

/// One netlink message, `msg.len()` being its `nlmsg_len` (checked by the caller).
fn parse_message(msg: &[u8]) -> Message {
    let Some(kind) = u16_at(msg, 4) else {
        return Message::Malformed;
    };
    let payload = &msg[NLMSG_HDRLEN.min(msg.len())..];
    match kind {
        NLMSG_ERROR => i32_at(payload, 0).map_or(Message::Malformed, Message::Error),
        NLMSG_OVERRUN => Message::Overrun,
        NLMSG_NOOP => Message::Other,
        NLMSG_DONE => parse_connector(payload),
        _ => Message::Malformed,
    }
}

fn parse_connector(cn: &[u8]) -> Message {
    let (Some(idx), Some(val), Some(len)) = (u32_at(cn, 0), u32_at(cn, 4), u16_at(cn, 16)) else {
        return Message::Malformed;
    };
    if idx != CN_IDX_PROC || val != CN_VAL_PROC {
        return Message::Malformed;
    }
    let Some(data) = cn.get(CN_MSG_LEN..CN_MSG_LEN + usize::from(len)) else {
        return Message::Malformed;
    };
    let (Some(what), Some(timestamp_ns)) = (u32_at(data, 0), u64_at(data, 8)) else {
        return Message::Malformed;
    };
    let body = data.get(PROC_EVENT_HDRLEN..).unwrap_or(&[]);
    match what {
        PROC_EVENT_EXEC => match (i32_at(body, 0), i32_at(body, 4)) {
            (Some(pid), Some(tgid)) if pid > 0 && tgid > 0 => Message::Exec {
                pid,
                tgid,
                timestamp_ns,
            },
            _ => Message::Malformed,
        },
        // `ack` of `struct proc_event` sits at the start of the union as `u32 err`.
        PROC_EVENT_NONE => u32_at(body, 0).map_or(Message::Malformed, |err| Message::Ack { err }),
        _ => Message::Other,
    }
}

/// The subscribe request: a netlink message to the kernel (pid 0) carrying a connector
/// message for `CN_IDX_PROC` with `op` (`PROC_CN_MCAST_LISTEN` = 1, `IGNORE` = 2). With
/// `event_filter`, the data is a `struct proc_input { op, event_type }` (Linux 6.6+:
/// only those events are delivered to this socket); else the bare `op` older kernels take
/// (they ignore any other length silently).
pub fn subscribe_request(op: u32, event_filter: Option<u32>) -> Vec<u8> {
    let mut data = op.to_ne_bytes().to_vec();
    if let Some(filter) = event_filter {
        data.extend_from_slice(&filter.to_ne_bytes());
    }
    let total = NLMSG_HDRLEN + CN_MSG_LEN + data.len();
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&(total as u32).to_ne_bytes());
    out.extend_from_slice(&NLMSG_DONE.to_ne_bytes());
    out.extend_from_slice(&0u16.to_ne_bytes()); // flags
    out.extend_from_slice(&0u32.to_ne_bytes()); // seq
    out.extend_from_slice(&std::process::id().to_ne_bytes());
    out.extend_from_slice(&CN_IDX_PROC.to_ne_bytes());
    out.extend_from_slice(&CN_VAL_PROC.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes()); // seq
    out.extend_from_slice(&0u32.to_ne_bytes()); // ack
    out.extend_from_slice(&(data.len() as u16).to_ne_bytes());
    out.extend_from_slice(&0u16.to_ne_bytes()); // flags
    out.extend_from_slice(&data);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A datagram as the kernel sends it: nlmsghdr + cn_msg + proc_event.
    fn event(what: u32, body: &[u8]) -> Vec<u8> {
        let mut data = Vec::new();
        data.extend_from_slice(&what.to_ne_bytes());
        data.extend_from_slice(&3u32.to_ne_bytes()); // cpu
        data.extend_from_slice(&123_456u64.to_ne_bytes());
        data.extend_from_slice(body);
        let total = NLMSG_HDRLEN + CN_MSG_LEN + data.len();
        let mut out = Vec::new();
        out.extend_from_slice(&(total as u32).to_ne_bytes());
        out.extend_from_slice(&NLMSG_DONE.to_ne_bytes());
        out.extend_from_slice(&0u16.to_ne_bytes());
        out.extend_from_slice(&7u32.to_ne_bytes());
        out.extend_from_slice(&0u32.to_ne_bytes());
        out.extend_from_slice(&CN_IDX_PROC.to_ne_bytes());
        out.extend_from_slice(&CN_VAL_PROC.to_ne_bytes());
        out.extend_from_slice(&7u32.to_ne_bytes());
        out.extend_from_slice(&0u32.to_ne_bytes());
        out.extend_from_slice(&(data.len() as u16).to_ne_bytes());
        out.extend_from_slice(&0u16.to_ne_bytes());
        out.extend_from_slice(&data);
        out
    }

    fn exec(pid: i32, tgid: i32) -> Vec<u8> {
        let mut body = pid.to_ne_bytes().to_vec();
        body.extend_from_slice(&tgid.to_ne_bytes());
        event(PROC_EVENT_EXEC, &body)
    }

    #[test]
    fn an_exec_event_gives_its_pid_and_thread_group() {
        assert_eq!(
            parse_datagram(&exec(4242, 4240)),
            vec![Message::Exec {
                pid: 4242,
                tgid: 4240,
                timestamp_ns: 123_456
            }]
        );
        // Fork and exit events are not execs.
        let fork = event(1, &[0; 16]);
        assert_eq!(parse_datagram(&fork), vec![Message::Other]);
        let ack = event(PROC_EVENT_NONE, &0u32.to_ne_bytes());
        assert_eq!(parse_datagram(&ack), vec![Message::Ack { err: 0 }]);
    }

    #[test]
    fn several_messages_in_one_datagram_are_all_read() {
        let mut two = exec(10, 10);
        while !two.len().is_multiple_of(4) {
            two.push(0);
        }
        two.extend(exec(11, 11));
        assert_eq!(
            parse_datagram(&two),
            vec![
                Message::Exec {
                    pid: 10,
                    tgid: 10,
                    timestamp_ns: 123_456
                },
                Message::Exec {
                    pid: 11,
                    tgid: 11,
                    timestamp_ns: 123_456
                }
            ]
        );
    }

    #[test]
    fn the_subscribe_request_is_a_well_formed_connector_message() {
        // Our own parser reads back what we send, with the op as the proc_event "what".
        let req = subscribe_request(1, Some(PROC_EVENT_EXEC));
        assert_eq!(req.len(), NLMSG_HDRLEN + CN_MSG_LEN + 8);
        assert_eq!(u32_at(&req, 0), Some(req.len() as u32));
        assert_eq!(u16_at(&req, NLMSG_HDRLEN + 16), Some(8));
        let legacy = subscribe_request(1, None);
        assert_eq!(u16_at(&legacy, NLMSG_HDRLEN + 16), Some(4));
    }

    #[test]
    fn wrong_connector_ids_and_bad_lengths_are_malformed() {
        let mut other_idx = exec(1, 1);
        other_idx[NLMSG_HDRLEN] = 9;
        assert_eq!(parse_datagram(&other_idx), vec![Message::Malformed]);
        // nlmsg_len larger than what arrived.
        let mut long = exec(1, 1);
        long[0] = 200;
        assert_eq!(parse_datagram(&long), vec![Message::Malformed]);
        // nlmsg_len smaller than a header.
        let mut short = exec(1, 1);
        short[..4].copy_from_slice(&8u32.to_ne_bytes());
        assert_eq!(parse_datagram(&short), vec![Message::Malformed]);
        // cn_msg.len past the message.
        let mut cn_long = exec(1, 1);
        cn_long[NLMSG_HDRLEN + 16..NLMSG_HDRLEN + 18].copy_from_slice(&500u16.to_ne_bytes());
        assert_eq!(parse_datagram(&cn_long), vec![Message::Malformed]);
        // An exec with a zero or negative pid is not trusted.
        assert_eq!(parse_datagram(&exec(0, 1)), vec![Message::Malformed]);
        assert_eq!(parse_datagram(&exec(5, -1)), vec![Message::Malformed]);
        assert!(parse_datagram(&[]).is_empty());
    }

    /// Fuzz-style: every truncation of real messages, and a few hundred thousand bytes of
    /// pseudo-random garbage, parse without panicking; a truncated exec is never taken for
    /// an exec with other numbers.
    #[test]
    fn truncated_and_garbage_datagrams_never_panic() {
        let mut datagram = exec(77, 77);
        datagram.extend(exec(78, 78));
        for cut in 0..datagram.len() {
            for m in parse_datagram(&datagram[..cut]) {
                if let Message::Exec { pid, tgid, .. } = m {
                    assert_eq!((pid, tgid), (77, 77), "cut at {cut}");
                }
            }
        }
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for round in 0..20_000 {
            let len = (next() % 128) as usize;
            let mut bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            // Half the rounds start from a valid message and flip bytes, reaching past the
            // header checks.
            if round % 2 == 0 {
                bytes = exec(5, 5);
                for _ in 0..(next() % 4 + 1) {
                    let at = (next() as usize) % bytes.len();
                    bytes[at] = next() as u8;
                }
            }
            let _ = parse_datagram(&bytes);
        }
    }
}
