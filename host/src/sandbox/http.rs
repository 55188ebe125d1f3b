//! The host side of wasi:http for plugins: outgoing requests only, and only to
//! the `host:port`s the operator's `net` grant allows (matched by name, so
//! `*.example.com:443` rules work). Everything else is refused with
//! `HTTP-request-denied` before any connection is made.

use std::sync::Arc;

use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

use super::grants::NetPolicy;
use super::host::HostState;

/// The hooks that hold a run's net policy.
pub(super) struct NetHooks {
    pub(super) policy: Arc<NetPolicy>,
}

type Sent = Box<
    dyn Future<
            Output = wasmtime_wasi_http::Result<(
                http::Response<WasiBody>,
                Box<dyn Future<Output = Result<(), Error>> + Send>,
            )>,
        > + Send,
>;

impl WasiHttpHooks for NetHooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> Sent {
        let uri = request.uri();
        let host = uri.host().unwrap_or_default().to_owned();
        let port = uri.port_u16().unwrap_or(if uri.scheme() == Some(&http::uri::Scheme::HTTP) { 80 } else { 443 });
        if !self.policy.allows_http(&host, port) {
            tracing::info!(%host, port, "plugin HTTP request denied: no net grant allows it");
            return Box::new(async { Err(Error::HttpRequestDenied) });
        }
        drop(fut);
        Box::new(async move {
            use http_body_util::BodyExt;
            let (response, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((response.map(BodyExt::boxed_unsync), Box::new(io) as Box<dyn Future<Output = _> + Send>))
        })
    }
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        let (hooks, table, ctx) = self.http_parts();
        WasiHttpCtxView { hooks, table, ctx }
    }
}
