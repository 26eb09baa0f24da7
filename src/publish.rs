//! `roomcast publish CHANNEL DATA`: one POST to a running server's
//! `/api/publish`, printing the server's answer.

use std::process::ExitCode;

use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use roomcast::config::PublishArgs;

pub async fn run(args: PublishArgs) -> ExitCode {
    match publish(&args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("roomcast publish: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn publish(args: &PublishArgs) -> Result<(), String> {
    let url = format!("{}/api/publish", args.url.trim_end_matches('/'));
    if !url.starts_with("http://") {
        return Err(format!("--url must be an http:// URL, got {}", args.url));
    }
    let body = serde_json::json!({ "channel": args.channel, "data": args.data }).to_string();
    let mut request = hyper::Request::post(&url).header("content-type", "application/json");
    if let Some(key) = &args.api_key {
        request = request.header("authorization", format!("Bearer {key}"));
    }
    let request = request
        .body(Full::new(bytes::Bytes::from(body)))
        .map_err(|e| format!("bad request for {url}: {e}"))?;
    let client = Client::builder(TokioExecutor::new()).build_http();
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
    let text = String::from_utf8_lossy(&body);
    if status.is_success() {
        println!("{text}");
        Ok(())
    } else {
        Err(format!("{status}: {text}"))
    }
}
