//! The setuid/setgid files Linux distributions ship in their base images, and the one file
//! capability they set (ping's `cap_net_raw`).
//!
//! A `setuid_file`/`setgid_file` in an image layer at one of these paths, owned by root, is
//! the distribution's own (`passwd`, `su`, `mount`, …): every Debian, Ubuntu or UBI image has
//! them, so reporting them at `medium` drowned the findings worth acting on (on a node of
//! Debian-based containers, 67 % of the medium-or-worse findings were these files). They are
//! reported at `low` instead, unless the policy sets `strict_setuid: true`. The same path in
//! the container's **writable layer** is never on this list's mercy: it was planted at run time
//! and stays `high`.
//!
//! Where each path comes from (checked with `dpkg -S` / `find -perm /6000` in a
//! `debootstrap --variant=minbase bookworm` root, and the packages' file lists on
//! packages.debian.org, pkgs.alpinelinux.org and the UBI 9 images):
//! - Debian 12 minbase (11 files, all of them): `passwd` (chfn, chsh, gpasswd, passwd: setuid;
//!   chage, expiry: setgid shadow), `login` (newgrp), `mount` (mount, umount), `util-linux` (su),
//!   `libpam-modules-bin` (unix_chkpwd: setgid shadow).
//! - Debian/Ubuntu packages common in application images: `sudo` (sudo), `openssh-client`
//!   (ssh-keysign; ssh-agent setgid in older releases), `dbus` (dbus-daemon-launch-helper),
//!   `fuse`/`fuse3` (fusermount, fusermount3), `uidmap` (newuidmap, newgidmap), `cron`
//!   (crontab: setgid crontab), `bsdutils`/`bsdextrautils` (wall, write: setgid tty),
//!   `libutempter0` (utempter: setgid utmp), `liblockfile-bin` (dotlockfile: setgid mail),
//!   `iputils-ping` before file capabilities (ping), `policykit-1` (pkexec,
//!   polkit-agent-helper-1).
//! - Red Hat UBI / Fedora: `shadow-utils` (chage, gpasswd, newgrp, newuidmap, newgidmap),
//!   `passwd` (passwd), `util-linux` (su, mount, umount, chfn, chsh, write), `pam`
//!   (unix_chkpwd, pam_timestamp_check), `libutempter` (utempter).
//! - Alpine: `busybox-suid` (/bin/bbsuid).
//! - Images older than the /usr merge keep the same programs under /bin and /sbin.
//!
//! The list holds exact paths, no globs: a setuid file one directory away from where the
//! distribution puts it is not the distribution's.

/// Exact paths of setuid/setgid files distributions ship; see the module comment for
/// the package each comes from.
pub(crate) const DISTRIBUTION_SETUID_PATHS: &[&str] = &[
    "/bin/bbsuid",
    "/bin/fusermount",
    "/bin/mount",
    "/bin/ping",
    "/bin/su",
    "/bin/umount",
    "/sbin/pam_timestamp_check",
    "/sbin/unix_chkpwd",
    "/usr/bin/bsd-write",
    "/usr/bin/chage",
    "/usr/bin/chfn",
    "/usr/bin/chsh",
    "/usr/bin/crontab",
    "/usr/bin/dotlockfile",
    "/usr/bin/expiry",
    "/usr/bin/fusermount",
    "/usr/bin/fusermount3",
    "/usr/bin/gpasswd",
    "/usr/bin/mount",
    "/usr/bin/newgidmap",
    "/usr/bin/newgrp",
    "/usr/bin/newuidmap",
    "/usr/bin/passwd",
    "/usr/bin/pkexec",
    "/usr/bin/ping",
    "/usr/bin/ssh-agent",
    "/usr/bin/su",
    "/usr/bin/sudo",
    "/usr/bin/umount",
    "/usr/bin/wall",
    "/usr/bin/write",
    "/usr/lib/dbus-1.0/dbus-daemon-launch-helper",
    "/usr/lib/openssh/ssh-keysign",
    "/usr/lib/policykit-1/polkit-agent-helper-1",
    "/usr/lib/polkit-1/polkit-agent-helper-1",
    "/usr/lib/x86_64-linux-gnu/utempter/utempter",
    "/usr/lib/aarch64-linux-gnu/utempter/utempter",
    "/usr/libexec/openssh/ssh-keysign",
    "/usr/libexec/utempter/utempter",
    "/usr/sbin/pam_extrausers_chkpwd",
    "/usr/sbin/pam_timestamp_check",
    "/usr/sbin/unix_chkpwd",
];

/// Files distributions ship with a file capability, and exactly that capability text (as
/// `getcap` prints it): Debian's `iputils-ping` runs `setcap cap_net_raw+ep /bin/ping` in its
/// postinst (bookworm: /usr/bin/ping, reached through /bin as well); Fedora/UBI's `iputils`
/// ships the same. CAP_NET_RAW is in every runtime's default set anyway.
pub(crate) const DISTRIBUTION_FILE_CAPABILITIES: &[(&str, &str)] = &[
    ("/usr/bin/ping", "cap_net_raw=ep"),
    ("/bin/ping", "cap_net_raw=ep"),
];

/// Whether `path` carrying exactly `capabilities` is how a distribution ships it.
pub(crate) fn is_distribution_capability(path: &str, uid: u32, capabilities: &str) -> bool {
    uid == 0
        && DISTRIBUTION_FILE_CAPABILITIES
            .iter()
            .any(|(p, caps)| *p == path && *caps == capabilities.trim())
}

/// Whether `path` (as the container sees it) is where a distribution ships a setuid/setgid
/// file, and the file is owned by root as the distribution ships it.
pub(crate) fn is_distribution_setuid(path: &str, uid: u32) -> bool {
    uid == 0 && DISTRIBUTION_SETUID_PATHS.contains(&path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_exact_root_owned_paths_count() {
        assert!(is_distribution_setuid("/usr/bin/passwd", 0));
        assert!(is_distribution_setuid("/usr/sbin/unix_chkpwd", 0));
        assert!(!is_distribution_setuid("/usr/bin/passwd", 1000));
        assert!(!is_distribution_setuid("/tmp/passwd", 0));
        assert!(!is_distribution_setuid("/usr/bin/passwd2", 0));
        assert!(!is_distribution_setuid("/usr/local/bin/su", 0));
    }

    #[test]
    fn only_pings_own_capability_counts() {
        assert!(is_distribution_capability(
            "/usr/bin/ping",
            0,
            "cap_net_raw=ep"
        ));
        assert!(!is_distribution_capability(
            "/usr/bin/ping",
            0,
            "cap_net_admin,cap_net_raw=ep"
        ));
        assert!(!is_distribution_capability(
            "/tmp/ping",
            0,
            "cap_net_raw=ep"
        ));
    }

    #[test]
    fn paths_are_absolute_and_unique() {
        let mut seen = std::collections::BTreeSet::new();
        for p in DISTRIBUTION_SETUID_PATHS {
            assert!(p.starts_with('/') && !p.contains('*'), "{p}");
            assert!(seen.insert(*p), "duplicate {p}");
        }
    }
}
