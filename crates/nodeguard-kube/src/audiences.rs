//! Which token audiences the agent's TokenReview accepts.
//!
//! Two kinds of callers send tokens: Prometheus and `nodeguard query` with an ordinary
//! service-account or user token, whose audience is the API server's own (its
//! `--api-audiences`, by default its `--service-account-issuer`; static and legacy tokens
//! have none and count as the API server's), and `nodeguard fleet query` with a token minted
//! for [`FLEET_AUDIENCE`] only, which the API server itself refuses.
//!
//! kube-apiserver answers a TokenReview whose `spec.audiences` is set with `status.audiences`
//! = the token's audiences ∩ those asked for, and authenticates the token when that is not
//! empty; without `spec.audiences` it checks against its own audiences and names them in
//! `status.audiences`. So the agent asks for `[FLEET_AUDIENCE, <the API server's own>…]` in
//! one review. It does not know the API server's audiences (an issuer URL that differs per
//! cluster) until an answer names them: until then a review asks without audiences first and,
//! only when that fails, for [`FLEET_AUDIENCE`] alone — and remembers what the first
//! successful default review named. Checked against the v1.20.2 API server of the real-node
//! bed (`tests/fleet_query.rs`).

use std::sync::{Mutex, PoisonError};

/// The audience `nodeguard fleet query` mints its tokens for, and agents accept besides the
/// API server's own.
pub const FLEET_AUDIENCE: &str = "nodeguard";

/// At most this many audiences of the API server are remembered, each at most
/// [`MAX_AUDIENCE_BYTES`] long (an answer naming more or longer ones is not learned from).
pub const MAX_SERVER_AUDIENCES: usize = 8;
pub const MAX_AUDIENCE_BYTES: usize = 512;

/// The API server's own audiences, once an answer has named them.
#[derive(Debug, Default)]
pub struct ServerAudiences {
    learned: Mutex<Option<Vec<String>>>,
}

/// The reviews to send for one token, in order; the next only when the one before did not
/// authenticate the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReviewPlan {
    /// One review for the fleet audience and the API server's own.
    Once(Vec<String>),
    /// The API server's own audiences are not known yet: a review without audiences (which
    /// names them), then one for the fleet audience.
    DefaultThenFleet,
}

impl ServerAudiences {
    /// What to ask the API server for the next token.
    pub fn plan(&self) -> ReviewPlan {
        let learned = self.learned.lock().unwrap_or_else(PoisonError::into_inner);
        match learned.as_ref() {
            Some(server) => {
                let mut all = vec![FLEET_AUDIENCE.to_string()];
                all.extend(server.iter().filter(|a| *a != FLEET_AUDIENCE).cloned());
                ReviewPlan::Once(all)
            }
            None => ReviewPlan::DefaultThenFleet,
        }
    }

    /// Learns the API server's audiences from the `status.audiences` of a review sent without
    /// audiences that authenticated a token. An empty, oversized or unbounded list teaches
    /// nothing (the plan stays two reviews).
    pub fn learn(&self, named: &[String]) {
        if named.is_empty()
            || named.len() > MAX_SERVER_AUDIENCES
            || named
                .iter()
                .any(|a| a.is_empty() || a.len() > MAX_AUDIENCE_BYTES)
        {
            return;
        }
        let mut learned = self.learned.lock().unwrap_or_else(PoisonError::into_inner);
        if learned.is_none() {
            *learned = Some(named.to_vec());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn until_the_api_servers_audiences_are_known_a_failed_default_review_is_retried_for_the_fleet()
    {
        let audiences = ServerAudiences::default();
        assert_eq!(audiences.plan(), ReviewPlan::DefaultThenFleet);
        audiences.learn(&[]);
        audiences.learn(&vec!["x".to_string(); MAX_SERVER_AUDIENCES + 1]);
        audiences.learn(&["a".repeat(MAX_AUDIENCE_BYTES + 1)]);
        assert_eq!(audiences.plan(), ReviewPlan::DefaultThenFleet);
        audiences.learn(&["https://kubernetes.default.svc".to_string()]);
        assert_eq!(
            audiences.plan(),
            ReviewPlan::Once(vec![
                "nodeguard".to_string(),
                "https://kubernetes.default.svc".to_string()
            ])
        );
        // The first answer stays: later ones cannot widen what is asked for.
        audiences.learn(&["https://elsewhere".to_string()]);
        assert_eq!(
            audiences.plan(),
            ReviewPlan::Once(vec![
                "nodeguard".to_string(),
                "https://kubernetes.default.svc".to_string()
            ])
        );
    }
}
