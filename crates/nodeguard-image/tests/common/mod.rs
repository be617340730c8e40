//! Helpers for the crate's tests: real tools (GNU tar, gzip, zstd, sha256sum) make the layers
//! and say what their bytes are; hostile layers are written block by block.

#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

/// Runs a shell command, panicking with its stderr on failure; returns stdout.
pub fn sh(script: &str) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .output()
        .unwrap_or_else(|e| panic!("cannot run sh: {e}"));
    assert!(
        out.status.success(),
        "command failed: {script}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether a tool is on PATH; without it the test says why it skips (and fails under CI).
pub fn require(tool: &str, test: &str) -> bool {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        if std::env::var_os("CI").is_some() {
            panic!("CI is set, so {test} must run, but {tool} is not installed");
        }
        eprintln!("\n!!! SKIPPED {test}: {tool} is not installed\n");
    }
    found
}

/// `sha256sum FILE` → 64 hex.
pub fn sha256sum(path: &Path) -> String {
    sh(&format!("sha256sum '{}'", path.display()))
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// What GNU tar extracts for one member, hashed by sha256sum.
pub fn member_sha256(tar: &Path, member: &str) -> String {
    sh(&format!(
        "tar -xOf '{}' '{member}' | sha256sum",
        tar.display()
    ))
    .split_whitespace()
    .next()
    .unwrap_or_default()
    .to_string()
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One 512-byte ustar header.
pub fn header(name: &[u8], typeflag: u8, size: u64, mode: u32) -> [u8; 512] {
    let mut h = [0u8; 512];
    h[..name.len().min(100)].copy_from_slice(&name[..name.len().min(100)]);
    h[100..107].copy_from_slice(format!("{mode:07o}").as_bytes());
    h[108..115].copy_from_slice(b"0000000");
    h[116..123].copy_from_slice(b"0000000");
    put_size(&mut h[124..136], size);
    h[136..147].copy_from_slice(b"00000000000");
    h[156] = typeflag;
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h
}

/// Octal when it fits in 11 digits, else base-256.
pub fn put_size(field: &mut [u8], size: u64) {
    if size < 0o77777777777 {
        field[..11].copy_from_slice(format!("{size:011o}").as_bytes());
        field[11] = 0;
    } else {
        field.fill(0);
        field[0] = 0x80;
        let bytes = size.to_be_bytes();
        field[12 - 8..].copy_from_slice(&bytes);
    }
}

pub fn seal(h: &mut [u8; 512]) {
    h[148..156].fill(b' ');
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
}

/// A whole member: sealed header, data, padding.
pub fn member(out: &mut Vec<u8>, mut h: [u8; 512], data: &[u8]) {
    seal(&mut h);
    out.extend_from_slice(&h);
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
}

/// A PAX extended header carrying `records` for the next member.
pub fn pax(out: &mut Vec<u8>, records: &[(&str, &[u8])]) {
    let mut data = Vec::new();
    for (key, value) in records {
        let body_len = key.len() + value.len() + 3; // ' ', '=', '\n'
        let mut len = body_len + 1;
        while format!("{len}").len() + body_len != len {
            len = format!("{len}").len() + body_len;
        }
        data.extend_from_slice(format!("{len} {key}=").as_bytes());
        data.extend_from_slice(value);
        data.push(b'\n');
    }
    member(
        out,
        header(b"PaxHeader", b'x', data.len() as u64, 0o644),
        &data,
    );
}

pub fn end(out: &mut Vec<u8>) {
    out.extend_from_slice(&[0u8; 1024]);
}

pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    nodeguard_hash::sha256_of(&[bytes])
}

pub fn digest_of(bytes: &[u8]) -> nodeguard_image::Digest {
    nodeguard_image::Digest(sha256(bytes))
}
