//! The command-line clients of a running server: `roomcast publish` (one
//! POST to `/api/publish`) and `roomcast healthcheck` (one GET of
//! `/healthz`, for container HEALTHCHECKs where no curl exists).

use std::process::ExitCode;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use roomcast::config::{HealthcheckArgs, PublishArgs};

/// How long a CLI request may take before it counts as failed.
const TIMEOUT: Duration = Duration::from_secs(10);

pub async fn publish(args: PublishArgs) -> ExitCode {
    let body = serde_json::json!({ "channel": args.channel, "data": args.data }).to_string();
    let url = format!("{}/api/publish", args.server.base());
    report(
        "publish",
        request("POST", &url, args.api_key.as_deref(), body).await,
    )
}

pub async fn healthcheck(args: HealthcheckArgs) -> ExitCode {
    let url = format!("{}/healthz", args.server.base());
    report(
        "healthcheck",
        request("GET", &url, None, String::new()).await,
    )
}

fn report(command: &str, outcome: Result<String, String>) -> ExitCode {
    match outcome {
        Ok(body) => {
            println!("{body}");
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("roomcast {command}: {message}");
            ExitCode::FAILURE
        }
    }
}

/// One request; the body on 2xx, else an error naming the status and body.
async fn request(
    method: &str,
    url: &str,
    key: Option<&str>,
    body: String,
) -> Result<String, String> {
    if !url.starts_with("http://") {
        return Err(format!("the URL must start with http://, got {url}"));
    }
    let mut request = hyper::Request::builder()
        .method(method)
        .uri(url)
        .header("content-type", "application/json");
    if let Some(key) = key {
        request = request.header("authorization", format!("Bearer {key}"));
    }
    let request = request
        .body(Full::new(bytes::Bytes::from(body)))
        .map_err(|e| format!("bad request for {url}: {e}"))?;
    let client = Client::builder(TokioExecutor::new()).build_http();
    let exchange = async {
        let response = client
            .request(request)
            .await
            .map_err(|e| format!("cannot reach {url}: {e}"))?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("reading the answer from {url}: {e}"))?
            .to_bytes();
        Ok::<_, String>((status, String::from_utf8_lossy(&body).into_owned()))
    };
    let (status, text) = tokio::time::timeout(TIMEOUT, exchange)
        .await
        .map_err(|_| format!("no answer from {url} within {TIMEOUT:?}"))??;
    if status.is_success() {
        Ok(text)
    } else {
        Err(format!("{status}: {text}"))
    }
}
