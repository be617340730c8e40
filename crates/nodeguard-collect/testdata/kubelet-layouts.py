import os, sys
base = sys.argv[1]
UID_BE = "aaaa1111-2222-3333-4444-555566667777"
UID_G = "bbbb1111-2222-3333-4444-555566667777"
ID_BE = "be" * 32
ID_G = "9a" * 32
ID_UNREAD = "0d" * 32
ID_SANDBOX = "5a" * 32
GIB = 1 << 30
ALLOC = 25232932864
V1_UNLIMITED = 9223372036854771712

def paths(driver, prefix):
    u_be, u_g = UID_BE.replace('-', '_'), UID_G.replace('-', '_')
    if driver == "cgroupfs":
        root = f"{prefix}/kubepods" if prefix else "kubepods"
        return {
            "kubepods": root,
            "be_qos": f"{root}/besteffort",
            "be_pod": f"{root}/besteffort/pod{UID_BE}",
            "be": f"{root}/besteffort/pod{UID_BE}/{ID_BE}",
            "unread": f"{root}/besteffort/pod{UID_BE}/{ID_UNREAD}",
            "sandbox": f"{root}/besteffort/pod{UID_BE}/{ID_SANDBOX}",
            "g_pod": f"{root}/pod{UID_G}",
            "g": f"{root}/pod{UID_G}/{ID_G}",
        }
    p = f"{prefix}-" if prefix else ""
    root = (f"{prefix}.slice/" if prefix else "") + f"{p}kubepods.slice"
    return {
        "kubepods": root,
        "be_qos": f"{root}/{p}kubepods-besteffort.slice",
        "be_pod": f"{root}/{p}kubepods-besteffort.slice/{p}kubepods-besteffort-pod{u_be}.slice",
        "be": f"{root}/{p}kubepods-besteffort.slice/{p}kubepods-besteffort-pod{u_be}.slice/cri-containerd-{ID_BE}.scope",
        "unread": f"{root}/{p}kubepods-besteffort.slice/{p}kubepods-besteffort-pod{u_be}.slice/cri-containerd-{ID_UNREAD}.scope",
        "sandbox": f"{root}/{p}kubepods-besteffort.slice/{p}kubepods-besteffort-pod{u_be}.slice/cri-containerd-{ID_SANDBOX}.scope",
        "g_pod": f"{root}/{p}kubepods-pod{u_g}.slice",
        "g": f"{root}/{p}kubepods-pod{u_g}.slice/cri-containerd-{ID_G}.scope",
    }

# level -> (memory bytes or None, cpu (quota, period) or None, pids or None)
LIMITS = {
    "kubepods": (ALLOC, None, 4096),
    "be_qos": (20 * GIB, None, None),
    "be_pod": (None, None, None),
    "be": (None, None, None),
    "sandbox": (None, None, None),
    "g_pod": (128 << 20, (50000, 100000), None),
    "g": (128 << 20, (50000, 100000), None),
}

def w(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text + "\n")

def gen(case, version, driver, prefix):
    root = os.path.join(base, case, "sys/fs/cgroup")
    p = paths(driver, prefix)
    if version == 2:
        w(f"{root}/cgroup.controllers", "cpuset cpu io memory hugetlb pids rdma misc")
        if prefix:
            pre = p["kubepods"].rsplit("/", 1)[0]
            w(f"{root}/{pre}/memory.max", "max")
        for level, (mem, cpu, pids) in LIMITS.items():
            d = f"{root}/{p[level]}"
            w(f"{d}/memory.max", str(mem) if mem else "max")
            w(f"{d}/cpu.max", f"{cpu[0]} {cpu[1]}" if cpu else "max 100000")
            w(f"{d}/pids.max", str(pids) if pids else "max")
        # The unreadable container: memory.max missing, pids.max garbage.
        d = f"{root}/{p['unread']}"
        w(f"{d}/cpu.max", "max 100000")
        w(f"{d}/pids.max", "lots")
    else:
        for h in ["memory", "cpu,cpuacct", "pids", "unified"]:
            w(f"{root}/{h}/cgroup.procs", "")
        for level, (mem, cpu, pids) in LIMITS.items():
            w(f"{root}/memory/{p[level]}/memory.limit_in_bytes", str(mem) if mem else str(V1_UNLIMITED))
            w(f"{root}/cpu,cpuacct/{p[level]}/cpu.cfs_quota_us", str(cpu[0]) if cpu else "-1")
            w(f"{root}/cpu,cpuacct/{p[level]}/cpu.cfs_period_us", str(cpu[1]) if cpu else "100000")
            w(f"{root}/pids/{p[level]}/pids.max", str(pids) if pids else "max")
        w(f"{root}/cpu,cpuacct/{p['unread']}/cpu.cfs_quota_us", "-1")
        w(f"{root}/cpu,cpuacct/{p['unread']}/cpu.cfs_period_us", "100000")
        w(f"{root}/pids/{p['unread']}/pids.max", "lots")

gen("kubelet-v2-systemd", 2, "systemd", "")
gen("kubelet-v2-cgroupfs", 2, "cgroupfs", "")
gen("kubelet-v2-systemd-prefix", 2, "systemd", "ngprefix")
gen("kubelet-v2-cgroupfs-prefix", 2, "cgroupfs", "ng-prefix")
gen("kubelet-v1-cgroupfs", 1, "cgroupfs", "")
gen("kubelet-v1-cgroupfs-prefix", 1, "cgroupfs", "ng-prefix")
gen("kubelet-v1-systemd", 1, "systemd", "")
gen("kubelet-v1-systemd-prefix", 1, "systemd", "ngprefix")
