//! The client side of the heartbeat Lease: read, create, replace, each within the request
//! timeout and sorted into `SendError`.

use crate::publish::outcome::SendError;
use crate::publish::send::{classify, SendContext};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::PostParams;
use kube::Api;

#[derive(Clone)]
pub(crate) struct Sender {
    ctx: SendContext,
    namespace: String,
    name: String,
}

impl Sender {
    pub(crate) fn new(ctx: SendContext, namespace: &str, name: &str) -> Sender {
        Sender {
            ctx,
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }

    fn api(&self) -> Api<Lease> {
        Api::namespaced(self.ctx.client.clone(), &self.namespace)
    }

    pub(crate) async fn read(&self) -> Result<Lease, SendError> {
        let api = self.api();
        self.ctx
            .within(async { api.get(&self.name).await.map_err(|e| classify(&e)) })
            .await
    }

    pub(crate) async fn create(&self, lease: &Lease) -> Result<Lease, SendError> {
        let api = self.api();
        self.ctx
            .within(async {
                api.create(&PostParams::default(), lease)
                    .await
                    .map_err(|e| classify(&e))
            })
            .await
    }

    /// A PUT with the resourceVersion `lease` carries: 409 when the Lease changed since.
    pub(crate) async fn replace(&self, lease: &Lease) -> Result<Lease, SendError> {
        let api = self.api();
        self.ctx
            .within(async {
                api.replace(&self.name, &PostParams::default(), lease)
                    .await
                    .map_err(|e| classify(&e))
            })
            .await
    }
}
