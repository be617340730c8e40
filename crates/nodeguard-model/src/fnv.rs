//! FNV-1a, the one non-cryptographic hash of the project: finding ids, names that must not
//! collide (Events, reports, labels) and jitter seeds. Its outputs are contracts (ids and
//! names are read back), so neither the constants nor the byte order may change.

/// The FNV-1a 64-bit offset basis.
pub const FNV_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a over `bytes`, starting from `basis` (usually [`FNV_BASIS`]).
pub fn fnv1a(basis: u64, bytes: impl IntoIterator<Item = u8>) -> u64 {
    bytes
        .into_iter()
        .fold(basis, |h, b| (h ^ u64::from(b)).wrapping_mul(FNV_PRIME))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The published FNV-1a test vectors, and a value from a basis other than the standard.
    #[test]
    fn known_values() {
        assert_eq!(fnv1a(FNV_BASIS, []), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(FNV_BASIS, *b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(FNV_BASIS, *b"foobar"), 0x8594_4171_f739_67e8);
        assert_eq!(fnv1a(FNV_BASIS, *b"node-a"), 0xe697_1cc2_2078_cb53);
        assert_eq!(fnv1a(0, *b"a"), 0x0000_6100_0000_a4d3);
    }
}
