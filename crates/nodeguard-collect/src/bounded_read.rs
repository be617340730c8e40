//! Reading a file into a buffer with a bound: what every `/proc` and cgroup read goes
//! through, so a huge or endless file costs at most the bound.

use std::io;

/// Reads at most `limit` bytes into `buf` (cleared first) with `read(chunk, offset)` calls
/// (`offset`: bytes read so far), until one returns 0 or, with `short_read_ends`, fewer bytes
/// than asked. An interrupted read is retried; on an error `buf` keeps what was read before.
pub(crate) fn read_into(
    buf: &mut Vec<u8>,
    limit: usize,
    short_read_ends: bool,
    mut read: impl FnMut(&mut [u8], u64) -> io::Result<usize>,
) -> io::Result<()> {
    buf.clear();
    loop {
        if buf.len() >= limit {
            buf.truncate(limit);
            return Ok(());
        }
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(8192);
        }
        let start = buf.len();
        let want = (buf.capacity() - start).min(limit - start);
        buf.resize(start + want, 0);
        match read(&mut buf[start..], start as u64) {
            Ok(n) => {
                buf.truncate(start + n);
                if n == 0 || (short_read_ends && n < want) {
                    return Ok(());
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => buf.truncate(start),
            Err(e) => {
                buf.truncate(start);
                return Err(e);
            }
        }
    }
}
