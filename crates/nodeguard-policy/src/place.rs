//! Naming a node of a parsed policy for a check that runs after parsing.
//!
//! Parsing reads nothing but the text and keeps no state beside the value it builds. A check
//! that needs more (the bundle files, the count of globs over the whole policy) runs on the
//! parsed spec and, when it fails, names the node through [`FailAt`]: a second pass over the
//! same text that walks to the node and raises the message there, so the YAML front end
//! reports the line, column and field as it does for a bad value.

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use std::fmt;

/// One step from the top of the policy to a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// The value of a mapping's field.
    Field(&'static str),
    /// An entry of a list.
    Entry(usize),
}

/// The field `path` leads to as errors name it: `digest_bundles[2]`.
pub(crate) fn field_name(path: &[Step]) -> String {
    let mut out = String::new();
    for step in path {
        match step {
            Step::Field(name) if out.is_empty() => out.push_str(name),
            Step::Field(name) => {
                out.push('.');
                out.push_str(name);
            }
            Step::Entry(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// Raises `message` at the string node `path` leads to; raises nothing when the text has no
/// such node.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FailAt<'a> {
    pub path: &'a [Step],
    pub message: &'a str,
}

impl<'de> DeserializeSeed<'de> for FailAt<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        match self.path.first() {
            None => d.deserialize_str(self),
            Some(Step::Field(_)) => d.deserialize_map(self),
            Some(Step::Entry(_)) => d.deserialize_seq(self),
        }
    }
}

impl<'de> Visitor<'de> for FailAt<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a policy")
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Err(E::custom(self.message))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Some((Step::Field(name), rest)) = self.path.split_first() else {
            return Ok(());
        };
        while let Some(key) = map.next_key::<String>()? {
            if key == *name {
                return map.next_value_seed(FailAt { path: rest, ..self });
            }
            map.next_value::<de::IgnoredAny>()?;
        }
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Some((Step::Entry(index), rest)) = self.path.split_first() else {
            return Ok(());
        };
        for _ in 0..*index {
            if seq.next_element::<de::IgnoredAny>()?.is_none() {
                return Ok(());
            }
        }
        seq.next_element_seed(FailAt { path: rest, ..self })?;
        Ok(())
    }
}
