//! Bounds on what one layer may make the indexer do.

/// Bounds applied to every layer stream. A layer that breaks one is refused with the bound
/// named ([`crate::Unverifiable::LayerRefused`]); nothing grows past them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Tar members (of any type) in one layer.
    pub max_members: usize,
    /// Bytes of one member name or link target (after GNU long-name and PAX `path`).
    pub max_name_bytes: usize,
    /// Path components of one member name.
    pub max_depth: usize,
    /// Bytes of one member's data (its header size; sparse members are never expanded).
    pub max_member_bytes: u64,
    /// Bytes of the whole uncompressed layer stream.
    pub max_layer_bytes: u64,
    /// Bytes of one PAX extended header or GNU long-name member.
    pub max_extended_header_bytes: u64,
    /// Bytes of one PAX `SCHILY.xattr.*` value kept (capability xattrs are ~24 bytes).
    pub max_xattr_bytes: usize,
    /// Uncompressed bytes per compressed byte, checked once past `ratio_grace_bytes`
    /// (a tar bomb of zeros inflates ~1000:1; real layers rarely pass 20:1).
    pub max_ratio: u64,
    /// Uncompressed bytes read before the ratio is checked.
    pub ratio_grace_bytes: u64,
    /// Bytes of names kept in memory for one layer's index (bounds memory whatever the layer).
    pub max_index_bytes: usize,
    /// Bytes of a manifest, index, config or metadata JSON file read whole.
    pub max_metadata_bytes: u64,
    /// The largest zstd frame window accepted (the decoder's memory); `zstd -19` uses 8 MiB.
    pub max_zstd_window_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_members: 500_000,
            max_name_bytes: 4096,
            max_depth: 128,
            max_member_bytes: 8 << 30,
            max_layer_bytes: 64 << 30,
            max_extended_header_bytes: 1 << 20,
            max_xattr_bytes: 4096,
            max_ratio: 200,
            ratio_grace_bytes: 64 << 20,
            max_index_bytes: 32 << 20,
            max_metadata_bytes: 16 << 20,
            max_zstd_window_bytes: 32 << 20,
        }
    }
}
