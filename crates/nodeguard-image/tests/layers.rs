//! Layers made by GNU tar from real files (setuid bits, file capabilities set by setcap),
//! compressed by gzip and zstd, indexed, and checked against what `tar -xO | sha256sum` says.

mod common;

use common::*;
use nodeguard_image::{Digest, Expectation, ImageIndex, LayerError, LayerIndex, Limits};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn no_pace() -> impl FnMut(u64) -> bool {
    |_| true
}

fn index_file(
    path: &Path,
    diff_id: Digest,
    limits: &Limits,
    sha512: bool,
) -> Result<LayerIndex, LayerError> {
    let file = fs::File::open(path).unwrap();
    LayerIndex::from_reader(diff_id, file, limits, sha512, &mut no_pace())
}

/// A root with an executable, a setuid and a setgid file, a file with capabilities, a
/// non-executable file, a symlink and a hard link; tarred by GNU tar with xattrs (PAX).
fn real_layer(dir: &Path) -> PathBuf {
    let root = dir.join("rootfs");
    sh(&format!(
        "set -e; mkdir -p '{r}/usr/bin' '{r}/etc' '{r}/usr/sbin'
         printf '#!/bin/sh\\necho hi\\n' > '{r}/usr/bin/tool'; chmod 755 '{r}/usr/bin/tool'
         head -c 300000 /dev/urandom > '{r}/usr/bin/big'; chmod 755 '{r}/usr/bin/big'
         printf 'suid' > '{r}/usr/bin/passwd'; chmod 4755 '{r}/usr/bin/passwd'
         printf 'sgid' > '{r}/usr/bin/wall'; chmod 2755 '{r}/usr/bin/wall'
         printf 'cap' > '{r}/usr/sbin/ping'; chmod 644 '{r}/usr/sbin/ping'
         setcap cap_net_raw+ep '{r}/usr/sbin/ping'
         printf 'root:x:0:0\\n' > '{r}/etc/passwd'
         ln -s tool '{r}/usr/bin/link'
         ln '{r}/usr/bin/tool' '{r}/usr/bin/hard'
         tar --format=pax --xattrs --xattrs-include='security.capability' -cf '{d}/layer.tar' -C '{r}' .",
        r = root.display(),
        d = dir.display()
    ));
    dir.join("layer.tar")
}

#[test]
fn a_real_layer_in_gzip_zstd_and_plain_hashes_to_its_diff_id_and_every_binary_to_what_tar_extracts()
{
    if !require("setcap", "a_real_layer_…") || !require("zstd", "a_real_layer_…") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let tar = real_layer(tmp.path());
    let diff_id = Digest::from_hex(&sha256sum(&tar)).unwrap();
    sh(&format!(
        "cd '{d}' && gzip -k layer.tar && zstd -q -k layer.tar",
        d = tmp.path().display()
    ));
    let limits = Limits::default();
    for file in ["layer.tar", "layer.tar.gz", "layer.tar.zst"] {
        let layer = index_file(&tmp.path().join(file), diff_id, &limits, true)
            .unwrap_or_else(|e| panic!("{file}: {e:?}"));
        assert_eq!(layer.diff_id, diff_id);
        assert_eq!(layer.bytes, fs::metadata(&tar).unwrap().len(), "{file}");
        let image = ImageIndex::new("test".into(), "sha256:00".into(), vec![Arc::new(layer)]);
        for (path, mode) in [
            ("usr/bin/tool", 0o755),
            ("usr/bin/big", 0o755),
            ("usr/bin/passwd", 0o4755),
            ("usr/bin/wall", 0o2755),
            ("usr/sbin/ping", 0o644),
            ("usr/bin/hard", 0o755),
        ] {
            // GNU tar extracts a hard-link member to stdout as nothing: the file on disk says.
            let want = if path == "usr/bin/hard" {
                sha256sum(&tmp.path().join("rootfs").join(path))
            } else {
                member_sha256(&tar, &format!("./{path}"))
            };
            match image.expect(format!("/{path}").as_bytes()) {
                Expectation::InLayer {
                    sha256,
                    sha512,
                    mode: m,
                    diff_id: d,
                    file_capability,
                } => {
                    assert_eq!(hex(&sha256), want, "{file}: {path}");
                    assert_eq!(m, mode, "{file}: {path}");
                    assert_eq!(d, diff_id.to_string());
                    assert!(sha512.is_some());
                    assert_eq!(file_capability, path == "usr/sbin/ping", "{path}");
                }
                other => panic!("{file}: {path}: {other:?}"),
            }
        }
        assert!(matches!(
            image.expect(b"/etc/passwd"),
            Expectation::Unhashed {
                mode: 0o644,
                sparse: false,
                ..
            }
        ));
        assert_eq!(image.expect(b"/usr/bin/link"), Expectation::NotInImage);
        assert_eq!(image.expect(b"/usr/bin/absent"), Expectation::NotInImage);
        let special: Vec<&[u8]> = image.special_files().map(|(p, _)| p).collect();
        assert_eq!(
            special,
            vec![&b"usr/bin/passwd"[..], b"usr/bin/wall", b"usr/sbin/ping"]
        );
    }
}

#[test]
fn a_layer_whose_bytes_differ_from_its_diff_id_is_not_trusted() {
    if !require("setcap", "a_layer_whose_bytes_differ…") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let tar = real_layer(tmp.path());
    let claimed = Digest::from_hex(&sha256sum(&tar)).unwrap();
    // Rewrite one byte inside /usr/bin/big's data, as an attacker editing the store would.
    let mut bytes = fs::read(&tar).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0xff;
    fs::write(&tar, &bytes).unwrap();
    let actual = Digest::from_hex(&sha256sum(&tar)).unwrap();
    match index_file(&tar, claimed, &Limits::default(), false) {
        Err(LayerError::DiffIdMismatch { actual: a }) => assert_eq!(a, actual),
        other => panic!("{other:?}"),
    }
}

/// Three layers made by GNU tar: a base, one that deletes and replaces, one opaque directory.
#[test]
fn whiteouts_opaque_directories_and_upper_files_decide_what_the_stacked_image_holds() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().display();
    sh(&format!(
        "set -e; cd '{d}'
         mkdir -p l1/bin l1/opt/app l1/usr/lib l2/bin l2/usr l3/opt/app
         for f in l1/bin/a l1/bin/b l1/bin/c l1/opt/app/run l1/usr/lib/x; do printf \"$f\" > $f; chmod 755 $f; done
         printf new > l2/bin/a; chmod 755 l2/bin/a
         : > l2/bin/.wh.b
         printf plain > l2/bin/c; chmod 644 l2/bin/c
         : > l2/.wh.usr
         mkdir -p l2/usr; printf upper > l2/usr/tool; chmod 755 l2/usr/tool
         : > l3/opt/app/.wh..wh..opq
         printf mine > l3/opt/app/own; chmod 755 l3/opt/app/own
         for l in l1 l2 l3; do tar -cf $l.tar -C $l .; done"
    ));
    let mut layers = Vec::new();
    for l in ["l1", "l2", "l3"] {
        let tar = tmp.path().join(format!("{l}.tar"));
        let diff_id = Digest::from_hex(&sha256sum(&tar)).unwrap();
        layers.push(Arc::new(
            index_file(&tar, diff_id, &Limits::default(), false).unwrap(),
        ));
    }
    let l2 = layers[1].diff_id.to_string();
    let image = ImageIndex::new("t".into(), "c".into(), layers);
    let sha = |e: Expectation| match e {
        Expectation::InLayer {
            sha256, diff_id, ..
        } => (hex(&sha256), diff_id),
        other => panic!("{other:?}"),
    };
    let l2_tar = tmp.path().join("l2.tar");
    assert_eq!(
        sha(image.expect(b"/bin/a")),
        (member_sha256(&l2_tar, "./bin/a"), l2.clone())
    );
    assert_eq!(
        image.expect(b"/bin/b"),
        Expectation::NotInImage,
        "whited out"
    );
    assert!(
        matches!(
            image.expect(b"/bin/c"),
            Expectation::Unhashed { mode: 0o644, .. }
        ),
        "replaced by a non-executable"
    );
    assert_eq!(
        image.expect(b"/usr/lib/x"),
        Expectation::NotInImage,
        "under a whited-out directory"
    );
    assert_eq!(sha(image.expect(b"/usr/tool")).1, l2);
    assert_eq!(
        image.expect(b"/opt/app/run"),
        Expectation::NotInImage,
        "hidden by an opaque directory"
    );
    assert!(matches!(
        image.expect(b"/opt/app/own"),
        Expectation::InLayer { .. }
    ));
    assert_eq!(image.expect(b"/../bin/a"), Expectation::NotInImage);
}

fn refused(bytes: &[u8], limits: &Limits) -> String {
    let diff_id = digest_of(bytes);
    match LayerIndex::from_reader(diff_id, bytes, limits, false, &mut no_pace()) {
        Err(LayerError::Refused(why)) => why,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn a_tar_bomb_is_refused_by_its_decompression_ratio() {
    use std::io::Write;
    // 256 MiB of zeros gzips to ~250 KiB: about 1000:1.
    let mut tar = Vec::new();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let size: u64 = 256 << 20;
    let mut h = header(b"zeros", b'0', size, 0o755);
    seal(&mut h);
    gz.write_all(&h).unwrap();
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..(size >> 20) {
        gz.write_all(&zeros).unwrap();
    }
    end(&mut tar);
    gz.write_all(&tar).unwrap();
    let blob = gz.finish().unwrap();
    let limits = Limits {
        ratio_grace_bytes: 16 << 20,
        ..Limits::default()
    };
    // The diff_id does not matter: the ratio stops it first.
    let why =
        match LayerIndex::from_reader(Digest([0; 32]), &blob[..], &limits, false, &mut no_pace()) {
            Err(LayerError::Refused(why)) => why,
            other => panic!("{other:?}"),
        };
    assert!(why.contains("tar bomb"), "{why}");
}

#[test]
fn a_path_ten_thousand_levels_deep_is_refused() {
    let deep = "d/".repeat(10_000) + "x";
    let mut tar = Vec::new();
    pax(&mut tar, &[("path", deep.as_bytes())]);
    member(&mut tar, header(b"x", b'0', 1, 0o755), b"x");
    end(&mut tar);
    let why = refused(&tar, &Limits::default());
    assert!(why.contains("name"), "{why}");
    // Allowed names that long, the depth bound still holds.
    let limits = Limits {
        max_name_bytes: 64 * 1024,
        ..Limits::default()
    };
    let why = refused(&tar, &limits);
    assert!(why.contains("deeper"), "{why}");
}

#[test]
fn a_hard_link_loop_is_recorded_not_followed() {
    let mut tar = Vec::new();
    let mut link = |name: &[u8], target: &[u8]| {
        let mut h = header(name, b'1', 0, 0o755);
        h[157..157 + target.len()].copy_from_slice(target);
        member(&mut tar, h, b"");
    };
    link(b"a", b"b");
    link(b"b", b"a");
    link(b"c", b"c");
    member(&mut tar, header(b"bin/real", b'0', 4, 0o755), b"real");
    let mut h = header(b"bin/alias", b'1', 0, 0o755);
    h[157..165].copy_from_slice(b"bin/real");
    member(&mut tar, h, b"");
    end(&mut tar);
    let layer = LayerIndex::from_reader(
        digest_of(&tar),
        &tar[..],
        &Limits::default(),
        false,
        &mut no_pace(),
    )
    .unwrap();
    let image = ImageIndex::new("t".into(), "c".into(), vec![Arc::new(layer)]);
    for p in [&b"a"[..], b"b", b"c"] {
        assert_eq!(image.expect(p), Expectation::NotInImage);
    }
    let Expectation::InLayer { sha256, .. } = image.expect(b"bin/alias") else {
        panic!()
    };
    assert_eq!(sha256, sha256_of(b"real"));
}

fn sha256_of(b: &[u8]) -> [u8; 32] {
    sha256(b)
}

#[test]
fn an_eight_gib_sparse_member_is_recorded_without_being_expanded() {
    let mut tar = Vec::new();
    // Old GNU sparse: one 512-byte chunk stored at offset 8 GiB - 512; real size 8 GiB.
    let mut h = header(b"usr/bin/sparse", b'S', 512, 0o755);
    h[257..265].copy_from_slice(b"ustar  \0");
    let real: u64 = 8 << 30;
    put_size(&mut h[386..398], real - 512); // sp[0].offset
    put_size(&mut h[398..410], 512); // sp[0].numbytes
    put_size(&mut h[483..495], real); // realsize
    member(&mut tar, h, &[7u8; 512]);
    // A PAX 1.0 sparse member of 8 GiB too.
    pax(
        &mut tar,
        &[
            ("GNU.sparse.major", b"1"),
            ("GNU.sparse.minor", b"0"),
            ("GNU.sparse.name", b"usr/bin/sparse2"),
            ("GNU.sparse.realsize", b"8589934592"),
        ],
    );
    member(
        &mut tar,
        header(b"GNUSparseFile.0/sparse2", b'0', 1024, 0o755),
        &[1u8; 1024],
    );
    end(&mut tar);
    let started = std::time::Instant::now();
    let layer = LayerIndex::from_reader(
        digest_of(&tar),
        &tar[..],
        &Limits::default(),
        false,
        &mut no_pace(),
    )
    .unwrap();
    assert!(started.elapsed().as_secs() < 5);
    assert_eq!(
        layer.bytes,
        tar.len() as u64,
        "nothing beyond the stored bytes is read"
    );
    let image = ImageIndex::new("t".into(), "c".into(), vec![Arc::new(layer)]);
    for p in [&b"usr/bin/sparse"[..], b"usr/bin/sparse2"] {
        assert!(
            matches!(image.expect(p), Expectation::Unhashed { sparse: true, .. }),
            "{:?}",
            image.expect(p)
        );
    }
}

#[test]
fn a_member_claiming_more_data_than_the_stream_holds_is_refused() {
    let mut tar = Vec::new();
    let mut h = header(b"huge", b'0', 8 << 30, 0o755);
    seal(&mut h);
    tar.extend_from_slice(&h);
    tar.extend_from_slice(&[0u8; 4096]);
    let why = refused(&tar, &Limits::default());
    assert!(why.contains("truncated"), "{why}");
}

#[test]
fn too_many_members_a_bad_checksum_and_climbing_names_are_refused() {
    let mut tar = Vec::new();
    for i in 0..50 {
        member(
            &mut tar,
            header(format!("f{i}").as_bytes(), b'0', 0, 0o644),
            b"",
        );
    }
    end(&mut tar);
    let limits = Limits {
        max_members: 20,
        ..Limits::default()
    };
    assert!(refused(&tar, &limits).contains("members"));

    let mut bad = Vec::new();
    member(&mut bad, header(b"ok", b'0', 0, 0o644), b"");
    bad[0] = b'X'; // after sealing: the checksum no longer holds
    end(&mut bad);
    assert!(refused(&bad, &Limits::default()).contains("checksum"));

    let mut climb = Vec::new();
    member(
        &mut climb,
        header(b"../../etc/cron.d/x", b'0', 1, 0o755),
        b"x",
    );
    end(&mut climb);
    assert!(refused(&climb, &Limits::default()).contains("climbs out"));

    let mut pax_bomb = Vec::new();
    member(
        &mut pax_bomb,
        header(b"PaxHeader", b'x', 1 << 40, 0o644),
        b"",
    );
    assert!(refused(&pax_bomb, &Limits::default()).contains("PAX header"));
}

#[test]
fn garbage_and_random_bytes_never_panic() {
    let mut seed = 0x9e3779b97f4a7c15u64;
    for round in 0..200 {
        let len = (round * 97) % 5000;
        let mut bytes = Vec::with_capacity(len);
        for _ in 0..len {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            bytes.push(seed as u8);
        }
        // Random data after a valid-looking header exercises the member paths too.
        if round % 2 == 0 {
            let mut h = header(
                b"x",
                [b'0', b'x', b'L', b'S', b'1'][round % 5],
                (len as u64) / 2,
                0o755,
            );
            seal(&mut h);
            bytes.splice(0..0, h);
        }
        let _ = LayerIndex::from_reader(
            Digest([0; 32]),
            &bytes[..],
            &Limits::default(),
            false,
            &mut no_pace(),
        );
    }
}
