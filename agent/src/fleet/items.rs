//! The items of one agent's answer, cut out of its body as the bytes arrive, without parsing
//! them into values: `{"node": …, "count": …, "processes": [ITEM, ITEM, …]}` (or
//! `"findings"`, `"containers"`) gives each `ITEM` as the agent's own bytes.
//!
//! Why: `fleet query` passes a thousand answers of about 1 MB each; parsing every item into a
//! value and writing it again was most of its time, and holding a whole answer made its
//! memory grow with the answer. Here an answer costs one scan of its bytes, and what is held
//! is the item being read (at most [`MAX_ITEM_BYTES`]), whatever the size of the answer.
//!
//! The body is hostile. The scanner only tracks strings (with their escapes) and nesting, so
//! an item it hands out is checked before anyone uses it ([`checked`]): valid UTF-8, valid
//! JSON (serde_json parses it, keeping nothing) and one line (an item holding structural
//! newlines is written again compactly). Nesting is bounded, every item must be an object,
//! the list must be there once and the top-level object must be closed.

use serde::de::IgnoredAny;
use std::borrow::Cow;

/// The largest item taken from an answer (a process, finding or container is a few KB).
pub const MAX_ITEM_BYTES: usize = 1024 * 1024;
/// Deeper nesting is refused (serde_json's own recursion limit).
const MAX_DEPTH: usize = 128;
/// Top-level keys longer than this are no list key (and are not kept).
const MAX_KEY_BYTES: usize = 32;

/// The bytes that change the splitter's state inside an item: quotes and brackets.
static STRUCTURAL: [bool; 256] = {
    let mut table = [false; 256];
    table[b'"' as usize] = true;
    table[b'{' as usize] = true;
    table[b'}' as usize] = true;
    table[b'[' as usize] = true;
    table[b']' as usize] = true;
    table
};

/// Why an answer's items could not be taken out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ItemsError {
    #[error("not a JSON object")]
    NotAnObject,
    #[error("an item of \"{0}\" is not an object")]
    ItemNotObject(&'static str),
    #[error("an item is larger than {MAX_ITEM_BYTES} bytes")]
    ItemTooLarge,
    #[error("nested deeper than {MAX_DEPTH}")]
    TooDeep,
    #[error("unbalanced brackets")]
    Unbalanced,
    #[error("an item is not valid JSON: {0}")]
    BadItem(String),
    #[error("bytes after the answer")]
    Trailing,
    #[error("the answer ends before its end")]
    Truncated,
    #[error("no \"{0}\" list")]
    NoList(&'static str),
    #[error("\"{0}\" twice")]
    ListTwice(&'static str),
}

/// Cuts the items of the list under `key` out of a body fed in pieces.
pub struct ItemSplitter {
    key: &'static str,
    /// Open brackets; 0 before the top-level `{` and after its `}`.
    depth: usize,
    /// Inside a string (keys included).
    in_string: bool,
    /// The previous byte was a backslash inside a string.
    escaped: bool,
    /// At depth 1: the next string is a key.
    expect_key: bool,
    /// At depth 1: the key being read (`None` once longer than [`MAX_KEY_BYTES`]).
    key_bytes: Option<Vec<u8>>,
    reading_key: bool,
    /// The value after the current depth-1 key is the list.
    value_is_list: bool,
    /// Inside the list (its `[` is at depth 2).
    in_list: bool,
    list_seen: bool,
    /// The item being read (its `{` is at depth 3).
    item: Vec<u8>,
    in_item: bool,
    /// The top-level object was closed.
    done: bool,
}

impl ItemSplitter {
    pub fn new(key: &'static str) -> ItemSplitter {
        ItemSplitter {
            key,
            depth: 0,
            in_string: false,
            escaped: false,
            expect_key: false,
            key_bytes: None,
            reading_key: false,
            value_is_list: false,
            in_list: false,
            list_seen: false,
            item: Vec::new(),
            in_item: false,
            done: false,
        }
    }

    /// Feeds the next piece of the body; `emit` gets every item completed in it, unchecked
    /// (see [`checked`]). An error from `emit` stops the feed and is returned.
    pub fn feed<E: From<ItemsError>>(
        &mut self,
        chunk: &[u8],
        mut emit: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut i = 0;
        // Where the current item's bytes start in this chunk.
        let mut item_from = 0;
        while i < chunk.len() {
            if self.in_string {
                // Jump to the next quote or backslash: most bytes of an answer are string
                // bytes.
                if self.escaped {
                    self.escaped = false;
                    if self.reading_key {
                        self.push_key(chunk[i]);
                    }
                    i += 1;
                    continue;
                }
                let rest = &chunk[i..];
                let Some(at) = memchr::memchr2(b'"', b'\\', rest) else {
                    if self.reading_key {
                        for &b in rest {
                            self.push_key(b);
                        }
                    }
                    break;
                };
                if self.reading_key {
                    for &b in &rest[..at] {
                        self.push_key(b);
                    }
                }
                i += at;
                if chunk[i] == b'\\' {
                    self.escaped = true;
                    if self.reading_key {
                        self.push_key(b'\\');
                    }
                } else {
                    self.in_string = false;
                    if self.reading_key {
                        self.reading_key = false;
                        self.expect_key = false;
                    }
                }
                i += 1;
                continue;
            }
            if self.depth >= 3 {
                // Inside an item (or any value nested as deep) only strings and brackets
                // change the state: skip the rest (numbers, literals, `,`, `:`, whitespace).
                match chunk[i..].iter().position(|&b| STRUCTURAL[usize::from(b)]) {
                    Some(at) => i += at,
                    None => break,
                }
            }
            let b = chunk[i];
            if self.done {
                if !b.is_ascii_whitespace() {
                    return Err(ItemsError::Trailing.into());
                }
                i += 1;
                continue;
            }
            match b {
                b'"' => {
                    if self.depth == 2 && self.in_list {
                        return Err(ItemsError::ItemNotObject(self.key).into());
                    }
                    self.in_string = true;
                    if self.depth == 1 && self.expect_key {
                        self.reading_key = true;
                        self.key_bytes = Some(Vec::new());
                    }
                }
                b'{' | b'[' => {
                    if self.depth == 0 && b != b'{' {
                        return Err(ItemsError::NotAnObject.into());
                    }
                    if self.depth == 1 && self.value_is_list {
                        if b != b'[' || self.list_seen {
                            return Err(if self.list_seen {
                                ItemsError::ListTwice(self.key)
                            } else {
                                ItemsError::NoList(self.key)
                            }
                            .into());
                        }
                        self.in_list = true;
                        self.value_is_list = false;
                    } else if self.depth == 2 && self.in_list {
                        if b != b'{' {
                            return Err(ItemsError::ItemNotObject(self.key).into());
                        }
                        self.in_item = true;
                        self.item.clear();
                        item_from = i;
                    }
                    self.depth += 1;
                    if self.depth > MAX_DEPTH {
                        return Err(ItemsError::TooDeep.into());
                    }
                    if self.depth == 1 {
                        self.expect_key = true;
                    }
                }
                b'}' | b']' => {
                    if self.depth == 0 {
                        return Err(ItemsError::Unbalanced.into());
                    }
                    self.depth -= 1;
                    match self.depth {
                        0 => {
                            if b != b'}' {
                                return Err(ItemsError::Unbalanced.into());
                            }
                            self.done = true;
                        }
                        1 if self.in_list => {
                            if b != b']' {
                                return Err(ItemsError::Unbalanced.into());
                            }
                            self.in_list = false;
                            self.list_seen = true;
                        }
                        2 if self.in_item => {
                            self.in_item = false;
                            let item: &[u8] = if self.item.is_empty() {
                                &chunk[item_from..=i]
                            } else {
                                self.item.extend_from_slice(&chunk[item_from..=i]);
                                &self.item
                            };
                            if item.len() > MAX_ITEM_BYTES {
                                return Err(ItemsError::ItemTooLarge.into());
                            }
                            emit(item)?;
                            self.item.clear();
                        }
                        _ => {}
                    }
                }
                b',' if self.depth == 1 => {
                    self.expect_key = true;
                    self.value_is_list = false;
                }
                b':' if self.depth == 1 => {
                    self.value_is_list =
                        self.key_bytes.take().as_deref() == Some(self.key.as_bytes());
                }
                b if self.depth == 2 && self.in_list && !b.is_ascii_whitespace() && b != b',' => {
                    return Err(ItemsError::ItemNotObject(self.key).into());
                }
                b if self.depth == 0 && !b.is_ascii_whitespace() => {
                    return Err(ItemsError::NotAnObject.into());
                }
                _ => {}
            }
            i += 1;
        }
        if self.in_item {
            let piece = &chunk[item_from..];
            if self.item.len() + piece.len() > MAX_ITEM_BYTES {
                return Err(ItemsError::ItemTooLarge.into());
            }
            self.item.extend_from_slice(piece);
        }
        Ok(())
    }

    /// The body ended: it must have been one whole object holding the list.
    pub fn finish(&self) -> Result<(), ItemsError> {
        if !self.done {
            return Err(ItemsError::Truncated);
        }
        if !self.list_seen {
            return Err(ItemsError::NoList(self.key));
        }
        Ok(())
    }

    fn push_key(&mut self, b: u8) {
        if let Some(key) = &mut self.key_bytes {
            if key.len() < MAX_KEY_BYTES {
                key.push(b);
            } else {
                self.key_bytes = None;
            }
        }
    }
}

/// An item as the scanner gave it, checked: valid UTF-8 and valid JSON, on one line (an
/// item with structural line breaks comes back rewritten compactly).
pub fn checked(item: &[u8]) -> Result<Cow<'_, str>, ItemsError> {
    let text = std::str::from_utf8(item).map_err(|e| ItemsError::BadItem(e.to_string()))?;
    if memchr::memchr2(b'\n', b'\r', item).is_some() {
        // Strings cannot hold raw line breaks, so these are whitespace between tokens.
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| ItemsError::BadItem(e.to_string()))?;
        return Ok(Cow::Owned(value.to_string()));
    }
    serde_json::from_str::<IgnoredAny>(text).map_err(|e| ItemsError::BadItem(e.to_string()))?;
    Ok(Cow::Borrowed(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every item of `body` fed in pieces of `step` bytes, checked.
    fn split(body: &str, step: usize) -> Result<Vec<String>, ItemsError> {
        let mut splitter = ItemSplitter::new("processes");
        let mut items = Vec::new();
        for chunk in body.as_bytes().chunks(step.max(1)) {
            splitter.feed(chunk, |item| {
                items.push(checked(item)?.into_owned());
                Ok::<(), ItemsError>(())
            })?;
        }
        splitter.finish()?;
        Ok(items)
    }

    #[test]
    fn items_come_out_as_sent_whatever_the_pieces() {
        let body = r#"{"node":"n","processes":[{"pid":1,"exe":"/bin/a \"]}\\"},{"pid":2,"x":[{"y":"}"}]}],"count":2,"after":{"processes":[1]}}"#;
        let want = vec![
            r#"{"pid":1,"exe":"/bin/a \"]}\\"}"#.to_string(),
            r#"{"pid":2,"x":[{"y":"}"}]}"#.to_string(),
        ];
        for step in [1, 2, 3, 7, 64, body.len()] {
            assert_eq!(
                split(body, step).unwrap_or_else(|e| panic!("step {step}: {e}")),
                want,
                "step {step}"
            );
        }
        assert_eq!(
            split(r#" {"processes":[]} "#, 1).unwrap(),
            Vec::<String>::new()
        );
    }

    #[test]
    fn a_pretty_printed_item_comes_out_on_one_line() {
        let body = "{\n  \"processes\": [\n    {\n      \"pid\": 1\n    }\n  ]\n}\n";
        assert_eq!(split(body, 5).unwrap(), vec![r#"{"pid":1}"#.to_string()]);
    }

    #[test]
    fn a_key_that_only_looks_like_the_list_is_not_it() {
        // The key inside a string value, an escaped key, a nested key.
        let body =
            r#"{"a":"\"processes\":[{}]","proc\u0065sses":[{"pid":9}],"b":{"processes":[{}]}}"#;
        assert_eq!(split(body, 4), Err(ItemsError::NoList("processes")));
    }

    #[test]
    fn hostile_bodies_are_refused_not_passed_on() {
        let cases: &[(&str, ItemsError)] = &[
            ("[1,2]", ItemsError::NotAnObject),
            (r#"{"processes":[{"pid":1}]"#, ItemsError::Truncated),
            (
                r#"{"processes":[1]}"#,
                ItemsError::ItemNotObject("processes"),
            ),
            (
                r#"{"processes":["x"]}"#,
                ItemsError::ItemNotObject("processes"),
            ),
            (
                r#"{"processes":{"pid":1}}"#,
                ItemsError::NoList("processes"),
            ),
            (
                r#"{"processes":[],"processes":[]}"#,
                ItemsError::ListTwice("processes"),
            ),
            (r#"{"processes":[]}{"processes":[]}"#, ItemsError::Trailing),
            (r#"{"processes":[]}]"#, ItemsError::Trailing),
            (r#"{"processes":[}"#, ItemsError::Unbalanced),
        ];
        for (body, want) in cases {
            assert_eq!(split(body, 3).as_ref(), Err(want), "{body}");
        }
        // Invalid JSON inside an item, a raw control byte in a string, bad UTF-8.
        for body in [
            r#"{"processes":[{"pid":tru}]}"#,
            "{\"processes\":[{\"exe\":\"a\u{1}b\"}]}",
        ] {
            assert!(
                matches!(split(body, 3), Err(ItemsError::BadItem(_))),
                "{body}"
            );
        }
        let mut bad = br#"{"processes":[{"exe":"#.to_vec();
        bad.extend_from_slice(&[b'"', 0xff, b'"', b'}', b']', b'}']);
        let mut splitter = ItemSplitter::new("processes");
        let fed = splitter.feed(&bad, |item| checked(item).map(|_| ()));
        assert!(matches!(fed, Err(ItemsError::BadItem(_))), "{fed:?}");
        // Nesting and item size are bounded, however the bytes come.
        let deep = format!("{{\"processes\":[{{\"a\":{}", "[".repeat(200));
        assert_eq!(split(&deep, 50), Err(ItemsError::TooDeep));
        let huge = format!(
            "{{\"processes\":[{{\"exe\":\"{}\"}}]}}",
            "a".repeat(MAX_ITEM_BYTES)
        );
        assert_eq!(split(&huge, 4096), Err(ItemsError::ItemTooLarge));
        assert_eq!(split(&huge, huge.len()), Err(ItemsError::ItemTooLarge));
    }
}
