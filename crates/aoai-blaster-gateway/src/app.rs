//! The HTTP server: routes, inbound keys, and the small routes (models, health, metrics, the
//! operations not run yet, unknown paths).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use actix_web::dev::Server;
use actix_web::http::header::{CONTENT_TYPE, HeaderValue};
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use aoai_blaster::core::gateway::{GatewayError, presented_key};
use aoai_blaster::{DispatcherSeed, EndpointState, GetReport};
use serde_json::json;
use tokio::sync::oneshot;

use crate::ops::{self, Op};
use crate::state::State;
use crate::{chat, disconnect, metrics, reply};

/// Binds `addrs` and builds the server (not yet running); its first bound address, and with a
/// `seed`, what says the worker started it.
pub(crate) fn serve(
    state: Arc<State>,
    addrs: &[SocketAddr],
    workers: usize,
    seed: Option<DispatcherSeed>,
) -> std::io::Result<(SocketAddr, Server, Option<oneshot::Receiver<()>>)> {
    let data = web::Data::from(state);
    let (running, started) = match seed {
        Some(seed) => {
            let (tell, told) = oneshot::channel();
            (Some(told), Some(Arc::new(Mutex::new(Some((seed, tell))))))
        }
        None => (None, None),
    };
    let mut server = HttpServer::new(move || {
        // The first worker to build its app (the only one, with a seed) runs the Dispatcher.
        let seed = started
            .as_ref()
            .and_then(|slot| slot.lock().ok().and_then(|mut slot| slot.take()));
        if let Some((seed, running)) = seed {
            seed.start_here();
            let _ = running.send(());
        }
        App::new()
            .app_data(data.clone())
            .route("/v1/chat/completions", web::post().to(chat_body_model))
            .route(
                "/openai/v1/chat/completions",
                web::post().to(chat_body_model),
            )
            .route(
                "/openai/deployments/{name}/chat/completions",
                web::post().to(chat_path_model),
            )
            .route("/v1/embeddings", web::post().to(embeddings_body_model))
            .route(
                "/openai/v1/embeddings",
                web::post().to(embeddings_body_model),
            )
            .route(
                "/openai/deployments/{name}/embeddings",
                web::post().to(embeddings_path_model),
            )
            .route("/v1/responses", web::post().to(responses))
            .route("/openai/v1/responses", web::post().to(responses))
            .route("/v1/models", web::get().to(models))
            .route("/openai/v1/models", web::get().to(models))
            .route("/v1/models/{id}", web::get().to(model))
            .route("/healthz", web::get().to(health))
            .route("/metrics", web::get().to(prometheus))
            .default_service(web::to(unknown_path))
    })
    .on_connect(disconnect::remember_socket)
    .shutdown_timeout(5);
    if workers > 0 {
        server = server.workers(workers);
    }
    let server = server.bind(addrs)?;
    let first = server
        .addrs()
        .first()
        .copied()
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
    Ok((first, server.run(), running))
}

/// `Ok` when the gateway takes no keys or the request presents one of them.
pub(crate) fn authorize(request: &HttpRequest, state: &State) -> Result<(), GatewayError> {
    if state.keys.is_empty() {
        return Ok(());
    }
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
    };
    match presented_key(header("authorization"), header("api-key")) {
        Some(key) if state.keys.accepts(key) => Ok(()),
        Some(_) => Err(GatewayError::unauthorized(true)),
        None => Err(GatewayError::unauthorized(false)),
    }
}

/// An error answered before any job: counted, with the gateway's whole time as overhead.
pub(crate) fn refuse(route: &'static str, error: &GatewayError, started: Instant) -> HttpResponse {
    let mut answer = reply::error(error);
    let overhead = started.elapsed();
    reply::overhead(&mut answer, overhead);
    metrics::answered(route, error.status, overhead);
    answer
}

fn json_reply(route: &'static str, body: &serde_json::Value, started: Instant) -> HttpResponse {
    let mut answer = HttpResponse::Ok()
        .insert_header((CONTENT_TYPE, HeaderValue::from_static("application/json")))
        .body(body.to_string());
    let overhead = started.elapsed();
    reply::overhead(&mut answer, overhead);
    metrics::answered(route, 200, overhead);
    answer
}

async fn chat_body_model(
    request: HttpRequest,
    body: web::Payload,
    state: web::Data<State>,
) -> HttpResponse {
    chat::handle(request, body, state, None).await
}

async fn chat_path_model(
    request: HttpRequest,
    name: web::Path<String>,
    body: web::Payload,
    state: web::Data<State>,
) -> HttpResponse {
    chat::handle(request, body, state, Some(name.into_inner())).await
}

async fn embeddings_body_model(
    request: HttpRequest,
    body: web::Payload,
    state: web::Data<State>,
) -> HttpResponse {
    ops::handle(Op::Embeddings, request, body, state, None).await
}

async fn embeddings_path_model(
    request: HttpRequest,
    name: web::Path<String>,
    body: web::Payload,
    state: web::Data<State>,
) -> HttpResponse {
    let name = Some(name.into_inner());
    ops::handle(Op::Embeddings, request, body, state, name).await
}

/// The Responses API exists only in the v1 form (`model` in the body).
async fn responses(
    request: HttpRequest,
    body: web::Payload,
    state: web::Data<State>,
) -> HttpResponse {
    ops::handle(Op::Responses, request, body, state, None).await
}

fn model_object(id: &str, deployments: &[String]) -> serde_json::Value {
    json!({
        "id": id,
        "object": "model",
        "created": 0,
        "owned_by": "aoai-blaster",
        "deployments": deployments,
    })
}

async fn models(request: HttpRequest, state: web::Data<State>) -> HttpResponse {
    let started = Instant::now();
    if let Err(error) = authorize(&request, &state) {
        return refuse("models", &error, started);
    }
    let data: Vec<serde_json::Value> = state
        .routes
        .entries()
        .iter()
        .map(|entry| model_object(&entry.id, &entry.deployments))
        .collect();
    json_reply("models", &json!({"object": "list", "data": data}), started)
}

async fn model(
    request: HttpRequest,
    id: web::Path<String>,
    state: web::Data<State>,
) -> HttpResponse {
    let started = Instant::now();
    if let Err(error) = authorize(&request, &state) {
        return refuse("models", &error, started);
    }
    let entries = state.routes.entries();
    match entries.iter().find(|entry| entry.id == *id) {
        Some(entry) => json_reply(
            "models",
            &model_object(&entry.id, &entry.deployments),
            started,
        ),
        None => {
            let known: Vec<&str> = entries.iter().map(|e| e.id.as_str()).collect();
            refuse(
                "models",
                &GatewayError::unknown_model(&id, &known.join(", ")),
                started,
            )
        }
    }
}

/// 200 while at least one deployment is not disabled; each deployment's state either way.
async fn health(state: web::Data<State>) -> HttpResponse {
    let started = Instant::now();
    let Ok(reports) = state.dispatcher.send(GetReport).await else {
        let error = GatewayError::new(503, "server_error", "closing", "the gateway is stopping");
        return refuse("health", &error, started);
    };
    let serving = reports.iter().any(|r| r.state != EndpointState::Disabled);
    let deployments: serde_json::Map<String, serde_json::Value> = reports
        .iter()
        .map(|r| (r.name.clone(), json!(r.state.as_str())))
        .collect();
    if serving {
        json_reply(
            "health",
            &json!({"status": "ok", "deployments": deployments}),
            started,
        )
    } else {
        let error = GatewayError::new(
            503,
            "server_error",
            "all_endpoints_disabled",
            format!(
                "every deployment is disabled: {}",
                serde_json::Value::Object(deployments)
            ),
        );
        refuse("health", &error, started)
    }
}

async fn prometheus(state: web::Data<State>) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        ))
        .body(state.metrics.render())
}

async fn unknown_path(request: HttpRequest) -> HttpResponse {
    let error = GatewayError::new(
        404,
        "invalid_request_error",
        "not_found",
        format!(
            "no route {} {}; the gateway serves POST /v1/chat/completions, /v1/embeddings, \
             /v1/responses, GET /v1/models, GET /healthz and GET /metrics",
            request.method(),
            request.path()
        ),
    );
    refuse("other", &error, Instant::now())
}
