//! The API server's rules for names and reasons.

pub(super) fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// `^[A-Z][A-Za-z0-9]*$`, at most 128 bytes: the API server's rule for reasons.
pub fn is_camel_reason(s: &str) -> bool {
    let mut chars = s.chars();
    s.len() <= 128
        && chars.next().is_some_and(|c| c.is_ascii_uppercase())
        && chars.all(|c| c.is_ascii_alphanumeric())
}

pub(super) fn is_dns_label(s: &str) -> bool {
    !s.is_empty() && s.len() <= 63 && !s.contains('.') && is_dns_subdomain(s)
}
