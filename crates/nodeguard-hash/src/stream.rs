//! Digests fed piece by piece, for bytes that are not one file: a member of an image layer's
//! tar stream, or the whole stream (whose SHA-256 is the layer's diff_id).

use crate::{Algorithms, Digests};
use sha2::{Digest, Sha256, Sha512};

/// The requested digests of a byte stream, updated chunk by chunk.
pub struct DigestStream {
    sha256: Option<Sha256>,
    sha512: Option<Sha512>,
    bytes: u64,
}

impl DigestStream {
    pub fn new(algs: Algorithms) -> DigestStream {
        DigestStream {
            sha256: algs.sha256.then(Sha256::new),
            sha512: algs.sha512.then(Sha512::new),
            bytes: 0,
        }
    }

    pub fn update(&mut self, chunk: &[u8]) {
        self.bytes += chunk.len() as u64;
        if let Some(h) = self.sha256.as_mut() {
            h.update(chunk);
        }
        if let Some(h) = self.sha512.as_mut() {
            h.update(chunk);
        }
    }

    /// Bytes fed so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn finish(self) -> Digests {
        Digests {
            sha256: self.sha256.map(|h| h.finalize().into()),
            sha512: self.sha512.map(|h| Box::new(h.finalize().into())),
            bytes: self.bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_fed_in_pieces_digests_like_the_whole() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7) as u8).collect();
        let mut stream = DigestStream::new(Algorithms::BOTH);
        for piece in data.chunks(777) {
            stream.update(piece);
        }
        let pieces = stream.finish();
        let whole =
            crate::digest_reader(&mut &data[..], Algorithms::BOTH, &mut [0u8; 4096], u64::MAX)
                .unwrap();
        assert_eq!(pieces.sha256, whole.sha256);
        assert_eq!(pieces.sha512, whole.sha512);
        assert_eq!(pieces.bytes, 100_000);
    }
}
