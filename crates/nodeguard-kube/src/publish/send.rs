//! The send context both publishers' senders hold: the client and the per-request timeout,
//! and one way to sort what the API server answered. A test swaps the client
//! (`tower_test::mock`, through `tests::mock_context`, or the testkit's fake API server).

use super::outcome::SendError;
use std::future::Future;
use std::time::Duration;

/// Sorts a client error.
pub(crate) fn classify(e: &kube::Error) -> SendError {
    match e {
        kube::Error::Api(s) if s.code == 404 => SendError::NotFound(e.to_string()),
        kube::Error::Api(s) if s.code == 409 => SendError::Conflict(e.to_string()),
        kube::Error::Api(s) if s.code >= 500 || s.code == 429 => {
            SendError::Retryable(e.to_string())
        }
        kube::Error::Api(_) | kube::Error::SerdeError(_) | kube::Error::BuildRequest(_) => {
            SendError::Permanent(e.to_string())
        }
        _ => SendError::Retryable(e.to_string()),
    }
}

/// The client and how long one request may take. Cloned into each request's future.
#[derive(Clone)]
pub(crate) struct SendContext {
    pub client: kube::Client,
    pub timeout: Duration,
}

impl SendContext {
    pub(crate) fn new(client: kube::Client, timeout: Duration) -> SendContext {
        SendContext { client, timeout }
    }

    /// `request`, or a retryable error when it does not answer within the timeout (kube
    /// sets no write timeout: a hung API server would hold the publisher forever).
    pub(crate) async fn within<T>(
        &self,
        request: impl Future<Output = Result<T, SendError>>,
    ) -> Result<T, SendError> {
        match tokio::time::timeout(self.timeout, request).await {
            Ok(result) => result,
            Err(_) => Err(SendError::Retryable(format!(
                "no answer within {:?}",
                self.timeout
            ))),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) type Handle = tower_test::mock::Handle<
        http::Request<kube::client::Body>,
        http::Response<kube::client::Body>,
    >;

    /// A context over a mocked API server: the test answers its requests through the
    /// returned handle.
    pub(crate) fn mock_context(timeout: Duration) -> (SendContext, Handle) {
        let (service, handle) = tower_test::mock::pair::<
            http::Request<kube::client::Body>,
            http::Response<kube::client::Body>,
        >();
        (
            SendContext::new(kube::Client::new(service, "default"), timeout),
            handle,
        )
    }

    /// An answer with a JSON body.
    pub(crate) fn respond(
        code: u16,
        body: serde_json::Value,
    ) -> http::Response<kube::client::Body> {
        http::Response::builder()
            .status(code)
            .body(kube::client::Body::from(serde_json::to_vec(&body).unwrap()))
            .unwrap()
    }

    /// A Status answer as the API server writes it.
    pub(crate) fn status(code: u16, reason: &str) -> http::Response<kube::client::Body> {
        respond(
            code,
            serde_json::json!({
                "kind": "Status", "apiVersion": "v1", "status": "Failure",
                "message": format!("{reason} for the test"), "reason": reason, "code": code,
            }),
        )
    }
}
