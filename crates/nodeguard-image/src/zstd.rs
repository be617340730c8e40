//! zstd layer blobs: every frame in turn (encoders may write several; `zstd:chunked` writes
//! many, with skippable frames between), each frame's window checked against a bound before a
//! byte of it is decoded, so a frame cannot make the decoder allocate gigabytes.

use ruzstd::decoding::StreamingDecoder;
use std::io::{self, Read};

const MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
/// The largest frame header: magic, descriptor, window byte, 4-byte dictionary id, 8-byte size.
const MAX_HEADER: usize = 18;

/// A reader that can look ahead a few bytes without consuming them.
pub(crate) struct Peek<R> {
    ahead: Vec<u8>,
    at: usize,
    inner: R,
}

impl<R: Read> Peek<R> {
    fn peek(&mut self, n: usize) -> io::Result<&[u8]> {
        if self.at > 0 {
            self.ahead.drain(..self.at);
            self.at = 0;
        }
        while self.ahead.len() < n {
            let mut chunk = [0u8; MAX_HEADER];
            let want = n - self.ahead.len();
            let got = self.inner.read(&mut chunk[..want])?;
            if got == 0 {
                break;
            }
            self.ahead.extend_from_slice(&chunk[..got]);
        }
        Ok(&self.ahead[..self.ahead.len().min(n)])
    }

    fn skip(&mut self, mut n: u64) -> io::Result<()> {
        let mut buf = [0u8; 8192];
        while n > 0 {
            let want = buf.len().min(usize::try_from(n).unwrap_or(usize::MAX));
            let got = self.read(&mut buf[..want])?;
            if got == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "zstd: a truncated skippable frame",
                ));
            }
            n -= got as u64;
        }
        Ok(())
    }
}

impl<R: Read> Read for Peek<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.at < self.ahead.len() {
            let n = (self.ahead.len() - self.at).min(buf.len());
            buf[..n].copy_from_slice(&self.ahead[self.at..self.at + n]);
            self.at += n;
            return Ok(n);
        }
        self.inner.read(buf)
    }
}

enum State<R: Read> {
    Frame(Box<StreamingDecoder<Peek<R>, ruzstd::decoding::FrameDecoder>>),
    Between(Peek<R>),
    Done,
}

/// Decodes all frames of a zstd stream.
pub(crate) struct ZstdFrames<R: Read> {
    state: State<R>,
    max_window: u64,
}

impl<R: Read> ZstdFrames<R> {
    pub(crate) fn new(inner: R, max_window: u64) -> ZstdFrames<R> {
        ZstdFrames {
            state: State::Between(Peek {
                ahead: Vec::with_capacity(MAX_HEADER),
                at: 0,
                inner,
            }),
            max_window,
        }
    }
}

fn invalid(why: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why)
}

/// The window a frame needs, from its header (RFC 8878 3.1.1.1).
pub(crate) fn frame_window(header: &[u8]) -> Option<u64> {
    let descriptor = *header.get(4)?;
    let single_segment = descriptor & 0x20 != 0;
    if !single_segment {
        let wd = *header.get(5)?;
        let log = 10 + u64::from(wd >> 3);
        let base = 1u64.checked_shl(log as u32)?;
        return Some(base + (base / 8) * u64::from(wd & 7));
    }
    let dict_len = [0usize, 1, 2, 4][usize::from(descriptor & 3)];
    let at = 5 + dict_len;
    let size = match descriptor >> 6 {
        0 => u64::from(*header.get(at)?),
        1 => u64::from(u16::from_le_bytes(header.get(at..at + 2)?.try_into().ok()?)) + 256,
        2 => u64::from(u32::from_le_bytes(header.get(at..at + 4)?.try_into().ok()?)),
        _ => u64::from_le_bytes(header.get(at..at + 8)?.try_into().ok()?),
    };
    Some(size)
}

impl<R: Read> Read for ZstdFrames<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match std::mem::replace(&mut self.state, State::Done) {
                State::Done => return Ok(0),
                State::Frame(mut decoder) => {
                    let n = decoder.read(buf)?;
                    if n > 0 || buf.is_empty() {
                        self.state = State::Frame(decoder);
                        return Ok(n);
                    }
                    self.state = State::Between(decoder.into_inner());
                }
                State::Between(mut source) => {
                    let header = source.peek(MAX_HEADER)?;
                    if header.is_empty() {
                        return Ok(0); // the stream ends at a frame boundary
                    }
                    if header.len() < 8 {
                        return Err(invalid("zstd: a truncated frame header".into()));
                    }
                    if header[0] & 0xf0 == 0x50 && header[1..4] == [0x2a, 0x4d, 0x18] {
                        let len = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
                        source.skip(8 + u64::from(len))?;
                        self.state = State::Between(source);
                        continue;
                    }
                    if header[..4] != MAGIC {
                        return Err(invalid(
                            "zstd: bytes after a frame that are not a frame".into(),
                        ));
                    }
                    let window = frame_window(header)
                        .ok_or_else(|| invalid("zstd: a truncated frame header".into()))?;
                    if window > self.max_window {
                        return Err(invalid(format!(
                            "zstd: a frame window of {window} bytes, more than {}",
                            self.max_window
                        )));
                    }
                    let decoder =
                        StreamingDecoder::new(source).map_err(|e| invalid(format!("zstd: {e}")))?;
                    self.state = State::Frame(Box::new(decoder));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_sizes_from_frame_headers() {
        // Window byte 0x58: exponent 11 -> 2^21, mantissa 0.
        assert_eq!(
            frame_window(&[0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x58]),
            Some(1 << 21)
        );
        // Mantissa 4 adds half.
        assert_eq!(
            frame_window(&[0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x5c]),
            Some(3 << 20)
        );
        // Single segment, 4-byte content size.
        assert_eq!(
            frame_window(&[0x28, 0xb5, 0x2f, 0xfd, 0xa0, 0x00, 0x00, 0x10, 0x00]),
            Some(1 << 20)
        );
        assert_eq!(frame_window(&[0x28, 0xb5, 0x2f, 0xfd]), None);
    }
}
