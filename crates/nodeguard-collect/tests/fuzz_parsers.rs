//! Every byte these parsers read comes from `/proc` or a cgroup file that a container's
//! processes influence (comm, cgroup names, mount paths). Random and adversarial input
//! must give a value or an error, never a panic. Cases per property: `PROPTEST_CASES`
//! (default 256, a few seconds on CI).

use nodeguard_collect::cgroup::{attribute, attribute_path, attribute_text, normalize_path};
use nodeguard_collect::limits::{
    container_paths, parse_cpu_max, parse_max, parse_v1_memory, parse_v1_period, parse_v1_quota,
};
use nodeguard_collect::mountinfo::{
    container_root, overlay_layers, parse_mountinfo, split_lowerdir, super_options, unescape_octal,
};
use nodeguard_collect::process::{
    capabilities, capability_masks, cmdline_text, display_text, parse_ns_link, parse_stat,
    parse_status, strip_deleted,
};
use nodeguard_collect::{detect_layout, parse_cgroup_file};
use proptest::prelude::*;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(256),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..max)
}

/// Lines built from the tokens the parsers look for, so random input reaches deep paths.
fn proc_like(tokens: &'static [&'static str], max_lines: usize) -> impl Strategy<Value = Vec<u8>> {
    let token = prop_oneof![
        proptest::sample::select(tokens).prop_map(|t| t.as_bytes().to_vec()),
        bytes(12),
        "[0-9a-fx:/ ()\\\\-]{0,24}".prop_map(String::into_bytes),
    ];
    proptest::collection::vec(proptest::collection::vec(token, 0..12), 0..max_lines).prop_map(
        |lines| {
            let mut out = Vec::new();
            for line in lines {
                for t in line {
                    out.extend_from_slice(&t);
                }
                out.push(b'\n');
            }
            out
        },
    )
}

const STATUS_TOKENS: &[&str] = &[
    "Name:\t",
    "Uid:\t",
    "Gid:\t",
    "CapInh:\t",
    "CapPrm:\t",
    "CapEff:\t",
    "CapBnd:\t",
    "CapAmb:\t",
    "NoNewPrivs:\t",
    "Seccomp:\t",
    "PPid:\t",
    "NSpid:\t",
    "\t",
    " ",
    "0",
    "4294967295",
    "18446744073709551615",
    "99999999999999999999999",
    "ffffffffffffffff",
    "000001ffffffffff",
    "-1",
    "2",
    ":",
];
const STAT_TOKENS: &[&str] = &[
    "1 (",
    ")",
    ") ",
    "(",
    " S ",
    " R ",
    " 0",
    " -1",
    " 18446744073709551616",
    " 4194560",
    "))",
    "((",
    " ",
    "\n",
];
const CGROUP_TOKENS: &[&str] = &[
    "0::",
    "1:memory:",
    "2:cpu,cpuacct:",
    "3:pids:",
    "12:name=systemd:",
    ":",
    "/",
    "/kubepods",
    "/kubepods.slice/",
    "kubepods-burstable-pod",
    ".slice",
    ".scope",
    "/burstable/pod",
    "cri-containerd-",
    "crio-",
    "docker-",
    "libpod-",
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    "..",
    "/../",
    "_",
    "-",
    "99999999999999999999:x:/",
];
const MOUNT_TOKENS: &[&str] = &[
    "22 1 0:21 / / rw,relatime - overlay overlay rw,",
    "lowerdir=",
    "upperdir=",
    "workdir=",
    "lowerdir+=",
    "datadir+=",
    ":",
    "::",
    "23 22 0:5 / /proc rw - proc proc rw\n",
    "24 22 0:6 /null /proc/keys rw - tmpfs tmpfs rw\n",
    "25 22 0:7 / /sys ro - sysfs sysfs ro\n",
    "\\:",
    "\\\\",
    "\\040",
    "\\0",
    "\\777",
    "\\",
    " - ",
    " ",
    ",",
    "/",
    "shared:1 ",
    "master:2 ",
    "0:0",
];

proptest! {
    #![proptest_config(config())]

    #[test]
    fn status_never_panics(b in prop_oneof![bytes(2048), proc_like(STATUS_TOKENS, 30)]) {
        if let Ok(fields) = parse_status(&b) {
            let _ = capability_masks(&fields);
            let _ = capabilities(&fields);
        }
    }

    #[test]
    fn stat_never_panics(b in prop_oneof![bytes(1024), proc_like(STAT_TOKENS, 3)]) {
        let _ = parse_stat(&b);
    }

    #[test]
    fn text_helpers_never_panic(b in bytes(4096)) {
        let _ = display_text(&b);
        let _ = cmdline_text(&b);
        let _ = parse_ns_link(&b);
        let _ = strip_deleted(&b);
        let _ = unescape_octal(&b);
        let _ = split_lowerdir(&b);
    }

    #[test]
    fn cgroup_files_never_panic(b in prop_oneof![bytes(2048), proc_like(CGROUP_TOKENS, 12)]) {
        let text = String::from_utf8_lossy(&b);
        let file = parse_cgroup_file(&text);
        let _ = attribute(&file);
        let _ = attribute_text(&text);
        for line in text.lines() {
            let _ = attribute_path(line);
            let _ = normalize_path(line);
        }
        let layout = detect_layout(std::path::Path::new("/nonexistent/nodeguard-fuzz"));
        let _ = container_paths(&file, &layout, "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef");
    }

    #[test]
    fn mountinfo_never_panics(b in prop_oneof![bytes(4096), proc_like(MOUNT_TOKENS, 8)]) {
        let (mounts, _) = parse_mountinfo(&b);
        let _ = mounts.len();
        if let Some(root) = container_root(&b) {
            let _ = root.rootfs.overlay();
        }
        let text = String::from_utf8_lossy(&b);
        let _ = super_options(&text);
        let _ = overlay_layers(&text);
        // Masks are named only from the fixed lists, whatever the table says.
        if let Some(masked) = nodeguard_collect::confinement::masked_paths(&mounts) {
            assert!(masked.len() <= 18, "{masked:?}");
        }
    }

    #[test]
    fn devices_lists_never_panic(
        text in prop_oneof![
            "([abc] (\\*|[0-9]{1,4}):(\\*|[0-9]{1,4}) [rwm]{0,4}\\n|a \\*:\\* rwm\\n|[\\PC]){0,6}",
            bytes(256).prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        ]
    ) {
        let _ = nodeguard_collect::confinement::parse_devices_list(&text);
    }

    #[test]
    fn cgroup_limit_files_never_panic(
        text in prop_oneof![
            "(max|[0-9]{0,25}|-1|[0-9]{1,22} [0-9]{0,22}|max [0-9]{0,22}|[ \\n\\t]|[\\PC]){0,4}",
            bytes(64).prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        ]
    ) {
        let _ = parse_max(&text);
        let _ = parse_v1_memory(&text);
        let _ = parse_cpu_max(&text);
        let _ = parse_v1_quota(&text);
        let _ = parse_v1_period(&text);
    }
}

#[test]
fn adversarial_cpu_limits_give_no_infinite_or_nan_cores() {
    for text in [
        "1 0",
        "18446744073709551615 1",
        "max 0",
        "0 0",
        "1 18446744073709551615",
    ] {
        if let Some(Some(cores)) = parse_cpu_max(text) {
            assert!(cores.is_finite() && cores > 0.0, "{text}: {cores}");
        }
    }
}

#[test]
fn bidi_controls_in_names_and_command_lines_are_escaped() {
    let comm = "evil\u{202e}txt.exe".as_bytes();
    assert_eq!(display_text(comm), "evil\\xe2\\x80\\xaetxt.exe");
    let cmdline = b"/bin/x\0--name=\xe2\x81\xa6rtl\xe2\x81\xa9\0";
    assert_eq!(
        cmdline_text(cmdline),
        "/bin/x --name=\\xe2\\x81\\xa6rtl\\xe2\\x81\\xa9"
    );
}
