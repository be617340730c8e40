//! Decoding of the `security.capability` extended attribute (`struct vfs_ns_cap_data` in
//! `include/uapi/linux/capability.h`) and rendering it the way `getcap` (libcap 2.66) does.

use crate::Error;
use nodeguard_model::capability::CAPABILITY_NAMES;
use std::fmt;

/// `VFS_CAP_REVISION_MASK`: the revision lives in the top byte of `magic_etc`.
const REVISION_MASK: u32 = 0xff00_0000;
/// `VFS_CAP_FLAGS_EFFECTIVE`: the low bit of `magic_etc` raises every permitted capability.
const FLAG_EFFECTIVE: u32 = 0x0000_0001;
const REVISION_1: u32 = 0x0100_0000;
const REVISION_2: u32 = 0x0200_0000;
const REVISION_3: u32 = 0x0300_0000;

/// How many capabilities libcap renders by name: the bits a 5.9+ kernel knows. Higher bits
/// print as numbers with `+`, as libcap does for bits past `cap_max_bits()`.
const NAMED_BITS: u32 = CAPABILITY_NAMES.len() as u32;

// libcap's flag bits in `getstateflags` (`1 << cap_flag_t`: effective 0, permitted 1,
// inheritable 2). Their values order the groups of the text, highest first.
const LIBCAP_EFF: u8 = 1;
const LIBCAP_PER: u8 = 2;
const LIBCAP_INH: u8 = 4;

/// Which layout of `security.capability` a file carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CapRevision {
    /// `VFS_CAP_REVISION_1`: 32 capability bits, 12 bytes.
    V1,
    /// `VFS_CAP_REVISION_2`: 64 bits, 20 bytes.
    V2,
    /// `VFS_CAP_REVISION_3`: 64 bits plus the owning user namespace's root uid, 24 bytes.
    V3,
}

/// The capabilities a file grants when executed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileCaps {
    pub revision: CapRevision,
    pub permitted: u64,
    pub inheritable: u64,
    /// The effective flag: all of permitted (and inheritable) are raised at exec.
    pub effective: bool,
    /// For v3: the uid (in the reader's namespace) of the user namespace root the caps are
    /// valid in.
    pub rootid: Option<u32>,
}

/// Decodes a raw `security.capability` value. The length must match the revision exactly,
/// as the kernel and libcap require; anything else is an error, never a panic.
pub fn decode_file_capability(xattr: &[u8]) -> Result<FileCaps, Error> {
    let word = |i: usize| -> Option<u32> {
        let bytes = xattr.get(i * 4..i * 4 + 4)?;
        Some(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    };
    let magic = word(0).ok_or(Error::CapabilityTooShort { len: xattr.len() })?;
    let (revision, expected) = match magic & REVISION_MASK {
        REVISION_1 => (CapRevision::V1, 12),
        REVISION_2 => (CapRevision::V2, 20),
        REVISION_3 => (CapRevision::V3, 24),
        _ => return Err(Error::CapabilityRevision { magic }),
    };
    if xattr.len() != expected {
        return Err(Error::CapabilityLength {
            magic,
            expected,
            len: xattr.len(),
        });
    }
    let length_error = || Error::CapabilityLength {
        magic,
        expected,
        len: xattr.len(),
    };
    let mut permitted = u64::from(word(1).ok_or_else(length_error)?);
    let mut inheritable = u64::from(word(2).ok_or_else(length_error)?);
    if revision != CapRevision::V1 {
        permitted |= u64::from(word(3).ok_or_else(length_error)?) << 32;
        inheritable |= u64::from(word(4).ok_or_else(length_error)?) << 32;
    }
    let rootid = match revision {
        CapRevision::V3 => Some(word(5).ok_or_else(length_error)?),
        _ => None,
    };
    Ok(FileCaps {
        revision,
        permitted,
        inheritable,
        effective: magic & FLAG_EFFECTIVE != 0,
        rootid,
    })
}

impl FileCaps {
    /// The effective mask as libcap sees it: permitted and inheritable when the flag is set.
    pub fn effective_mask(&self) -> u64 {
        if self.effective {
            self.permitted | self.inheritable
        } else {
            0
        }
    }

    fn state(&self, bit: u32) -> u8 {
        let mask = 1u64 << bit;
        let mut flags = 0;
        if self.effective_mask() & mask != 0 {
            flags |= LIBCAP_EFF;
        }
        if self.inheritable & mask != 0 {
            flags |= LIBCAP_INH;
        }
        if self.permitted & mask != 0 {
            flags |= LIBCAP_PER;
        }
        flags
    }

    /// The text `cap_to_text(3)` produces, which is what `getcap FILE` prints after the name:
    /// `cap_net_raw=ep`, `cap_net_admin,cap_net_raw=eip`, `cap_net_admin=p cap_net_raw+ei`.
    pub fn text(&self) -> String {
        let named = NAMED_BITS.min(64);
        let mut histo = [0u32; 8];
        for bit in 0..named {
            histo[usize::from(self.state(bit))] += 1;
        }
        // The most common state becomes the "=..." default; ties prefer fewer flags.
        let mut m = 7usize;
        for t in (0..7).rev() {
            if histo[t] >= histo[m] {
                m = t;
            }
        }
        let mut out = format!("={}", flag_letters(m as u8));
        // libcap drops a leading "= " when the first group is raised from nothing.
        let mut base = 0usize;
        for t in (0..8usize).rev() {
            if t == m || histo[t] == 0 {
                continue;
            }
            out.push(' ');
            let names: Vec<String> = (0..named)
                .filter(|bit| usize::from(self.state(*bit)) == t)
                .map(cap_text_name)
                .collect();
            out.push_str(&names.join(","));
            let raised = (t & !m) as u8;
            if raised != 0 {
                let mut op = '+';
                if out.as_bytes().get(base) == Some(&b'=')
                    && out.as_bytes().get(base + 1) == Some(&b' ')
                {
                    base += 2;
                    op = '=';
                }
                out.push(op);
                out.push_str(&flag_letters(raised));
            }
            let lowered = (!t & m) as u8;
            if lowered != 0 {
                out.push('-');
                out.push_str(&flag_letters(lowered));
            }
        }
        // Bits past the named ones: always printed as raised, by number.
        for t in (1..8usize).rev() {
            let bits: Vec<String> = (named..64)
                .filter(|bit| usize::from(self.state(*bit)) == t)
                .map(|bit| bit.to_string())
                .collect();
            if bits.is_empty() {
                continue;
            }
            out.push(' ');
            out.push_str(&bits.join(","));
            out.push('+');
            out.push_str(&flag_letters(t as u8));
        }
        out.split_off(base)
    }

    /// The rootid `getcap -n` prints: only for v3 and neither 0 nor -1.
    pub fn namespaced_rootid(&self) -> Option<u32> {
        self.rootid.filter(|id| *id != 0 && *id != u32::MAX)
    }
}

/// Renders like `getcap -n FILE` after the name: the capability text, then ` [rootid=N]` for a
/// v3 attribute owned by a user namespace (identical to plain `getcap` otherwise).
impl fmt::Display for FileCaps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text())?;
        if let Some(rootid) = self.namespaced_rootid() {
            write!(f, " [rootid={rootid}]")?;
        }
        Ok(())
    }
}

fn flag_letters(flags: u8) -> String {
    let mut s = String::with_capacity(3);
    if flags & LIBCAP_EFF != 0 {
        s.push('e');
    }
    if flags & LIBCAP_INH != 0 {
        s.push('i');
    }
    if flags & LIBCAP_PER != 0 {
        s.push('p');
    }
    s
}

fn cap_text_name(bit: u32) -> String {
    match CAPABILITY_NAMES.get(bit as usize) {
        Some(name) => name.to_ascii_lowercase(),
        None => bit.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(words: &[u32]) -> Vec<u8> {
        words.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    const NET_ADMIN: u32 = 1 << 12;
    const NET_RAW: u32 = 1 << 13;

    #[test]
    fn v2_from_setcap_net_raw_ep() {
        // `setcap cap_net_raw+ep f; getfattr -e hex -n security.capability f` on this machine.
        let raw = [
            0x01, 0x00, 0x00, 0x02, 0x00, 0x20, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ];
        let caps = decode_file_capability(&raw).unwrap();
        assert_eq!(caps.revision, CapRevision::V2);
        assert!(caps.effective);
        assert_eq!(caps.permitted, 1 << 13);
        assert_eq!(caps.to_string(), "cap_net_raw=ep");
    }

    #[test]
    fn v2_renders_like_getcap() {
        let eip = blob(&[
            REVISION_2 | 1,
            NET_ADMIN | NET_RAW,
            NET_ADMIN | NET_RAW,
            0,
            0,
        ]);
        assert_eq!(
            decode_file_capability(&eip).unwrap().to_string(),
            "cap_net_admin,cap_net_raw=eip"
        );
        let p_only = blob(&[REVISION_2, NET_ADMIN, 0, 0, 0]);
        assert_eq!(
            decode_file_capability(&p_only).unwrap().to_string(),
            "cap_net_admin=p"
        );
        // Two groups: the second is spelled with '+'; groups with inheritable come first.
        let mixed = blob(&[REVISION_2, NET_ADMIN, NET_RAW, 0, 0]);
        assert_eq!(
            decode_file_capability(&mixed).unwrap().to_string(),
            "cap_net_raw=i cap_net_admin+p"
        );
        // `getcap` on this machine for permitted admin+raw, inheritable admin.
        let getcap = blob(&[REVISION_2, NET_ADMIN | NET_RAW, NET_ADMIN, 0, 0]);
        assert_eq!(
            decode_file_capability(&getcap).unwrap().to_string(),
            "cap_net_admin=ip cap_net_raw+p"
        );
        // High word: cap_bpf (39) and an unnamed bit (50) printed by number.
        let high = blob(&[REVISION_2 | 1, 0, 0, (1 << 7) | (1 << 18), 0]);
        assert_eq!(
            decode_file_capability(&high).unwrap().to_string(),
            "cap_bpf=ep 50+ep"
        );
    }

    #[test]
    fn effective_flag_off_and_on() {
        let off = decode_file_capability(&blob(&[REVISION_2, NET_RAW, 0, 0, 0])).unwrap();
        assert!(!off.effective);
        assert_eq!(off.effective_mask(), 0);
        assert_eq!(off.to_string(), "cap_net_raw=p");
        let on = decode_file_capability(&blob(&[REVISION_2 | 1, NET_RAW, 0, 0, 0])).unwrap();
        assert!(on.effective);
        assert_eq!(on.effective_mask(), u64::from(NET_RAW));
        assert_eq!(on.to_string(), "cap_net_raw=ep");
    }

    #[test]
    fn all_named_caps_collapse_to_equals_form() {
        let all = nodeguard_model::capability::full_capability_mask(NAMED_BITS - 1);
        let caps = FileCaps {
            revision: CapRevision::V2,
            permitted: all,
            inheritable: 0,
            effective: true,
            rootid: None,
        };
        assert_eq!(caps.to_string(), "=ep");
        // All but one: the odd one out is lowered.
        let caps = FileCaps {
            permitted: all & !(1 << 21),
            ..caps
        };
        assert_eq!(caps.to_string(), "=ep cap_sys_admin-ep");
    }

    #[test]
    fn empty_set_renders_as_bare_equals() {
        let caps = decode_file_capability(&blob(&[REVISION_2, 0, 0, 0, 0])).unwrap();
        assert_eq!(caps.to_string(), "=");
    }

    #[test]
    fn v1_has_only_32_bits() {
        let caps = decode_file_capability(&blob(&[REVISION_1 | 1, NET_RAW, 0])).unwrap();
        assert_eq!(caps.revision, CapRevision::V1);
        assert_eq!(caps.permitted, u64::from(NET_RAW));
        assert_eq!(caps.rootid, None);
        assert_eq!(caps.to_string(), "cap_net_raw=ep");
    }

    #[test]
    fn v3_carries_rootid() {
        let caps =
            decode_file_capability(&blob(&[REVISION_3 | 1, NET_RAW, 0, 0, 0, 100_000])).unwrap();
        assert_eq!(caps.revision, CapRevision::V3);
        assert_eq!(caps.rootid, Some(100_000));
        assert_eq!(caps.text(), "cap_net_raw=ep");
        assert_eq!(caps.to_string(), "cap_net_raw=ep [rootid=100000]");
        // rootid 0 is printed like v2 (getcap -n does too).
        let caps = decode_file_capability(&blob(&[REVISION_3, NET_RAW, 0, 0, 0, 0])).unwrap();
        assert_eq!(caps.to_string(), "cap_net_raw=p");
    }

    #[test]
    fn garbage_and_short_blobs_are_errors() {
        assert!(matches!(
            decode_file_capability(&[]),
            Err(Error::CapabilityTooShort { len: 0 })
        ));
        assert!(matches!(
            decode_file_capability(&[1, 0, 0]),
            Err(Error::CapabilityTooShort { len: 3 })
        ));
        assert!(matches!(
            decode_file_capability(&blob(&[0x0400_0000, 0, 0, 0, 0])),
            Err(Error::CapabilityRevision { .. })
        ));
        // v2 header with a v1 length, v3 header with a v2 length, trailing bytes.
        assert!(matches!(
            decode_file_capability(&blob(&[REVISION_2, 0, 0])),
            Err(Error::CapabilityLength {
                expected: 20,
                len: 12,
                ..
            })
        ));
        assert!(decode_file_capability(&blob(&[REVISION_3, 0, 0, 0, 0])).is_err());
        assert!(decode_file_capability(&blob(&[REVISION_1, 0, 0, 0])).is_err());
        // Every prefix and a spread of random-ish bytes: errors or values, never a panic.
        let v3 = blob(&[REVISION_3 | 1, u32::MAX, u32::MAX, u32::MAX, u32::MAX, 7]);
        for len in 0..v3.len() {
            assert!(decode_file_capability(&v3[..len]).is_err(), "len {len}");
        }
        let mut seed = 0x1234_5678u32;
        for len in 0..64 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    (seed >> 16) as u8
                })
                .collect();
            if let Ok(caps) = decode_file_capability(&bytes) {
                let _ = caps.to_string();
            }
        }
        let full = decode_file_capability(&v3).unwrap();
        assert!(full.to_string().starts_with("=eip"), "{full}");
    }
}
