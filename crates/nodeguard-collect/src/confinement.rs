//! What confines a container besides its capabilities: the devices its cgroup allows and the
//! paths its runtime masked. A privileged container (`docker run --privileged`,
//! `privileged: true`) has neither, and these are what tell it apart from one that was only
//! given every capability.
//!
//! - Devices, cgroup v1: `<root>/devices/<path>/devices.list` is `a *:* rwm` when every
//!   device is allowed; runtimes write a short allow list otherwise. Cgroup v2 has no such
//!   file: a `BPF_CGROUP_DEVICE` program decides, and runc and crun attach one for a
//!   privileged container too (an allow-all one), so "a program is attached" says nothing and
//!   reading the program back needs CAP_SYS_ADMIN. There the answer is
//!   [`DeviceAccess::Unknown`], never "restricted".
//! - Masks: runtimes cover `/proc/kcore`, `/proc/keys`, `/proc/timer_list`, … with
//!   `/dev/null` and `/proc/acpi`, `/sys/firmware`, … with an empty read-only tmpfs, remount
//!   `/proc/sys`, `/proc/bus`, … read-only and mount `/sys` read-only — unless the container
//!   is privileged. Which of them exist depends on the kernel (no `/proc/kcore` without
//!   `CONFIG_PROC_KCORE`), so any one seen masked means the runtime masked.

use crate::cgroup::CgroupFile;
use crate::limits::split_container_path;
use nodeguard_model::DeviceAccess;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Where the masks are read: the mount table, so they live with it.
pub use crate::mountinfo::{masked_paths, MASKED_PATHS, READ_ONLY_PATHS};

/// `devices.list` of a v1 devices cgroup: [`DeviceAccess::All`] when a line allows every
/// device (`a *:* rwm`), else [`DeviceAccess::Restricted`] (an empty list allows nothing).
/// Text that is no device list is [`DeviceAccess::Unknown`].
pub fn parse_devices_list(text: &str) -> DeviceAccess {
    let mut access = DeviceAccess::Restricted;
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let mut words = line.split_whitespace();
        let (Some(kind), Some(numbers), Some(modes), None) =
            (words.next(), words.next(), words.next(), words.next())
        else {
            return DeviceAccess::Unknown;
        };
        let well_formed = matches!(kind, "a" | "b" | "c")
            && numbers.split_once(':').is_some()
            && !modes.is_empty()
            && modes.bytes().all(|b| matches!(b, b'r' | b'w' | b'm'));
        if !well_formed {
            return DeviceAccess::Unknown;
        }
        if kind == "a" && numbers == "*:*" && modes.len() == 3 {
            access = DeviceAccess::All;
        }
    }
    access
}

/// `devices.list` is a line per rule; a list longer than this is not a runtime's.
const DEVICES_LIST_MAX: u64 = 64 * 1024;

/// The v1 devices hierarchy under a cgroup root, when there is one: looked up once per pass.
pub fn devices_hierarchy(cgroup_root: &Path) -> Option<PathBuf> {
    let hierarchy = cgroup_root.join("devices");
    hierarchy
        .join("devices.list")
        .is_file()
        .then_some(hierarchy)
}

/// The devices a container's cgroup allows, from the cgroup file of one of its processes.
/// `Ok(Unknown)` on a host without a v1 devices hierarchy (`hierarchy` is `None`: pure v2,
/// see the module docs) or when the process shows no devices cgroup; `Err` when the file
/// could not be read.
pub fn read_device_access(
    hierarchy: Option<&Path>,
    file: &CgroupFile,
    container_id: &str,
) -> std::io::Result<DeviceAccess> {
    let (Some(hierarchy), Some(entry)) = (hierarchy, file.v1_entry("devices")) else {
        return Ok(DeviceAccess::Unknown);
    };
    let (own, _) = split_container_path(&entry.path, container_id);
    let rel = own.trim_start_matches('/');
    let path = if rel.is_empty() {
        hierarchy.join("devices.list")
    } else {
        hierarchy.join(rel).join("devices.list")
    };
    let mut text = String::new();
    std::fs::File::open(&path)?
        .take(DEVICES_LIST_MAX)
        .read_to_string(&mut text)?;
    Ok(parse_devices_list(&text))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mountinfo::parse_mountinfo;

    /// A runc 1.1 container from `runc spec`'s defaults, read on a 6.18 kernel without
    /// `/proc/kcore` (this machine).
    const RUNC_DEFAULT: &str = "\
68 46 254:0 /tmp/b/rootfs / ro,relatime - ext4 /dev/vda rw
69 68 0:41 / /proc rw,relatime - proc proc rw
70 68 0:42 / /dev rw,nosuid - tmpfs tmpfs rw,size=65536k,mode=755
74 68 0:45 / /sys ro,nosuid,nodev,noexec,relatime - sysfs sysfs ro
75 74 0:46 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime - tmpfs tmpfs rw,mode=755
47 69 0:41 /bus /proc/bus ro,relatime - proc proc rw
48 69 0:41 /fs /proc/fs ro,relatime - proc proc rw
49 69 0:41 /irq /proc/irq ro,relatime - proc proc rw
50 69 0:41 /sys /proc/sys ro,relatime - proc proc rw
51 69 0:47 / /proc/acpi ro,relatime - tmpfs tmpfs ro
52 69 0:42 /null /proc/keys rw,nosuid - tmpfs tmpfs rw,size=65536k,mode=755
53 69 0:42 /null /proc/timer_list rw,nosuid - tmpfs tmpfs rw,size=65536k,mode=755
54 74 0:48 / /sys/firmware ro,relatime - tmpfs tmpfs ro
";

    /// The same container made privileged: no masks, `/sys` read-write.
    const PRIVILEGED: &str = "\
68 46 0:50 / / rw,relatime - overlay overlay rw,lowerdir=/l,upperdir=/u,workdir=/w
69 68 0:41 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw
70 68 0:42 / /dev rw,nosuid - tmpfs tmpfs rw,size=65536k,mode=755
74 68 0:45 / /sys rw,nosuid,nodev,noexec,relatime - sysfs sysfs rw
75 74 0:46 / /sys/fs/cgroup ro,nosuid,nodev,noexec,relatime - tmpfs tmpfs ro,mode=755
";

    fn masks(text: &str) -> Option<Vec<String>> {
        masked_paths(&parse_mountinfo(text.as_bytes()).0)
    }

    #[test]
    fn runtime_masks_are_seen() {
        assert_eq!(
            masks(RUNC_DEFAULT).unwrap(),
            [
                "/proc/acpi",
                "/proc/bus",
                "/proc/fs",
                "/proc/irq",
                "/proc/keys",
                "/proc/sys",
                "/proc/timer_list",
                "/sys",
                "/sys/firmware",
            ]
        );
    }

    #[test]
    fn privileged_has_none_and_no_proc_says_nothing() {
        assert_eq!(masks(PRIVILEGED), Some(vec![]));
        // /sys alone read-only is a mask (a privileged container's /sys is writable).
        let ro_sys = PRIVILEGED.replace(
            "/sys rw,nosuid,nodev,noexec,relatime - sysfs sysfs rw",
            "/sys ro,nosuid,nodev,noexec,relatime - sysfs sysfs ro",
        );
        assert_eq!(masks(&ro_sys), Some(vec!["/sys".to_string()]));
        // A read-write bind on a read-only path is no mask; a later read-only one is.
        let rw_proc_sys = format!("{PRIVILEGED}80 69 0:41 /sys /proc/sys rw - proc proc rw\n");
        assert_eq!(masks(&rw_proc_sys), Some(vec![]));
        let ro_again = format!("{rw_proc_sys}81 80 0:41 /sys /proc/sys ro - proc proc rw\n");
        assert_eq!(masks(&ro_again), Some(vec!["/proc/sys".to_string()]));
        // Without /proc (a chrooted process's view, a host table) nothing is known.
        let no_proc: String = PRIVILEGED
            .lines()
            .filter(|l| !l.contains(" /proc "))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(masks(&no_proc), None);
        assert_eq!(masks(""), None);
    }

    #[test]
    fn devices_lists() {
        assert_eq!(parse_devices_list("a *:* rwm\n"), DeviceAccess::All);
        // runc's default list (read on this machine).
        let runc = "b *:* m\nc *:* m\nc 1:3 rwm\nc 1:5 rwm\nc 136:* rwm\n";
        assert_eq!(parse_devices_list(runc), DeviceAccess::Restricted);
        assert_eq!(parse_devices_list(""), DeviceAccess::Restricted);
        assert_eq!(parse_devices_list("a *:* r\n"), DeviceAccess::Restricted);
        assert_eq!(parse_devices_list("garbage\n"), DeviceAccess::Unknown);
        assert_eq!(parse_devices_list("a *:* rwx\n"), DeviceAccess::Unknown);
        assert_eq!(parse_devices_list("x 1:2 rwm\n"), DeviceAccess::Unknown);
        assert_eq!(
            parse_devices_list("a *:* rwm extra\n"),
            DeviceAccess::Unknown
        );
    }

    const ID: &str = "66990560a238cc1248910adabec2ce18231007aa2b797f479aa9120aa3f04cb0";

    fn write(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn device_access_from_a_v1_tree_unknown_on_v2() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("v1");
        let devices = root.join("devices");
        write(&devices.join("devices.list"), "a *:* rwm\n");
        // Docker's cgroupfs layout; the process sits in a sub-cgroup of the container's.
        let dir = devices.join(format!("ng/docker/{ID}"));
        write(&dir.join("devices.list"), "a *:* rwm\n");
        let file = crate::parse_cgroup_file(&format!(
            "5:devices:/ng/docker/{ID}/sub\n0::/ng/docker/{ID}\n"
        ));
        assert_eq!(
            read_device_access(devices_hierarchy(&root).as_deref(), &file, ID).unwrap(),
            DeviceAccess::All
        );
        write(&dir.join("devices.list"), "c 1:3 rwm\nc 136:* rwm\n");
        assert_eq!(
            read_device_access(devices_hierarchy(&root).as_deref(), &file, ID).unwrap(),
            DeviceAccess::Restricted
        );
        // The container's cgroup gone: an error the caller tells from a read failure.
        let other = "1".repeat(64);
        let gone = crate::parse_cgroup_file(&format!("5:devices:/ng/docker/{other}\n"));
        assert_eq!(
            read_device_access(devices_hierarchy(&root).as_deref(), &gone, &other)
                .unwrap_err()
                .kind(),
            std::io::ErrorKind::NotFound
        );
        // No devices line in the process's cgroup file: unknown.
        let no_line = crate::parse_cgroup_file(&format!("0::/ng/docker/{ID}\n"));
        assert_eq!(
            read_device_access(devices_hierarchy(&root).as_deref(), &no_line, ID).unwrap(),
            DeviceAccess::Unknown
        );
        // Pure v2 (no devices hierarchy; a BPF program decides): unknown, never restricted.
        let v2 = tmp.path().join("v2");
        write(&v2.join("cgroup.controllers"), "cpu memory pids\n");
        write(&v2.join(format!("ng/docker/{ID}/cgroup.procs")), "42\n");
        assert_eq!(
            read_device_access(devices_hierarchy(&v2).as_deref(), &no_line, ID).unwrap(),
            DeviceAccess::Unknown
        );
    }
}
