//! The thin I/O half of the PolicyReport publisher: one [`Op`] the planner chose, one or two
//! requests to the API server. It holds the client and nothing that decides; a test swaps
//! the client (`tower_test::mock`, or the testkit's fake API server).
//!
//! Verbs, all on `wgpolicyk8s.io` `policyreports` and `clusterpolicyreports`: `list` (by
//! this node's labels, at start and after a conflict), `create`, `update` (a replace with the
//! stored `resourceVersion`, so a report someone else changed meanwhile is a `409`, not
//! overwritten unseen) and `delete`. No `get`, `watch` or `patch`.

use super::planner::{Op, Outcome};
use super::render::{self, Key};
use crate::publish::outcome::SendError;
use crate::publish::send::{classify, SendContext};
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, PostParams};
use kube::core::GroupVersionKind;
use serde_json::Value;

fn resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("wgpolicyk8s.io", "v1alpha2", kind),
        plural,
    )
}

#[derive(Clone)]
pub(crate) struct Sender {
    ctx: SendContext,
    node: String,
    namespaced: ApiResource,
    cluster: ApiResource,
}

impl Sender {
    pub(crate) fn new(ctx: SendContext, node: &str) -> Sender {
        Sender {
            ctx,
            node: node.to_string(),
            namespaced: resource("PolicyReport", "policyreports"),
            cluster: resource("ClusterPolicyReport", "clusterpolicyreports"),
        }
    }

    fn api(&self, key: &Key) -> Api<DynamicObject> {
        match key {
            Key::Cluster => Api::all_with(self.ctx.client.clone(), &self.cluster),
            Key::Namespace(ns) => {
                Api::namespaced_with(self.ctx.client.clone(), ns, &self.namespaced)
            }
        }
    }

    pub(crate) async fn execute(&self, op: &Op) -> Result<Outcome, SendError> {
        self.ctx.within(self.request(op)).await
    }

    async fn request(&self, op: &Op) -> Result<Outcome, SendError> {
        let name = render::report_name(&self.node);
        match op {
            Op::List => {
                let lp = ListParams::default().labels(&render::selector(&self.node));
                let mut items = Vec::new();
                for ar in [&self.cluster, &self.namespaced] {
                    let api: Api<DynamicObject> = Api::all_with(self.ctx.client.clone(), ar);
                    let list = api.list(&lp).await.map_err(|e| classify(&e))?;
                    for item in list.items {
                        items.push(
                            serde_json::to_value(&item)
                                .map_err(|e| SendError::Permanent(e.to_string()))?,
                        );
                    }
                }
                Ok(Outcome::Listed(items))
            }
            Op::Create { key, body } => {
                let object = object(body, None)?;
                let stored = self
                    .api(key)
                    .create(&PostParams::default(), &object)
                    .await
                    .map_err(|e| classify(&e))?;
                Ok(written(stored))
            }
            Op::Replace {
                key,
                body,
                resource_version,
            } => {
                let object = object(body, Some(resource_version))?;
                let stored = self
                    .api(key)
                    .replace(&name, &PostParams::default(), &object)
                    .await
                    .map_err(|e| classify(&e))?;
                Ok(written(stored))
            }
            Op::Delete { key } => {
                self.api(key)
                    .delete(&name, &DeleteParams::default())
                    .await
                    .map_err(|e| classify(&e))?;
                Ok(Outcome::Deleted)
            }
        }
    }
}

fn object(body: &Value, resource_version: Option<&String>) -> Result<DynamicObject, SendError> {
    let mut object: DynamicObject = serde_json::from_value(body.clone())
        .map_err(|e| SendError::Permanent(format!("not an object: {e}")))?;
    object.metadata.resource_version = resource_version.cloned();
    Ok(object)
}

fn written(stored: DynamicObject) -> Outcome {
    Outcome::Written {
        resource_version: stored.metadata.resource_version.unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::publish::send::tests::{mock_context, respond, status, Handle};
    use serde_json::json;
    use std::time::Duration;

    fn mock(timeout: Duration) -> (Sender, Handle) {
        let (ctx, handle) = mock_context(timeout);
        (Sender::new(ctx, "node-a"), handle)
    }

    /// What the sender asks (method, path, query, body) and how it sorts the answers; a
    /// hanging API server is a retryable timeout, never a stall.
    #[tokio::test]
    async fn each_op_is_one_request_to_the_right_resource_and_answers_are_sorted() {
        let (sender, mut handle) = mock(Duration::from_millis(300));
        let server = tokio::spawn(async move {
            let mut seen = Vec::new();
            let answers = [
                respond(
                    200,
                    json!({"apiVersion": "wgpolicyk8s.io/v1alpha2", "kind": "ClusterPolicyReportList", "metadata": {}, "items": []}),
                ),
                respond(
                    200,
                    json!({"apiVersion": "wgpolicyk8s.io/v1alpha2", "kind": "PolicyReportList", "metadata": {}, "items": [
                    {"apiVersion": "wgpolicyk8s.io/v1alpha2", "kind": "PolicyReport",
                     "metadata": {"name": "nodeguard-node-a", "namespace": "shop", "resourceVersion": "9"}}]}),
                ),
                respond(
                    201,
                    json!({"apiVersion": "wgpolicyk8s.io/v1alpha2", "kind": "PolicyReport",
                     "metadata": {"name": "nodeguard-node-a", "namespace": "shop", "resourceVersion": "10"}}),
                ),
                status(409, "Conflict"),
                status(404, "NotFound"),
                status(413, "RequestEntityTooLarge"),
            ];
            for answer in answers {
                let (request, send) = handle.next_request().await.expect("a request");
                let method = request.method().to_string();
                let uri = request.uri().to_string();
                let body = request.into_body().collect_bytes().await.unwrap();
                seen.push((method, uri, serde_json::from_slice::<Value>(&body).ok()));
                send.send_response(answer);
            }
            // The last one hangs.
            let (_request, _send) = handle.next_request().await.expect("a request");
            tokio::time::sleep(Duration::from_secs(1)).await;
            seen
        });
        let listed = sender.execute(&Op::List).await.unwrap();
        let Outcome::Listed(items) = listed else {
            panic!()
        };
        assert_eq!(items.len(), 1);
        assert_eq!(items[0]["metadata"]["resourceVersion"], "9");
        let body = json!({"apiVersion": "wgpolicyk8s.io/v1alpha2", "kind": "PolicyReport",
            "metadata": {"name": "nodeguard-node-a", "namespace": "shop"}, "results": []});
        let key = Key::Namespace("shop".into());
        assert_eq!(
            sender
                .execute(&Op::Create {
                    key: key.clone(),
                    body: body.clone()
                })
                .await,
            Ok(Outcome::Written {
                resource_version: "10".into()
            })
        );
        let replace = Op::Replace {
            key: key.clone(),
            body: body.clone(),
            resource_version: "10".into(),
        };
        assert!(matches!(
            sender.execute(&replace).await,
            Err(SendError::Conflict(_))
        ));
        assert!(matches!(
            sender.execute(&Op::Delete { key: Key::Cluster }).await,
            Err(SendError::NotFound(_))
        ));
        assert!(matches!(
            sender.execute(&replace).await,
            Err(SendError::Permanent(_))
        ));
        assert!(matches!(
            sender.execute(&replace).await,
            Err(SendError::Retryable(_))
        ));
        let seen = server.await.unwrap();
        let lines: Vec<String> = seen.iter().map(|(m, u, _)| format!("{m} {u}")).collect();
        let selector = "labelSelector=app.kubernetes.io%2Fmanaged-by%3Dnodeguard%2Cnodeguard.io%2Fnode%3Dnode-a";
        assert_eq!(
            lines,
            [
                format!("GET /apis/wgpolicyk8s.io/v1alpha2/clusterpolicyreports?&{selector}"),
                format!("GET /apis/wgpolicyk8s.io/v1alpha2/policyreports?&{selector}"),
                "POST /apis/wgpolicyk8s.io/v1alpha2/namespaces/shop/policyreports?".to_string(),
                "PUT /apis/wgpolicyk8s.io/v1alpha2/namespaces/shop/policyreports/nodeguard-node-a?"
                    .to_string(),
                "DELETE /apis/wgpolicyk8s.io/v1alpha2/clusterpolicyreports/nodeguard-node-a?"
                    .to_string(),
                "PUT /apis/wgpolicyk8s.io/v1alpha2/namespaces/shop/policyreports/nodeguard-node-a?"
                    .to_string(),
            ]
        );
        // The replace carries the stored version (optimistic concurrency).
        assert_eq!(
            seen[3].2.as_ref().unwrap()["metadata"]["resourceVersion"],
            "10"
        );
        assert!(seen[2].2.as_ref().unwrap()["metadata"]
            .get("resourceVersion")
            .is_none());
    }
}
