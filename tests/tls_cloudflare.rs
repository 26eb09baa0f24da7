//! The Cloudflare DNS-01 provider against the request/response shapes of
//! Cloudflare's published v4 API documentation (List Zones, Create DNS
//! Record, Delete DNS Record, and the error envelope), replayed by a local
//! HTTP server that also checks what roomcast sends.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{delete, get, post};
use roomcast::tls::acme::dns::DnsProvider;
use roomcast::tls::acme::dns::cloudflare::Cloudflare;
use roomcast::tls::acme::http_client::HttpsClient;
use roomcast::tls::settings::CloudflareAuth;
use serde_json::{Value, json};

const ZONE_ID: &str = "023e105f4ecef8ad9ca31a8372d0c353";
const RECORD_ID: &str = "372e67954025e0ba6aaa6d586b9e0b59";

#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<String>>>);

impl Seen {
    fn push(&self, line: String) {
        self.0.lock().unwrap().push(line);
    }
}

fn auth_of(headers: &HeaderMap) -> String {
    if let Some(token) = headers.get("authorization") {
        return token.to_str().unwrap().to_string();
    }
    format!(
        "{} / {}",
        headers["x-auth-email"].to_str().unwrap(),
        headers["x-auth-key"].to_str().unwrap()
    )
}

/// `GET /zones?name=` — documented shape (List Zones), trimmed.
async fn zones(
    State(seen): State<Seen>,
    headers: HeaderMap,
    Query(query): Query<std::collections::HashMap<String, String>>,
) -> impl IntoResponse {
    let name = query.get("name").cloned().unwrap_or_default();
    seen.push(format!("GET zones {name} {}", auth_of(&headers)));
    if auth_of(&headers).contains("bad-token") {
        return (
            StatusCode::FORBIDDEN,
            axum::Json(json!({
                "success": false,
                "errors": [{"code": 10000, "message": "Authentication error"}],
                "messages": [],
                "result": null
            })),
        );
    }
    let result = if name == "example.com" {
        json!([{
            "id": ZONE_ID,
            "name": "example.com",
            "status": "active",
            "paused": false,
            "type": "full",
            "name_servers": ["bob.ns.cloudflare.com", "lola.ns.cloudflare.com"]
        }])
    } else {
        json!([])
    };
    (
        StatusCode::OK,
        axum::Json(json!({
            "success": true,
            "errors": [],
            "messages": [],
            "result": result,
            "result_info": {"count": 1, "page": 1, "per_page": 20, "total_count": 1}
        })),
    )
}

/// `POST /zones/{zone_id}/dns_records` — documented shape (Create DNS Record).
async fn create(
    State(seen): State<Seen>,
    Path(zone): Path<String>,
    axum::Json(body): axum::Json<Value>,
) -> axum::Json<Value> {
    seen.push(format!("POST {zone} {body}"));
    axum::Json(json!({
        "success": true,
        "errors": [],
        "messages": [],
        "result": {
            "id": RECORD_ID,
            "name": body["name"],
            "type": "TXT",
            "content": body["content"],
            "proxiable": false,
            "proxied": false,
            "ttl": body["ttl"],
            "comment": body["comment"],
            "created_on": "2014-01-01T05:20:00.12345Z",
            "modified_on": "2014-01-01T05:20:00.12345Z"
        }
    }))
}

/// `DELETE /zones/{zone_id}/dns_records/{id}` — documented shape.
async fn remove(
    State(seen): State<Seen>,
    Path((zone, id)): Path<(String, String)>,
) -> axum::Json<Value> {
    seen.push(format!("DELETE {zone} {id}"));
    axum::Json(json!({"success": true, "errors": [], "messages": [], "result": {"id": id}}))
}

async fn fake_cloudflare() -> (String, Seen) {
    let seen = Seen::default();
    let app = Router::new()
        .route("/client/v4/zones", get(zones))
        .route("/client/v4/zones/{zone}/dns_records", post(create))
        .route("/client/v4/zones/{zone}/dns_records/{id}", delete(remove))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/client/v4"), seen)
}

#[tokio::test]
async fn creates_and_deletes_the_txt_record_with_a_token() {
    let (url, seen) = fake_cloudflare().await;
    let provider = Cloudflare::new(
        HttpsClient::new(None).unwrap(),
        url,
        CloudflareAuth::Token("tok".into()),
    );
    let record = provider
        .add_txt("_acme-challenge.www.example.com", "digest-value")
        .await
        .expect("record created");
    assert_eq!(record.handle, vec![ZONE_ID, RECORD_ID]);
    provider.remove_txt(&record).await.expect("record deleted");
    let seen = seen.0.lock().unwrap().clone();
    assert_eq!(seen[0], "GET zones www.example.com Bearer tok");
    assert_eq!(seen[1], "GET zones example.com Bearer tok");
    let body: Value =
        serde_json::from_str(seen[2].strip_prefix(&format!("POST {ZONE_ID} ")).unwrap()).unwrap();
    assert_eq!(body["type"], "TXT");
    assert_eq!(body["name"], "_acme-challenge.www.example.com");
    assert_eq!(body["content"], "digest-value");
    assert_eq!(seen[3], format!("DELETE {ZONE_ID} {RECORD_ID}"));
}

#[tokio::test]
async fn the_seed_global_key_is_sent_as_x_auth_headers() {
    let (url, seen) = fake_cloudflare().await;
    let provider = Cloudflare::new(
        HttpsClient::new(None).unwrap(),
        url,
        CloudflareAuth::GlobalKey {
            email: "ops@example.com".into(),
            key: "global".into(),
        },
    );
    provider
        .add_txt("_acme-challenge.example.com", "v")
        .await
        .expect("record created");
    assert_eq!(
        seen.0.lock().unwrap()[0],
        "GET zones example.com ops@example.com / global"
    );
}

#[tokio::test]
async fn api_errors_are_reported_with_cloudflare_s_message_and_code() {
    let (url, _) = fake_cloudflare().await;
    let provider = Cloudflare::new(
        HttpsClient::new(None).unwrap(),
        url,
        CloudflareAuth::Token("bad-token".into()),
    );
    let error = provider
        .add_txt("_acme-challenge.example.com", "v")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("Authentication error (code 10000)"),
        "{error}"
    );
    assert!(error.contains("403"), "{error}");
    let (url, _) = fake_cloudflare().await;
    let provider = Cloudflare::new(
        HttpsClient::new(None).unwrap(),
        url,
        CloudflareAuth::Token("tok".into()),
    );
    let error = provider
        .add_txt("_acme-challenge.other.org", "v")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("no zone for _acme-challenge.other.org"),
        "{error}"
    );
}
