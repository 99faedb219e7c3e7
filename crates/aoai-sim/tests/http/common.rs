//! Helpers shared by the HTTP tests: start a simulator, send requests with awc, read replies.

use std::collections::HashMap;
use std::time::Duration;

use aoai_sim::{SimConfig, SimHandle};
use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::{Value, json};

pub(crate) const API_VERSION: &str = "2024-10-21";

pub(crate) async fn start(config: SimConfig) -> SimHandle {
    match aoai_sim::start(config).await {
        Ok(sim) => sim,
        Err(err) => panic!("simulator did not start: {err}"),
    }
}

/// awc builds a rustls config for every client: make sure a crypto provider is chosen.
pub(crate) fn install_crypto_provider() {
    // Err only means a provider is already installed.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

pub(crate) fn client() -> awc::Client {
    install_crypto_provider();
    awc::Client::builder()
        .timeout(Duration::from_secs(10))
        .finish()
}

pub(crate) fn chat_url(base: &str, deployment: &str) -> String {
    format!("{base}openai/deployments/{deployment}/chat/completions?api-version={API_VERSION}")
}

/// POSTs `body` to `deployment`'s chat completions, with the default key and a fresh client.
pub(crate) async fn post_chat(sim: &SimHandle, deployment: &str, body: &Value) -> Reply {
    post(&client(), &chat_url(&sim.base_url(), deployment), KEY, body).await
}

/// How a request authenticates.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Auth<'a> {
    Key(&'a str),
    Bearer(&'a str),
    None,
}

pub(crate) const KEY: Auth<'static> = Auth::Key(aoai_sim::DEFAULT_API_KEY);

/// A reply read in full, or up to the point the connection closed (awc ends a body at EOF
/// without an error, even when `Content-Length` promised more or a chunked body has no final
/// chunk; `raw_exchange` sees the bytes on the wire).
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) headers: HashMap<String, String>,
    pub(crate) body: Bytes,
}

impl Reply {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|err| {
            panic!(
                "body is not JSON ({err}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    pub(crate) fn header_u64(&self, name: &str) -> u64 {
        self.header(name)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("header {name} missing or not a number: {:?}", self.headers))
    }

    pub(crate) fn error_code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or("<no code>")
            .to_owned()
    }

    /// The `data:` payloads of a server-sent-event body.
    pub(crate) fn events(&self) -> Vec<String> {
        let text = String::from_utf8_lossy(&self.body);
        text.split("\n\n")
            .filter(|event| !event.is_empty())
            .map(|event| {
                event
                    .strip_prefix("data: ")
                    .unwrap_or_else(|| panic!("event without `data: `: {event:?}"))
                    .to_owned()
            })
            .collect()
    }
}

pub(crate) async fn post(client: &awc::Client, url: &str, auth: Auth<'_>, body: &Value) -> Reply {
    post_raw(client, url, auth, Bytes::from(body.to_string())).await
}

pub(crate) async fn post_raw(
    client: &awc::Client,
    url: &str,
    auth: Auth<'_>,
    body: Bytes,
) -> Reply {
    let mut request = client
        .post(url)
        .insert_header(("content-type", "application/json"));
    request = match auth {
        Auth::Key(key) => request.insert_header(("api-key", key)),
        Auth::Bearer(token) => request.bearer_auth(token),
        Auth::None => request,
    };
    match request.send_body(body).await {
        Ok(response) => read(response).await,
        Err(err) => panic!("request to {url} failed: {err}"),
    }
}

pub(crate) async fn get(client: &awc::Client, url: &str) -> Reply {
    match client.get(url).send().await {
        Ok(response) => read(response).await,
        Err(err) => panic!("GET {url} failed: {err}"),
    }
}

pub(crate) async fn read<S>(mut response: awc::ClientResponse<S>) -> Reply
where
    S: futures_util::Stream<Item = Result<Bytes, awc::error::PayloadError>> + Unpin,
{
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                value.to_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    let mut body = Vec::new();
    while let Some(Ok(chunk)) = response.next().await {
        body.extend_from_slice(&chunk);
    }
    Reply {
        status,
        headers,
        body: Bytes::from(body),
    }
}

/// A request whose prompt is estimated at `3 + 2 + 3 = 8` tokens, charged `8 + max_tokens`.
pub(crate) fn chat_body(max_tokens: u64) -> Value {
    json!({
        "messages": [{"role": "user", "content": "12345678"}],
        "max_tokens": max_tokens,
    })
}

/// Send one HTTP/1.1 request over a plain socket (`Connection: close`) and return every byte
/// the server sent until it closed the connection.
pub(crate) fn raw_exchange(base_url: &str, path: &str, body: &Value) -> String {
    use std::io::{Read, Write};
    let addr = base_url.trim_start_matches("http://").trim_end_matches('/');
    let mut socket = std::net::TcpStream::connect(addr).expect("connect to the simulator");
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("read timeout");
    let body = body.to_string();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\napi-key: {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        aoai_sim::DEFAULT_API_KEY,
        body.len()
    );
    socket.write_all(request.as_bytes()).expect("send request");
    let mut received = Vec::new();
    socket
        .read_to_end(&mut received)
        .expect("the server closes the connection");
    String::from_utf8_lossy(&received).into_owned()
}
