//! Linux capability numbers and their names, as `capsh --decode` and `getcap` know them.

use crate::report::CapabilityName;

/// Capability names indexed by capability number (`include/uapi/linux/capability.h`).
pub const CAPABILITY_NAMES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// The name of capability `bit`: `CAP_SYS_ADMIN` for 21, `CAP_41` for a number this table
/// does not know yet (a newer kernel).
pub fn capability_name(bit: u32) -> CapabilityName {
    match CAPABILITY_NAMES.get(bit as usize) {
        Some(name) => CapabilityName::Borrowed(name),
        None => CapabilityName::Owned(format!("CAP_{bit}")),
    }
}

/// The number of a capability name, accepting `CAP_SYS_ADMIN`, `cap_sys_admin` or `SYS_ADMIN`.
pub fn capability_number(name: &str) -> Option<u32> {
    let upper = name.trim().to_ascii_uppercase();
    let full = if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    };
    if let Some(pos) = CAPABILITY_NAMES.iter().position(|n| *n == full) {
        return Some(pos as u32);
    }
    full.strip_prefix("CAP_")
        .and_then(|n| n.parse::<u32>().ok())
        .filter(|n| *n < 64)
}

/// Decodes a capability bit mask (as in `CapEff:` of `/proc/PID/status`) into names, lowest
/// bit first — the same set `capsh --decode=HEX` prints.
pub fn decode_capabilities(mask: u64) -> Vec<CapabilityName> {
    // Sized up front: collecting from a filter would grow it several times.
    let mut names = Vec::with_capacity(mask.count_ones() as usize);
    names.extend(
        (0..64u32)
            .filter(|bit| mask & (1u64 << bit) != 0)
            .map(capability_name),
    );
    names
}

/// A mask with every capability up to and including `last_cap` set
/// (`/proc/sys/kernel/cap_last_cap`): the bounding set of a privileged container.
pub fn full_capability_mask(last_cap: u32) -> u64 {
    if last_cap >= 63 {
        u64::MAX
    } else {
        (1u64 << (last_cap + 1)) - 1
    }
}

/// `CAP_AUDIT_READ`, the last capability Linux had before 5.8 (5.8 added `CAP_PERFMON` and
/// `CAP_BPF`, 5.9 `CAP_CHECKPOINT_RESTORE`). A runtime whose capability list is older than
/// the kernel grants a privileged container only what it knows: Docker 20.10 with runc 1.1
/// gives 0–37 (`0000003ffeffffff`) on a 6.x kernel whose own set goes up to 40. Every
/// runtime in use knows 0–37, so a bounding set holding all of those (that the host has)
/// holds every capability some runtime could grant.
pub const CAP_LAST_OLDEST_RUNTIME: u32 = 37;

/// The capabilities a container runtime grants by default (Docker/containerd/CRI-O's
/// default set). Anything beyond these in a container's effective set was asked for.
pub const RUNTIME_DEFAULT_CAPABILITIES: [&str; 14] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// The default list of capabilities that let a container escape or own the node.
pub const DEFAULT_DANGEROUS_CAPABILITIES: [&str; 14] = [
    "CAP_SYS_ADMIN",
    "CAP_SYS_PTRACE",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_NET_ADMIN",
    "CAP_DAC_READ_SEARCH",
    "CAP_BPF",
    "CAP_PERFMON",
    "CAP_SYS_BOOT",
    "CAP_MAC_ADMIN",
    "CAP_MAC_OVERRIDE",
    "CAP_SYS_TIME",
    "CAP_SYSLOG",
    "CAP_LINUX_IMMUTABLE",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_docker_default_effective_set() {
        // CapEff of a default Docker container.
        let names = decode_capabilities(0x00000000a80425fb);
        assert_eq!(
            names,
            [
                "CAP_CHOWN",
                "CAP_DAC_OVERRIDE",
                "CAP_FOWNER",
                "CAP_FSETID",
                "CAP_KILL",
                "CAP_SETGID",
                "CAP_SETUID",
                "CAP_SETPCAP",
                "CAP_NET_BIND_SERVICE",
                "CAP_NET_RAW",
                "CAP_SYS_CHROOT",
                "CAP_MKNOD",
                "CAP_AUDIT_WRITE",
                "CAP_SETFCAP"
            ]
        );
    }

    #[test]
    fn unknown_bits_keep_their_number() {
        assert_eq!(decode_capabilities(1 << 45), ["CAP_45"]);
        assert_eq!(capability_number("CAP_45"), Some(45));
    }

    #[test]
    fn names_round_trip_in_any_spelling() {
        for (i, name) in CAPABILITY_NAMES.iter().enumerate() {
            assert_eq!(capability_number(name), Some(i as u32));
            assert_eq!(capability_number(&name.to_lowercase()), Some(i as u32));
            assert_eq!(capability_number(&name[4..]), Some(i as u32));
        }
        assert_eq!(capability_number("CAP_NOT_A_THING"), None);
    }

    #[test]
    fn full_mask_matches_last_cap() {
        assert_eq!(full_capability_mask(40), 0x1ff_ffff_ffff);
        assert_eq!(full_capability_mask(63), u64::MAX);
        assert_eq!(decode_capabilities(full_capability_mask(40)).len(), 41);
    }
}
