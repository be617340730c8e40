//! `/proc/PID/mountinfo` parsing and the overlay layers behind a container's `/`.
//!
//! A line: `36 35 98:0 /root /mnt/point rw,noatime master:1 - overlay overlay rw,lowerdir=/a:/b,upperdir=/u,workdir=/w`.
//! Paths are escaped by the kernel as octal (`\040` for a space); super options of overlay are
//! escaped the same way (`,` `=` space tab newline `\`), and inside `lowerdir=` a literal `:`
//! is written `\:` (so it shows as `\134:`).

use nodeguard_model::{OverlayLayers, RootFs};
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;

/// One mount as `/proc/PID/mountinfo` describes it. Paths are raw bytes (unescaped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountInfo {
    pub mount_id: u32,
    pub parent_id: u32,
    /// `major:minor` of the filesystem (`st_dev` of its files, for most filesystems).
    pub major: u32,
    pub minor: u32,
    /// The directory of the filesystem mounted here.
    pub root: Vec<u8>,
    pub mount_point: Vec<u8>,
    /// Per-mount options (`rw,nosuid,nodev,noexec,relatime`).
    pub options: String,
    /// The mount's own options (field 6) say `ro`.
    pub read_only: bool,
    pub fstype: String,
    pub source: Vec<u8>,
    /// Super block options, still escaped (split them with [`super_options`]).
    pub super_options: String,
}

/// Undoes the kernel's octal escapes (`\040` → space, `\134` → `\`). A backslash not followed
/// by three octal digits is kept as it is.
pub fn unescape_octal(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        if text[i] == b'\\' {
            if let Some(b) = text.get(i + 1..i + 4).and_then(octal3) {
                out.push(b);
                i += 4;
                continue;
            }
        }
        out.push(text[i]);
        i += 1;
    }
    out
}

fn octal3(d: &[u8]) -> Option<u8> {
    if d.len() != 3 || !d.iter().all(|b| (b'0'..=b'7').contains(b)) {
        return None;
    }
    let v = u32::from(d[0] - b'0') * 64 + u32::from(d[1] - b'0') * 8 + u32::from(d[2] - b'0');
    u8::try_from(v).ok()
}

/// Parses mountinfo text; malformed lines are skipped and counted.
pub fn parse_mountinfo(text: &[u8]) -> (Vec<MountInfo>, usize) {
    let mut mounts = Vec::new();
    let mut skipped = 0;
    for line in text.split(|b| *b == b'\n') {
        if line.is_empty() {
            continue;
        }
        match parse_line(line) {
            Some(m) => mounts.push(m),
            None => skipped += 1,
        }
    }
    (mounts, skipped)
}

fn parse_line(line: &[u8]) -> Option<MountInfo> {
    let fields: Vec<&[u8]> = line
        .split(|b| *b == b' ')
        .filter(|f| !f.is_empty())
        .collect();
    let sep = fields.iter().position(|f| *f == b"-")?;
    if sep < 6 || fields.len() < sep + 3 {
        return None;
    }
    let num = |f: &[u8]| std::str::from_utf8(f).ok()?.parse::<u32>().ok();
    let (major, minor) = {
        let dev = std::str::from_utf8(fields[2]).ok()?;
        let (a, b) = dev.split_once(':')?;
        (a.parse().ok()?, b.parse().ok()?)
    };
    Some(MountInfo {
        mount_id: num(fields[0])?,
        parent_id: num(fields[1])?,
        major,
        minor,
        root: unescape_octal(fields[3]),
        mount_point: unescape_octal(fields[4]),
        options: String::from_utf8_lossy(fields[5]).into_owned(),
        read_only: fields[5].split(|b| *b == b',').any(|o| o == b"ro"),
        fstype: String::from_utf8_lossy(fields[sep + 1]).into_owned(),
        source: unescape_octal(fields[sep + 2]),
        super_options: fields
            .get(sep + 3)
            .map(|f| String::from_utf8_lossy(f).into_owned())
            .unwrap_or_default(),
    })
}

/// Splits super options into `(key, unescaped value)`; commas inside values are escaped by the
/// kernel, so splitting on `,` first is safe.
pub fn super_options(options: &str) -> Vec<(String, Option<Vec<u8>>)> {
    options
        .split(',')
        .filter(|o| !o.is_empty())
        .map(|o| match o.split_once('=') {
            Some((k, v)) => (k.to_string(), Some(unescape_octal(v.as_bytes()))),
            None => (o.to_string(), None),
        })
        .collect()
}

/// Splits an (already octal-unescaped) `lowerdir=` value on `:`, honouring `\:` and `\\`.
/// Layers after an empty element (`::`, data-only layers of kernel 6.5+) are returned apart.
pub fn split_lowerdir(value: &[u8]) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let mut parts: Vec<Vec<u8>> = vec![Vec::new()];
    let mut i = 0;
    while i < value.len() {
        match value[i] {
            b'\\' if i + 1 < value.len() => {
                if let Some(p) = parts.last_mut() {
                    p.push(value[i + 1]);
                }
                i += 2;
                continue;
            }
            b':' => parts.push(Vec::new()),
            b => {
                if let Some(p) = parts.last_mut() {
                    p.push(b);
                }
            }
        }
        i += 1;
    }
    let mut lower = Vec::new();
    let mut data = Vec::new();
    let mut in_data = false;
    for p in parts {
        if p.is_empty() {
            in_data = true;
        } else if in_data {
            data.push(p);
        } else {
            lower.push(p);
        }
    }
    (lower, data)
}

/// Reads `lowerdir=` (or repeated `lowerdir+=` of kernel 6.8+) and `upperdir=` from overlay
/// super options.
pub fn overlay_layers(options: &str) -> OverlayLayers {
    let path = |bytes: Vec<u8>| PathBuf::from(OsString::from_vec(bytes));
    let mut layers = OverlayLayers::default();
    for (key, value) in super_options(options) {
        let Some(value) = value else { continue };
        match key.as_str() {
            "lowerdir" => layers
                .lower_dirs
                .extend(split_lowerdir(&value).0.into_iter().map(path)),
            "lowerdir+" => layers.lower_dirs.push(path(value)),
            "upperdir" => layers.upper_dir = Some(path(value)),
            _ => {}
        }
    }
    layers
}

/// The mount that is the process's `/` (the last one mounted there wins, as in path lookup).
pub fn root_mount(mounts: &[MountInfo]) -> Option<&MountInfo> {
    mounts.iter().rev().find(|m| m.mount_point == b"/")
}

/// A container's root filesystem (its layers as raw host paths, the report's form too), and
/// what the same mount table says of its other mounts and the runtime's masks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerRoot {
    pub rootfs: RootFs,
    /// The mounts besides `/` the container may write (see [`writable_mounts`]).
    pub writable_mounts: Vec<WritableMount>,
    /// [`masked_paths`] of the mount table the root was found in;
    /// `None` when it was not the container's own (found in the host's mounts).
    pub masked_paths: Option<Vec<String>>,
}

/// A mount a container may write that is not its root filesystem: a tmpfs (`/dev/shm`, an
/// `emptyDir` with `medium: Memory`), an `emptyDir` or `hostPath` on the node's disk, a
/// persistent volume. Whatever runs from one is neither the image nor the writable layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WritableMount {
    pub mount_point: Vec<u8>,
    pub fstype: String,
    /// `st_dev` of its files (`major:minor` of mountinfo).
    pub dev: u64,
}

/// Kernel filesystems nothing is run from (and whose files are not a container's own).
const PSEUDO_FILESYSTEMS: &[&str] = &[
    "proc",
    "sysfs",
    "cgroup",
    "cgroup2",
    "devpts",
    "mqueue",
    "securityfs",
    "debugfs",
    "tracefs",
    "bpf",
    "configfs",
    "fusectl",
    "pstore",
    "binfmt_misc",
    "autofs",
    "nsfs",
    "hugetlbfs",
    "efivarfs",
];

/// The mounts of `mounts` other than `/` that are mounted read-write and are no kernel
/// pseudo-filesystem; the last one mounted at a point hides those before it.
pub fn writable_mounts(mounts: &[MountInfo]) -> Vec<WritableMount> {
    let mut out: Vec<WritableMount> = Vec::new();
    for m in mounts {
        if m.mount_point == b"/" {
            continue;
        }
        out.retain(|w| w.mount_point != m.mount_point);
        let rw = m.options.split(',').any(|o| o == "rw");
        if rw && !PSEUDO_FILESYSTEMS.contains(&m.fstype.as_str()) {
            out.push(WritableMount {
                mount_point: m.mount_point.clone(),
                fstype: m.fstype.clone(),
                dev: nix::sys::stat::makedev(u64::from(m.major), u64::from(m.minor)),
            });
        }
    }
    out
}

/// Whether `path` is `dir` or below it.
fn is_under(path: &[u8], dir: &[u8]) -> bool {
    let dir = if dir.len() > 1 {
        dir.strip_suffix(b"/").unwrap_or(dir)
    } else {
        dir
    };
    path.starts_with(dir) && (path.len() == dir.len() || path[dir.len()] == b'/' || dir == b"/")
}

impl ContainerRoot {
    /// The writable mount a file at `path` (as the container sees it) with `st_dev` `dev`
    /// lives on: the deepest one above the path whose device is the file's (a path that
    /// crosses another mount, or a process in a mount namespace of its own, matches none).
    pub fn writable_mount_of(&self, path: &[u8], dev: u64) -> Option<&WritableMount> {
        self.writable_mounts
            .iter()
            .filter(|m| m.dev == dev && is_under(path, &m.mount_point))
            .max_by_key(|m| m.mount_point.len())
    }
}

/// The root filesystem from mountinfo text; `None` when no mount is at `/`.
pub fn container_root(mountinfo: &[u8]) -> Option<ContainerRoot> {
    let (mounts, _) = parse_mountinfo(mountinfo);
    let root = root_mount(&mounts)?;
    let layers = if root.fstype == "overlay" {
        overlay_layers(&root.super_options)
    } else {
        OverlayLayers::default()
    };
    Some(ContainerRoot {
        rootfs: RootFs {
            fstype: root.fstype.clone(),
            layers,
        },
        writable_mounts: writable_mounts(&mounts),
        masked_paths: masked_paths(&mounts),
    })
}

/// Paths runtimes mask (runc's, crun's and containerd's/CRI-O's/Docker's default
/// `maskedPaths`): any mount on one of them is a mask.
pub const MASKED_PATHS: [&str; 12] = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/sys/devices/virtual/powercap",
    "/sys/firmware",
];

/// Paths runtimes make read-only (default `readonlyPaths`, and `/sys` itself): a read-only
/// mount on one of them counts.
pub const READ_ONLY_PATHS: [&str; 6] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
    "/sys",
];

/// The masked and read-only paths of a mount table (see [`MASKED_PATHS`],
/// [`READ_ONLY_PATHS`]), sorted; empty when none is, as in a privileged container. `None`
/// when the table has no `proc` mount at `/proc`: then it is not a container's view of
/// itself and says nothing.
pub fn masked_paths(mounts: &[MountInfo]) -> Option<Vec<String>> {
    let has_proc = mounts
        .iter()
        .any(|m| m.mount_point == b"/proc" && m.fstype == "proc");
    if !has_proc {
        return None;
    }
    // The last mount on a path is the one path lookup finds.
    let mut found: Vec<String> = Vec::new();
    for path in MASKED_PATHS.iter().chain(READ_ONLY_PATHS.iter()) {
        let Some(top) = mounts
            .iter()
            .rev()
            .find(|m| m.mount_point == path.as_bytes())
        else {
            continue;
        };
        let masked = MASKED_PATHS.contains(path) || top.read_only;
        if masked && !found.iter().any(|f| f == path) {
            found.push(path.to_string());
        }
    }
    found.sort();
    Some(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const CONTAINERD: &str = "\
1120 1013 0:120 / / rw,relatime master:390 - overlay overlay rw,lowerdir=/var/lib/containerd/io.containerd.snapshotter.v1.overlayfs/snapshots/12/fs:/var/lib/containerd/io.containerd.snapshotter.v1.overlayfs/snapshots/11/fs,upperdir=/var/lib/containerd/io.containerd.snapshotter.v1.overlayfs/snapshots/13/fs,workdir=/var/lib/containerd/io.containerd.snapshotter.v1.overlayfs/snapshots/13/work
1121 1120 0:122 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw
1122 1120 0:123 / /dev rw,nosuid - tmpfs tmpfs rw,size=65536k,mode=755
1130 1120 8:1 /var/lib/kubelet/pods/x/volumes/kubernetes.io~empty-dir/data /data rw,relatime - ext4 /dev/sda1 rw
";

    #[test]
    fn containerd_root_has_layers_top_first() {
        let root = container_root(CONTAINERD.as_bytes()).unwrap();
        assert_eq!(root.rootfs.fstype, "overlay");
        let fs = &root.rootfs.layers;
        assert_eq!(
            fs.lower_dirs,
            [
                Path::new(
                    "/var/lib/containerd/io.containerd.snapshotter.v1.overlayfs/snapshots/12/fs"
                ),
                Path::new(
                    "/var/lib/containerd/io.containerd.snapshotter.v1.overlayfs/snapshots/11/fs"
                )
            ]
        );
        assert_eq!(
            fs.upper_dir.as_deref(),
            Some(Path::new(
                "/var/lib/containerd/io.containerd.snapshotter.v1.overlayfs/snapshots/13/fs"
            ))
        );
        let (mounts, skipped) = parse_mountinfo(CONTAINERD.as_bytes());
        assert_eq!((mounts.len(), skipped), (4, 0));
        assert_eq!((mounts[0].major, mounts[0].minor), (0, 120));
    }

    #[test]
    fn writable_mounts_besides_the_root() {
        let text = format!(
            "{CONTAINERD}\
1131 1122 0:130 / /dev/shm rw,nosuid,nodev,relatime - tmpfs shm rw,size=65536k
1132 1120 0:131 / /run/secrets ro,relatime - tmpfs tmpfs rw
1133 1120 0:132 / /scratch rw,relatime - tmpfs tmpfs rw
1134 1120 0:133 / /scratch ro,relatime - tmpfs tmpfs rw
1135 1120 0:27 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw
"
        );
        let root = container_root(text.as_bytes()).unwrap();
        let points: Vec<&[u8]> = root
            .writable_mounts
            .iter()
            .map(|m| m.mount_point.as_slice())
            .collect();
        // /proc is a pseudo filesystem, /run/secrets is read-only, the read-only /scratch
        // hides the writable one under it, cgroup2 is not the container's.
        assert_eq!(points, [&b"/dev"[..], b"/data", b"/dev/shm"]);
        let shm = nix::sys::stat::makedev(0, 130);
        assert_eq!(
            root.writable_mount_of(b"/dev/shm/x", shm).unwrap().fstype,
            "tmpfs"
        );
        // The device decides between nested mounts: a file of /dev's tmpfs is on /dev.
        assert_eq!(
            root.writable_mount_of(b"/dev/shm/x", nix::sys::stat::makedev(0, 123))
                .unwrap()
                .mount_point,
            b"/dev"
        );
        assert_eq!(root.writable_mount_of(b"/data/x", shm), None);
        assert!(root
            .writable_mount_of(b"/dev/x", nix::sys::stat::makedev(0, 123))
            .is_some());
        assert_eq!(root.writable_mount_of(b"/dev/shmx", shm), None);
        assert_eq!(root.writable_mount_of(b"/usr/bin/x", shm), None);
    }

    #[test]
    fn escapes_in_paths_and_layer_names() {
        // A space in the mount point, and layer paths with a space, a comma, and a colon
        // (`\:` in the option, whose backslash the kernel writes as \134).
        let line = b"50 1 0:77 / /mnt/with\\040space rw - overlay over\\040lay rw,lowerdir=/l/a\\040b:/l/c\\054d:/l/e\\134:f,upperdir=/u/x\\040y,workdir=/w\n";
        let (mounts, _) = parse_mountinfo(line);
        assert_eq!(mounts[0].mount_point, b"/mnt/with space");
        assert_eq!(mounts[0].source, b"over lay");
        let layers = overlay_layers(&mounts[0].super_options);
        assert_eq!(
            layers.lower_dirs,
            ["/l/a b", "/l/c,d", "/l/e:f"].map(Path::new)
        );
        assert_eq!(layers.upper_dir.as_deref(), Some(Path::new("/u/x y")));
    }

    #[test]
    fn lowerdir_plus_and_data_only_layers() {
        let layers = overlay_layers(
            "rw,lowerdir+=/l/top,lowerdir+=/l/mid\\054x,lowerdir+=/l/bottom,datadir+=/d/1,upperdir=/u,workdir=/w",
        );
        assert_eq!(
            layers.lower_dirs,
            ["/l/top", "/l/mid,x", "/l/bottom"].map(Path::new)
        );
        let (lower, data) = split_lowerdir(b"/a:/b::/data1::/data2");
        assert_eq!(lower, [b"/a".to_vec(), b"/b".to_vec()]);
        assert_eq!(data, [b"/data1".to_vec(), b"/data2".to_vec()]);
        // A read-only overlay (no upper).
        let layers = overlay_layers("ro,lowerdir=/a:/b");
        assert_eq!(layers.upper_dir, None);
        assert_eq!(layers.lower_dirs.len(), 2);
    }

    #[test]
    fn root_that_is_not_overlay() {
        let text =
            b"22 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw\n23 22 0:5 / /proc rw - proc proc rw\n";
        let root = container_root(text).unwrap();
        assert_eq!(root.rootfs.fstype, "ext4");
        assert_eq!(root.rootfs.overlay(), None);
        assert!(root.rootfs.layers.lower_dirs.is_empty());
        assert_eq!(
            container_root(b"23 22 0:5 / /proc rw - proc proc rw\n"),
            None
        );
    }

    #[test]
    fn last_mount_on_root_wins() {
        let text = b"1 0 8:1 / / rw - ext4 /dev/sda1 rw\n2 1 0:9 / / rw - overlay overlay rw,lowerdir=/l,upperdir=/u,workdir=/w\n";
        assert_eq!(container_root(text).unwrap().rootfs.fstype, "overlay");
    }

    #[test]
    fn garbage_lines_are_skipped() {
        let text = b"\n garbage\n1 2 3\n1 0 x:y / / rw - ext4 /dev/sda rw\n1 0 8:1 / / rw -\n\xff\xfe\x00 - - -\n";
        let (mounts, skipped) = parse_mountinfo(text);
        assert!(mounts.is_empty());
        assert_eq!(skipped, 5);
        assert_eq!(unescape_octal(b"a\\"), b"a\\");
        assert_eq!(unescape_octal(b"a\\04"), b"a\\04");
        assert_eq!(unescape_octal(b"a\\999"), b"a\\999");
        assert_eq!(unescape_octal(b"\\101\\040"), b"A ");
    }
}
