//! The HTTPS client ACME and the Cloudflare API use: hyper-util over
//! hyper-rustls with roomcast's one crypto provider, the Mozilla roots
//! compiled in (works in a scratch image) plus `--acme-ca-root`.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use instant_acme::{BodyWrapper, BytesResponse};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// Every request (connect to last body byte) must finish within this.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

type Inner = Client<hyper_rustls::HttpsConnector<HttpConnector>, BodyWrapper<Bytes>>;

#[derive(Clone)]
pub struct HttpsClient(Inner);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot read the CA root {path}: {message}")]
    Root { path: String, message: String },
    #[error("TLS client setup: {0}")]
    Rustls(#[from] rustls::Error),
}

impl HttpsClient {
    pub fn new(extra_root: Option<&Path>) -> Result<Self, ClientError> {
        let mut extra = Vec::new();
        if let Some(path) = extra_root {
            let bad = |message: String| ClientError::Root {
                path: path.display().to_string(),
                message,
            };
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .map_err(|e| bad(e.to_string()))?
                .collect::<Result<_, _>>()
                .map_err(|e| bad(e.to_string()))?;
            if certs.is_empty() {
                return Err(bad("no PEM certificate in it".into()));
            }
            extra = certs;
        }
        let tls = super::super::client_config(&extra)?;
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build();
        Ok(HttpsClient(
            Client::builder(TokioExecutor::new()).build(connector),
        ))
    }

    /// One request with the whole body read: (status, body).
    pub async fn send(
        &self,
        request: http::Request<BodyWrapper<Bytes>>,
    ) -> Result<(http::StatusCode, Bytes), String> {
        let exchange = async {
            let response = self.0.request(request).await.map_err(error_chain)?;
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            Ok((status, body))
        };
        tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| format!("no answer within {REQUEST_TIMEOUT:?}"))?
    }
}

/// hyper's errors say "client error (Connect)"; the cause is underneath.
fn error_chain(error: impl std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

impl instant_acme::HttpClient for HttpsClient {
    fn request(
        &self,
        request: http::Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let uri = request.uri().to_string();
        let future = self.0.request(request);
        Box::pin(async move {
            match tokio::time::timeout(REQUEST_TIMEOUT, future).await {
                Ok(Ok(response)) => Ok(BytesResponse::from(response)),
                Ok(Err(error)) => Err(instant_acme::Error::Other(
                    format!("{uri}: {}", error_chain(error)).into(),
                )),
                Err(_) => Err(instant_acme::Error::Other(
                    format!("{uri}: no answer within {REQUEST_TIMEOUT:?}").into(),
                )),
            }
        })
    }
}
