//! The one home of text that leaves the agent for a human: how a field is made safe for a
//! terminal, a log line, an Event or a PolicyReport, and how it is cut to a length.
//!
//! Every text field that reaches an Event note, a PolicyReport result, a finding message or
//! a log field goes through [`clean`] (bounded) or [`escape_controls`] (unbounded, for text
//! whose length is bounded where it was made): an image name, container or pod name, path,
//! subject or command line holding ESC, a newline, DEL, a C1 control or a bidi override
//! comes out on one line with each such character written as an escape (`\n`, `\r`, `\t`,
//! `\u{1b}`), so `kubectl describe` shows it and cannot be made to clear the screen or
//! print a forged line.
//!
//! Escaping keeps every character (nothing is dropped or turned into a space: the code point
//! of each control is in the output). A backslash is left single: paths in a report are
//! already escaped by [`crate::escape_path`] (`\\`, `\n`, `\xNN`), and the same text
//! cleaned twice (the policy cleans a message, the Event note cleans it again) must read
//! the same, not grow a backslash each time. [`clean`] is therefore idempotent.

/// Characters that reorder or hide text on a terminal or in a browser without being
/// control characters: bidi embeddings, overrides and isolates (`evil\u{202e}txt.exe`
/// shows as `evilexe.txt`), directional marks, zero-width characters and the line and
/// paragraph separators. [`crate::escape_path`] and [`escape_controls`] escape them like
/// control characters.
pub fn is_bidi_or_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{061c}'
            | '\u{180e}'
            | '\u{200b}'..='\u{200f}'
            | '\u{2028}'..='\u{202e}'
            | '\u{2060}'..='\u{2069}'
            | '\u{feff}'
    )
}

/// Whether [`escape_controls`] rewrites `c`: C0 controls (newline and ESC included), DEL,
/// C1 controls, and [`is_bidi_or_invisible`] characters.
pub fn needs_escape(c: char) -> bool {
    c.is_control() || is_bidi_or_invisible(c)
}

/// Appends `c` as [`escape_controls`] writes it.
fn push_escaped(out: &mut String, c: char) {
    match c {
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        c if needs_escape(c) => {
            use std::fmt::Write;
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        }
        c => out.push(c),
    }
}

/// Text kept on one line for terminals and messages: `\n`, `\t`, `\r` and other control
/// and bidi characters written as escapes (`\u{1b}`), everything else as it is. Unlike
/// [`crate::escape_path`] a backslash stays single, so already-escaped paths are not
/// escaped twice. Not bounded: use [`clean`] for text whose length nothing else bounds.
pub fn escape_controls(text: &str) -> String {
    if !text.chars().any(needs_escape) {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        push_escaped(&mut out, c);
    }
    out
}

/// The ellipsis [`clip`] and [`clean`] end a cut text with.
pub const ELLIPSIS: char = '…';

/// [`escape_controls`] of `text`, at most `max` bytes: when it does not fit, it is cut
/// before the first character or escape that would not fit and ends with `…` (an escape is
/// never cut in half, so the result never ends in a stray `\u{1`). Reads only as much of
/// `text` as the result needs, so a huge input costs `max`, not its length.
pub fn clean(text: &str, max: usize) -> String {
    let room = max.saturating_sub(ELLIPSIS.len_utf8());
    let mut out = String::with_capacity(text.len().min(max));
    // The length of `out` when it last still left room for the ellipsis.
    let mut fits = 0;
    for c in text.chars() {
        push_escaped(&mut out, c);
        if out.len() > max {
            out.truncate(fits);
            if max >= ELLIPSIS.len_utf8() {
                out.push(ELLIPSIS);
            }
            return out;
        }
        if out.len() <= room {
            fits = out.len();
        }
    }
    out
}

/// At most `max` bytes of `s`, cut on a char boundary, with `…` when cut. No escaping: for
/// text already [`clean`] or made by the agent itself.
pub fn clip(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut out = cut(s, max.saturating_sub(ELLIPSIS.len_utf8())).to_string();
    if max >= ELLIPSIS.len_utf8() {
        out.push(ELLIPSIS);
    }
    out
}

/// At most `max` bytes of `s`, cut on a char boundary (nothing added).
pub fn cut(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Renders a path losslessly as text: valid UTF-8 stays as it is except `\` → `\\` and
/// control characters (`\n`, `\t`, others as `\xNN`); bytes that are not UTF-8 become `\xNN`.
pub fn escape_path(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for ch in chunk.valid().chars() {
            match ch {
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\t' => out.push_str("\\t"),
                '\r' => out.push_str("\\r"),
                c if c.is_control() || is_bidi_or_invisible(c) => {
                    let mut buf = [0u8; 4];
                    for b in c.encode_utf8(&mut buf).bytes() {
                        out.push_str(&format!("\\x{b:02x}"));
                    }
                }
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// The inverse of [`escape_path`].
pub fn unescape_path(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len());
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            out.push(bytes[i]);
            i += 1;
            continue;
        }
        match bytes.get(i + 1)? {
            b'\\' => out.push(b'\\'),
            b'n' => out.push(b'\n'),
            b't' => out.push(b'\t'),
            b'r' => out.push(b'\r'),
            b'x' => {
                let hex = text.get(i + 2..i + 4)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            _ => return None,
        }
        i += 2;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a terminal or `kubectl describe` must never get raw.
    fn hostile(c: char) -> bool {
        c.is_control() || is_bidi_or_invisible(c)
    }

    #[test]
    fn controls_are_escaped_once_and_backslashes_kept() {
        assert_eq!(escape_controls("plain/path"), "plain/path");
        assert_eq!(escape_controls("a\nb\tc\rd"), "a\\nb\\tc\\rd");
        assert_eq!(escape_controls("x\u{1b}[31m"), "x\\u{1b}[31m");
        assert_eq!(escape_controls("/tmp/a\\nb"), "/tmp/a\\nb");
        assert_eq!(escape_controls("container's"), "container's");
        // Bidi overrides, isolates, marks and zero-width characters: escaped too.
        assert_eq!(
            escape_controls("evil\u{202e}txt.exe"),
            "evil\\u{202e}txt.exe"
        );
        for c in [
            '\u{202a}', '\u{2066}', '\u{2069}', '\u{200e}', '\u{200f}', '\u{200b}', '\u{feff}',
        ] {
            let escaped = escape_controls(&format!("a{c}b"));
            assert_eq!(escaped, format!("a\\u{{{:x}}}b", c as u32));
            assert!(!escaped.contains(c));
        }
        assert_eq!(escape_controls("naïve 日本"), "naïve 日本");
    }

    #[test]
    fn hostile_fields_come_out_on_one_line_with_every_control_named() {
        // An image name as the API server accepts it: ESC clears the screen, the newline
        // starts a forged line under nodeguard's name.
        let image = "nginx\u{1b}[2J\u{1b}[H\nWarning  Fine  nodeguard  all clear";
        let cleaned = clean(image, 240);
        assert_eq!(
            cleaned,
            "nginx\\u{1b}[2J\\u{1b}[H\\nWarning  Fine  nodeguard  all clear"
        );
        // C0, DEL, C1 (CSI, NEL), bidi, line separator: none survives, each is named.
        for c in [
            '\0', '\u{7}', '\u{8}', '\u{b}', '\u{c}', '\u{7f}', '\u{85}', '\u{9b}', '\u{202e}',
            '\u{2028}', '\u{2029}',
        ] {
            let out = clean(&format!("pod{c}name"), 240);
            assert!(!out.chars().any(hostile), "{c:?} survived: {out:?}");
            assert!(
                out.contains(&format!("{:x}", c as u32)),
                "{c:?} dropped: {out}"
            );
        }
        // The same text twice reads the same (policy messages are cleaned again in notes).
        assert_eq!(clean(&cleaned, 240), cleaned);
        assert_eq!(clean("/usr/bin/passwd", 240), "/usr/bin/passwd");
    }

    #[test]
    fn clean_is_bounded_and_never_splits_an_escape_or_a_character() {
        let long = "\u{1b}é".repeat(10_000);
        let full = escape_controls(&long);
        for max in [0, 1, 2, 3, 4, 7, 8, 9, 10, 11, 240, 1000] {
            let out = clean(&long, max);
            assert!(out.len() <= max, "{max}: {} bytes", out.len());
            assert!(!out.chars().any(hostile));
            let body = out.strip_suffix(ELLIPSIS).unwrap_or(&out);
            // Whole units only: a prefix of the full escape ending after `}` or `é`.
            assert!(full.starts_with(body), "{max}: {out:?}");
            assert!(
                body.is_empty() || body.ends_with('}') || body.ends_with('é'),
                "{max}: {out:?}"
            );
        }
        assert_eq!(clean("abcdef", 5), "ab…");
        assert_eq!(clean("abc", 3), "abc");
        assert_eq!(clean("ab", 0), "");
    }

    #[test]
    fn clip_and_cut_stay_on_char_boundaries() {
        assert_eq!(clip("abc", 3), "abc");
        assert_eq!(clip("abcdef", 5), "ab…");
        let c = clip("ééééé", 6);
        assert!(c.len() <= 6 && c.ends_with('…'), "{c}");
        assert_eq!(clip("ab", 0), "");
        assert_eq!(cut("ééé", 3), "é");
        assert_eq!(cut("abc", 10), "abc");
    }

    #[test]
    fn escape_is_lossless_for_hostile_names() {
        let names: [&[u8]; 5] = [
            b"/usr/bin/passwd",
            b"/tmp/evil\nname",
            b"/tmp/\xff\xfe-not-utf8",
            b"/tmp/back\\slash\\x41",
            b"/tmp/\x1b[31mred",
        ];
        for name in names {
            let escaped = escape_path(name);
            assert!(!escaped.contains('\n'), "{escaped}");
            assert!(!escaped.chars().any(|c| c.is_control()), "{escaped}");
            assert_eq!(unescape_path(&escaped).as_deref(), Some(name), "{escaped}");
        }
        assert_eq!(escape_path(b"/tmp/a\nb"), "/tmp/a\\nb");
        assert_eq!(escape_path(b"/tmp/\xff"), "/tmp/\\xff");
        let bidi = "/tmp/evil\u{202e}txt.exe".as_bytes();
        assert_eq!(escape_path(bidi), "/tmp/evil\\xe2\\x80\\xaetxt.exe");
        assert_eq!(unescape_path(&escape_path(bidi)).as_deref(), Some(bidi));
    }
}
